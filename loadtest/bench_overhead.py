#!/usr/bin/env python3
"""Overhead benchmark: what the servegate gateway costs compared with calling Triton directly.

What it measures
    One Triton worker (the demo ``classifier`` and ``identity`` models) is started once. The
    same load generator, ``wrk`` (closed loop: N keep-alive connections, each sending its next
    request as soon as the previous answer arrives), then drives, cell by cell:

    * ``direct``  - Triton itself (the baseline);
    * ``gateway`` - the servegate gateway in front of that same Triton;
    * ``nginx``   - nginx as a reverse proxy in front of it (upstream keepalive, HTTP/1.1), a
      reference for what a proxy written in C costs; only when ``nginx`` is installed;
    * ``haproxy`` - likewise, when ``haproxy`` is installed.

    Bodies: ``small`` is a JSON request to ``classifier`` (16 FP32 numbers); ``binary`` is a
    64 KiB FP32 tensor for ``identity`` sent with Triton's binary tensor extension, with the
    output asked for in binary too. For each (body, concurrency) the targets run back to back
    (interleaved), each with a warm-up run whose numbers are discarded. ``--repeat N`` runs every
    cell N times and reports the median of each metric.

    Per cell: requests/s, p50 and p99 latency (wrk's ``--latency`` distribution), and for every
    proxy the throughput ratio against direct and the latency it adds at p50 and p99. For the
    gateway, nginx and haproxy the CPU time (user + system, from psutil, summed over the
    process and its descendants) used during the measured run is divided by the number of
    requests wrk completed: microseconds of CPU per request and CPU-seconds per 1,000 requests.

    Everything (wrk, Triton, the proxies) shares one machine, so absolute numbers depend on the
    core count; the ratios and the CPU cost per request are the comparable figures.

Usage
    .venv/bin/python loadtest/bench_overhead.py                      # or: make bench
    .venv/bin/python loadtest/bench_overhead.py --duration 3 --targets direct,nginx
    .venv/bin/python loadtest/bench_overhead.py --repeat 3 --concurrency 16,64 --bodies binary

Results: a table on stdout and JSON in ``--out`` (default ``loadtest/results/overhead.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from servegate.local.launch import TritonProcess, free_port, start_triton

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "loadtest" / "results" / "overhead.json"
PROXIES = ("gateway", "nginx", "haproxy")
ALL_TARGETS = ("direct", *PROXIES)
BINARY_ELEMENTS = 16384  # FP32 -> 64 KiB
READY_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------- request bodies


@dataclass(frozen=True)
class Body:
    """One request shape: the model path, the raw bytes and the headers wrk sends."""

    name: str
    path: str
    payload: bytes
    headers: dict[str, str]


def small_body() -> Body:
    rng = np.random.default_rng(16)
    data = [round(float(x), 4) for x in rng.normal(0, 1, 16)]
    doc = {"inputs": [{"name": "INPUT", "shape": [1, 16], "datatype": "FP32", "data": data}]}
    return Body(
        "small", "/v2/models/classifier/infer",
        json.dumps(doc, separators=(",", ":")).encode(), {"Content-Type": "application/json"},
    )


def binary_body() -> Body:
    raw = np.random.default_rng(64).normal(0, 1, BINARY_ELEMENTS).astype("<f4").tobytes()
    header = {
        "inputs": [{
            "name": "DATA", "shape": [1, BINARY_ELEMENTS], "datatype": "FP32",
            "parameters": {"binary_data_size": len(raw)},
        }],
        "outputs": [{"name": "OUTPUT", "parameters": {"binary_data": True}}],
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    return Body(
        "binary", "/v2/models/identity/infer", head + raw,
        {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(head)),
        },
    )


BODIES: dict[str, Callable[[], Body]] = {"small": small_body, "binary": binary_body}


def write_wrk_script(body: Body, workdir: Path) -> Path:
    """A wrk Lua script that POSTs ``body`` (read from a file, so binary bytes survive)."""
    data = workdir / f"{body.name}.body"
    data.write_bytes(body.payload)
    lines = [
        f"local f = assert(io.open({json.dumps(str(data))}, 'rb'))",
        "wrk.method = 'POST'",
        "wrk.body = f:read('*a')",
        "f:close()",
        *(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in body.headers.items()),
    ]
    script = workdir / f"{body.name}.lua"
    script.write_text("\n".join(lines) + "\n")
    return script


def verify(address: str, body: Body) -> None:
    """POST ``body`` once; raise unless the answer is 200 with a plausible response."""
    req = urllib.request.Request(
        f"http://{address}{body.path}", data=body.payload, headers=body.headers, method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, content = resp.status, resp.read()
            header_len = resp.headers.get("Inference-Header-Content-Length")
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:500].decode(errors="replace")
        raise RuntimeError(f"{address}{body.path}: HTTP {exc.code}: {detail}") from exc
    if status != 200:
        raise RuntimeError(f"{address}{body.path}: HTTP {status}")
    if body.name == "binary":
        expected = BINARY_ELEMENTS * 4
        if header_len is None or len(content) - int(header_len) != expected:
            raise RuntimeError(
                f"{address}{body.path}: expected a binary OUTPUT of {expected} bytes, got "
                f"{len(content)} bytes with Inference-Header-Content-Length={header_len}"
            )


# --------------------------------------------------------------------------- readiness


def wait_until(check: Callable[[], bool], what: str, timeout: float = READY_TIMEOUT_S,
               alive: Callable[[], bool] = lambda: True) -> None:
    """Poll ``check`` until it is true; raise on the deadline or if ``alive`` turns false."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{what}: process exited before it was ready")
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not ready after {timeout:.0f}s")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


