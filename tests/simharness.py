"""Run the daemon against the built-in simulator in-process, cycles driven by the test."""

from __future__ import annotations

import textwrap
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pve_exporter.app import Daemon
from pve_exporter.clock import ManualClock
from pve_exporter.settings import Settings
from pve_exporter.simulator import DEFAULT_TOKEN_ID, DEFAULT_TOKEN_SECRET, SimulatorServer, build_simulator


class FixedClock(ManualClock):
    """Wall and monotonic time that move only when a test says so (`t += s`, `step_wall(s)`)."""


def config_yaml(urls: dict[str, str], *, interval: float = 15, top: str = "", per: dict[str, str] | None = None) -> str:
    """A config file for the simulator's clusters: `top` goes before `clusters:`, `per[name]` into one entry."""
    out = "listen: 127.0.0.1:0\n" + top + "clusters:\n"
    for name, url in urls.items():
        out += textwrap.indent(textwrap.dedent(f"""
            - name: {name}
              endpoints: ["{url}"]
              token_id: "{DEFAULT_TOKEN_ID}"
              token_secret: "{DEFAULT_TOKEN_SECRET}"
              interval_seconds: {interval:g}
        """), "  ")  # fmt: skip
        if per and name in per:
            out += textwrap.indent(per[name], "    ")
    return out


def cluster_cfg(name: str, endpoints: list[str], **kw: Any) -> dict[str, Any]:
    cfg = {"name": name, "endpoints": endpoints, "token_id": DEFAULT_TOKEN_ID, "token_secret": DEFAULT_TOKEN_SECRET}
    cfg.update(kw)
    return cfg


@asynccontextmanager
async def sim_daemon(clusters=(("lab", 3, 4),), *, sim_kw=None, cluster_kw=None, extra_endpoints=None, clock=None):
    """Yields (daemon, sim, server). `extra_endpoints[name]` are tried before the simulator's URL."""
    clock = clock or FixedClock()
    sim = build_simulator(list(clusters), seed=7, auth_delay=0.0, clock=clock, **(sim_kw or {}))
    async with SimulatorServer(sim) as server:
        cfgs = []
        for name, url in server.urls.items():
            eps = [*(extra_endpoints or {}).get(name, []), url]
            cfgs.append(cluster_cfg(name, eps, **(cluster_kw or {})))
        settings = Settings(listen="127.0.0.1:0", clusters=cfgs)
        daemon = Daemon(settings, autostart=False, clock=clock, monotonic=clock.monotonic)
        await daemon.start()
        try:
            yield daemon, sim, server
        finally:
            await daemon.stop()


async def cycle(daemon: Daemon, name: str = "lab"):
    return await daemon.clusters[name].poller.run_once()


def series(text: str) -> dict[tuple[str, frozenset], float]:
    """Parse exposition text into {(sample name, labels): value}."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def ids(text: str, name: str) -> set[str]:
    return {dict(labels).get("id") for (n, labels) in series(text) if n == name}
