"""The simulator: pool model, traces, baselines, and ``servegate simulate`` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autoscaler.errors import TraceError
from autoscaler.simulate import traces
from autoscaler.simulate.baselines import HpaLike, KpaLike, Oracle
from autoscaler.simulate.model import LatencyView, SecondStats, Trace, simulate
from autoscaler.simulate.profile import BUILTIN_TRACES, PoolProfile
from servegate.cli import main as servegate

PROFILE = PoolProfile()  # 160 req/s per replica with full batches


class Fixed:
    """A policy that always wants ``n`` replicas (and records what it was shown)."""

    name = "fixed"
    interval_s = 1.0
    wakes_on_arrival = False

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen: list[SecondStats] = []

    def observe(self, stats: SecondStats) -> None:
        self.seen.append(stats)

    def decide(self, now: float, ready: int, current: int, latency: LatencyView) -> int:
        return self.n


def steady(rate: float, seconds: int = 120) -> Trace:
    return traces.from_rate("steady", np.full(round(seconds / traces.DT), rate))


# --------------------------------------------------------------------------------------------
# the pool model
# --------------------------------------------------------------------------------------------

def test_enough_replicas_meet_the_slo_and_cost_what_they_run() -> None:
    policy = Fixed(3)
    r = simulate(steady(240.0), PROFILE, policy, 3)
    assert r.violation.sum() == 0 and r.timed_out == 0
    assert r.replica_s == pytest.approx(3 * len(r.replicas), rel=1e-6)
    assert r.max_replicas == 3 and r.scale_events == 0
    mid = policy.seen[60]
    assert mid.arrivals == pytest.approx(240, rel=0.2)
    assert 0 < mid.concurrency < 3 * PROFILE.concurrency and mid.busy <= 1.0
    assert np.nanmax(r.p99[:100]) < PROFILE.slo_p99_s


def test_dynamic_batching_serves_more_per_replica_under_load() -> None:
    light, heavy = Fixed(2), Fixed(2)
    simulate(steady(100.0, 60), PROFILE, light, 2)
    simulate(steady(300.0, 60), PROFILE, heavy, 2)
    # the queue stays about a batch per instance while capacity keeps up
    assert light.seen[30].queued < heavy.seen[30].queued < 2 * PROFILE.max_batch


def test_overload_violates_and_zero_replicas_time_everything_out() -> None:
    over = simulate(steady(400.0, 60), PROFILE, Fixed(1), 1)  # 2.5x one replica
    assert over.violation.sum() > 40
    nothing = simulate(steady(50.0, 20), PROFILE, Fixed(0), 0)
    assert nothing.timed_out == pytest.approx(50 * 20, rel=0.2)
    assert nothing.violation[:20].all() and nothing.replica_s == 0


def test_cold_start_delays_the_first_requests_by_the_startup() -> None:
    r = simulate(steady(50.0, 60), PROFILE, Fixed(1), 0)
    assert r.p99[0] >= PROFILE.startup_s - 1
    assert r.violation[:15].all() and not r.violation[35:55].any()  # backlog drained by ~31 s
    assert r.scale_events == 1 and r.replica_s == pytest.approx(len(r.replicas) - 1, abs=1)


# --------------------------------------------------------------------------------------------
# traces
# --------------------------------------------------------------------------------------------

def test_builtin_traces_are_reproducible_and_shaped_as_documented() -> None:
    assert tuple(traces.BUILTIN) == BUILTIN_TRACES
    a, b = traces.step(), traces.step()
    assert np.array_equal(a.arrivals, b.arrivals)
    per_s = a.per_second()
    assert a.seconds == 1200
    assert per_s[100:290].mean() == pytest.approx(240, rel=0.05)
    assert per_s[310:590].mean() == pytest.approx(2400, rel=0.05)
    sporadic = traces.sporadic().per_second()
    assert (sporadic == 0).mean() > 0.5  # mostly idle
    assert traces.bursty().per_second().max() > 1000


def test_csv_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("timestamp,extra\n# a comment\n\n100.0,x\n100.02\n101.5\n100.01\n")
    trace = traces.from_csv(path)
    assert trace.name == "t" and trace.arrivals.sum() == 4
    assert trace.per_second().tolist() == [3, 1]


@pytest.mark.parametrize(("text", "match"), [
    ("", "no timestamps"), ("1.0\nabc\n", ":2: not a timestamp"), ("1\ninf\n", "finite"),
])
def test_bad_csv(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(TraceError, match=match):
        traces.from_csv(path)
    with pytest.raises(TraceError, match="cannot read"):
        traces.from_csv(tmp_path / "missing.csv")


# --------------------------------------------------------------------------------------------
# the baselines keep their upstream defaults
# --------------------------------------------------------------------------------------------

class NoLatency:
    def p99(self, now: float, window_s: float) -> float | None:
        return None


def second(t: float, arrivals: float = 0.0, concurrency: float = 0.0) -> SecondStats:
    return SecondStats(t, arrivals, concurrency, 0.0, 0.0, 0, 0)


def test_hpa_scale_up_rate_and_down_stabilization() -> None:
    hpa = HpaLike(PROFILE)
    hpa.observe(second(15.0, arrivals=10_000.0))
    assert hpa.decide(15.0, 2, 2, NoLatency()) == 6       # max(2 + 4 pods, 2 x 100%)
    assert hpa.decide(30.0, 2, 6, NoLatency()) == 12      # ready 2, 4 starting count as 0
    hpa.observe(second(45.0, arrivals=100.0))
    assert hpa.decide(45.0, 12, 12, NoLatency()) == 12     # 300 s down-stabilization
    assert hpa.decide(329.0, 12, 12, NoLatency()) == 12    # the high one at 30 s still counts
    assert hpa.decide(331.0, 12, 12, NoLatency()) == 1     # then 100% down at once, min 1


def test_hpa_tolerance() -> None:
    hpa = HpaLike(PROFILE)
    hpa.observe(second(15.0, arrivals=4 * hpa.target * 1.08))
    assert hpa.decide(15.0, 4, 4, NoLatency()) == 4


def test_kpa_panics_holds_and_scales_to_zero_after_window_and_grace() -> None:
    kpa = KpaLike(PROFILE)
    target = kpa.target

    def feed(start: int, end: int, concurrency: float) -> None:
        for t in range(start, end):
            kpa.observe(second(float(t), concurrency=concurrency))

    feed(1, 61, target)
    assert kpa.decide(60.0, 1, 1, NoLatency()) == 1
    feed(61, 64, 20 * target)
    panicked = kpa.decide(64.0, 1, 1, NoLatency())
    assert panicked >= 9 and kpa.panic_time == 64.0
    feed(64, 101, 0.0)
    assert kpa.decide(100.0, panicked, panicked, NoLatency()) == panicked  # no scale-down
    feed(101, 171, 0.0)
    assert kpa.decide(170.0, panicked, panicked, NoLatency()) == panicked // 2  # max down 2x
    feed(171, 241, 0.0)
    assert kpa.decide(240.0, 1, 1, NoLatency()) == 1   # wants 0: inactive, waits the grace
    feed(241, 272, 0.0)
    assert kpa.decide(271.0, 1, 1, NoLatency()) == 0


def test_oracle_starts_replicas_a_startup_ahead() -> None:
    per_second = np.zeros(100, dtype=np.int64)
    per_second[50:60] = 300
    oracle = Oracle(PROFILE, per_second, rate_per_replica=112.0)
    assert oracle.initial() == 0
    assert oracle.decide(20.0, 0, 0, NoLatency()) == 0
    assert oracle.decide(30.0, 0, 0, NoLatency()) == 3   # 20 s before the burst
    assert oracle.decide(61.0, 3, 3, NoLatency()) == 0


# --------------------------------------------------------------------------------------------
# servegate simulate
# --------------------------------------------------------------------------------------------

@pytest.fixture()
def short_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    times = np.sort(np.concatenate([rng.uniform(0, 60, 3000), rng.uniform(60, 90, 9000)]))
    path = tmp_path / "short.csv"
    path.write_text("\n".join(f"{t:.4f}" for t in times) + "\n")
    return path


def test_servegate_simulate_writes_the_json_contract(short_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "servegate.cli", "simulate", "--trace-csv", str(short_csv),
         "--json", str(out), "--startup-s", "10"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert list(doc) == ["traces"]
    assert list(doc["traces"]) == ["short"]
    assert list(doc["traces"]["short"]) == ["servegate", "hpa", "kpa", "oracle"]
    for scores in doc["traces"]["short"].values():
        assert list(scores) == ["slo_violation_s", "timed_out", "replica_s", "scale_events",
                                "max_replicas"]
        assert all(isinstance(v, int) and v >= 0 for v in scores.values())
    assert "== trace short" in proc.stdout and "servegate" in proc.stdout


def test_plots_need_matplotlib(short_csv: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code = servegate(["simulate", "--trace-csv", str(short_csv), "--plots", str(tmp_path)])
    assert code == 2
    assert "--plots needs matplotlib" in capsys.readouterr().err


def test_plot_is_written(short_csv: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    assert servegate(["simulate", "--trace-csv", str(short_csv),
                      "--plots", str(tmp_path / "plots")]) == 0
    png = tmp_path / "plots" / "short.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        servegate(["simulate", "--trace", "nope"])
    assert info.value.code == 2
    assert servegate(["simulate", "--trace-csv", str(tmp_path / "x.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err
    csv = tmp_path / "ok.csv"
    csv.write_text("0\n1\n")
    assert servegate(["simulate", "--trace-csv", str(csv), "--max-batch", "0"]) == 2
