"""Side by side with prometheus-pve-exporter (PPE) on the same simulator: scrape time, API requests.

    .venv/bin/python benchmarks/vs_ppe.py                    # ~2 minutes (+ ~15 s the first time: PPE install)

Targets (design §3): ≥ 10× faster scrape and ≥ 10× fewer API requests per scrape interval, at
one cluster of 10 nodes × 100 guests with 20 ms API latency.

PPE is installed from PyPI into its own venv (`--ppe-venv`, default /tmp/venv-pve, reused when
present) and run as `pve_exporter --config.file pve.yml --web.listen-address 127.0.0.1:PORT` with
a module holding the simulator's token (`verify_ssl: false`). The simulator runs in its own
process over HTTPS (proxmoxer's https backend has no plain-HTTP mode). Our daemon runs as a
separate process against the same simulator, never at the same time as PPE. API requests are
read from the simulator's `/_sim/stats` counters.

1. PPE: `/pve?target=127.0.0.1:PORT&cluster=1&node=1` (its README's simple form: cluster-wide
   collectors plus the node collectors of the node that answers, pve1), timed by curl; API
   requests per scrape. Covering all 10 nodes takes PPE 1 cluster scrape + 10 node scrapes per
   interval (its "large clusters" advice): that figure is derived from the measured per-path
   counts of the node part (per-node calls × 10), and labelled as such.
2. Ours: `/metrics` timed by curl (plain and gzip); API requests of the start-up cycle (all tiers)
   and of the next live fast cycles, per path, from the counters. The steady state per interval
   (fast + node + slow tier + paced config re-reads, averaged over one slow interval) comes from
   `api_calls.measure` on the same cluster size, in-process with a manual clock (a live window
   would take 5 real minutes): at our interval and at 5 s. PPE's requests per scrape are its
   requests per interval (one scrape per interval). One collection cycle serves any number of scrapes.
3. One node down (`node_down` fault on pve3, not the local node): PPE's HTTP status and series
   count vs ours (after our next cycle), and what each says about pve3.

PPE runs with `--no-collector.replication` unless `--ppe-replication`: the simulator does not
implement `GET /nodes/{node}/replication/{id}/status` (501), which would fail PPE's whole scrape.
That collector costs PPE 2 + R_n more requests per node scrape, so PPE's counts are a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import structlog
from api_calls import measure, steady_new
from simproc import DaemonProc, SimProc, free_port, machine

from pve_exporter.simulator import DEFAULT_TOKEN_SECRET

CONFIG_SUFFIX = "/{vmid}/config"
CURL_FMT = "%{time_total} %{http_code} %{size_download}\\n"


def ensure_ppe(venv: Path) -> tuple[Path, str]:
    exe = venv / "bin" / "pve_exporter"
    if not exe.exists():
        print(f"installing prometheus-pve-exporter into {venv} …", flush=True)
        t = time.monotonic()
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                        "prometheus-pve-exporter"], check=True)  # fmt: skip
        print(f"  installed in {time.monotonic() - t:.0f} s")
    code = ("import importlib.metadata as m; print(' '.join(f'{p} {m.version(p)}' for p in "
            "('prometheus-pve-exporter', 'proxmoxer', 'requests', 'gunicorn')))")  # fmt: skip
    versions = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip
    return exe, versions


def timed(url: str, gz: bool = False) -> tuple[float, int, int]:
    """curl's own time_total (s), status and downloaded size."""
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", CURL_FMT,
                          "-H", f"Accept-Encoding: {'gzip' if gz else 'identity'}", url],
                         capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    return float(out[0]), int(out[1]), int(out[2])


def fetch(url: str, timeout: float = 120) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def series(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]


def split(req: Counter[str]) -> tuple[int, int]:
    cfg = sum(n for p, n in req.items() if p.endswith(CONFIG_SUFFIX))
    return sum(req.values()) - cfg, cfg


def med(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2]


