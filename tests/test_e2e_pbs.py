"""End to end: a real Prometheus scrapes the daemon with a simulated PBS linked to a simulated cluster,
evaluates the shipped PBS alerts (short `for:`), runs every query of the Backups dashboard, and sees
the alerts fire and resolve as the simulated server's problems are switched on and off. Every wait is
bounded; nothing sleeps for time to pass.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pve_exporter.app import Daemon, build_app
from pve_exporter.settings import Settings
from pve_exporter.simulator import SimulatorServer, build_simulator
from pve_exporter.simulator.pbs import PBS_TOKEN_ID, PBS_TOKEN_SECRET, PbsServer, SimPbs
from tests.monitoring import ROOT, load_module
from tests.servers import Prometheus, free_port, require_binary
from tests.simharness import cluster_cfg
from tests.test_e2e_alerts import Alerts, substitute, wait_for

pytestmark = pytest.mark.e2e

alerts_gen = load_module(ROOT / "alerts" / "generate.py")
dash_gen = load_module(ROOT / "dashboards" / "generate.py")
VALUES = {"$__rate_interval": "10s", "$__interval": "2s", "$__range": "1m", "$cluster": ".*", "$node": ".*",
          "$guest": ".*", "$server": ".*"}  # fmt: skip


class Stack:
    """Simulated cluster `lab` + simulated PBS `backup1` + the daemon's /metrics, in a background loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="e2e-pbs", daemon=True)
        self.thread.start()
        self.port = free_port()
        self.call(self._start())

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def do(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return fn()

        return self.call(run())

    async def _start(self) -> None:
        self.sim = build_simulator([("lab", 2, 4)], seed=7, auth_delay=0.0)
        self.server = SimulatorServer(self.sim)
        await self.server.start()
        self.pbs = PbsServer(SimPbs(self.sim, "backup1", ["lab"]))
        await self.pbs.start()
        settings = Settings(
            listen=f"127.0.0.1:{self.port}",
            clusters=[cluster_cfg("lab", [self.server.urls["lab"]], interval_seconds=1, timeout_seconds=2)],
            backup_servers=[{"name": "backup1", "endpoints": [self.pbs.url], "token_id": PBS_TOKEN_ID,
                             "token_secret": PBS_TOKEN_SECRET, "interval_seconds": 1, "timeout_seconds": 2,
                             "clusters": ["lab"]}],
            collect={"slow_interval_factor": 2, "slow_min_interval_seconds": 0, "node_interval_seconds": 2},
        )  # fmt: skip
        self.daemon = Daemon(settings)
        self.runner = web.AppRunner(build_app(self.daemon), access_log=None, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        await self.runner.cleanup()
        await self.pbs.stop()
        await self.server.stop()

    def close(self) -> None:
        try:
            self.call(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


@pytest.fixture
def stack(tmp_path: Path):
    require_binary("prometheus", "prometheus")
    s = Stack()
    rules = tmp_path / "pve-exporter.e2e.rules.yml"
    rules.write_text(alerts_gen.render(alerts_gen.E2E_OVERRIDES))
    prom = Prometheus(tmp_path / "prom", [f"127.0.0.1:{s.port}"], rule_files=[str(rules)])
    try:
        yield s, prom
    finally:
        prom.stop()
        s.close()


def test_pbs_alerts_fire_and_resolve_and_the_backups_dashboard_has_data(stack):
    s, prom = stack
    alerts = Alerts(prom)
    pbs = s.pbs.pbs

    def data_ready() -> list[str]:
        missing = [] if prom.query('pbs_up{server="backup1"} == 1') else ["no pbs_up 1"]
        if not prom.query('pve_guest_last_backup_timestamp_seconds{cluster="lab"}'):
            missing.append("no joined last-backup series")
        if not prom.query("pbs_backup_group_last_size_bytes"):
            missing.append("no snapshot listing yet")
        return missing

    wait_for(data_ready, timeout=60, what="PBS data in Prometheus")

    # -- the simulated server's built-in problems fire -------------------------------------------------
    built_in = [
        ("PbsJobFailed", {"server": "backup1", "job_type": "sync", "job_id": "s-offsite"}),
        ("PbsBackupVerificationFailed", {"server": "backup1", "datastore": "store1", "namespace": "lab"}),
        ("PbsDatastoreAlmostFull", {"server": "backup1", "datastore": "store1"}),
        ("PbsDatastoreFullSoon", {"server": "backup1", "datastore": "store1"}),
    ]

    def firing(expected: list[tuple[str, dict[str, str]]]) -> Callable[[], list[str]]:
        def check() -> list[str]:
            active = alerts.active()
            return [f"{n} {lab}" for n, lab in expected if not alerts.match(active, n, lab, "firing")]

        return check

    def resolved(expected: list[tuple[str, dict[str, str]]]) -> Callable[[], list[str]]:
        def check() -> list[str]:
            active = alerts.active()
            return [f"{n} {lab} still active" for n, lab in expected if alerts.match(active, n, lab)]

        return check

    wait_for(firing(built_in), timeout=60, what="the simulated PBS's problems to fire")
    active = alerts.active()
    assert not alerts.match(active, "PbsDown", {}) and not alerts.match(active, "PbsGarbageCollectionFailed", {})
    assert len(alerts.match(active, "PbsBackupVerificationFailed", {})) == 1
    assert not alerts.match(active, "PbsDatastoreAlmostFull", {"datastore": "store2"})

    # -- every query of the Backups dashboard returns data ----------------------------------------------
    d = dash_gen.backups()
    exprs = [(f"{p['title']}/{t['refId']}", t["expr"]) for p in d["panels"] for t in p.get("targets", [])]
    for v in d["templating"]["list"]:
        if v["type"] == "query" and v["query"].startswith("label_values("):
            exprs.append((f"variable {v['name']}", v["query"][len("label_values("):].rsplit(",", 1)[0]))

    def dashboard_data() -> list[str]:
        return [f"{where}: {expr}" for where, expr in exprs if not prom.query(substitute(expr, VALUES))]

    wait_for(dashboard_data, timeout=30, what="every Backups dashboard query to return data")

    # -- garbage collection fails, then every problem is fixed: the alerts resolve ----------------------
    s.do(lambda: setattr(pbs, "gc_failing", True))
    gc = [("PbsGarbageCollectionFailed", {"server": "backup1", "datastore": "store1"})]
    wait_for(firing(gc), timeout=30, what="PbsGarbageCollectionFailed to fire")

    def fix() -> None:
        pbs.gc_failing = pbs.sync_failing = pbs.verify_failed = pbs.store1_filling = False
        pbs.store1_used = 0.5

    s.do(fix)
    wait_for(resolved(built_in + gc), timeout=60, what="the PBS alerts to resolve")

    # -- the server refuses the token: PbsDown, then back ----------------------------------------------
    fault = s.do(lambda: pbs.faults.add("auth_fail"))
    down = [("PbsDown", {"server": "backup1"})]
    wait_for(firing(down), timeout=30, what="PbsDown to fire")
    s.do(lambda: pbs.faults.remove(fault.id))
    wait_for(resolved(down), timeout=30, what="PbsDown to resolve")
