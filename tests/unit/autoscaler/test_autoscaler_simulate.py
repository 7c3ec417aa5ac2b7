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
from autoscaler.simulate.baselines import (
    HpaLike,
    HpaParams,
    KedaHpa,
    KedaParams,
    KpaLike,
    KpaParams,
)
from autoscaler.simulate.fronts import FAMILIES, Point, dominates, grid, pareto
from autoscaler.simulate.model import (
    LatencyView,
    RunResult,
    SecondStats,
    Trace,
    p2c_shares,
    simulate,
)
from autoscaler.simulate.oracle import lead_s, oracle, plan_ahead
from autoscaler.simulate.paired import interval, summarize
from autoscaler.simulate.profile import BUILTIN_TRACES, PoolProfile
from autoscaler.simulate.report import dominated_by, oracle_beaten_by, verdicts
from autoscaler.simulate.runner import named_jobs, run_job
from servegate.cli import main as servegate

PROFILE = PoolProfile()  # 160 req/s per replica with full batches


class Fixed:
    """A policy that always wants ``n`` replicas (and records what it was shown)."""

    name = "fixed"
    interval_s = 1.0
    wakes_on_arrival = False
    metrics_delay_s = 0.0

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
    assert r.violation.sum() == 0 and r.timed_out == 0 and r.requests_over_slo_pct < 1e-6
    assert r.replica_s == pytest.approx(3 * len(r.replicas), rel=1e-6)
    assert r.max_replicas == 3 and r.scale_events == 0
    assert r.goodput == pytest.approx(r.requests)
    mid = policy.seen[60]
    assert mid.arrivals == pytest.approx(240, rel=0.2)
    assert 0 < mid.concurrency < 3 * PROFILE.concurrency and mid.busy <= 1.0
    assert np.nanmax(r.p99[:100]) < PROFILE.slo_p99_s


def test_latency_grows_before_capacity_is_reached() -> None:
    p99s = []
    for rate in (80.0, 240.0, 285.0):  # 25%, 75% and 89% of two replicas' full rate
        r = simulate(steady(rate, 60), PROFILE, Fixed(2), 2)
        p99s.append(float(np.nanmedian(r.p99[5:55])))
    assert p99s[0] < p99s[1] < p99s[2]


def test_overload_violates_and_zero_replicas_time_everything_out() -> None:
    over = simulate(steady(400.0, 60), PROFILE, Fixed(1), 1)  # 2.5x one replica
    assert over.violation.sum() > 40 and over.requests_over_slo_pct > 40
    nothing = simulate(steady(50.0, 20), PROFILE, Fixed(0), 0)
    assert nothing.timed_out == pytest.approx(50 * 20, rel=0.2)
    assert nothing.violation[:20].all() and nothing.replica_s == 0
    assert nothing.requests_over_slo_pct == pytest.approx(100)


def test_cold_start_delays_the_first_requests_by_the_startup() -> None:
    r = simulate(steady(50.0, 60), PROFILE, Fixed(1), 0)
    ready_at = int(np.argmax(r.ready > 0))
    assert 0.5 * PROFILE.startup_s < ready_at < 2 * PROFILE.startup_s  # drawn around 20 s
    assert r.p99[0] >= ready_at - 2
    assert r.violation[:ready_at - 2].all()
    assert not r.violation[ready_at + 15:55].any()  # the buffered backlog drains in ~10 s
    assert r.scale_events == 1 and r.replica_s == pytest.approx(len(r.replicas) - 1, abs=1)


def test_startup_times_vary_and_a_seed_repeats_them() -> None:
    readies = {int(np.argmax(simulate(steady(50.0, 80), PROFILE, Fixed(1), 0, seed=s).ready
                             > 0)) for s in range(6)}
    assert len(readies) > 2
    a = simulate(steady(50.0, 40), PROFILE, Fixed(1), 0, seed=3)
    b = simulate(steady(50.0, 40), PROFILE, Fixed(1), 0, seed=3)
    assert np.array_equal(a.ready, b.ready)


def test_power_of_two_choices_favours_empty_and_fast_replicas() -> None:
    rate = np.full(3, PROFILE.max_rate)
    even = p2c_shares(np.zeros(3), rate, 16.0)
    assert even == pytest.approx([1 / 3] * 3)
    shares = p2c_shares(np.array([0.0, 32.0, 32.0]), rate, 16.0)  # a new, empty one
    assert shares[0] > 2 * shares[1] and shares.sum() == pytest.approx(1.0)
    fast = p2c_shares(np.zeros(2), np.array([1.2, 0.8]) * PROFILE.max_rate, 16.0)
    assert fast[0] > fast[1]


