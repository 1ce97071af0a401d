"""The HTTP listener's defences against idle, slow and too many clients, and malformed requests.

aiohttp on its own waits forever for the first request of a connection and keeps any number of
connections open, so idle sockets can use up the process's file descriptors and `/metrics` stops
answering. Here every connection must deliver its first request's headers (TLS: finish its
handshake) within `header_timeout_seconds`; a keep-alive connection idle for `idle_timeout_seconds`
is closed; and at most `max_connections` are open: a new one beyond the cap closes the least
recently active *idle* connection (a client that is not in the middle of a request), else one whose
request has run longer than `request_timeout_seconds` (a client that does not read its answer keeps
its request running for ever), or is itself closed when every connection is busy with a young
request. A request too malformed to reach the app (an over-long request line or header, a broken
header) gets the JSON error body of httperrors, never aiohttp's text that echoes the input.

aiohttp offers no hooks for this, so `GuardedRequestHandler` reads three of `RequestHandler`'s slots
(`_request_count`, `_request_in_progress`, `_messages`); tests/test_http_hardening.py pins the behaviour.
"""

from __future__ import annotations

import asyncio
import resource
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

from pve_exporter.httperrors import error_response
from pve_exporter.settings import WebSettings

log = structlog.get_logger("pve_exporter.listener")

MAX_LINE_SIZE = 8190  # request line and each header line, bytes (aiohttp's default)
MAX_FIELD_SIZE = 8190
# asyncio accepts up to a whole listen backlog per loop iteration, and an evicted connection's socket
# closes only two or three iterations after the accept that evicted it: a flood holds about four
# backlogs of sockets beyond the cap. A small backlog keeps that bounded (a scrape target needs few).
LISTEN_BACKLOG = 32
# Descriptors beyond the cap: those accept bursts (4 x 32), plus PVE/InfluxDB connections, the history
# database, the spool, the event loop's own.
FD_RESERVE = 256


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    header_timeout: float
    idle_timeout: float
    max_connections: int
    request_timeout: float = 120.0

    @classmethod
    def of(cls, web_settings: WebSettings) -> ListenerLimits:
        return cls(web_settings.header_timeout_seconds, web_settings.idle_timeout_seconds,
                   web_settings.max_connections, web_settings.request_timeout_seconds)


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection protocol with a header deadline, cap bookkeeping and JSON parse errors."""

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = manager
        self._header_timer: asyncio.TimerHandle | None = None
        self._requests_seen = 0
        self.request_started = 0.0  # loop time the latest request's headers arrived

    @property
    def idle(self) -> bool:
        """Not inside a request: waiting for (the rest of) one, or between keep-alive requests."""
        return not self._request_in_progress and not self._messages

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._guard.admit(self):
            self._header_timer = self._loop.call_later(self._guard.limits.header_timeout, self._header_deadline)

    def overdue(self, now: float) -> bool:
        """Inside a request that has run longer than the request timeout."""
        return not self.idle and now - self.request_started > self._guard.limits.request_timeout

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._guard.touch(self)
        if self._request_count != self._requests_seen:
            self._requests_seen = self._request_count
            self.request_started = self._loop.time()
        if self._header_timer is not None and self._request_count:  # the first request's headers are in
            self._header_timer.cancel()
            self._header_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._guard.release(self)
        super().connection_lost(exc)

    def _header_deadline(self) -> None:
        self._header_timer = None
        if not self._request_count:
            log.debug("closing a connection that sent no complete request headers in time", peer=self.peername)
            self.force_close()

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """The design's JSON error body for requests the app never saw (no echo of the input)."""
        if status >= 500:
            log.error("request failed outside the app", status=status, exc_info=exc)
        else:
            log.debug("malformed request", status=status, error=type(exc).__name__ if exc else None)
        if request.writer.output_size > 0:  # part of an answer is out: the connection is broken
            raise ConnectionError("response already started; cannot send an error")
        if status >= 500:
            resp = error_response(status, "INTERNAL_ERROR", "unexpected error; see the daemon log")
        elif isinstance(exc, LineTooLong):
            resp = error_response(
                400, "INVALID_REQUEST", f"the request line or a header is longer than {MAX_LINE_SIZE} bytes",
                details={"max_line_bytes": MAX_LINE_SIZE, "max_header_bytes": MAX_FIELD_SIZE},
                recovery=["Send a shorter URL or header; query parameters are short names and values."],
            )  # fmt: skip
        else:
            resp = error_response(400, "INVALID_REQUEST", "malformed HTTP request",
                                  recovery=["Send a well-formed HTTP/1.1 request."])
        resp.force_close()
        return resp


