"""Serve every cluster of a `Simulator` on its own port (base_port + i; 0 = ephemeral)."""

from __future__ import annotations

import ssl
from types import TracebackType

from aiohttp import web

from pve_exporter.simulator.app import STATE_KEY, make_app
from pve_exporter.simulator.model import Simulator


class SimulatorServer:
    """Start and stop the HTTP side of a simulator, in-process (pytest) or from the CLI."""

    def __init__(
        self, simulator: Simulator, *, host: str = "127.0.0.1", base_port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.simulator = simulator
        self.ssl_context = ssl_context  # set: serve HTTPS (PVE's only scheme; clients like proxmoxer need it)
        self.host = host
        self.base_port = base_port
        self._runners: dict[str, web.AppRunner] = {}
        self.ports: dict[str, int] = {}

    @property
    def urls(self) -> dict[str, str]:
        """`{cluster_name: "http(s)://host:port"}`; the API lives under `/api2/json`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.ssl_context is not None else "http"
        return {name: f"{scheme}://{host}:{port}" for name, port in self.ports.items()}

    async def start(self) -> None:
        try:
            for i, (name, cluster) in enumerate(self.simulator.clusters.items()):
                # handler_cancellation: a client that gives up on a `timeout` fault frees its handler
                runner = web.AppRunner(make_app(self.simulator, cluster), handler_cancellation=True,
                                       shutdown_timeout=2.0, access_log=None)
                await runner.setup()
                self._runners[name] = runner
                port = self.base_port + i if self.base_port else 0
                site = web.TCPSite(runner, self.host, port, reuse_address=True, ssl_context=self.ssl_context)
                await site.start()
                self.ports[name] = runner.addresses[0][1]
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for runner in self._runners.values():
            runner.app[STATE_KEY].stopping.set()
        for runner in self._runners.values():
            await runner.cleanup()
        self._runners.clear()
        self.ports.clear()

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