def test_a_policy_sees_its_metrics_late() -> None:
    late = Fixed(2)
    late.metrics_delay_s = 15.0
    simulate(steady(200.0, 40), PROFILE, late, 2)
    first = late.seen[0]
    assert first.t == 1.0  # the first second, delivered 15 s later
    assert len(late.seen) == len(simulate(steady(200.0, 40), PROFILE, Fixed(2), 2).arrivals) - 15


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


def test_seeds_move_the_events_and_repeat() -> None:
    base = traces.step().per_second()
    moved = [traces.step(seed=s).per_second() for s in (1, 2)]
    starts = {int(np.argmax(x > 1000)) for x in [base, *moved]}
    assert len(starts) == 3  # the step starts elsewhere in every realization
    assert np.array_equal(traces.builtin("bursty", 4).arrivals,
                          traces.builtin("bursty", 4).arrivals)


def test_csv_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("timestamp,extra\n# a comment\n\n100.0,x\n100.02\n101.5\n100.01\n")
    trace = traces.from_csv(path)
    assert trace.name == "t" and trace.arrivals.sum() == 4
    assert trace.per_second().tolist() == [3, 1]


def test_csv_iso_dates_and_scale(tmp_path: Path) -> None:
    path = tmp_path / "azure.csv"
    rows = [f"2023-11-16 18:15:{s:02d}.5000000,374,44" for s in range(0, 60, 2)]
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\n")
    one = traces.from_csv(path)
    assert one.arrivals.sum() == 30 and one.seconds in (58, 59)
    many = traces.from_csv(path, scale=10, seed=1)
    assert many.arrivals.sum() == 300
    assert abs(many.seconds - one.seconds) <= 1
    assert many.per_second()[20:40].sum() == pytest.approx(100, abs=15)  # the same shape


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
# the baselines: upstream algorithms, any parameters
# --------------------------------------------------------------------------------------------

class NoLatency:
    def p99(self, now: float, window_s: float) -> float | None:
        return None


def second(t: float, arrivals: float = 0.0, concurrency: float = 0.0,
           queued: float = 0.0) -> SecondStats:
    return SecondStats(t, arrivals, concurrency, queued, 0.0, 0, 0)


def feed(policy: HpaLike | KedaHpa | KpaLike, start: int, end: int, **values: float) -> None:
    for t in range(start, end):
        policy.observe(second(float(t), **values))


def test_hpa_scale_up_rate_and_down_stabilization() -> None:
    hpa = HpaLike(PROFILE)
    feed(hpa, 1, 16, arrivals=10_000.0)
    assert hpa.decide(15.0, 2, 2, NoLatency()) == 6       # max(2 + 4 pods, 2 x 100%)
    assert hpa.decide(30.0, 2, 6, NoLatency()) == 12      # ready 2, 4 starting count as 0
    feed(hpa, 16, 46, arrivals=100.0)                     # the rate window forgets 10 000
    assert hpa.decide(45.0, 12, 12, NoLatency()) == 12     # 300 s down-stabilization
    assert hpa.decide(329.0, 12, 12, NoLatency()) == 12    # the high one at 30 s still counts
    assert hpa.decide(331.0, 12, 12, NoLatency()) == 1     # then 100% down at once, min 1


def test_hpa_averages_its_rate_window_and_can_use_the_queue() -> None:
    hpa = HpaLike(PROFILE)
    feed(hpa, 1, 16, arrivals=4 * hpa.target * 1.08)
    assert hpa.decide(15.0, 4, 4, NoLatency()) == 4       # within the 10% tolerance
    feed(hpa, 16, 31, arrivals=8 * hpa.target)            # half the 30 s window: 6x
    assert hpa.decide(30.0, 4, 4, NoLatency()) == 7
    queue = HpaLike(PROFILE, HpaParams(metric="rps+queue", stabilization_down_s=60.0))
    feed(queue, 1, 31, arrivals=hpa.target, queued=6 * queue.queue_target)
    assert queue.decide(30.0, 1, 1, NoLatency()) == 5    # +4 pods per 15 s
    rps_only = HpaLike(PROFILE, HpaParams(metric="rps"))
    feed(rps_only, 1, 31, arrivals=hpa.target, queued=6 * queue.queue_target)
    assert rps_only.decide(30.0, 1, 1, NoLatency()) == 1


