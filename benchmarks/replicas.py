"""Replicas sharing simulated clusters through PostgreSQL leases (issue 16 item 7): per-replica CPU and
RSS, the time to take over a SIGKILLed replica's targets, and PVE API requests per target per interval
against a single process (equal: nothing is polled twice).

Every process is its own: a private PostgreSQL (Debian's server, as in the tests), the simulator
(`SimProc`) and each daemon (`DaemonProc`); all stopped by PID at the end.

    .venv/bin/python benchmarks/replicas.py                 # 6 clusters × 2 nodes × 50 guests, quick
    .venv/bin/python benchmarks/replicas.py --full          # 6 clusters × 10 nodes × 2000 guests = 120 000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.simproc import DaemonProc, SimProc, cpu_seconds, machine, rss_mb  # noqa: E402
from tests.pgharness import PgServer, fresh_database  # noqa: E402


def fast_requests(procs: list[DaemonProc]) -> float:
    """Fast-tier PVE requests sent so far, summed over the processes (deterministic per cycle: the
    node and slow tiers run on longer schedules, so a short window of all requests is noise)."""
    total = 0.0
    for d in procs:
        with urllib.request.urlopen(f"{d.url}/metrics", timeout=10) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("pve_exporter_collection_requests_total{") and 'tier="fast"' in line:
                    total += float(line.rsplit(" ", 1)[1])
    return total


def owned(d: DaemonProc) -> set[str] | None:
    """The targets the replica reports as its own (pve_exporter_target_owned 1), None if it does not answer."""
    try:
        with urllib.request.urlopen(f"{d.url}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    out = set()
    for line in text.splitlines():
        if line.startswith("pve_exporter_target_owned{") and float(line.rsplit(" ", 1)[1]) == 1:
            out.add(line.split('target="', 1)[1].split('"', 1)[0])
    return out


def wait_split(replicas: list[DaemonProc], names: set[str], timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        sets = [owned(d) for d in replicas]
        if all(s is not None for s in sets):
            flat = [t for s in sets if s is not None for t in s]
            if sorted(flat) == sorted(names):
                return time.monotonic() - start
        time.sleep(0.05)
    raise RuntimeError(f"targets not owned exactly once after {timeout} s: {[owned(d) for d in replicas]}")


def measure(sim: SimProc, procs: list[DaemonProc], window: float) -> tuple[int, float, list[float], list[float]]:
    """(simulator requests, fast-tier requests, CPU % of a core per process, RSS MiB per process) over
    `window` seconds."""
    sim.reset_stats()
    fast0 = fast_requests(procs)
    cpu0 = [cpu_seconds(d.pid) for d in procs]
    time.sleep(window)
    requests = sim.total_requests()
    fast = fast_requests(procs) - fast0
    cpu = [100 * (cpu_seconds(d.pid) - c) / window for d, c in zip(procs, cpu0, strict=True)]
    return requests, fast, cpu, [rss_mb(d.pid)[0] for d in procs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="6 clusters × 10 nodes × 2000 guests (120 000 guests)")
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--interval", type=float, default=None, help="poll interval (default 5 s quick, 15 s full)")
    ap.add_argument("--lease", type=float, default=6.0, help="coordination.lease_seconds")
    ap.add_argument("--window", type=float, default=None, help="measuring window (default 4 intervals)")
    args = ap.parse_args()
    nodes, per_node = (10, 2000) if args.full else (2, 50)
    interval = args.interval or (15.0 if args.full else 5.0)
    window = args.window or 4 * interval
    print(machine())
    print(f"6 clusters × {nodes} nodes × {per_node} guests/node = {6 * nodes * per_node} guests; "
          f"{args.replicas} replicas; interval {interval:g} s; lease {args.lease:g} s; window {window:g} s")
    pg = PgServer()
    pg.start()
    try:
        dsn = asyncio.run(fresh_database(pg.dsn))
        with SimProc(6, nodes, per_node, latency_ms=5) as sim:
            names = set(sim.urls)
            extra = {"collect": {"node_interval_seconds": max(60.0, interval)}}
            with DaemonProc(sim.urls, interval=interval, extra=extra) as single:
                time.sleep(interval)  # past the first cycles
                single_req, single_fast, single_cpu, single_rss = measure(sim, [single], window)
            cycles = len(names) * window / interval
            print(f"single process: {single_cpu[0]:.1f} % of a core, RSS {single_rss[0]:.0f} MiB; per target and "
                  f"interval: {single_fast / cycles:.2f} fast-tier requests, {single_req / cycles:.2f} of all tiers")
            replicas = [
                DaemonProc(sim.urls, interval=interval, extra={**extra, "coordination": {
                    "dsn": dsn, "replica": f"replica-{i}", "lease_seconds": args.lease}})
                for i in range(args.replicas)
            ]  # fmt: skip
            try:
                for d in replicas:
                    d.start()
                took = wait_split(replicas, names, timeout=10 * args.lease)
                print(f"targets split over {args.replicas} replicas {took:.1f} s after the last start: "
                      f"{[len(owned(d) or ()) for d in replicas]}")
                time.sleep(interval)
                req, fast, cpu, rss = measure(sim, replicas, window)
                for i, (c, r) in enumerate(zip(cpu, rss, strict=True)):
                    print(f"replica-{i}: {c:.1f} % of a core, RSS {r:.0f} MiB")
                print(f"replicas together, per target and interval: {fast / cycles:.2f} fast-tier requests "
                      f"(single process {single_fast / cycles:.2f}), {req / cycles:.2f} of all tiers "
                      f"(single {single_req / cycles:.2f}; the node and slow tiers fall unevenly into the window)")
                victim = max(replicas, key=lambda d: len(owned(d) or ()))
                lost = owned(victim) or set()
                os.kill(victim.pid, signal.SIGKILL)
                killed = time.monotonic()
                survivors = [d for d in replicas if d is not victim]
                took = wait_split(survivors, names, timeout=3 * args.lease + 10)
                print(f"SIGKILL of a replica owning {len(lost)} targets: all owned by the survivors after "
                      f"{time.monotonic() - killed:.2f} s (bound: lease {args.lease:g} s + renewal "
                      f"{args.lease / 3:g} s)")
                del took
            finally:
                for d in replicas:
                    d.stop()
    finally:
        pg.remove()


if __name__ == "__main__":
    main()
