"""The daemon with its control API against the in-process simulator, time moved by the test.

`control_app()` yields a `Ctl`: the daemon, the simulator, an aiohttp test client and the shared
FixedClock. Power tasks finish when the test advances the clock past their duration; the runner
polls every 10 ms of real time, and `wait_op` waits for an operation with a real-time deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from pve_exporter.app import Daemon, build_app
from pve_exporter.settings import Settings
from pve_exporter.simulator import Simulator, SimulatorServer, build_simulator
from tests.simharness import FixedClock, cluster_cfg

# name -> (plaintext token, scopes)
TOKENS: dict[str, tuple[str, list[str]]] = {
    "ops": ("ops-token-7c1f0e9d2b8a4f63", ["power"]),
    "viewer": ("viewer-token-0a9b8c7d6e5f4a3b", ["read"]),
    "boss": ("boss-token-5e4d3c2b1a0f9e8d", ["admin"]),
}
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled", "interrupted"}


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def control_cfg(db: Path, **kw: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "enabled": True,
        "history_db": str(db),
        "tokens": [{"name": n, "sha256": sha(t), "scopes": s} for n, (t, s) in TOKENS.items()],
        "task_poll_seconds": 0.01,
        "shutdown_grace_seconds": 0.3,
        "auth_failure_limit": {"burst": 50, "per_minute": 600},
        "power_limit": {"burst": 500, "per_minute": 6000},
    }
    cfg.update(kw)
    return cfg


@dataclass
class Ctl:
    daemon: Daemon
    sim: Simulator
    client: TestClient
    clock: FixedClock
    urls: dict[str, str]

    async def call(
        self, method: str, path: str, *, token: str | None = "ops", json: Any = None,
        headers: dict[str, str] | None = None, data: Any = None,
    ) -> tuple[int, Any, Any]:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {TOKENS[token][0] if token in TOKENS else token}"
        resp = await self.client.request(method, path, json=json, data=data, headers=h)
        try:
            body = await resp.json(content_type=None)
        except ValueError:
            body = await resp.text()
        return resp.status, body, resp.headers

    async def act(self, cluster: str, vmid: int, action: str, token: str = "ops", **body: Any) -> dict[str, Any]:
        status, doc, _ = await self.call("POST", f"/api/v1/clusters/{cluster}/guests/{vmid}/{action}",
                                         token=token, json=body or None)
        assert status == 202, (status, doc)
        return doc

    async def op(self, op_id: str) -> dict[str, Any]:
        status, doc, _ = await self.call("GET", f"/api/v1/operations/{op_id}", token="viewer")
        assert status == 200, doc
        return doc

    async def wait_op(self, op_id: str, *, until: set[str] | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """Poll the operation until its status is in `until` (default: any final status)."""
        wanted = until or TERMINAL
        deadline = time.monotonic() + timeout
        doc: dict[str, Any] = {}
        while time.monotonic() < deadline:
            doc = await self.op(op_id)
            if doc["status"] in wanted:
                return doc
            await asyncio.sleep(0.01)
        raise AssertionError(f"operation {op_id} still {doc.get('status')} after {timeout}s: {doc}")

    async def wait_upid(self, op_id: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            doc = await self.op(op_id)
            if doc["upid"]:
                return doc
            await asyncio.sleep(0.01)
        raise AssertionError(f"operation {op_id} got no UPID within {timeout}s")

    def advance(self, seconds: float) -> None:
        self.clock.t += seconds

    async def cycle(self, cluster: str = "lab") -> None:
        await self.daemon.clusters[cluster].poller.run_once()


@asynccontextmanager
async def control_app(
    db: Path, clusters: Any = (("lab", 3, 4),), *, control: dict[str, Any] | None = None,
    sim_kw: dict[str, Any] | None = None, clock: FixedClock | None = None, sim: Simulator | None = None,
    config_path: str | None = None, token_id: str | None = None, token_secret: str | None = None,
    cluster_kw: dict[str, Any] | None = None,
):
    clock = clock or FixedClock()
    sim = sim or build_simulator(list(clusters), seed=7, auth_delay=0.0, clock=clock, **(sim_kw or {}))
    async with SimulatorServer(sim) as server:
        cfgs = []
        for name, url in server.urls.items():
            cfg = cluster_cfg(name, [url], **(cluster_kw or {}))
            if token_id is not None:
                cfg.update(token_id=token_id, token_secret=token_secret)
            cfgs.append(cfg)
        settings = Settings(listen="127.0.0.1:0", clusters=cfgs, control=control_cfg(db, **(control or {})))
        daemon = Daemon(settings, autostart=False, clock=clock, monotonic=clock.monotonic, config_path=config_path)
        async with TestClient(TestServer(build_app(daemon))) as client:
            ctl = Ctl(daemon, sim, client, clock, dict(server.urls))
            for name in daemon.clusters:
                await ctl.cycle(name)
            yield ctl
