"""requirements/lock.txt and requirements/runtime.txt against pyproject.toml and this .venv.

The lock is what `make demo`, `make test` and the container image install (exact versions,
hashes); `make lock` writes it from pyproject.toml. These checks fail when the two disagree:
a dependency added to pyproject.toml but not locked (or locked at a version its range refuses),
one removed from pyproject.toml but still locked as direct, or a virtualenv that holds anything
other than the lock's exact set.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements" / "lock.txt"
RUNTIME = REPO / "requirements" / "runtime.txt"
BOOTSTRAP = REPO / "requirements" / "bootstrap.in"
# What the lock is resolved for (Makefile: --python-version 3.11, Linux x86_64).
TARGET = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
          "implementation_name": "cpython", "platform_python_implementation": "CPython"}
DIRECT = ("servegate (pyproject.toml)", "-r requirements/bootstrap.in")
EXTRAS = ("demo", "sim", "test", "tracing")


@dataclass
class Lock:
    versions: dict[str, str] = field(default_factory=dict)
    direct: set[str] = field(default_factory=set)


def parse_lock(path: Path) -> Lock:
    """Pins (``name==version``) and the names whose ``# via`` includes pyproject or bootstrap."""
    lock, current = Lock(), ""
    for line in path.read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", line)
        if pin:
            current = canonicalize_name(pin.group(1))
            lock.versions[current] = pin.group(2)
        elif current and any(d in line for d in DIRECT) and line.lstrip().startswith("#"):
            lock.direct.add(current)
    return lock


def declared(extras: tuple[str, ...]) -> list[Requirement]:
    """pyproject.toml's dependencies plus the named extras (self-references expanded), and
    bootstrap.in, keeping those whose markers hold on the lock's target."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pending = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        pending += [Requirement(r) for r in project["optional-dependencies"][extra]]
    pending += [Requirement(r) for r in BOOTSTRAP.read_text().splitlines()
                if r.strip() and not r.startswith("#")]
    out: list[Requirement] = []
    for req in pending:
        if req.marker is not None and not req.marker.evaluate(TARGET):
            continue
        if canonicalize_name(req.name) != "servegate":
            out.append(req)
    return out


def check(lock: Lock, reqs: list[Requirement]) -> list[str]:
    problems = []
    names = {canonicalize_name(r.name) for r in reqs}
    for req in reqs:
        name = canonicalize_name(req.name)
        version = lock.versions.get(name)
        if version is None:
            problems.append(f"{req} is in pyproject.toml but not in the lock: run `make lock`")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"lock pins {name}=={version}, outside pyproject's {req}")
    for name in sorted(lock.direct - names):
        problems.append(f"{name} is locked as a direct dependency but pyproject.toml no longer "
                        "lists it: run `make lock`")
    return problems


def test_lock_matches_pyproject() -> None:
    assert check(parse_lock(LOCK), declared(EXTRAS)) == []


def test_runtime_lock_matches_pyproject_and_the_full_lock() -> None:
    runtime, full = parse_lock(RUNTIME), parse_lock(LOCK)
    assert check(runtime, declared(())) == []
    differing = {n: (v, full.versions.get(n)) for n, v in runtime.versions.items()
                 if full.versions.get(n) != v}
    assert differing == {}, "runtime.txt and lock.txt disagree: run `make lock`"


def test_the_check_sees_a_dependency_missing_from_the_lock() -> None:
    lock = parse_lock(LOCK)
    reqs = [*declared(EXTRAS), Requirement("surely-not-a-dependency>=1")]
    del lock.versions[canonicalize_name("httpx")]
    problems = check(lock, reqs)
    assert any("surely-not-a-dependency" in p for p in problems)
    assert any(p.startswith("httpx") for p in problems)


def test_the_check_sees_a_stale_direct_entry_and_a_pin_out_of_range() -> None:
    lock = parse_lock(LOCK)
    lock.direct.add("left-over")
    lock.versions["redis"] = "4.0.0"
    problems = check(lock, declared(EXTRAS))
    assert any(p.startswith("left-over") for p in problems)
    assert any("redis==4.0.0" in p for p in problems)


@pytest.mark.skipif(Path(sys.prefix).resolve() != (REPO / ".venv").resolve(),
                    reason="compares the project's own .venv with the lock; `make test` runs "
                           "in that .venv, another interpreter has nothing to compare")
def test_the_virtualenv_holds_exactly_the_lock() -> None:
    locked = parse_lock(LOCK).versions
    installed = {canonicalize_name(d.metadata["Name"]): d.version
                 for d in importlib.metadata.distributions()}
    installed.pop("servegate", None)
    extra = {n: v for n, v in installed.items() if n not in locked}
    wrong = {n: (v, locked[n]) for n, v in installed.items() if n in locked and locked[n] != v}
    missing = sorted(set(locked) - set(installed))
    assert (extra, wrong, missing) == ({}, {}, []), "run `make clean test`"