def test_keda_activates_on_its_poll_and_scales_to_zero_after_the_cooldown() -> None:
    keda = KedaHpa(PROFILE, KedaParams(polling_s=30.0, cooldown_s=60.0))
    feed(keda, 1, 20, arrivals=0.0)
    assert keda.decide(20.0, 0, 0, NoLatency()) == 0
    feed(keda, 20, 29, arrivals=50.0)
    assert keda.decide(29.0, 0, 0, NoLatency()) == 0     # traffic, but KEDA polls at 30 s
    keda.observe(second(29.0, arrivals=50.0))
    assert keda.decide(30.0, 0, 0, NoLatency()) == 1
    feed(keda, 30, 61, arrivals=0.0)
    assert keda.decide(60.0, 1, 1, NoLatency()) == 1     # inactive 30 s < cooldown 60 s
    feed(keda, 61, 91, arrivals=0.0)
    assert keda.decide(90.0, 1, 1, NoLatency()) == 0


def test_kpa_panics_holds_and_scales_to_zero_after_window_and_grace() -> None:
    kpa = KpaLike(PROFILE)
    target = kpa.target
    feed(kpa, 1, 61, concurrency=target)
    assert kpa.decide(60.0, 1, 1, NoLatency()) == 1
    feed(kpa, 61, 64, concurrency=20 * target)
    panicked = kpa.decide(64.0, 1, 1, NoLatency())
    assert panicked >= 9 and kpa.panic_time == 64.0
    feed(kpa, 64, 101, concurrency=0.0)
    assert kpa.decide(100.0, panicked, panicked, NoLatency()) == panicked  # no scale-down
    feed(kpa, 101, 171, concurrency=0.0)
    assert kpa.decide(170.0, panicked, panicked, NoLatency()) == panicked // 2  # max down 2x
    feed(kpa, 171, 241, concurrency=0.0)
    assert kpa.decide(240.0, 1, 1, NoLatency()) == 1   # wants 0: inactive, waits the grace
    feed(kpa, 241, 272, concurrency=0.0)
    assert kpa.decide(271.0, 1, 1, NoLatency()) == 0


def test_kpa_on_rps_scales_on_arrivals_not_concurrency() -> None:
    kpa = KpaLike(PROFILE, KpaParams(metric="rps", stable_window_s=30.0))
    feed(kpa, 1, 31, arrivals=3 * kpa.target, concurrency=1000.0)
    assert kpa.decide(30.0, 3, 3, NoLatency()) == 3
    assert kpa.panic_window_s == pytest.approx(3.0)


# --------------------------------------------------------------------------------------------
# the oracle
# --------------------------------------------------------------------------------------------

def test_oracle_plans_replicas_a_startup_ahead_and_keeps_them_through_short_gaps() -> None:
    need = np.zeros(100, dtype=np.int64)
    need[50:60] = 3
    need[70:75] = 2
    plan = plan_ahead(need, 20, 50)
    assert plan[29] == 0 and plan[30] == 3       # 20 s before the burst
    assert plan[60:70].min() == 2                # the 10 s gap is shorter than a start-up
    assert plan[76] == 0
    assert lead_s(PROFILE) > PROFILE.startup_s   # covers slow start-ups


def burst_trace(seed: int) -> Trace:
    rng = np.random.default_rng(seed)
    rate = np.full(240, 120.0)
    start = int(rng.integers(60, 150))
    rate[start:start + 60] = 900.0
    return traces.from_rate(f"burst{seed}", np.repeat(rate, round(1 / traces.DT)), seed=seed)


@pytest.mark.parametrize("trace", [burst_trace(1), burst_trace(2), steady(400.0, 200)])
def test_no_policy_beats_the_oracle(trace: Trace) -> None:
    best = oracle(trace, PROFILE)
    assert best.violation.sum() == 0
    for job in named_jobs(trace, PROFILE)[:-1]:
        r = run_job(job)
        beats = r.violation.sum() <= best.violation.sum() and r.replica_s < best.replica_s
        assert not beats, (job.family, r.replica_s, best.replica_s)


# --------------------------------------------------------------------------------------------
# fronts and paired seeds
# --------------------------------------------------------------------------------------------

def pt(viol: int, cost: int, fam: str = "hpa") -> Point:
    return Point(fam, {}, viol, cost, 0.0)


def test_pareto_front_keeps_the_undominated_points() -> None:
    front = pareto([pt(5, 100), pt(0, 300), pt(5, 90), pt(2, 200), pt(3, 250), pt(0, 400)])
    assert [(p.slo_violation_s, p.replica_s) for p in front] == [(0, 300), (2, 200), (5, 90)]
    assert dominates(pt(0, 300), 0, 301) and not dominates(pt(0, 300), 0, 300)
    assert not dominates(pt(1, 100), 0, 500)


