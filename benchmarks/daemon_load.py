"""Daemon CPU share (of one core) and RSS at reference scale over a bounded period.

    .venv/bin/python benchmarks/daemon_load.py               # 3 minutes measured (+ ~15 s start)
    .venv/bin/python benchmarks/daemon_load.py --seconds 60 --profile

Targets (design §3): < 25 % of one core and < 300 MB RSS for 20 clusters × 10 nodes × 100
guests (20 000 guests) at a 15 s interval, on this 2-core machine.

The simulator (HTTPS, 20 ms per API call) and the daemon run as separate processes
(benchmarks/simproc.py). Once `/-/ready` says every cluster has a snapshot, this samples the
daemon's /proc/<pid>/stat (utime+stime) and /proc/<pid>/status (VmRSS, VmHWM) every few seconds
and prints each sample, then the averages over the whole period (a whole number of intervals by
default). A Prometheus-like scraper fetches /metrics with gzip every interval (its cost is part of
the daemon's; `--scrape-every 0` turns it off). The simulator's own CPU is printed for context.

Cadence during the window: every cycle is a fast cycle; the per-guest config calls are still
warming up (≤ 50 per cluster and cycle, 1000 guests per cluster = the first 20 cycles); the slow
tier ran at start-up and next runs 20 intervals (5 min) later, outside a 3-minute window.

If a target is missed (or with `--profile`), py-spy (`.venv/bin/pip install py-spy`, for the
benchmarks only) then samples the daemon for `--profile-seconds` (after the measured window, so
the sampling does not perturb it) and the top functions are printed. If the RSS target is missed
(or with `--profile`), a second, in-process run of the daemon against the same simulator under
`tracemalloc` (3 intervals, one gzip and one plain /metrics body built per interval, as scrapes
would) prints where the live Python memory is allocated.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import subprocess
import threading
import time
import tracemalloc
from pathlib import Path

from simproc import DaemonProc, SimProc, cpu_seconds, machine, profile_summary, pyspy_record, rss_mb

TARGET_CPU = 25.0  # % of one core
TARGET_RSS = 300.0  # MB


def scraper(url: str, every: float, stop: threading.Event, log: list[float]) -> None:
    while not stop.wait(every):
        t = time.perf_counter()
        subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", "Accept-Encoding: gzip", url], check=False)
        log.append((time.perf_counter() - t) * 1e3)


async def _traced_daemon(urls: dict[str, str], interval: float, seconds: float) -> tracemalloc.Snapshot:
    from pve_exporter.app import Daemon
    from pve_exporter.settings import Settings
    from pve_exporter.simulator import DEFAULT_TOKEN_ID, DEFAULT_TOKEN_SECRET

    clusters = [{"name": n, "endpoints": [u], "token_id": DEFAULT_TOKEN_ID, "token_secret": DEFAULT_TOKEN_SECRET,
                 "verify_ssl": False, "interval_seconds": interval} for n, u in urls.items()]  # fmt: skip
    daemon = Daemon(Settings(listen="127.0.0.1:0", clusters=clusters))
    await daemon.start()
    try:
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            await asyncio.sleep(min(interval, max(0.0, t_end - time.monotonic())))
            if daemon.ready():
                names = sorted(daemon.clusters)
                daemon.metrics_body(names, True)  # what a gzip and a plain scrape keep cached
                daemon.metrics_body(names, False)
        gc.collect()
        return tracemalloc.take_snapshot()
    finally:
        await daemon.stop()


def memory_profile(urls: dict[str, str], interval: float, seconds: float, top: int = 20) -> None:
    import logging

    import structlog

    # ERROR: stopping mid-cycle logs "Connector is closed" warnings that mean nothing here
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    tracemalloc.start(1)
    snap = asyncio.run(_traced_daemon(urls, interval, seconds))
    tracemalloc.stop()
    stats = snap.statistics("lineno")
    total = sum(s.size for s in stats)
    print(f"  live Python allocations after {seconds:g} s: {total / 1e6:.0f} MB traced (RSS also holds the "
          f"interpreter, imported modules, freed-but-not-returned arenas and the TLS/aiohttp buffers)")  # fmt: skip
    for s in stats[:top]:
        frame = s.traceback[0]
        where = "/".join(frame.filename.split("/")[-2:])
        print(f"    {s.size / 1e6:7.1f} MB  {s.count:>9} blocks  {where}:{frame.lineno}")
    by_file: dict[str, int] = {}
    for s in stats:
        f = "/".join(s.traceback[0].filename.split("/")[-2:])
        by_file[f] = by_file.get(f, 0) + s.size
    print("  by file:")
    for f, size in sorted(by_file.items(), key=lambda kv: -kv[1])[:12]:
        print(f"    {size / 1e6:7.1f} MB  {f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=180.0, help="measured period (default: %(default)s)")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--clusters", type=int, default=20)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--guests-per-node", type=int, default=100)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--interval", type=float, default=15.0)
    ap.add_argument("--scrape-every", type=float, default=15.0, help="gzip /metrics scrape period; 0 = none")
    ap.add_argument("--no-tls", action="store_true", help="plain HTTP between daemon and simulator")
    ap.add_argument("--profile", action="store_true", help="profile with py-spy even if the targets are met")
    ap.add_argument("--profile-seconds", type=float, default=60.0)
    a = ap.parse_args()

    guests = a.clusters * a.nodes * a.guests_per_node
    print("daemon_load:", machine())
    print(f"scale: {a.clusters} clusters × {a.nodes} nodes × {a.guests_per_node} guests = {guests} guests; "
          f"API latency {a.latency_ms:g} ms, {'HTTP' if a.no_tls else 'HTTPS'}; interval {a.interval:g} s; "
          f"gzip scrape every {a.scrape_every:g} s; measured {a.seconds:g} s")  # fmt: skip
    with SimProc(a.clusters, a.nodes, a.guests_per_node, latency_ms=a.latency_ms, tls=not a.no_tls) as sim:
        t0 = time.monotonic()
        with DaemonProc(sim.urls, interval=a.interval) as daemon:
            pid = daemon.pid
            print(f"simulator pid {sim.pid}, daemon pid {pid}; ready after {time.monotonic() - t0:.1f} s; "
                  f"daemon CPU until ready {cpu_seconds(pid):.1f} s (imports + first all-tier cycle), "
                  f"RSS {rss_mb(pid)[0]:.0f} MB")  # fmt: skip
            stop = threading.Event()
            scrapes: list[float] = []
            th = None
            if a.scrape_every > 0:
                th = threading.Thread(target=scraper, args=(f"{daemon.url}/metrics", a.scrape_every, stop, scrapes),
                                      daemon=True)  # fmt: skip
                th.start()
            start_wall, start_cpu, start_sim = time.monotonic(), cpu_seconds(pid), cpu_seconds(sim.pid)
            prev_wall, prev_cpu = start_wall, start_cpu
            rss_samples: list[float] = []
            print(f"{'t (s)':>6} {'CPU % (window)':>15} {'CPU % (so far)':>15} {'RSS MB':>8} {'peak RSS MB':>12}")
            while True:
                time.sleep(max(0.0, min(a.sample, start_wall + a.seconds - time.monotonic())))
                now, cpu = time.monotonic(), cpu_seconds(pid)
                rss, hwm = rss_mb(pid)
                rss_samples.append(rss)
                print(f"{now - start_wall:6.0f} {(cpu - prev_cpu) / (now - prev_wall) * 100:15.1f} "
                      f"{(cpu - start_cpu) / (now - start_wall) * 100:15.1f} {rss:8.0f} {hwm:12.0f}", flush=True)
                prev_wall, prev_cpu = now, cpu
                if now - start_wall >= a.seconds - 0.01:
                    break
            wall = time.monotonic() - start_wall
            cpu_used = cpu_seconds(pid) - start_cpu
            sim_used = cpu_seconds(sim.pid) - start_sim
            in_window = list(scrapes)
            cpu_pct = cpu_used / wall * 100
            rss_avg = sum(rss_samples) / len(rss_samples)
            rss_max, hwm = max(rss_samples), rss_mb(pid)[1]
            print(f"average over {wall:.0f} s ({wall / a.interval:.1f} intervals): daemon CPU {cpu_pct:.1f} % of one "
                  f"core ({cpu_used:.1f} CPU-s, {cpu_used / (wall / a.interval):.2f} CPU-s per interval); "
                  f"RSS avg {rss_avg:.0f} MB, max sampled {rss_max:.0f} MB, peak (VmHWM, since start) {hwm:.0f} MB")
            print(f"simulator (context, not the daemon): {sim_used / wall * 100:.1f} % of one core")
            if in_window:
                s = sorted(in_window)
                print(f"gzip scrapes during the window: {len(s)}, median {s[len(s) // 2]:.0f} ms, max {s[-1]:.0f} ms")
            cpu_ok, rss_ok = cpu_pct < TARGET_CPU, hwm < TARGET_RSS
            print(f"target CPU < {TARGET_CPU:g} % of one core: {'MET' if cpu_ok else 'MISSED'} ({cpu_pct:.1f} %)")
            print(f"target RSS < {TARGET_RSS:g} MB: {'MET' if rss_ok else 'MISSED'} (peak {hwm:.0f} MB)")
            if a.profile or not (cpu_ok and rss_ok):
                print(f"profile: py-spy, {a.profile_seconds:g} s after the measured window (on-CPU samples):")
                raw = pyspy_record(pid, a.profile_seconds, Path(daemon.workdir) / "profile.txt")
                if raw is not None:
                    print(profile_summary(raw))
            stop.set()  # the scraper kept running during the profile, as in the measured window
            if th is not None:
                th.join()
        if a.profile or not rss_ok:
            print(f"memory: tracemalloc, the daemon in-process against the same simulator for {3 * a.interval:g} s:")
            memory_profile(sim.urls, a.interval, 3 * a.interval)


if __name__ == "__main__":
    main()
