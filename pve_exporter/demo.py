"""`pve-exporter demo`: the simulator (two clusters) and the daemon against it, in one process.

No config needed. It prints the URLs, then runs until Ctrl-C / SIGTERM. Every few minutes it
injects a fault (a node going down, an endpoint answering 500) and clears it again, so the
self-metrics and the failure handling have something to show.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import random
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import structlog
import yaml

from pve_exporter import logs
from pve_exporter.app import Daemon, build_app
from pve_exporter.settings import Settings
from pve_exporter.simulator import (
    DEFAULT_TOKEN_ID,
    DEFAULT_TOKEN_SECRET,
    PowerTimings,
    SimulatorServer,
    build_simulator,
)
from pve_exporter.simulator.pbs import PBS_TOKEN_ID, PBS_TOKEN_SECRET, PbsServer, SimPbs

log = structlog.get_logger("pve_exporter.demo")

ALERT_RULES = Path(__file__).resolve().parent.parent / "alerts" / "pve-exporter.rules.yml"  # in a source checkout

CLUSTERS = [
    {"name": "lab", "nodes": 3, "guests_per_node": 8, "pve_version": 9},
    {"name": "prod", "nodes": 4, "guests_per_node": 10, "pve_version": 8},
]


def demo_control(history_dir: str, token: str) -> dict[str, object]:
    """The control API for the demo: one admin token (printed at start), history in a temp dir."""
    digest = hashlib.sha256(token.encode()).hexdigest()
    return {
        "enabled": True,
        "history_db": f"{history_dir}/operations.sqlite",
        "tokens": [{"name": "demo", "sha256": digest, "scopes": ["admin"]}],
    }


def demo_settings(
    urls: dict[str, str], listen: str, interval: float, control: dict[str, object] | None = None,
    pbs_url: str | None = None,
) -> Settings:
    backup = [{"name": "backup1", "endpoints": [pbs_url], "token_id": PBS_TOKEN_ID, "token_secret": PBS_TOKEN_SECRET,
               "interval_seconds": interval, "clusters": sorted(urls)}] if pbs_url else []  # fmt: skip
    return Settings(
        listen=listen,
        control=control or {},
        backup_servers=backup,
        clusters=[
            {
                "name": name,
                "endpoints": [url],
                "token_id": DEFAULT_TOKEN_ID,
                "token_secret": DEFAULT_TOKEN_SECRET,
                "interval_seconds": interval,
                "timeout_seconds": 4,
            }
            for name, url in urls.items()
        ],
    )


def prometheus_config(listen: str, interval: float, rules: Path | None) -> str:
    """A Prometheus config for the demo: scrape the daemon (as the shipped deploy/prometheus.yml does)
    and load the shipped alert rules, so `prometheus --config.file=FILE` shows everything at once."""
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    every = f"{max(1, round(interval))}s"
    doc: dict[str, object] = {
        "global": {"scrape_interval": every, "evaluation_interval": every},
        "rule_files": [str(rules)] if rules is not None else [],
        "scrape_configs": [{"job_name": "pve", "honor_labels": True,
                            "static_configs": [{"targets": [f"{host}:{port}"]}]}],
    }  # fmt: skip
    head = ("# Written by `pve-exporter demo --prometheus-config`: scrapes the demo daemon"
            + (" and loads the shipped alert rules" if rules is not None else "") + ".\n"
            "# prometheus --config.file=THIS_FILE --storage.tsdb.path=/tmp/pve-demo-tsdb\n")  # fmt: skip
    return head + yaml.safe_dump(doc, sort_keys=False)


def write_prometheus_config(path: str, listen: str, interval: float) -> str | None:
    """Write the demo's Prometheus config; the error text when it cannot be written."""
    rules = ALERT_RULES if ALERT_RULES.is_file() else None
    try:
        Path(path).write_text(prometheus_config(listen, interval, rules), encoding="utf-8")
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror or exc}"
    return None


async def chaos(sim, seed: int, every: float) -> None:
    """Occasional, self-healing faults: one at a time, each cleared after `every / 2` seconds."""
    rng = random.Random(seed)
    while True:
        await asyncio.sleep(every)
        cluster = sim.cluster(rng.choice(list(sim.clusters)))
        node = rng.choice(sorted(cluster.nodes))
        if rng.random() < 0.5:
            fault = cluster.add_fault("node_down", node=node)
            what = f"node {node} down"
        else:
            fault = cluster.add_fault("http_error", path=f"/nodes/{node}/status", status=500,
                                      message="ipcc_send_rec[1] failed: Connection refused")  # fmt: skip
            what = f"/nodes/{node}/status answers 500"
        log.info("demo fault injected", cluster=cluster.name, fault=what)
        await asyncio.sleep(every / 2)
        cluster.remove_fault(fault.id)
        log.info("demo fault cleared", cluster=cluster.name, fault=what)


