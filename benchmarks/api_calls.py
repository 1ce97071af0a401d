"""API calls per fast and per slow (all-tier) cycle, and cycle wall time, for 1, 10, 50, 200 nodes.

    .venv/bin/python benchmarks/api_calls.py                 # ~1 minute

One cluster of N nodes × 100 guests per node, 20 ms simulated latency per API call, in-process
(the simulator and the daemon share one event loop here, so wall times include the simulator's
own CPU; counts are exact). The cycles are driven with `poller.run_once()` and a manual clock
shared by both sides, and the simulator's request counters (per templated path) are read after
each cycle:

- start-up: the first cycle, every tier at once (design §2.3);
- fast 1, fast 2: the next two intervals (15 s apart);
- slow: the clock jumps to the 20th interval, when the slow tier is due again.

Per-guest config reads (`/nodes/{node}/{qemu,lxc}/{vmid}/config`, for pve_onboot_status) are the
only per-guest calls: capped at 50 per cycle, new guests first, then re-read after an hour; they
are shown apart. Everything else must be a + b·N with the same a, b for every size and for 10 vs
100 guests per node ("grows with nodes, not guests"); the script fits and checks that.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import time
from collections import Counter
from typing import Any

import structlog
from simproc import machine

from pve_exporter.app import Daemon
from pve_exporter.clock import ManualClock
from pve_exporter.settings import Settings
from pve_exporter.simulator import DEFAULT_TOKEN_ID, DEFAULT_TOKEN_SECRET, SimulatorServer, build_simulator

CONFIG_SUFFIX = "/{vmid}/config"


def split(requests: Counter[str]) -> tuple[int, int]:
    """(calls that are not per-guest config reads, per-guest config reads)."""
    cfg = sum(n for path, n in requests.items() if path.endswith(CONFIG_SUFFIX))
    return sum(requests.values()) - cfg, cfg


async def measure(nodes: int, gpn: int, latency_ms: float, interval: float, cap: int, refresh: float,
                  slow_factor: int) -> dict[str, Any]:  # fmt: skip
    clock = ManualClock()
    sim = build_simulator([("bench", nodes, gpn)], seed=1, latency_ms=latency_ms, auth_delay=0.0, clock=clock)
    stats = sim.cluster("bench").stats
    out: dict[str, Any] = {"nodes": nodes, "guests": nodes * gpn}
    async with SimulatorServer(sim) as server:
        cfg = {"name": "bench", "endpoints": [server.urls["bench"]], "token_id": DEFAULT_TOKEN_ID,
               "token_secret": DEFAULT_TOKEN_SECRET, "interval_seconds": interval}  # fmt: skip
        settings = Settings(listen="127.0.0.1:0", clusters=[cfg],
                            collect={"config_max_per_cycle": cap, "config_refresh_seconds": refresh,
                                     "slow_interval_factor": slow_factor})  # fmt: skip
        daemon = Daemon(settings, autostart=False, clock=clock, monotonic=clock.monotonic)
        await daemon.start()
        poller = daemon.clusters["bench"].poller
        try:
            for label, advance in (("start", 0.0), ("fast1", interval), ("fast2", interval),
                                   ("slow", interval * (slow_factor - 2))):  # fmt: skip
                clock.t += advance
                stats.reset()
                t = time.perf_counter()
                snap = await poller.run_once()
                wall = time.perf_counter() - t
                failed = [r.name for r in snap.results.values() if not r.ok]
                assert not failed, f"collectors failed at {nodes} nodes: {failed}"
                req = Counter(stats.requests)
                out[label] = {"requests": req, "split": split(req), "wall": wall}
        finally:
            await daemon.stop()
    return out


def fit(points: list[tuple[int, int]]) -> tuple[float, float]:
    """a + b·N through the first and last points."""
    (n0, c0), (n1, c1) = points[0], points[-1]
    b = (c1 - c0) / (n1 - n0)
    return c0 - b * n0, b


async def amain(a: argparse.Namespace) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print("api_calls:", machine())
    print(f"one cluster per row, {a.latency_ms:g} ms per API call, interval {a.interval:g} s, slow tier every "
          f"{a.slow_factor} intervals, ≤ {a.cap} guest config reads per cycle, config re-read every {a.refresh:g} s")
    rows = []
    for n in a.nodes:
        rows.append(await measure(n, a.guests_per_node, a.latency_ms, a.interval, a.cap, a.refresh, a.slow_factor))
    extra = await measure(10, 10, a.latency_ms, a.interval, a.cap, a.refresh, a.slow_factor)  # 10 vs 100 guests/node

    hdr = (f"{'nodes':>5} {'guests':>6} | {'start-up':>14} {'wall s':>6} | {'fast cycle':>14} {'wall s':>6} | "
           f"{'slow cycle':>14} {'wall s':>6} | {'steady/interval':>15}")  # fmt: skip
    print("calls shown as total (= O(N) part + guest config reads); wall = cycle wall time")
    print(hdr)
    print("-" * len(hdr))
    for r in [*rows, extra]:
        steady_cfg = min(a.cap, math.ceil(r["guests"] * a.interval / a.refresh))
        slow_extra = r["slow"]["split"][0] - r["fast2"]["split"][0]
        per_interval = r["fast2"]["split"][0] + slow_extra / a.slow_factor + steady_cfg
        cells = []
        for key in ("start", "fast2", "slow"):
            o, c = r[key]["split"]
            cells.append(f"{o + c:>5} ={o:>4}+{c:<3} {r[key]['wall']:6.2f}")
        print(f"{r['nodes']:>5} {r['guests']:>6} | " + " | ".join(cells) + f" | {per_interval:15.1f}")
    print("steady/interval = fast O(N) part + (slow − fast O(N) part)/slow_factor + steady config re-reads "
          f"min({a.cap}, ⌈G·{a.interval:g}/{a.refresh:g}⌉)")

    fast_pts = [(r["nodes"], r["fast2"]["split"][0]) for r in rows]
    slow_pts = [(r["nodes"], r["slow"]["split"][0]) for r in rows]
    start_pts = [(r["nodes"], r["start"]["split"][0]) for r in rows]
    for label, pts in (("fast", fast_pts), ("slow", slow_pts), ("start-up", start_pts)):
        a0, b0 = fit(pts)
        exact = all(abs(a0 + b0 * n - c) < 1e-9 for n, c in pts)
        print(f"{label:>8} cycle, without guest configs: calls = {a0:g} + {b0:g}·N  "
              f"({'exact for every N' if exact else 'NOT linear: ' + str(pts)})")  # fmt: skip
    ten = next((r for r in rows if r["nodes"] == 10), None)
    if ten is not None:
        same_fast = ten["fast2"]["split"][0] == extra["fast2"]["split"][0]
        same_slow = ten["slow"]["split"][0] == extra["slow"]["split"][0]
        print(f"guests do not add calls: 10 nodes × 10 guests vs × 100 guests: fast {extra['fast2']['split'][0]} vs "
              f"{ten['fast2']['split'][0]}, slow {extra['slow']['split'][0]} vs {ten['slow']['split'][0]} "
              f"(O(N) part) → {'SAME' if same_fast and same_slow else 'DIFFERENT'}; config reads "
              f"{extra['fast2']['split'][1]} vs {ten['fast2']['split'][1]} per fast cycle (capped at {a.cap})")
    # the per-path breakdown of one size, so the formula can be read path by path
    r = ten or rows[0]
    print(f"per path at {r['nodes']} nodes × {a.guests_per_node} guests (start-up / fast / slow):")
    paths = sorted(set(r["start"]["requests"]) | set(r["slow"]["requests"]))
    for p in paths:
        print(f"  {r['start']['requests'][p]:>5} {r['fast2']['requests'][p]:>5} {r['slow']['requests'][p]:>5}  {p}")
    warm = math.ceil(r["guests"] / a.cap) if a.cap else 0
    print(f"config warm-up: {r['guests']} guests at ≤ {a.cap} per cycle = {warm} cycles "
          f"({warm * a.interval / 60:.0f} min at {a.interval:g} s) before onboot is known for every guest; "
          f"at 200 nodes × 100 guests: {math.ceil(20000 / a.cap)} cycles, and the hourly re-read needs "
          f"{math.ceil(20000 * a.interval / a.refresh)} per cycle > cap {a.cap}, so re-reads fall behind")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 10, 50, 200])
    ap.add_argument("--guests-per-node", type=int, default=100)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--interval", type=float, default=15.0)
    ap.add_argument("--slow-factor", type=int, default=20, help="collect.slow_interval_factor")
    ap.add_argument("--cap", type=int, default=50, help="collect.config_max_per_cycle")
    ap.add_argument("--refresh", type=float, default=3600.0, help="collect.config_refresh_seconds")
    asyncio.run(amain(ap.parse_args()))


if __name__ == "__main__":
    main()
