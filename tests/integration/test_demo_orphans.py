"""``servegate demo`` killed with SIGKILL (an OOM kill, a crashed terminal, CI timing out)
leaves nothing behind: its Triton workers and their tritonservers, the gateway and the
autoscaler all get the kernel's parent-death signal and exit, freeing their ports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from servegate.local.launch import free_port
from tests.harness import http_get, wait_for
from tests.integration.test_autoscaler_local import alive, command

pytestmark = pytest.mark.integration


def test_sigkilled_demo_leaves_no_process(tmp_path: Path) -> None:
    http, grpc, status, keda = free_port(), free_port(), free_port(), free_port()
    log = open(tmp_path / "demo.log", "wb")  # noqa: SIM115 - closed below
    demo = subprocess.Popen(
        [sys.executable, "-m", "servegate.cli", "demo", "--http-port", str(http),
         "--grpc-port", str(grpc), "--autoscaler-port", str(status), "--keda-port", str(keda),
         "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    descendants: list[psutil.Process] = []
    try:
        def up() -> bool:
            assert demo.poll() is None, (tmp_path / "demo.log").read_text()[-3000:]
            return (http_get(f"http://127.0.0.1:{http}/v2/health/ready")[0] == 200
                    and http_get(f"http://127.0.0.1:{status}/status")[0] == 200)

        wait_for(up, 240, "the demo's gateway and autoscaler", every=0.5)
        descendants = psutil.Process(demo.pid).children(recursive=True)
        names = " ".join(command(p) for p in descendants)
        for part in ("tritonserver", "servegate.local.triton_worker", "servegate.cli gateway",
                     "servegate.cli autoscaler"):
            assert part in names, (part, names)
        demo.kill()
        demo.wait(10)
        wait_for(lambda: not alive(descendants), 10, "every process the demo started to exit")
    finally:
        if demo.poll() is None:  # failed before the kill: leave nothing behind either way
            descendants += psutil.Process(demo.pid).children(recursive=True)
            demo.kill()
        for p in alive(descendants):
            p.kill()
        log.close()