class GuardedServer(web.Server):
    """aiohttp's Server, making GuardedRequestHandlers and keeping at most `max_connections` open."""

    def __init__(self, handler: Any, *, limits: ListenerLimits, loop: asyncio.AbstractEventLoop, **kwargs: Any):
        handler_kwargs = {k: v for k, v in kwargs.items() if k not in ("request_factory", "handler_cancellation")}
        super().__init__(handler, loop=loop, **kwargs)
        self.limits = limits
        self._guard_loop = loop
        self._handler_kwargs = handler_kwargs
        self._open: OrderedDict[GuardedRequestHandler, None] = OrderedDict()  # least recently active first
        self.evicted = 0
        self.refused = 0

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._guard_loop, **self._handler_kwargs)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def admit(self, conn: GuardedRequestHandler) -> bool:
        """Count a new connection; at the cap close the least recently active idle one, else refuse it."""
        if len(self._open) >= self.limits.max_connections:
            now = self._guard_loop.time()
            victim = next((c for c in self._open if c.idle), None) or next(
                (c for c in self._open if c.overdue(now)), None
            )
            if victim is None:
                self.refused += 1
                log.warning("connection refused: every connection is busy", max_connections=self.limits.max_connections)
                conn.force_close()
                return False
            self.evicted += 1
            del self._open[victim]
            victim.force_close()
        self._open[conn] = None
        return True

    def touch(self, conn: GuardedRequestHandler) -> None:
        if conn in self._open:
            self._open.move_to_end(conn)

    def release(self, conn: GuardedRequestHandler) -> None:
        self._open.pop(conn, None)


class GuardedRunner(web.AppRunner):
    """An AppRunner whose server is a GuardedServer with the configured limits."""

    def __init__(self, app: web.Application, limits: ListenerLimits) -> None:
        self.limits = limits
        self._handler_kwargs: dict[str, Any] = {
            "access_log": None, "keepalive_timeout": limits.idle_timeout,
            "max_line_size": MAX_LINE_SIZE, "max_field_size": MAX_FIELD_SIZE,
        }  # fmt: skip
        super().__init__(app, handle_signals=False, **self._handler_kwargs)

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()  # runs the app's startup, freezes it
        return GuardedServer(base.request_handler, request_factory=base.request_factory,
                             handler_cancellation=base.handler_cancellation, limits=self.limits,
                             loop=asyncio.get_running_loop(), **self._handler_kwargs)  # fmt: skip

    @property
    def guarded_server(self) -> GuardedServer | None:
        server = self.server
        return server if isinstance(server, GuardedServer) else None


class GuardedSite(web.TCPSite):
    """A TCPSite with a small listen backlog (see LISTEN_BACKLOG) whose TLS handshake must finish within
    the header timeout (asyncio's default is 60 s)."""

    def __init__(self, runner: GuardedRunner, host: str, port: int, *, ssl_context: Any = None) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, reuse_address=True, backlog=LISTEN_BACKLOG)
        self._handshake_timeout = runner.limits.header_timeout

    async def start(self) -> None:
        if self._ssl_context is None:
            await super().start()
            return
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            server, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, ssl_handshake_timeout=self._handshake_timeout,
        )  # fmt: skip


MIN_CONNECTIONS = 16


def fit_to_open_file_limit(limits: ListenerLimits) -> ListenerLimits:
    """Raise the soft RLIMIT_NOFILE to the hard one (as Go programs do); when the connection cap plus
    FD_RESERVE still does not fit under it, lower the cap (at least MIN_CONNECTIONS) and say so.
    Returns the limits to use."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if limits.max_connections + FD_RESERVE <= soft:
        return limits
    cap = max(soft - FD_RESERVE, MIN_CONNECTIONS)
    log.warning(
        "web.max_connections lowered to fit the open-file limit; raise LimitNOFILE / ulimit -n for more",
        configured=limits.max_connections, max_connections=cap, open_file_limit=soft, reserve=FD_RESERVE,
    )  # fmt: skip
    return replace(limits, max_connections=cap)
