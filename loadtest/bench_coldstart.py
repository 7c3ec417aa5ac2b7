#!/usr/bin/env python3
"""Cold-start benchmark: what scale-from-zero costs a client beyond the backend's own start.

One gateway and one autoscaler (local actuator: real Triton processes) on this machine, a pool
``cold`` at zero serving ``cold-classifier``. For each of ``--rounds`` cold starts a burst of
``--burst`` concurrent requests arrives at a pool at zero; the benchmark records, per round:

- queued:        first request sent -> the gateway holds it (activation sent);
- backend start: activation -> the replica is READY (seen on the autoscaler's endpoint list,
                 polled every 5 ms);
- added latency: each response's arrival minus the READY time (what the buffer and the
                 release add on top of the backend start: discovery, probes, FIFO release,
                 the request itself);
- lost:          requests not answered 200.
Then it waits for the pool to return to zero and starts the next round.

    .venv/bin/python loadtest/bench_coldstart.py --rounds 20 --burst 20
Writes ``loadtest/results/coldstart.json``.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from servegate.local.launch import free_port

BODY = json.dumps({"inputs": [{"name": "INPUT", "shape": [1, 16], "datatype": "FP32",
                               "data": [0.5] * 16}]}).encode()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def _wait(pred: Any, timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(every)


def _config(http_port: int, status_port: int, grace_s: float) -> dict[str, Any]:
    return {
        "pools": {"cold": {
            "discovery": {"type": "local", "url": f"http://127.0.0.1:{status_port}"},
            "cold_start": {"enabled": True, "max_wait_s": 120},
        }},
        "models": {"cold-classifier": {"pool": "cold"}},
        "autoscaling": {
            "signals": {"gateways": [f"http://127.0.0.1:{http_port}"],
                        "scrape_interval_s": 0.5},
            "pools": {"cold": {"min_replicas": 0, "max_replicas": 1,
                               "targets": {"rate_per_replica": 500},
                               "scale_to_zero_grace_s": grace_s, "stable_window_s": 2,
                               "panic_window_s": 1,
                               "local": {"models": ["cold-classifier"]}}},
            "controller": {"tick_s": 0.25},
        },
    }


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def one_round(gw: str, status: str, burst: int) -> dict[str, Any]:
    ready_at: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            code, body = _get(f"{status}/pools/cold/endpoints")
            if code == 200 and json.loads(body)["endpoints"]:
                ready_at.append(time.monotonic())
                return
            time.sleep(0.005)

    def call(_: int) -> tuple[int, float]:
        req = urllib.request.Request(f"{gw}/v2/models/cold-classifier/infer", data=BODY,
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=180) as r:
                r.read()
                return r.status, time.monotonic()
        except urllib.error.HTTPError as e:
            return e.code, time.monotonic()
        except OSError:
            return 0, time.monotonic()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t0 = time.monotonic()
    with ThreadPoolExecutor(burst) as ex:
        results = list(ex.map(call, range(burst)))
    stop.set()
    watcher.join(5)
    ok = [t for s, t in results if s == 200]
    ready = ready_at[0] if ready_at else float("nan")
    return {"backend_start_s": ready - t0, "added_ms": [(t - ready) * 1000 for t in ok],
            "lost": burst - len(ok), "total_s": max(t for _, t in results) - t0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--burst", type=int, default=20)
    p.add_argument("--grace-s", type=float, default=3.0)
    p.add_argument("--out", default="loadtest/results/coldstart.json")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-coldstart-"))
    http_port, status_port = free_port(), free_port()
    cfg_path = work / "servegate.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(http_port, status_port, args.grace_s),
                                       sort_keys=False))
    gw_url, status_url = f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{status_port}"
    gateway = _spawn([sys.executable, "-m", "servegate.cli", "gateway", "--config", str(cfg_path),
                      "--host", "127.0.0.1", "--http-port", str(http_port), "--grpc-port", "0",
                      "--autoscaler-url", status_url, "--log-level", "warning"],
                     work / "gateway.log")
    scaler = _spawn([sys.executable, "-m", "servegate.cli", "autoscaler", "--config",
                     str(cfg_path), "--actuator", "local", "--host", "127.0.0.1",
                     "--status-port", str(status_port)], work / "autoscaler.log")
    rounds = []
    try:
        _wait(lambda: _get(f"{gw_url}/v2/health/ready")[0] == 200, 30, "gateway")
        _wait(lambda: _get(f"{status_url}/status")[0] == 200, 30, "autoscaler")
        for i in range(args.rounds):
            r = one_round(gw_url, status_url, args.burst)
            rounds.append(r)
            print(f"round {i + 1:2d}: backend start {r['backend_start_s']:.2f}s, added "
                  f"p50 {statistics.median(r['added_ms']):.1f} ms, max "
                  f"{max(r['added_ms']):.1f} ms, lost {r['lost']}", flush=True)
            _wait(lambda: json.loads(_get(f"{status_url}/pools/cold/endpoints")[1] or b'{}'
                                     ).get("endpoints") == [], 120, "scale to zero", 0.2)
            time.sleep(0.5)  # let the gateway's discovery see the empty pool
    finally:
        _stop(gateway)
        _stop(scaler)
    added = sorted(a for r in rounds for a in r["added_ms"])
    p99 = added[min(len(added) - 1, int(0.99 * len(added)))] if added else float("nan")
    summary = {
        "rounds": len(rounds), "burst": args.burst,
        "lost": sum(r["lost"] for r in rounds),
        "backend_start_s_median": statistics.median(r["backend_start_s"] for r in rounds),
        "added_ms_p50": statistics.median(added) if added else None, "added_ms_p99": p99,
        "added_ms_max": max(added) if added else None,
    }
    print(json.dumps(summary, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "rounds": rounds}, indent=1))
    return 0 if summary["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
