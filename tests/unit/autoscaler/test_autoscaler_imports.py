"""The policy and the simulator stay pure: no I/O library, directly or through an import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import autoscaler

ROOT = Path(autoscaler.__file__).parent
FORBIDDEN = {"asyncio", "aiohttp", "httpx", "redis", "grpc", "kubernetes", "uvloop"}
PURE = sorted([*ROOT.joinpath("policy").glob("*.py"), *ROOT.joinpath("simulate").glob("*.py")])


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
            if node.module.startswith("autoscaler.") and not node.module.startswith(
                    ("autoscaler.policy", "autoscaler.simulate", "autoscaler.errors")):
                names.add(node.module)  # the signals / I/O side of the package
    return names


@pytest.mark.parametrize("path", PURE, ids=[str(p.relative_to(ROOT)) for p in PURE])
def test_pure_modules_import_no_io_library(path: Path) -> None:
    bad = imported(path) & (FORBIDDEN | {n for n in imported(path) if "." in n})
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_pure_modules_do_not_pull_io_libraries_in_transitively() -> None:
    modules = ["autoscaler.policy", "autoscaler.simulate.runner", "autoscaler.simulate.report",
               "autoscaler.simulate.traces", "autoscaler.cli"]
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT.parent)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_policy_never_reads_the_clock() -> None:
    for path in ROOT.joinpath("policy").glob("*.py"):
        text = path.read_text()
        for call in ("time.time(", "time.monotonic(", "datetime.now(", "datetime.utcnow("):
            assert call not in text, f"{path.name} calls {call}"