def about(lines: list[str], node: str, guest_ids: set[str]) -> str:
    up = [ln for ln in lines if ln.startswith("pve_up{") and f'id="node/{node}"' in ln]
    guest = sum(1 for ln in lines if (m := re.search(r'id="((?:qemu|lxc)/\d+)"', ln)) and m.group(1) in guest_ids)
    return f"{up[0] if up else f'no pve_up for node/{node}'}; {guest} series of its {len(guest_ids)} guests"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--guests-per-node", type=int, default=100)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--interval", type=float, default=15.0, help="our interval_seconds (and PPE's scrape interval)")
    ap.add_argument("--scrapes", type=int, default=5, help="PPE scrapes to time")
    ap.add_argument("--ppe-venv", type=Path, default=Path("/tmp/venv-pve"))
    ap.add_argument("--down-node", default="pve3")
    ap.add_argument("--ppe-replication", action="store_true",
                    help="keep PPE's replication collector (off by default: the simulator answers 501 to "
                         "GET /nodes/{node}/replication/{id}/status, which fails PPE's whole scrape)")
    a = ap.parse_args()
    n, guests = a.nodes, a.nodes * a.guests_per_node
    print("vs_ppe:", machine())
    exe, versions = ensure_ppe(a.ppe_venv)
    print(f"PPE: {versions}")
    print(f"scale: 1 cluster × {n} nodes × {a.guests_per_node} guests = {guests} guests; {a.latency_ms:g} ms per "
          f"API call; HTTPS simulator (self-signed, verify_ssl false on both sides)")  # fmt: skip

    with SimProc(1, n, a.guests_per_node, latency_ms=a.latency_ms, tls=True) as sim:
        name = "sim1"
        port = sim.port(name)
        # -- 1. PPE -------------------------------------------------------------------------------
        ppe_port = free_port()
        cfg = sim.workdir / "pve.yml"
        cfg.write_text(f"default:\n  user: monitor@pve\n  token_name: exporter\n  token_value: {DEFAULT_TOKEN_SECRET}\n"
                       f"  verify_ssl: false\n")  # fmt: skip
        log = open(sim.workdir / "ppe.log", "wb")  # noqa: SIM115 (closed below)
        flags = [] if a.ppe_replication else ["--no-collector.replication"]
        if flags:
            print("PPE runs with --no-collector.replication: the simulator has no GET /nodes/{node}/replication/{id}"
                  "/status (501 fails PPE's whole scrape); the collector would add 2 + R_n requests per node scrape "
                  "(R_n = replication jobs of the node), so PPE's request counts below are a lower bound")  # fmt: skip
        ppe = subprocess.Popen([str(exe), *flags, "--config.file", str(cfg), "--web.listen-address",
                                f"127.0.0.1:{ppe_port}"],
                               stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        try:
            base = f"http://127.0.0.1:{ppe_port}"
            for _ in range(100):
                try:
                    urllib.request.urlopen(base + "/", timeout=2).read()
                    break
                except OSError:
                    time.sleep(0.1)
            target = f"{base}/pve?target=127.0.0.1:{port}&cluster=1&node=1"
            status, text = fetch(target)  # warm-up; also shows the series count
            if status != 200:
                raise SystemExit(f"PPE answered {status}: {text[:500]}\nlog: {(sim.workdir / 'ppe.log').read_text()}")
            ppe_series = len(series(text))
            times, per_scrape = [], []
            req_one: Counter[str] = Counter()
            for _ in range(a.scrapes):
                sim.reset_stats(name)
                t, status, _size = timed(target)
                assert status == 200, status
                st = sim.stats(name)
                times.append(t)
                per_scrape.append(st["total"])
                req_one = Counter(st["requests"])
            ppe_time = med(times)
            print(f"\nPPE /pve?target=127.0.0.1:{port}&cluster=1&node=1: {a.scrapes} scrapes, median {ppe_time:.2f} s "
                  f"(min {min(times):.2f}, max {max(times):.2f}); {ppe_series} series; API requests per scrape: "
                  f"{sorted(set(per_scrape))}")  # fmt: skip
            print("  per path (one scrape):")
            for p, c in sorted(req_one.items()):
                print(f"    {c:>4}  {p}")
            node_paths = {p: c for p, c in req_one.items() if "/nodes/{node}" in p}
            cluster_part = sum(req_one.values()) - sum(node_paths.values())
            node_part = sum(node_paths.values())
            # a node scrape (cluster=0&node=1) also re-reads /cluster/status once per node collector
            status_in_node = 3 if a.ppe_replication else 2
            all_nodes = (cluster_part - status_in_node) + n * (node_part + status_in_node)
            print(f"  cluster part {cluster_part} + node part {node_part} (pve1: its {len(node_paths)} node paths); "
                  f"covering all {n} nodes as PPE advises (1 cluster job + {n} node jobs, each node job "
                  f"re-reading /cluster/status ×{status_in_node}): ≈ {all_nodes} requests per interval (derived)")

            # -- 3a. PPE with one node down ----------------------------------------------------------
            fid = sim.fault(name, kind="node_down", node=a.down_node)
            t0 = time.perf_counter()
            d_status, d_text = fetch(target)
            ppe_down_time = time.perf_counter() - t0
            d_lines = series(d_text) if d_status == 200 else []
            sim.clear_faults(name)
            del fid
        finally:
            ppe.terminate()
            try:
                ppe.wait(10)
            except subprocess.TimeoutExpired:
                ppe.kill()
            log.close()

        # -- 2. ours -------------------------------------------------------------------------------
        sim.reset_stats(name)
        with DaemonProc({name: sim.urls[name]}, interval=a.interval) as daemon:
            first = Counter(sim.stats(name)["requests"])  # the start-up cycle (all tiers)
            metrics = f"{daemon.url}/metrics"
            cycles: list[Counter[str]] = []
            prev = Counter(sim.stats(name)["requests"])
            deadline = time.monotonic() + 2 * a.interval + 5
            # per fast cycle: counter deltas between quiet periods (a cycle takes well under a second)
            last_change, cur = time.monotonic(), Counter()
            while len(cycles) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
                now_req = Counter(sim.stats(name)["requests"])
                delta = now_req - prev
                if delta:
                    cur += delta
                    last_change = time.monotonic()
                    prev = now_req
                elif cur and time.monotonic() - last_change > 2.0:
                    cycles.append(cur)
                    cur = Counter()
            ours_plain = [timed(metrics)[0] for _ in range(20)]
            ours_gz = [timed(metrics, gz=True)[0] for _ in range(20)]
            _, ours_text = fetch(metrics)
            ours_series = len(series(ours_text))
            _, pve_text = fetch(f"{daemon.url}/pve?target=127.0.0.1&cluster=1&node=1")
            hostport_status, _ = fetch(f"{daemon.url}/pve?target=127.0.0.1:{port}&cluster=1&node=1")
            pve_series = len(series(pve_text))
            guest_ids = {m.group(1) for ln in series(ours_text) if ln.startswith("pve_guest_info{")
                         and f'node="{a.down_node}"' in ln and (m := re.search(r'id="([^"]+)"', ln))}  # fmt: skip

            # -- 3b. ours with one node down -------------------------------------------------------
            sim.fault(name, kind="node_down", node=a.down_node)
            before = fetch(metrics)[1]
            t_wait = time.monotonic()
            o_status, o_text = 0, ""
            while time.monotonic() - t_wait < a.interval + 10:
                time.sleep(0.5)
                o_status, o_text = fetch(metrics)
                if o_text != before and any(ln.startswith("pve_up{") and f'id="node/{a.down_node}"}} 0' in ln
                                            for ln in series(o_text)):  # fmt: skip
                    break
            o_lines = series(o_text)
            sim.clear_faults(name)

    fast = cycles[-1] if cycles else Counter()
    f_other, f_cfg = split(fast)
    s_other, s_cfg = split(first)
    print(f"\nours /metrics: median {med(ours_plain) * 1e3:.1f} ms plain, {med(ours_gz) * 1e3:.1f} ms gzip "
          f"(20 each); {ours_series} series incl. self-metrics; /pve?target=127.0.0.1&cluster=1&node=1: "
          f"{pve_series} series; /pve?target=127.0.0.1:{port}: HTTP {hostport_status}")  # fmt: skip
    print(f"ours API requests, live: start-up cycle (all tiers) {sum(first.values())} = {s_other} + {s_cfg} guest "
          f"configs; fast cycles {[sum(c.values()) for c in cycles]} (the last: {f_other} + {f_cfg} guest configs, "
          f"config cache warming up for {math.ceil(guests / 50)} cycles)")  # fmt: skip
    print("  per path, start-up / last fast cycle:")
    for p in sorted(set(first) | set(fast)):
        print(f"    {first[p]:>4} {fast[p]:>4}  {p}")

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    steady = {}
    for interval in sorted({a.interval, 5.0}, reverse=True):
        st = steady_new(asyncio.run(measure("new", n, a.guests_per_node, interval)))
        steady[interval] = st.total
        print(f"ours steady state at a {interval:g} s interval (api_calls.measure, one slow interval in-process): "
              f"{st.total:.2f} requests per interval = {st.shared:.0f} shared + {st.node:.2f} node tier + "
              f"{st.extras:.2f} extras + {st.slow:.2f} slow tier + {st.configs:.2f} guest configs")  # fmt: skip

    print("\nratios (PPE / ours):")
    best = med(ours_gz)
    plain = med(ours_plain)
    print(f"  scrape time: {ppe_time:.2f} s vs {plain * 1e3:.1f} ms plain → {ppe_time / plain:.0f}×, "
          f"vs {best * 1e3:.1f} ms gzip → {ppe_time / best:.0f}× (target ≥ 10×: "
          f"{'MET' if ppe_time / max(med(ours_plain), best) >= 10 else 'MISSED'})")  # fmt: skip
    ppe_req = med([float(x) for x in per_scrape])
    for interval, ours_req in steady.items():
        one, every = ppe_req / ours_req, all_nodes / ours_req
        print(f"  API requests per {interval:g} s interval (one scrape per interval): PPE one scrape {ppe_req:.0f}, "
              f"PPE covering all {n} nodes ≈ {all_nodes} (derived), ours steady {ours_req:.2f} → {one:.1f}× / "
              f"{every:.1f}× fewer (goal ≥ 10×: {'MET' if one >= 10 else 'MISSED'} / "
              f"{'MET' if every >= 10 else 'MISSED'})")  # fmt: skip

    print(f"\none node down (node_down fault on {a.down_node}; the API answers from pve1):")
    print(f"  PPE: HTTP {d_status} after {ppe_down_time:.2f} s, {len(d_lines)} series"
          + (f"; {about(d_lines, a.down_node, guest_ids)}" if d_lines else f"; body: {d_text.strip()[:200]!r}"))
    print(f"  ours: HTTP {o_status}, {len(o_lines)} series (was {ours_series}); "
          f"{about(o_lines, a.down_node, guest_ids)}")
    fails = [ln for ln in o_lines if ln.startswith("pve_exporter_collector_success{") and ln.endswith(" 0")]
    print(f"  ours, collectors reporting failure: {len(fails)}" + "".join(f"\n    {ln}" for ln in fails[:8]))


if __name__ == "__main__":
    main()
