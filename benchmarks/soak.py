"""Soak: the daemon at reference scale with random faults for a bounded time; is anything growing?

    .venv/bin/python benchmarks/soak.py                      # 20 × 10 × 100, 10 minutes
    .venv/bin/python benchmarks/soak.py --minutes 3 --clusters 5

The simulator and the daemon run as separate processes (benchmarks/simproc.py). Every
`--fault-every` seconds a random fault is injected into a random cluster for a random 5–60 s
(node down, HTTP 500 or 596 on a path, a hanging endpoint, a slow API, a 401) and then cleared.
A scraper takes /metrics (gzip) every 2 s. Every 15 s the daemon's RSS and open file descriptors
are sampled. At the end it prints the samples, the growth of RSS and fds between the first and
the last third of the run, the faults injected, the errors the daemon counted by kind (its own
pve_exporter_collector_error_info and API request statuses), and whether /metrics ever failed.
The run is bounded by `--minutes`, sends traffic only to 127.0.0.1, and cleans up after itself.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import re
import time
import urllib.request
from collections import Counter

from simproc import DaemonProc, SimProc, http_json, machine, rss_mb

FAULTS = (
    ("node_down", {}),
    ("http_error", {"status": 500, "message": "ipcc_send_rec[1] failed: Connection refused"}),
    ("http_error", {"status": 596, "message": "Connection timed out"}),
    ("timeout", {}),
    ("slow", {"latency_ms": 3000}),
    ("auth_fail", {}),
)
PATHS = ("/cluster/resources", "/cluster/status", "/nodes/pve{n}/status", "/nodes/pve{n}/qemu", "/version", None)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def scrape(url: str) -> tuple[bool, str]:
    req = urllib.request.Request(f"{url}/metrics", headers={"Accept-Encoding": "gzip"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            body = gzip.decompress(r.read()).decode()
            return r.status == 200, body
    except OSError as exc:
        return False, str(exc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--clusters", type=int, default=20)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--guests-per-node", type=int, default=100)
    ap.add_argument("--interval", type=float, default=15.0)
    ap.add_argument("--fault-every", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    print(f"soak: {machine()}")
    print(f"scale: {a.clusters} clusters × {a.nodes} nodes × {a.guests_per_node} guests; interval {a.interval:g} s; "
          f"{a.minutes:g} min; a fault every {a.fault_every:g} s")  # fmt: skip
    with SimProc(a.clusters, a.nodes, a.guests_per_node, latency_ms=20, seed=a.seed, tls=True) as sim, DaemonProc(
        sim.urls, interval=a.interval, timeout=2.0
    ) as daemon:
        print(f"ready after {daemon.ready_after:.1f} s")
        start = time.monotonic()
        end = start + a.minutes * 60
        samples: list[tuple[float, float, int]] = []
        injected: Counter[str] = Counter()
        active: list[tuple[float, str, str]] = []  # (until, cluster, fault id)
        scrapes = failures = 0
        last_body = ""
        next_fault = start + a.fault_every
        next_sample = start
        next_scrape = start
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_sample:
                rss, _ = rss_mb(daemon.pid)
                samples.append((now - start, rss, open_fds(daemon.pid)))
                print(f"  t={now - start:6.0f} s  RSS {rss:7.1f} MB  fds {samples[-1][2]:4d}  "
                      f"scrapes {scrapes} failed {failures}  active faults {len(active)}", flush=True)  # fmt: skip
                next_sample += 15
            for until, cluster, fid in [f for f in active if f[0] <= now]:
                http_json(f"{sim.urls[cluster]}/_sim/faults/{fid}", method="DELETE")
                active.remove((until, cluster, fid))
            if now >= next_fault:
                cluster = rng.choice(sorted(sim.urls))
                kind, extra = rng.choice(FAULTS)
                n = rng.randint(1, a.nodes)
                fault = {"kind": kind, **extra}
                if kind == "node_down":
                    fault["node"] = f"pve{n}"
                else:
                    path = rng.choice(PATHS)
                    if path:
                        fault["path"] = path.format(n=n)
                fid = sim.fault(cluster, **fault)
                active.append((now + rng.uniform(5, 60), cluster, fid))
                injected[f"{kind}{'/' + str(extra.get('status')) if 'status' in extra else ''}"] += 1
                next_fault += a.fault_every
            if now >= next_scrape:
                ok, body = scrape(daemon.url)
                scrapes += 1
                if ok:
                    last_body = body
                else:
                    failures += 1
                next_scrape += 2
            time.sleep(0.05)
        for cluster in {c for _, c, _ in active}:
            sim.clear_faults(cluster)
        third = max(1, len(samples) // 3)
        first, last = samples[:third], samples[-third:]
        avg = lambda xs, i: sum(x[i] for x in xs) / len(xs)  # noqa: E731
        print(f"RSS: first third avg {avg(first, 1):.1f} MB, last third avg {avg(last, 1):.1f} MB "
              f"(growth {avg(last, 1) - avg(first, 1):+.1f} MB); max {max(s[1] for s in samples):.1f} MB")  # fmt: skip
        print(f"open fds: first third avg {avg(first, 2):.1f}, last third avg {avg(last, 2):.1f} "
              f"(growth {avg(last, 2) - avg(first, 2):+.1f}); max {max(s[2] for s in samples)}")  # fmt: skip
        print("faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(injected.items())))
        kinds: Counter[str] = Counter()
        for m in re.finditer(r"^pve_exporter_api_requests_total\{(.*)\} (\S+)$", last_body, flags=re.M):
            status = re.search(r'status="([^"]+)"', m.group(1))  # paths hold braces: {node}
            if status:
                kinds[status.group(1)] += int(float(m.group(2)))
        print("API requests by status (daemon's counters): " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
        failing = re.findall(r"^pve_exporter_collector_error_info\{", last_body, flags=re.M)
        print(f"collectors failing at the end (faults still clearing): {len(failing)}")
        print(f"/metrics: {scrapes} scrapes, {failures} failed -> {'NEVER FAILED' if failures == 0 else 'FAILED'}")


if __name__ == "__main__":
    main()