def test_grids_hold_the_upstream_defaults() -> None:
    assert HpaParams() in grid("hpa")
    assert KedaParams() in grid("keda")
    assert KpaParams() in grid("kpa-concurrency")
    assert all(len(grid(f)) == 12 for f in FAMILIES)


def test_paired_summary_counts_wins_and_ties() -> None:
    def res(viol: int, cost: float) -> RunResult:
        v = np.zeros(10, dtype=bool)
        v[:viol] = True
        return RunResult("p", "t", np.ones(10), np.ones(10), np.ones(10), np.ones(10), v,
                         v.astype(float), 0.0, cost, 0, 1)

    seeds = [{"servegate": res(1, 90), "hpa": res(3, 100), "keda": res(1, 80),
              "kpa": res(0, 200), "oracle": res(0, 50)} for _ in range(4)]
    stats, pairs = summarize(seeds)
    assert stats["hpa"]["slo_violation_s"].mean == 3 and stats["hpa"]["replica_s"].half == 0
    by = {p.other: p for p in pairs}
    assert (by["hpa"].wins, by["hpa"].cheaper) == (4, 4)
    assert (by["keda"].wins, by["keda"].ties, by["keda"].cheaper) == (0, 4, 0)
    assert by["kpa"].cost_ratio.mean == pytest.approx(0.45)
    assert interval([1.0, 3.0]).half == pytest.approx(12.71)


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


KEYS = ["slo_violation_s", "timed_out", "replica_s", "scale_events", "max_replicas",
        "requests_over_slo_pct"]


def test_servegate_simulate_writes_the_json_contract(short_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "servegate.cli", "simulate", "--trace-csv", str(short_csv),
         "--json", str(out), "--startup-s", "10", "--fronts", "--workers", "1"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert list(doc) == ["traces", "fronts"]
    assert list(doc["traces"]) == ["short"]
    assert list(doc["traces"]["short"]) == ["servegate", "hpa", "keda", "kpa", "oracle"]
    for scores in doc["traces"]["short"].values():
        assert list(scores) == KEYS
        assert all(v >= 0 for v in scores.values())
        assert all(isinstance(scores[k], int) for k in KEYS[:-1])
    fronts = doc["fronts"]["short"]
    assert list(fronts) == list(FAMILIES)
    for points in fronts.values():
        assert points and all(list(p) == ["params", "slo_violation_s", "replica_s",
                                          "requests_over_slo_pct"] for p in points)
        costs = [p["replica_s"] for p in points]
        assert costs == sorted(costs, reverse=True)  # a front: cheaper, more violations
    assert "== trace short" in proc.stdout and "front hpa:" in proc.stdout


def test_paired_seeds_and_startup_sweep(short_csv: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert servegate(["simulate", "--trace-csv", str(short_csv), "--scale", "2", "--seeds", "2",
                      "--startup-sweep", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 paired seeds" in out and "servegate vs hpa" in out
    assert out.count("short ") >= 4  # one start-up sweep row per start-up


def test_plots_need_matplotlib(short_csv: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code = servegate(["simulate", "--trace-csv", str(short_csv), "--plots", str(tmp_path)])
    assert code == 2
    assert "--plots needs matplotlib" in capsys.readouterr().err


def test_plots_are_written(short_csv: Path, tmp_path: Path) -> None:
    assert servegate(["simulate", "--trace-csv", str(short_csv), "--fronts", "--workers", "1",
                      "--plots", str(tmp_path / "plots")]) == 0
    for name in ("short.png", "short-fronts.png"):
        png = tmp_path / "plots" / name
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
    assert servegate(["simulate", "--trace-csv", str(csv), "--scale", "0"]) == 2


def test_report_names_whatever_beats_the_oracle_and_dominates_servegate() -> None:
    def sc(viol: int, cost: int) -> dict[str, object]:
        return {"slo_violation_s": viol, "replica_s": cost, "requests_over_slo_pct": 0.0}

    trace = {"servegate": sc(10, 500), "hpa": sc(20, 400), "keda": sc(30, 450),
             "kpa": sc(50, 2000), "oracle": sc(0, 300)}
    assert oracle_beaten_by(trace) == []
    front = {"hpa": [pt(0, 250), pt(5, 450)]}
    assert oracle_beaten_by(trace, front) == ["hpa"]
    assert [(p.slo_violation_s, p.replica_s) for p in dominated_by(trace["servegate"], front)] \
        == [(0, 250), (5, 450)]
    met = dict((text.split(" (")[0], ok) for text, ok in verdicts(trace, front))
    assert met["SLO-violation s <= hpa and keda"] and not met["replica-s < hpa and keda"]
    assert not met["not Pareto-dominated by any front point"]