# --------------------------------------------------------------------------- targets


@dataclass
class Target:
    """Something wrk can load: an address and, for proxies, the process whose CPU we count."""

    name: str
    address: str
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def cpu_seconds(self) -> float:
        """User + system CPU of the process and its live descendants (0 for ``direct``)."""
        if self.proc is None:
            return 0.0
        root = psutil.Process(self.proc.pid)
        total = 0.0
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def log_tail(self, lines: int = 40) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def spawn(name: str, cmd: Sequence[str], workdir: Path, port: int) -> Target:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=REPO,
        )
    return Target(name, f"127.0.0.1:{port}", proc, log)


def wait_ready(target: Target, url: str) -> None:
    assert target.proc is not None
    proc = target.proc
    try:
        wait_until(lambda: http_ok(url), f"{target.name} ({url})",
                   alive=lambda: proc.poll() is None)
    except RuntimeError as exc:
        target.stop()
        raise RuntimeError(f"{exc}\n--- {target.name} log ---\n{target.log_tail()}") from None


def gateway_config(triton: str, workdir: Path) -> Path:
    path = workdir / "gateway.yaml"
    path.write_text(
        "pools:\n"
        "  bench:\n"
        f'    endpoints: ["{triton}"]\n'
        "models:\n"
        "  classifier: {pool: bench}\n"
        "  identity: {pool: bench}\n"
    )
    return path


def start_gateway(triton: str, workdir: Path, args: argparse.Namespace) -> Target:
    port = free_port()
    config = gateway_config(triton, workdir)
    if args.gateway_cmd:
        fmt = {"config": config, "port": port, "triton": triton, "python": sys.executable}
        cmd = [part.format(**fmt) for part in shlex.split(args.gateway_cmd)]
    else:
        cmd = [
            sys.executable, "-m", "servegate.cli", "gateway", "--config", str(config),
            "--host", "127.0.0.1", "--http-port", str(port), "--grpc-port", "0",
            *args.gateway_arg,
        ]
    target = spawn("gateway", cmd, workdir, port)
    wait_ready(target, f"http://{target.address}/v2/health/ready")
    return target


