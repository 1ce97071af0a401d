"""End to end: issue 13's alerts fire and resolve on a real Prometheus scraping the daemon on the simulator.

The simulator's third node carries a DEGRADED ZFS pool, an HDD that fails SMART, an SSD with 6 %
life left and a certificate ten days from expiry; the test adds an expired certificate and an
overcommitted node, waits for every alert to fire, then repairs everything through the simulator's
`/_sim` hooks (as a test driving a separate simulator process would) and waits for them to resolve.
Prometheus evaluates the generated rules with short `for:` (alerts/generate.py E2E_OVERRIDES).
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pve_exporter.app import Daemon, build_app
from pve_exporter.settings import Settings
from pve_exporter.simulator import SimulatorServer, build_simulator
from tests.monitoring import ROOT, load_module
from tests.servers import Prometheus, free_port, require_binary
from tests.simharness import cluster_cfg
from tests.test_e2e_alerts import Alerts, wait_for

pytestmark = pytest.mark.e2e

alerts_gen = load_module(ROOT / "alerts" / "generate.py")
GiB = 1 << 30


class HardwareStack:
    """Simulator (one cluster, 3 nodes) + daemon + /metrics on 127.0.0.1, in a background event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="e2e-hardware", daemon=True)
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
        self.sim = build_simulator([("lab", 3, 3)], seed=7, auth_delay=0.0)
        self.server = SimulatorServer(self.sim)
        await self.server.start()
        settings = Settings(
            listen=f"127.0.0.1:{self.port}",
            clusters=[cluster_cfg("lab", [self.server.urls["lab"]], interval_seconds=1, timeout_seconds=2)],
            collect={"slow_interval_factor": 2, "slow_min_interval_seconds": 0},  # ZFS, disks, certificates every 2 s
        )
        self.daemon = Daemon(settings)
        self.runner = web.AppRunner(build_app(self.daemon), access_log=None, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        await self.runner.cleanup()
        await self.server.stop()

    def close(self) -> None:
        try:
            self.call(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()

    def hook(self, path: str, body: dict[str, Any]) -> Any:
        req = urllib.request.Request(f"{self.server.urls['lab']}{path}", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())


@pytest.fixture
def hardware(tmp_path: Path):
    require_binary("prometheus", "prometheus")
    s = HardwareStack()
    rules = tmp_path / "pve-exporter.e2e.rules.yml"
    rules.write_text(alerts_gen.render(alerts_gen.E2E_OVERRIDES))
    prom = Prometheus(tmp_path / "prom", [f"127.0.0.1:{s.port}"], rule_files=[str(rules)])
    try:
        yield s, prom
    finally:
        prom.stop()
        s.close()


def test_hardware_alerts_fire_and_resolve(hardware):
    s, prom = hardware
    alerts = Alerts(prom)
    lab = s.sim.cluster("lab")
    saved_maxmem = s.do(lambda: lab.nodes["pve1"].maxmem)

    def running_mem(node: str) -> int:
        return sum(g.maxmem for g in lab.guests.values() if g.node == node and g.running and not g.template)

    def inject() -> None:
        # the running guests' memory is now 1.5 × the node's
        lab.nodes["pve1"].maxmem = int(running_mem("pve1") / 1.5)

    s.do(inject)
    s.hook("/_sim/nodes/pve1/certificates/pve-ssl.pem", {"expires_in_seconds": -3600})
    expected: list[tuple[str, dict[str, str | None]]] = [
        ("PveZfsPoolDegraded", {"cluster": "lab", "node": "pve3", "pool": "tank", "health": "DEGRADED"}),
        ("PveDiskSmartFailed", {"cluster": "lab", "node": "pve3", "device": "/dev/sdb", "type": "hdd"}),
        ("PveSsdWearoutHigh", {"cluster": "lab", "node": "pve3", "device": "/dev/sdc"}),
        ("PveCertificateExpiring", {"cluster": "lab", "node": "pve3", "filename": "pveproxy-ssl.pem"}),
        ("PveCertificateExpired", {"cluster": "lab", "node": "pve1", "filename": "pve-ssl.pem"}),
        ("PveNodeMemoryOvercommitted", {"cluster": "lab", "id": "node/pve1", "name": "pve1"}),
    ]

    def all_firing() -> list[str]:
        active = alerts.active()
        return [f"{n} {labels}" for n, labels in expected if not alerts.match(active, n, labels, "firing")]

    wait_for(all_firing, timeout=60, what="every hardware alert to fire")
    active = alerts.active()
    # only the broken things: one pool, one disk, one worn SSD, one expiring and one expired certificate
    for name in ("PveZfsPoolDegraded", "PveDiskSmartFailed", "PveSsdWearoutHigh", "PveCertificateExpiring",
                 "PveCertificateExpired", "PveNodeMemoryOvercommitted"):
        assert len(alerts.match(active, name, {})) == 1, (name, alerts.match(active, name, {}))
    assert not alerts.match(active, "PveDiskSmartFailed", {"device": "/dev/sdd"})  # UNKNOWN never alerts

    # repair through the simulator's hooks, as from another process
    s.hook("/_sim/nodes/pve3/zfs/tank", {"health": "ONLINE"})
    s.hook("/_sim/nodes/pve3/disks", {"devpath": "/dev/sdb", "health": "PASSED"})
    s.hook("/_sim/nodes/pve3/disks", {"devpath": "/dev/sdc", "wearout": 100})
    s.hook("/_sim/nodes/pve3/certificates/pveproxy-ssl.pem", {"expires_in_seconds": 90 * 86400})
    s.hook("/_sim/nodes/pve1/certificates/pve-ssl.pem", {"expires_in_seconds": 700 * 86400})
    s.do(lambda: setattr(lab.nodes["pve1"], "maxmem", saved_maxmem))

    def all_resolved() -> list[str]:
        active = alerts.active()
        return [f"{n} {labels} still {[a['state'] for a in alerts.match(active, n, labels)]}"
                for n, labels in expected if alerts.match(active, n, labels)]

    wait_for(all_resolved, timeout=60, what="the hardware alerts to resolve after the repairs")
