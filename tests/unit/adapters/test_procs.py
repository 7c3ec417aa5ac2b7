"""adapters.procs: the parent-death signal is armed only where it means the process (the main
thread), and watch_parent notices a parent that died however it died."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import psutil

from adapters import procs
from adapters.procs import die_with_parent
from tests.harness import wait_for


def test_armed_on_the_main_thread_only() -> None:
    assert callable(die_with_parent())
    seen: list[object] = []
    t = threading.Thread(target=lambda: seen.append(die_with_parent()))
    t.start()
    t.join()
    assert seen == [None]


def test_a_child_with_the_death_signal_dies_with_its_parent(tmp_path: Path) -> None:
    """A middle process starts a sleeper with die_with_parent and is SIGKILLed."""
    pid_file = tmp_path / "child.pid"
    middle = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import subprocess, sys, time
        from adapters.procs import die_with_parent
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                 preexec_fn=die_with_parent())
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(60)
    """)])
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), 20, "the child's pid")
        child = psutil.Process(int(pid_file.read_text()))
        middle.kill()
        middle.wait(5)
        wait_for(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE,
                 5, "the child to get its parent-death signal")
    finally:
        middle.kill()


def test_watch_parent_notices_the_parent_exit(tmp_path: Path) -> None:
    """A grandchild started from a thread (no death signal) still stops, by watching."""
    marker, pid_file = tmp_path / "orphaned", tmp_path / "child.pid"
    child_code = textwrap.dedent(f"""
        import os, time
        from adapters.procs import watch_parent
        watch_parent(lambda: open({str(marker)!r}, "w").write("yes"), every_s=0.05)
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        time.sleep(30)
    """)
    middle = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import subprocess, sys, threading, time
        argv = [sys.executable, "-c", {child_code!r}]
        t = threading.Thread(target=subprocess.Popen, args=(argv,))
        t.start(); t.join()
        time.sleep(60)
    """)])
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), 20, "the child's pid")
        assert not marker.exists()
        middle.kill()
        middle.wait(5)
        wait_for(marker.exists, 5, "the child to notice its parent is gone")
    finally:
        middle.kill()
        if pid_file.exists() and pid_file.read_text():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    """Outgoing connections take their source ports from the ephemeral range; a port handed
    out there could be taken before its server binds it (seen: the demo's autoscaler)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [procs.free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(p < low for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))
