"""Headless locust smoke run against ``servegate demo`` (part of ``make test``).

Starts the demo on free ports (real Triton servers behind the gateway), runs
``loadtest/locustfile.py`` with both users for 20 s, and fails on any failed request, on locust's
exit code, or if a user kind sent nothing. The demo is stopped with SIGTERM as a user's Ctrl-C
would, and every process it started (gateway, Triton workers, tritonserver, Python-backend
stubs) must be gone afterwards.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from servegate.local.launch import free_port
from tests.harness import http_get, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = REPO / "loadtest" / "locustfile.py"
CLASSIFIER = (b'{"inputs":[{"name":"INPUT","shape":[1,16],"datatype":"FP32","data":'
              b'[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,1.1,1.2,1.3,1.4,1.5,1.6]}]}')
IDENTITY = b'{"inputs":[{"name":"DATA","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    http_port: int
    grpc_port: int
    output: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def text(self) -> str:
        return "".join(self.output)

    def descendants(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(self.proc.pid).children(recursive=True)
        return []


def _post(url: str, body: bytes) -> int:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    http_port, grpc_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "servegate.cli", "demo", "--http-port", str(http_port),
         "--grpc-port", str(grpc_port), "--autoscaler-port", str(free_port()),
         "--keda-port", str(free_port()),
         "--triton-instances", "1", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        start_new_session=True)
    d = Demo(proc, http_port, grpc_port)
    reader = threading.Thread(target=lambda: d.output.extend(iter(proc.stdout.readline, "")),
                              daemon=True)
    reader.start()
    started: list[psutil.Process] = []
    try:
        wait_for(lambda: proc.poll() is not None or "servegate demo is up" in d.text(), 90,
                 "servegate demo banner")
        assert proc.poll() is None, f"demo exited with {proc.returncode}:\n{d.text()}"
        # Every pool's endpoints admitted: the first real requests succeed.
        wait_for(lambda: _post(d.url + "/v2/models/classifier/infer", CLASSIFIER) == 200
                 and _post(d.url + "/v2/models/identity/infer", IDENTITY) == 200, 30,
                 "demo models answering")
        started = d.descendants()
        names = {p.pid: p.name() for p in started}
        assert "tritonserver" in names.values(), f"no tritonserver among {names}"
        yield d
    finally:
        started = started or d.descendants()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the demo's own shutdown, like Ctrl-C
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        reader.join(5)
        # Nothing the demo started may survive it (no orphan tritonserver); kill leftovers
        # so that a failure here does not leak processes into the rest of the run.
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        orphans = [p for p in started if _alive(p)]
        for p in orphans:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
    assert proc.returncode == 0, f"demo exited with {proc.returncode}:\n{d.text()[-3000:]}"
    assert not orphans, f"processes left behind by the demo: {[p.pid for p in orphans]}"


def _locust(demo: Demo, out: Path, *extra: str, env: dict[str, str] | None = None,
            timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
         "--host", demo.url, "--only-summary", "--exit-code-on-error", "1",
         "--json-file", str(out / "stats"), "--csv", str(out / "run"),
         "--loglevel", "WARNING", *extra],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
        env={**os.environ, "SERVEGATE_GRPC": f"127.0.0.1:{demo.grpc_port}", **(env or {})})


def test_locust_headless_smoke(demo: Demo, tmp_path: Path) -> None:
    started = time.monotonic()
    run = _locust(demo, tmp_path, "-u", "10", "-r", "5", "-t", "20s")
    took = time.monotonic() - started
    report = f"exit {run.returncode}\nstdout:\n{run.stdout[-4000:]}\nstderr:\n{run.stderr[-4000:]}"
    assert run.returncode == 0, report
    assert 18 < took < 80, f"locust ran {took:.1f}s for -t 20s\n{report}"

    stats = json.loads((tmp_path / "stats.json").read_text())
    by_name = {(s["method"], s["name"]): s for s in stats}
    assert by_name, report
    failures = {k: s["num_failures"] for k, s in by_name.items() if s["num_failures"]}
    assert not failures, f"failed requests: {failures}\n{report}"
    sent = {k: s["num_requests"] for k, s in by_name.items()}
    for key in [("POST", "REST classifier (JSON)"), ("POST", "REST identity (binary 64 KiB)"),
                ("grpc", "gRPC classifier")]:
        assert sent.get(key, 0) >= 10, f"{key} sent {sent.get(key, 0)} requests: {sent}"

    # The CSV (written on locust's own schedule, so its counts may trail the JSON's) agrees:
    # no failures in the aggregated row, no rows in the failures and exceptions files.
    with open(tmp_path / "run_stats.csv", newline="") as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    assert int(rows["Aggregated"]["Failure Count"]) == 0, rows["Aggregated"]
    assert 0 < int(rows["Aggregated"]["Request Count"]) <= sum(sent.values())
    with open(tmp_path / "run_failures.csv", newline="") as f:
        assert list(csv.DictReader(f)) == []
    with open(tmp_path / "run_exceptions.csv", newline="") as f:
        assert list(csv.DictReader(f)) == []


def test_locust_canary_shape_starts_a_rollout(demo: Demo, tmp_path: Path) -> None:
    """The canary shape starts a rollout through the admin API with the token from the env."""
    m = re.search(r"token in (\S+admin-token)", demo.text())
    assert m, demo.text()
    token = Path(m.group(1)).read_text().strip()
    run = _locust(demo, tmp_path, "-u", "4", "-r", "4", "-t", "4s", "--shape", "canary",
                  env={"SERVEGATE_ADMIN_TOKEN": token,
                       "SERVEGATE_ROLLOUT": json.dumps({"canary": "canary", "steps": [20, 100],
                                                        "interval_s": 600})})
    report = f"exit {run.returncode}\nstdout:\n{run.stdout[-3000:]}\nstderr:\n{run.stderr[-3000:]}"
    assert run.returncode == 0, report
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert sum(s["num_requests"] for s in stats) > 0, report
    assert not [s for s in stats if s["num_failures"]], report

    status, _ = http_get(demo.url + "/admin/models/classifier/rollout")
    assert status in (401, 403), "the admin API must want the token"
    req = urllib.request.Request(demo.url + "/admin/models/classifier/rollout",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        rollout = json.loads(r.read())
    assert rollout["canary"] == "canary" and rollout["status"] == "running", rollout
    assert list(rollout["spec"]["steps"]) == [20, 100], rollout
    # Leave the demo as it was for any later test: abort the rollout.
    abort = urllib.request.Request(demo.url + "/admin/models/classifier/rollout/abort",
                                   method="POST", data=b"{}",
                                   headers={"Authorization": f"Bearer {token}",
                                            "Content-Type": "application/json"})
    with contextlib.suppress(OSError):
        urllib.request.urlopen(abort, timeout=5).close()


def test_locust_shapes_plan(tmp_path: Path) -> None:
    """Each shape's plan over time (in a subprocess: importing locust monkey-patches gevent)."""
    probe = tmp_path / "probe.py"
    probe.write_text(f"""
import json, os, sys
os.environ["SERVEGATE_IDLE_S"] = "30"
sys.argv = ["locust", "--shape", "spike"]
sys.path.insert(0, {str(LOCUSTFILE.parent)!r})
import locustfile as lf
t = [0, 10, 39, 40, 59, 60, 99, 100, 129, 130, 200]
print(json.dumps({{
    "selected": lf.SelectedShape.__name__,
    "abstract": [c.abstract for c in (lf.SteadyShape, lf.SpikeShape, lf.BurstShape,
                                      lf.CanaryShape)],
    **{{name: [cls.plan(x, 10, 5.0, 100.0) for x in t]
       for name, cls in [("steady", lf.SteadyShape), ("spike", lf.SpikeShape),
                         ("burst", lf.BurstShape), ("canary", lf.CanaryShape)]}},
}}))
""")
    run = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert run.returncode == 0, run.stderr
    plans = json.loads(run.stdout.strip().splitlines()[-1])
    assert plans["selected"] == "SpikeShapeSelected"
    assert plans["abstract"] == [True] * 4  # only the selected shape is concrete
    # t:          0        10       39       40        59        60       99       100   ...
    assert [p and p[0] for p in plans["steady"]] == [10] * 7 + [None] * 4
    assert [p and p[0] for p in plans["spike"]] == [10, 10, 10, 100, 100, 10, 10] + [None] * 4
    assert [p and p[0] for p in plans["burst"]] == [0, 0, 10, 10, 10, 10, 10, 10, 10, None,
                                                    None]
    canary = [p and p[0] for p in plans["canary"]]
    assert canary[0] == 1 and canary[6] == 10 and canary[7] is None
    assert canary[:7] == sorted(canary[:7])  # ramps up
