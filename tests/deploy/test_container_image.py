"""deploy/docker/Dockerfile and .dockerignore, checked by reading them (no Docker daemon here),
and the image's application stage reproduced: servegate's wheel built from exactly the files
the build context lets in."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.deploy.conftest import REPO

DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def context_files() -> list[Path]:
    """The files `docker build .` sends: .dockerignore applied (last matching rule wins)."""
    rules = [r.strip() for r in DOCKERIGNORE.read_text().splitlines()
             if r.strip() and not r.startswith("#")]
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    sent = []
    for rel in tracked:
        keep = True
        for rule in rules:
            neg = rule.startswith("!")
            if _matches(rel, rule.removeprefix("!")):
                keep = neg
        if keep and (REPO / rel).is_file():
            sent.append(Path(rel))
    return sent


def _matches(rel: str, pattern: str) -> bool:
    """A .dockerignore pattern: from the context root; a directory covers what is under it;
    a leading ``**/`` matches at any depth."""
    pattern = pattern.rstrip("/")
    candidates = [pattern, pattern + "/*"]
    if pattern.startswith("**/"):
        candidates += [pattern[3:], pattern[3:] + "/*"]
    return any(fnmatch.fnmatch(rel, c) for c in candidates)


def test_multi_stage_with_a_slim_non_root_runtime() -> None:
    st = stages()
    assert len(st) >= 2, "multi-stage build"
    froms = [s[0][1] for s in st]
    assert all(" AS " in f.upper() for f in froms), froms
    runtime = st[-1]
    assert "slim" in runtime[0][1]
    users = [args for ins, args in runtime if ins == "USER"]
    assert users, "the runtime stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and (not user.isdigit() or int(user) >= 1000), users
    entry = [args for ins, args in runtime if ins == "ENTRYPOINT"]
    assert entry == ['["servegate"]']
    # the runtime copies nothing from the build context: it installs wheels from the stages
    assert not [args for ins, args in runtime if ins in ("COPY", "ADD")]


def test_no_add_no_secrets_no_weights() -> None:
    ins = instructions()
    assert not [a for i, a in ins if i == "ADD"], "use COPY (ADD fetches URLs, unpacks tars)"
    secretish = re.compile(r"(secret|token|password|passwd|api[_-]?key|\.pem|\.key|id_rsa"
                           r"|\.env\b|aws_|redis://)", re.I)
    for i, args in ins:
        if i in ("ENV", "ARG", "COPY", "LABEL"):
            assert not secretish.search(args), f"{i} {args}"
    weights = re.compile(r"\.(onnx|pt|pth|plan|engine|safetensors|bin|savedmodel)\b|model_repo",
                         re.I)
    assert not [a for i, a in ins if i == "COPY" and weights.search(a)]


def test_layers_go_from_rarely_to_often_changing() -> None:
    st = stages()
    deps, app = st[0], st[1]
    # the dependency stage sees only the runtime lock: code changes do not rebuild it
    assert [a for i, a in deps if i == "COPY"] == ["requirements/runtime.txt ./"]
    app_copies = [a for i, a in app if i == "COPY"]
    assert app_copies[0].startswith("pyproject.toml")
    runtime_runs = [a for i, a in st[-1] if i == "RUN"]
    order = [n for n, a in enumerate(runtime_runs) if "/wheels/*.whl" in a] + \
            [n for n, a in enumerate(runtime_runs) if "servegate-*.whl" in a]
    assert len(order) == 2 and order[0] < order[1], runtime_runs


def test_dockerignore_is_an_allow_list() -> None:
    sent = context_files()
    assert sent
    tops = {p.parts[0] for p in sent}
    assert tops <= {"pyproject.toml", "README.md", "requirements", "adapters", "contracts",
                    "router", "gateway", "autoscaler", "servegate"}, tops
    assert [p for p in sent if p.parts[0] == "requirements"] == [Path("requirements/runtime.txt")]
    assert not [p for p in sent if "__pycache__" in p.parts or p.suffix == ".pyc"]
    for i, args in instructions():
        if i == "COPY" and "--from" not in args:
            for src in args.split()[:-1]:
                src = src.rstrip("/")
                assert any(p == Path(src) or Path(src) in p.parents for p in sent), \
                    f"COPY {src}: not in the build context"


def test_requirements_step_and_app_wheel_from_the_build_context(tmp_path: Path) -> None:
    """The dependency stage installs the runtime lock with hashes required (every package
    pinned), and the app stage's `pip wheel .` over exactly the context's files gives a wheel
    with the three packages and the entry point."""
    (cmd,) = [a for i, a in stages()[0] if i == "RUN"]
    assert "--require-hashes" in cmd and "-r runtime.txt" in cmd, cmd
    app_run = " ".join(a for i, a in stages()[1] if i == "RUN")
    assert "--no-build-isolation" in app_run and "setuptools-*.whl" in app_run, app_run
    ctx = tmp_path / "ctx"
    for rel in context_files():
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, ctx / rel)
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "--wheel-dir", str(wheels), str(ctx)], capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("servegate-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("adapters/procs.py", "servegate/cli.py", "gateway/server.py",
                   "contracts/config.py", "router/table.py", "autoscaler/cli.py"):
        assert module in names, module
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "servegate = servegate.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
