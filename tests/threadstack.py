"""Simulator + daemon (control API enabled) served on a real 127.0.0.1 port from a background thread.

For clients that block (schemathesis' requests, selenium driving Chromium): the event loop runs
in its own thread, the test talks HTTP to `stack.url` and moves the shared FixedClock.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

from pve_exporter.app import Daemon, build_app
from pve_exporter.settings import Settings
from pve_exporter.simulator import SimulatorServer, build_simulator
from tests.controlharness import control_cfg
from tests.servers import free_port
from tests.simharness import FixedClock, cluster_cfg


class ThreadedStack:
    def __init__(self, tmp: Path, *, control: dict[str, Any] | None = None, clusters: Any = (("lab", 3, 4),)) -> None:
        self.tmp = tmp
        self.control = control or {}
        self.clusters = clusters
        self.clock = FixedClock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sim = build_simulator(list(clusters), seed=7, auth_delay=0.0, clock=self.clock)
        self.daemon: Daemon | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="stack", daemon=True)

    def __enter__(self) -> ThreadedStack:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"stack did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with SimulatorServer(self.sim) as server:
            settings = Settings(
                listen=f"127.0.0.1:{self.port}",
                clusters=[cluster_cfg(name, [url]) for name, url in server.urls.items()],
                control=control_cfg(self.tmp / "ops.sqlite", **self.control),
            )
            # pollers run; trigger() refreshes after actions
            self.daemon = Daemon(settings, clock=self.clock, monotonic=self.clock.monotonic)
            runner = web.AppRunner(build_app(self.daemon), access_log=None)
            await runner.setup()
            try:
                await web.TCPSite(runner, "127.0.0.1", self.port).start()
                for name in self.daemon.clusters:
                    await self.daemon.clusters[name].poller.run_once()
                self._ready.set()
                await self._stop.wait()
            finally:
                await runner.cleanup()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the stack's loop (e.g. a collection cycle) and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)
