"""Micro-benchmark of cost accounting: what it adds per request on the hot path, and per tick.

Where it sits: beside the data-plane benchmarks (``bench_overhead.py``), but in one process
with no network: it times the steps :meth:`gateway.pipeline.proxy.Proxy.call` does for accounting
(the slot lookup, two adds, the endpoint's busy-time bookkeeping and its clock reads), a whole
``Proxy.call`` with a no-op send with and without a tenant to charge, and one accounting tick.

    .venv/bin/python loadtest/bench_cost.py [--number 200000] [--repeat 5] [--baseline main]

Prints the best of ``--repeat`` runs, in nanoseconds per operation. ``--baseline REF`` also
times ``Proxy.call`` as it was at git REF (before cost accounting), alternating runs with
today's, so the difference is the accounting's whole cost on the call path.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import timeit
import types
from random import Random

from prometheus_client import CollectorRegistry

from contracts import parse_config
from gateway.pipeline.cost import CostMeter
from gateway.pipeline.pools import Endpoint
from gateway.pipeline.proxy import Proxy
from gateway.pipeline.runtime import Runtime


def _setup() -> tuple[Proxy, CostMeter]:
    config = parse_config({
        "pools": {f"p{i}": {"endpoints": [f"10.0.{i}.{j}:8000" for j in range(4)],
                            "cost": {"gpus_per_replica": 0.5, "price_per_gpu_hour": 2.0}}
                  for i in range(3)},
        "models": {f"m{i}": {"pool": f"p{i % 3}"} for i in range(6)},
    })
    runtime = Runtime(config)
    proxy = Proxy(runtime, upstream=None, rng=Random(1))  # type: ignore[arg-type]
    meter = CostMeter(runtime, CollectorRegistry())
    proxy.cost = meter
    for i in range(6):  # 6 models x 5 tenants already seen
        for t in range(5):
            meter.slot(f"p{i % 3}", f"m{i}", f"t{t}").busy_s += 0.01
    return proxy, meter


def _best(stmt: object, number: int, repeat: int) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=repeat)) / number * 1e9  # type: ignore[arg-type]


def _call_ns(proxy: Proxy, charge: str | None, number: int, repeat: int) -> float:
    route = proxy.route("m0", "")

    async def send(ep: Endpoint) -> int:
        return 1

    async def run() -> float:
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            for _ in range(number):
                if charge is None:  # also how the proxy before cost accounting is called
                    await proxy.call(route, _all, send)
                else:
                    await proxy.call(route, _all, send, charge=charge)
            best = min(best, time.perf_counter() - t0)
        return best / number * 1e9

    return asyncio.run(run())


def _baseline_proxy(ref: str, proxy: Proxy) -> Proxy:
    """``gateway/pipeline/proxy.py`` as it was at git ``ref``, bound to the same runtime."""
    source = subprocess.run(["git", "show", f"{ref}:gateway/pipeline/proxy.py"], check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType("proxy_baseline")
    sys.modules["proxy_baseline"] = module
    exec(compile(source, f"{ref}:gateway/pipeline/proxy.py", "exec"), module.__dict__)
    old: Proxy = module.Proxy(proxy.runtime, upstream=None, rng=Random(1))
    return old


def _all(pool: object) -> list[Endpoint]:
    return pool.endpoints  # type: ignore[attr-defined, no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--number", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--baseline", default="", help="git ref to compare Proxy.call with")
    a = ap.parse_args()
    proxy, meter = _setup()
    slot = meter.slot("p0", "m0", "t0")
    ep = proxy.runtime.state.pools["p0"].endpoints[0]
    clock = time.monotonic

    def lookup() -> None:
        meter.slot("p0", "m0", "t3")

    def adds() -> None:
        slot.busy_s += 0.0123
        slot.requests += 1

    def busy_bookkeeping() -> None:
        ep.begin(1.0)
        ep.end(1.5)

    def plain_counting() -> None:  # what the proxy did before: outstanding in and out
        ep.outstanding += 1
        ep.outstanding -= 1

    def two_clock_reads() -> None:
        clock()
        clock()

    n, r = a.number, a.repeat
    rows = [
        ("slot lookup (pool, model, tenant)", _best(lookup, n, r)),
        ("two adds into the slot", _best(adds, n, r)),
        ("endpoint begin/end (busy time)", _best(busy_bookkeeping, n, r)),
        ("  vs outstanding += 1; -= 1", _best(plain_counting, n, r)),
        ("two time.monotonic() reads", _best(two_clock_reads, n, r)),
        ("Proxy.call, no-op send, charged", _call_ns(proxy, "t3", n // 4, r)),
        ("Proxy.call, no-op send, not charged", _call_ns(proxy, None, n // 4, r)),
        ("accounting tick (3 pools, 30 series)", _best(meter.tick, max(n // 100, 10), r)),
    ]
    if a.baseline:
        old = _baseline_proxy(a.baseline, proxy)
        new_ns, old_ns = [], []
        for _ in range(r):  # alternate, so drift on a shared machine hits both alike
            new_ns.append(_call_ns(proxy, "t3", n // 4, 1))
            old_ns.append(_call_ns(old, None, n // 4, 1))
        rows += [(f"Proxy.call at {a.baseline} (no accounting)", min(old_ns)),
                 ("Proxy.call now, charged (same runs)", min(new_ns))]
    for name, ns in rows:
        print(f"{name:40s} {ns:10.0f} ns")


if __name__ == "__main__":
    main()
