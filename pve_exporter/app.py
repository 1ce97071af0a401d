"""Composition root: the web app around a Daemon (routes, middlewares, lifecycle) and `serve`, which
runs it behind the guarded listener until SIGTERM, reloading on SIGHUP."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from pve_exporter import htmlsecurity
from pve_exporter.control import routes as control_routes
from pve_exporter.daemon import RESTART_KEYS, ClusterRuntime, Daemon, restart_required
from pve_exporter.export.influx_spool import SpoolInUseError
from pve_exporter.handlers import (
    DAEMON,
    handle_healthy,
    handle_index,
    handle_metrics,
    handle_pve,
    handle_ready,
)
from pve_exporter.listener import GuardedRunner, GuardedSite, ListenerLimits, fit_to_open_file_limit
from pve_exporter.settings import Settings
from pve_exporter.webconfig import BasicAuth, WebConfig, basic_auth_middleware

__all__ = ["DAEMON", "RESTART_KEYS", "ClusterRuntime", "Daemon", "build_app", "restart_required", "serve"]

log = structlog.get_logger("pve_exporter.app")


def build_app(daemon: Daemon, web_config: WebConfig | None = None) -> web.Application:
    middlewares = []
    basic_auth = None
    if web_config is not None and web_config.basic_auth_users:
        basic_auth = BasicAuth(web_config.basic_auth_users)
        middlewares.append(basic_auth_middleware(basic_auth))
    app = web.Application(client_max_size=64 * 1024, middlewares=middlewares)
    app[DAEMON] = daemon
    if basic_auth is not None:
        app.on_startup.append(lambda _app: basic_auth.prepare())  # the dummy hash, off the event loop
        app.on_cleanup.append(lambda _app: basic_auth.close())  # its bcrypt threads end with the app
    htmlsecurity.install(app)

    async def lifecycle(app: web.Application) -> Any:
        started = await daemon.start()  # a test may have started it already
        yield
        if started:
            await daemon.stop()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/", handle_index)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/pve", handle_pve)
    app.router.add_get("/-/healthy", handle_healthy)
    app.router.add_get("/-/ready", handle_ready)
    control_routes.setup(app, daemon.control)
    return app


async def serve(
    settings: Settings,
    *,
    config_path: str | None = None,
    ready: Callable[[], None] | None = None,
    web_config: WebConfig | None = None,
) -> int:
    """Run the daemon until SIGTERM/SIGINT; SIGHUP reloads the config file."""
    daemon = Daemon(settings, config_path=config_path)
    app = build_app(daemon, web_config)
    limits = fit_to_open_file_limit(ListenerLimits.of(settings.web))
    runner = GuardedRunner(app, limits)  # header and idle timeouts, connection cap, JSON parse errors
    try:
        await runner.setup()
    except SpoolInUseError as exc:  # another daemon writes to this spool directory
        log.error("cannot start the InfluxDB output", error=str(exc))
        await daemon.stop()
        return 1
    ssl_context = web_config.ssl_context() if web_config is not None else None
    site = GuardedSite(runner, settings.listen_host, settings.listen_port, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot listen", listen=settings.listen, error=exc.strerror or str(exc))
        await runner.cleanup()
        return 1
    log.info(
        "listening", listen=settings.listen, tls=ssl_context is not None,
        basic_auth=bool(web_config and web_config.basic_auth_users), clusters=[c.name for c in settings.clusters],
    )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reload_tasks: set[asyncio.Task[bool]] = set()

    def on_hup() -> None:
        # Owned here and awaited before shutdown; reload() logs its own failures and never raises.
        t = asyncio.create_task(daemon.reload(), name="reload-sighup")
        reload_tasks.add(t)
        t.add_done_callback(reload_tasks.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    if ready is not None:
        ready()
    await stop.wait()
    log.info("shutting down")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(sig)
    if reload_tasks:  # a reload half-way would leave built clients behind: let it finish
        await asyncio.gather(*reload_tasks, return_exceptions=True)
    await runner.cleanup()
    log.info("stopped")
    return 0