NGINX_CONF = """\
{user}worker_processes {workers};
pid nginx.pid;
error_log error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    client_max_body_size 0;
    client_body_buffer_size 256k;
    proxy_buffer_size 16k;
    proxy_buffers 16 16k;
    keepalive_requests 1000000;
    upstream triton {{
        server {triton};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://triton;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def start_nginx(triton: str, workdir: Path, workers: int) -> Target:
    prefix = workdir / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    port = free_port()
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach the temp dirs
    conf = NGINX_CONF.format(user=user, workers=workers, triton=triton, port=port)
    (prefix / "nginx.conf").write_text(conf)
    binary = shutil.which("nginx") or "nginx"
    cmd = [binary, "-p", f"{prefix}/", "-e", "error.log", "-c", "nginx.conf",
           "-g", "daemon off;"]
    target = spawn("nginx", cmd, workdir, port)
    target.log = prefix / "error.log"
    wait_ready(target, f"http://{target.address}/v2/health/ready")
    return target


HAPROXY_CFG = """\
global
    nbthread {threads}
    maxconn 8192
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend bench
    bind 127.0.0.1:{port}
    default_backend triton
backend triton
    server triton {triton}
"""


def start_haproxy(triton: str, workdir: Path, threads: int) -> Target:
    port = free_port()
    cfg = workdir / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(threads=threads, port=port, triton=triton))
    binary = shutil.which("haproxy") or "haproxy"
    target = spawn("haproxy", [binary, "-f", str(cfg), "-db"], workdir, port)
    wait_ready(target, f"http://{target.address}/v2/health/ready")
    return target


# --------------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    raw: str = field(repr=False, default="")


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _to_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if m is None:
        raise ValueError(f"unparseable wrk latency {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Requests/s, p50, p99, completed requests and errors from ``wrk --latency`` output."""
    pct = {p: _to_ms(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", output, re.M)}
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    total = re.search(r"^\s+(\d+) requests in ", output, re.M)
    if rps is None or total is None or "50" not in pct or "99" not in pct:
        raise ValueError(f"could not parse wrk output:\n{output}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors += int(non2xx.group(1)) if non2xx else 0
    return WrkResult(float(rps.group(1)), pct["50"], pct["99"], int(total.group(1)), errors,
                     output)


def run_wrk(url: str, script: Path, connections: int, threads: int, seconds: float) -> WrkResult:
    cmd = [
        "wrk", "--latency", "-t", str(min(threads, connections)), "-c", str(connections),
        "-d", f"{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(script), url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return parse_wrk(proc.stdout)


# --------------------------------------------------------------------------- cells


@dataclass
class Measurement:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_s: float | None

    @property
    def cpu_us_per_req(self) -> float | None:
        if self.cpu_s is None or self.requests == 0:
            return None
        return self.cpu_s / self.requests * 1e6


def measure(target: Target, body: Body, script: Path, connections: int,
            args: argparse.Namespace) -> Measurement:
    url = f"http://{target.address}{body.path}"
    if args.warmup > 0:
        run_wrk(url, script, connections, args.threads, args.warmup)
    cpu0 = target.cpu_seconds()
    res = run_wrk(url, script, connections, args.threads, args.duration)
    cpu = target.cpu_seconds() - cpu0 if target.proc is not None else None
    if res.errors:
        print(f"  WARNING {target.name}/{body.name}/c{connections}: {res.errors} errors",
              file=sys.stderr)
    return Measurement(res.rps, res.p50_ms, res.p99_ms, res.requests, res.errors, cpu)


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(runs: Sequence[Measurement], base: dict[str, Any] | None) -> dict[str, Any]:
    """Median over repeats; for proxies, also the comparison with the direct baseline."""
    out: dict[str, Any] = {
        "rps": _median([r.rps for r in runs]),
        "p50_ms": _median([r.p50_ms for r in runs]),
        "p99_ms": _median([r.p99_ms for r in runs]),
        "requests": sum(r.requests for r in runs),
        "errors": sum(r.errors for r in runs),
        "runs": [{**asdict(r), "cpu_us_per_req": r.cpu_us_per_req} for r in runs],
    }
    if base is None:
        return out
    cpu_us = _median([r.cpu_us_per_req for r in runs])
    out.update(
        throughput_ratio=out["rps"] / base["rps"] if base["rps"] else None,
        added_p50_ms=out["p50_ms"] - base["p50_ms"],
        added_p99_ms=out["p99_ms"] - base["p99_ms"],
        cpu_us_per_req=cpu_us,
        cpu_s_per_1k_req=cpu_us / 1000 if cpu_us is not None else None,
    )
    return out


@contextlib.contextmanager
def explained(target: Target, what: str) -> Iterator[None]:
    """Re-raise a failure with the target's state and the tail of its log."""
    try:
        yield
    except RuntimeError as exc:
        state = "" if target.proc is None or target.proc.poll() is None else (
            f" (process exited with {target.proc.returncode})")
        log = target.log_tail()
        raise RuntimeError(
            f"{target.name}{state} failed {what}: {exc}"
            + (f"\n--- {target.name} log ---\n{log}" if log else "")
        ) from None


def run_cells(targets: Sequence[Target], args: argparse.Namespace,
              workdir: Path) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = []
    for body_name in args.bodies:
        body = BODIES[body_name]()
        script = write_wrk_script(body, workdir)
        for target in targets:
            with explained(target, f"the {body_name} check"):
                verify(target.address, body)
        for conc in args.concurrency:
            runs: dict[str, list[Measurement]] = {t.name: [] for t in targets}
            for rep in range(args.repeat):
                for target in targets:
                    print(f"  {body_name:6} c={conc:<3} rep {rep + 1}/{args.repeat} "
                          f"{target.name:8}", end="", flush=True)
                    with explained(target, f"{body_name} c={conc}"):
                        m = measure(target, body, script, conc, args)
                    print(f" {m.rps:9.0f} req/s  p50 {m.p50_ms:7.2f} ms  p99 {m.p99_ms:7.2f} ms")
                    runs[target.name].append(m)
            direct = summarize(runs["direct"], None)
            cell: dict[str, Any] = {"body": body_name, "concurrency": conc, "direct": direct}
            for t in targets[1:]:
                cell[t.name] = summarize(runs[t.name], direct)
            cells.append(cell)
    return cells


# --------------------------------------------------------------------------- report


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(cells: Sequence[dict[str, Any]], names: Sequence[str]) -> None:
    head = (f"{'body':7}{'conc':>5}  {'target':8}{'req/s':>10}{'ratio':>7}{'p50 ms':>9}"
            f"{'p99 ms':>9}{'+p50':>8}{'+p99':>8}{'CPU us/req':>12}{'CPU s/1k':>10}{'err':>6}")
    print("\n" + head + "\n" + "-" * len(head))
    for cell in cells:
        for name in names:
            r = cell[name]
            print(
                f"{cell['body']:7}{cell['concurrency']:>5}  {name:8}{r['rps']:>10.0f}"
                f"{_fmt(r.get('throughput_ratio'), '.2f'):>7}{r['p50_ms']:>9.2f}"
                f"{r['p99_ms']:>9.2f}{_fmt(r.get('added_p50_ms'), '+.2f'):>8}"
                f"{_fmt(r.get('added_p99_ms'), '+.2f'):>8}"
                f"{_fmt(r.get('cpu_us_per_req'), '.0f'):>12}"
                f"{_fmt(r.get('cpu_s_per_1k_req'), '.3f'):>10}{r['errors']:>6}"
            )
        print()


def _tool_version(cmd: Sequence[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=10)
    text = (proc.stdout + proc.stderr).strip()
    return text.splitlines()[0] if text else None


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        return None  # no commits yet, or not a checkout
    return proc.stdout.strip() or None


def metadata(args: argparse.Namespace, targets: Sequence[Target]) -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": [sys.executable, *sys.argv],
        "host": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                 "python": platform.python_version()},
        "versions": {
            "servegate": _package_version("servegate"), "git_commit": _git_commit(),
            "nvidia-pytriton": _package_version("nvidia-pytriton"),
            "wrk": _tool_version(["wrk", "-v"]), "nginx": _tool_version(["nginx", "-v"]),
            "haproxy": _tool_version(["haproxy", "-v"]),
        },
        "settings": {
            "duration_s": args.duration, "warmup_s": args.warmup, "repeat": args.repeat,
            "wrk_threads": args.threads, "concurrency": args.concurrency, "bodies": args.bodies,
            "targets": [t.name for t in targets], "nginx_workers": args.nginx_workers,
            "haproxy_threads": args.haproxy_threads, "gateway_args": args.gateway_arg,
            "gateway_cmd": args.gateway_cmd,
        },
    }


# --------------------------------------------------------------------------- main


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    return lambda text: [kind(part) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per cell")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of discarded warm-up")
    p.add_argument("--concurrency", type=_csv(int), default=[16, 64],
                   help="wrk connections, comma-separated (default 16,64)")
    p.add_argument("--bodies", type=_csv(str), default=["small", "binary"],
                   help="comma-separated subset of: small, binary")
    p.add_argument("--targets", type=_csv(str), default=None,
                   help="comma-separated subset of direct,gateway,nginx,haproxy "
                        "(default: all whose binaries are installed)")
    p.add_argument("--no-nginx", action="store_true", help="leave nginx out")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--repeat", type=int, default=1, help="runs per cell; the median is reported")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--gateway-arg", action="append", default=[],
                   help="extra argument for the gateway command line (repeatable)")
    p.add_argument("--gateway-cmd", default=None,
                   help="replace the gateway command entirely; {config}, {port}, {triton} "
                        "and {python} are substituted")
    p.add_argument("--nginx-workers", type=int, default=1)
    p.add_argument("--haproxy-threads", type=int, default=1)
    args = p.parse_args(argv)
    unknown = set(args.bodies) - set(BODIES) or set(args.targets or ()) - set(ALL_TARGETS)
    if unknown:
        p.error(f"unknown name(s): {sorted(unknown)}")
    if shutil.which("wrk") is None:
        p.error("wrk is not installed (apt-get install wrk)")
    args.targets = choose_targets(p, args)
    return args


def choose_targets(p: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    if args.targets is None:
        wanted = [t for t in ALL_TARGETS if t in ("direct", "gateway") or shutil.which(t)]
    else:
        wanted = ["direct", *(t for t in ALL_TARGETS[1:] if t in args.targets)]
    if args.no_nginx:
        wanted = [t for t in wanted if t != "nginx"]
    missing = [t for t in wanted if t in ("nginx", "haproxy") and shutil.which(t) is None]
    if missing:
        p.error(f"not installed: {missing}")
    return wanted


@contextlib.contextmanager
def running_targets(names: Sequence[str], triton: TritonProcess, workdir: Path,
                    args: argparse.Namespace) -> Iterator[list[Target]]:
    """Start every proxy in front of ``triton``; stop them all on the way out."""
    targets = [Target("direct", triton.http)]
    starters: dict[str, Callable[[], Target]] = {
        "gateway": lambda: start_gateway(triton.http, workdir, args),
        "nginx": lambda: start_nginx(triton.http, workdir, args.nginx_workers),
        "haproxy": lambda: start_haproxy(triton.http, workdir, args.haproxy_threads),
    }
    try:
        for name in names[1:]:
            print(f"starting {name} ...", flush=True)
            targets.append(starters[name]())
        yield targets
    finally:
        for t in reversed(targets):
            t.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print("starting Triton (classifier, identity) ...", flush=True)
    triton = start_triton(models=("classifier", "identity"))
    try:
        with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp, \
                running_targets(args.targets, triton, Path(tmp), args) as targets:
            meta = metadata(args, targets)
            cells = run_cells(targets, args, Path(tmp))
    finally:
        triton.stop()
    print_table(cells, args.targets)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"metadata": meta, "cells": cells}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