async def run(args: argparse.Namespace) -> int:
    if args.prometheus_config and (error := write_prometheus_config(args.prometheus_config, args.listen,
                                                                    args.interval)):  # fmt: skip
        print(f"pve-exporter demo: {error}", file=sys.stderr)
        return 2
    sim = build_simulator(
        [dict(c) for c in CLUSTERS], seed=args.seed, auth_delay=0.0, latency_ms=args.latency_ms,
        power=PowerTimings(sync_seconds=0.15),  # power POSTs take as long as PVE's synchronous part
    )
    server = SimulatorServer(sim, host="127.0.0.1", base_port=args.sim_port)
    try:
        await server.start()
    except OSError as exc:
        print(f"pve-exporter demo: cannot start the simulator on port {args.sim_port}: {exc}", file=sys.stderr)
        return 1
    pbs = PbsServer(SimPbs(sim, "backup1"), port=args.sim_port + len(CLUSTERS) if args.sim_port else 0)
    try:
        await pbs.start()
    except OSError as exc:
        print(f"pve-exporter demo: cannot start the simulated PBS: {exc}", file=sys.stderr)
        await server.stop()
        return 1
    history_dir = tempfile.mkdtemp(prefix="pve-exporter-demo-")
    control_token = args.control_token or secrets.token_urlsafe(24)
    settings = demo_settings(server.urls, args.listen, args.interval, demo_control(history_dir, control_token),
                             pbs.url)  # fmt: skip
    daemon = Daemon(settings)
    from pve_exporter.listener import GuardedRunner, GuardedSite, ListenerLimits, fit_to_open_file_limit

    # the same listener as the daemon: header and idle timeouts, a connection cap
    runner = GuardedRunner(build_app(daemon), fit_to_open_file_limit(ListenerLimits.of(settings.web)))
    await runner.setup()
    try:
        await GuardedSite(runner, settings.listen_host, settings.listen_port).start()
    except OSError as exc:
        print(f"pve-exporter demo: cannot listen on {args.listen}: {exc.strerror or exc} (try --listen)",
              file=sys.stderr)  # fmt: skip
        await runner.cleanup()
        await pbs.stop()
        await server.stop()
        shutil.rmtree(history_dir, ignore_errors=True)
        return 1
    base = f"http://{args.listen}"
    print("pve_exporter demo (Ctrl-C to stop)", flush=True)
    for c in CLUSTERS:
        url = server.urls[c["name"]]
        print(f"  simulator cluster {c['name']:<5} {url}/api2/json  "
              f"(PVE {c['pve_version']}, {c['nodes']} nodes x {c['guests_per_node']} guests)")  # fmt: skip
    print(f"  token for the simulator   {DEFAULT_TOKEN_ID}={DEFAULT_TOKEN_SECRET}")
    print(f"  backup server (PBS)       {pbs.url}/api2/json  (linked to every cluster: {base}/metrics?server=backup1)")
    print(f"  landing page              {base}/")
    print(f"  all clusters              {base}/metrics")
    print(f"  one cluster               {base}/metrics?cluster=lab")
    first = server.urls[CLUSTERS[0]["name"]]
    fault = '{"kind":"node_down","node":"pve2"}'
    print(f"  inject a fault            curl -X POST {first}/_sim/faults -d '{fault}'")
    print(f"  clear faults              curl -X DELETE {first}/_sim/faults")
    print(f"  control token (admin)     {control_token}")
    print(f"  control page              {base}/ui/")
    print(f"  control API               curl -H 'Authorization: Bearer {control_token}' {base}/api/v1/guests")
    print(f"  operation history         {history_dir}/operations.sqlite (removed at exit)", flush=True)
    if args.prometheus_config:
        rules = "with the alert rules" if ALERT_RULES.is_file() else "no alert rules (not a source checkout)"
        print(f"  prometheus config         {args.prometheus_config} ({rules}): prometheus "
              f"--config.file={args.prometheus_config} --storage.tsdb.path=/tmp/pve-demo-tsdb", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    chaos_task = asyncio.create_task(chaos(sim, args.seed, args.fault_every)) if args.fault_every > 0 else None
    await stop.wait()
    print("stopping", flush=True)
    if chaos_task is not None:
        chaos_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await chaos_task
    await runner.cleanup()
    await pbs.stop()
    await server.stop()
    shutil.rmtree(history_dir, ignore_errors=True)
    return 0


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="pve-exporter demo", description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:9221", help="daemon address (default: %(default)s)")
    p.add_argument("--sim-port", type=int, default=18006, help="first simulator port (default: %(default)s)")
    p.add_argument("--interval", type=float, default=5.0, help="collection interval in seconds (default: 5)")
    p.add_argument("--latency-ms", type=float, default=5.0, help="simulated API latency (default: 5)")
    p.add_argument("--fault-every", type=float, default=120.0,
                   help="seconds between injected faults, 0 = none (default: %(default)s)")  # fmt: skip
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--control-token", default=None,
                   help="control API token to accept (default: a random one, printed at start)")
    p.add_argument("--prometheus-config", metavar="FILE", default=None,
                   help="write a Prometheus config that scrapes this demo and loads the shipped alert rules")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = p.parse_args(argv)
    logs.configure(args.log_level, "auto")
    return asyncio.run(run(args))
