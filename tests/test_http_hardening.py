"""The HTTP surface under hostile input: strict integers and times, q-values, lockouts that spare valid
tokens, security headers on every HTML page (issue 11, items 11, 12, 17)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request

from pve_exporter.app import build_app
from pve_exporter.handlers import _wants_gzip
from pve_exporter.listener import (
    FD_RESERVE,
    MIN_CONNECTIONS,
    GuardedRunner,
    GuardedServer,
    GuardedSite,
    ListenerLimits,
    fit_to_open_file_limit,
)
from pve_exporter.settings import WebSettings
from tests.controlharness import control_app
from tests.servers import free_port
from tests.simharness import cycle, sim_daemon

# ---- item 17: input strictness --------------------------------------------------------------------


async def test_path_and_query_integers_are_ascii_only(tmp_path: Path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        for vmid in ("１０２", "١٠٢", "１02"):  # fullwidth, Arabic-Indic, mixed
            status, body, _ = await ctl.call("POST", f"/api/v1/clusters/lab/guests/{vmid}/restart")
            assert status == 400 and body["error_code"] == "INVALID_REQUEST", (vmid, body)
            assert body["details"]["errors"][0]["field"] == "vmid"
        for query in ("limit=５", "offset=１", "resource_id=１０２", "limit=+5", "limit= 5"):
            status, body, _ = await ctl.call("GET", f"/api/v1/operations?{query}", token="viewer")
            assert status == 400 and body["error_code"] == "INVALID_REQUEST", (query, body)
        status, hist, _ = await ctl.call("GET", "/api/v1/operations", token="viewer")
        assert hist["total"] == 0  # nothing was started by the Unicode VMID
        assert (await ctl.call("GET", "/api/v1/operations?limit=5&resource_id=102", token="viewer"))[0] == 200


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400", "１７６７２２５６００",
                                   "1e20", "-5"])
async def test_since_and_until_must_be_finite_ascii_times(tmp_path: Path, value: str) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        for name in ("since", "until"):
            status, body, _ = await ctl.call("GET", f"/api/v1/operations?{name}={value}", token="viewer")
            assert status == 400, (name, value, body)
            assert body["error_code"] == "INVALID_REQUEST" and body["details"]["errors"][0]["field"] == name


async def test_good_times_still_work(tmp_path: Path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        for value in ("1767225600", "1767225600.5", "2026-01-01T00:00:00Z", "0"):
            status, body, _ = await ctl.call("GET", f"/api/v1/operations?since={value}", token="viewer")
            assert status == 200, (value, body)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True), ("gzip, deflate", True), ("deflate, gzip;q=0.5", True), ("GZIP", True),
        ("gzip;q=0", False), ("gzip; q=0.000", False), ("gzip;q=0, identity", False), ("identity", False),
        ("", False), ("*", True), ("*;q=0", False), ("gzip;q=0, *", False), ("identity, *;q=0.1", True),
        ("x-gzip", True), ("gzipfoo", False), ("br, gzip;q=bogus", False), ("gzip;q=1.0", True),
    ],
)  # fmt: skip
def test_accept_encoding_q_values(header: str, expected: bool) -> None:
    request = make_mocked_request("GET", "/metrics", headers={"Accept-Encoding": header} if header else {})
    assert _wants_gzip(request) is expected


async def test_scrape_with_gzip_q0_is_plain_text(tmp_path: Path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        resp = await ctl.client.get("/metrics", headers={"Accept-Encoding": "gzip;q=0"}, auto_decompress=False)
        assert resp.status == 200 and "Content-Encoding" not in resp.headers
        assert "pve_up" in (await resp.read()).decode()


async def test_bulk_dry_runs_do_not_consume_the_power_limit(tmp_path: Path) -> None:
    async with control_app(tmp_path / "ops.sqlite", control={"power_limit": {"burst": 2, "per_minute": 1}}) as ctl:
        plan = {"action": "restart", "selector": {"cluster": "lab", "vmids": [102]}, "dry_run": True}
        for _ in range(5):
            status, body, _ = await ctl.call("POST", "/api/v1/actions", json=plan)
            assert status == 200 and body["dry_run"] is True, body
        assert (await ctl.call("POST", "/api/v1/actions", json={**plan, "dry_run": False}))[0] == 202
        assert (await ctl.call("POST", "/api/v1/clusters/lab/guests/105/restart"))[0] == 202
        status, body, _ = await ctl.call("POST", "/api/v1/actions", json={**plan, "dry_run": False})
        assert status == 429 and body["details"]["limit"] == "power_requests"
        status, body, _ = await ctl.call("POST", "/api/v1/actions", json=plan)
        assert status == 200  # a plan is still answered while actions are limited


# ---- item 11: lockout spares valid tokens ---------------------------------------------------------


async def test_failed_tokens_never_lock_out_a_valid_token(tmp_path: Path) -> None:
    limits = {"auth_failure_limit": {"burst": 3, "per_minute": 6}}
    async with control_app(tmp_path / "ops.sqlite", control=limits) as ctl:
        for i in range(3):
            assert (await ctl.call("GET", "/api/v1/guests", token=f"guess-{i}-aaaaaaaaaaaa"))[0] == 401
        status, body, hd = await ctl.call("GET", "/api/v1/guests", token="guess-9-aaaaaaaaaaaa")
        assert status == 429 and body["details"]["limit"] == "auth_failures" and hd["Retry-After"] == "10"
        for token in ("viewer", "ops", "boss"):  # same address, NAT or proxy: valid tokens are served
            assert (await ctl.call("GET", "/api/v1/guests", token=token))[0] == 200
        assert (await ctl.call("GET", "/api/v1/guests", token=None))[0] == 429
        text = ctl.daemon.metrics_body(["lab"], False).decode()
        assert 'pve_exporter_control_rate_limited_total{limit="auth"} 2' in text
        assert 'pve_exporter_control_auth_failures_total{reason="invalid"} 3' in text


async def test_failures_are_limited_per_presented_token_prefix(tmp_path: Path) -> None:
    """A stale token hammered from many addresses is limited by its prefix, other tokens are not."""
    limits = {"auth_failure_limit": {"burst": 3, "per_minute": 6}}
    async with control_app(tmp_path / "ops.sqlite", control=limits) as ctl:
        plane = ctl.daemon.control
        assert plane is not None
        stale = "Bearer stale-token-0123456789abcdef"
        for i in range(3):
            with pytest.raises(Exception) as info:
                plane.authenticate(stale, f"10.0.0.{i}", "read", "/api/v1/guests")
            assert info.value.code == "UNAUTHORIZED"
        with pytest.raises(Exception) as info:
            plane.authenticate(stale.replace("0123", "9999"), "10.0.0.77", "read", "/api/v1/guests")
        assert info.value.code == "RATE_LIMITED"  # same first 8 characters, fresh address
        with pytest.raises(Exception) as info:
            plane.authenticate("Bearer other-token-0123456789", "10.0.0.78", "read", "/api/v1/guests")
        assert info.value.code == "UNAUTHORIZED"  # another prefix from another address: a normal 401
        from tests.controlharness import TOKENS

        assert plane.authenticate(f"Bearer {TOKENS['viewer'][0]}", "10.0.0.1", "read", "/x").name == "viewer"
        # only a digest of the prefix is kept in memory, never the presented token's text
        assert not [k for k in plane.auth_limiter._buckets if "stale" in k]
        ctl.advance(10)
        with pytest.raises(Exception) as info:
            plane.authenticate(stale, "10.0.0.99", "read", "/api/v1/guests")
        assert info.value.code == "UNAUTHORIZED"


# ---- item 12: security headers on every HTML answer -----------------------------------------------

SECURITY_HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def _inline_style_hashes(page: str) -> set[str]:
    return {"'sha256-" + base64.b64encode(hashlib.sha256(css.encode()).digest()).decode() + "'"
            for css in re.findall(r"<style>(.*?)</style>", page, flags=re.S)}


async def _html_answers(client, app) -> dict[str, tuple[dict[str, str], str]]:
    """Every GET route of the app (dynamic /ui/{name} with each page file), the HTML ones kept."""
    from pve_exporter.control.routes import UI_FILES

    paths = set()
    for resource in app.router.resources():
        info = resource.get_info()
        if "path" in info:
            paths.add(info["path"])
        elif "formatter" in info and info["formatter"].startswith("/ui/"):
            paths |= {f"/ui/{name}" for name in UI_FILES}
    out = {}
    for path in sorted(paths):
        resp = await client.get(path, allow_redirects=False)
        if resp.content_type == "text/html":
            out[path] = (dict(resp.headers), await resp.text())
    return out


async def test_every_html_answer_has_the_security_headers(tmp_path: Path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        pages = await _html_answers(ctl.client, ctl.client.server.app)
        assert {"/", "/ui/", "/ui/index.html"} <= set(pages), sorted(pages)
        for path, (headers, page) in pages.items():
            for name, value in SECURITY_HEADERS.items():
                assert headers.get(name) == value, (path, name, headers)
            csp = headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
            assert "default-src 'none'" in csp or "default-src 'self'" in csp, (path, csp)
            for needed in _inline_style_hashes(page):  # an inline style is allowed by its hash, nothing else
                assert needed in csp, (path, csp)
        # every other answer at least carries nosniff
        assert (await ctl.client.get("/metrics")).headers["X-Content-Type-Options"] == "nosniff"


async def test_landing_page_headers_without_the_control_api() -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from pve_exporter.app import Daemon, build_app
    from pve_exporter.settings import Settings
    from tests.simharness import FixedClock, cluster_cfg

    settings = Settings(listen="127.0.0.1:0", clusters=[cluster_cfg("lab", ["http://127.0.0.1:1"])])
    daemon = Daemon(settings, autostart=False, clock=FixedClock())
    async with TestClient(TestServer(build_app(daemon))) as client:
        pages = await _html_answers(client, client.server.app)
        assert set(pages) == {"/"}
        headers, page = pages["/"]
        for name, value in SECURITY_HEADERS.items():
            assert headers.get(name) == value
        assert _inline_style_hashes(page) and all(h in headers["Content-Security-Policy"]
                                                  for h in _inline_style_hashes(page))


# ---- item 14 and 17: the listener under idle, slow and malformed clients (real sockets) -----------


@asynccontextmanager
async def listening(**web: Any):
    """The daemon (simulator-backed, one cycle done) behind the real listener on 127.0.0.1."""
    settings = WebSettings(**web)
    async with sim_daemon() as (daemon, _, _):
        await cycle(daemon)
        runner = GuardedRunner(build_app(daemon), ListenerLimits.of(settings))
        await runner.setup()
        port = free_port()
        await GuardedSite(runner, "127.0.0.1", port).start()
        try:
            yield runner, port
        finally:
            await runner.cleanup()


async def scrape(port: int) -> int:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics") as r:
        assert "pve_up" in await r.text()
        return r.status


async def closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout)


async def test_many_idle_sockets_do_not_lock_out_scrapes() -> None:
    async with listening(max_connections=16, header_timeout_seconds=30) as (runner, port):
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(60)]  # far more than the cap
        try:
            await asyncio.sleep(0)
            assert await scrape(port) == 200
            server = runner.guarded_server
            assert server is not None and server.open_connections <= 16 and server.evicted >= 44
            # the oldest idle sockets were closed by the server (EOF), the newest are still open
            assert await closed_by_server(idle[0][0], 2) == b""
            assert not idle[-1][0].at_eof()
            assert await scrape(port) == 200  # and again, with the cap still full of idle sockets
        finally:
            for _, writer in idle:
                writer.close()


async def test_a_partial_header_is_dropped_after_the_header_timeout() -> None:
    async with listening(header_timeout_seconds=0.5) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # slowloris: never finishes the headers
        assert await closed_by_server(reader, 2.0) == b""
        assert 0.4 <= time.monotonic() - started < 2.0
        writer.close()
        # a silent connection is dropped too, and a normal request on time is answered
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await closed_by_server(reader, 2.0) == b""
        writer.close()
        assert await scrape(port) == 200


async def test_an_idle_keepalive_connection_is_closed() -> None:
    async with listening(idle_timeout_seconds=0.5) as (runner, port), aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{port}/metrics") as r:  # keep-alive connection, now idle
            await r.read()
        started = time.monotonic()
        server = runner.guarded_server
        assert server is not None and server.open_connections == 1
        while server.open_connections and time.monotonic() - started < 2.0:
            await asyncio.sleep(0.02)
        assert server.open_connections == 0  # closed by the idle timeout, not kept for ever


class FakeConnection:
    def __init__(self, idle: bool, started: float = 0.0) -> None:
        self.idle = idle
        self.started = started
        self.closed = False

    def overdue(self, now: float) -> bool:
        return not self.idle and now - self.started > 120

    def force_close(self) -> None:
        self.closed = True


async def test_the_cap_closes_an_idle_connection_then_an_overdue_one_never_a_young_busy_one() -> None:
    async def handler(request: Any) -> Any:
        raise AssertionError("not called")

    loop = asyncio.get_running_loop()
    server = GuardedServer(handler, limits=ListenerLimits(10, 60, 3, 120), loop=loop)
    now = loop.time()
    a, b, c = FakeConnection(idle=True), FakeConnection(idle=False, started=now), FakeConnection(idle=True)
    for conn in (a, b, c):
        assert server.admit(conn)  # type: ignore[arg-type]
    server.touch(a)  # a was active last: c is now the least recently active idle one
    d = FakeConnection(idle=True)
    assert server.admit(d) and c.closed and not a.closed and not b.closed  # type: ignore[arg-type]
    a.idle = d.idle = False
    a.started = d.started = now
    e = FakeConnection(idle=True)
    assert not server.admit(e) and e.closed and server.refused == 1  # type: ignore[arg-type]
    server.release(b)  # type: ignore[arg-type]
    f = FakeConnection(idle=True)
    assert server.admit(f) and server.open_connections == 3 and server.evicted == 1  # type: ignore[arg-type]
    # a client that never reads its answer keeps its request running: once overdue it makes room
    f.idle, f.started = False, now - 121
    g = FakeConnection(idle=True)
    assert server.admit(g) and f.closed and not a.closed and not d.closed  # type: ignore[arg-type]


@pytest.mark.parametrize("request_bytes", [
    b"GET /metrics?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Long: " + b"b" * 9000 + b"\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nBroken header\r\n\r\n",
])  # fmt: skip
async def test_malformed_requests_get_the_json_error_body(request_bytes: bytes) -> None:
    async with listening() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes)
        raw = await closed_by_server(reader, 2.0)
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")) and b"application/json" in head, raw[:300]
        doc = json.loads(body)
        assert doc["error_code"] == "INVALID_REQUEST" and doc["success"] is False and doc["request_id"]
        assert b"aaaa" not in raw and b"bbbb" not in raw and b"Broken" not in raw  # no echo of the input


def test_fd_limit_is_raised_and_a_cap_that_does_not_fit_is_lowered(monkeypatch, log_buffer) -> None:
    import resource

    calls = []
    limit = [(256, 1024)]
    monkeypatch.setattr(resource, "getrlimit", lambda _r: limit[0])
    monkeypatch.setattr(resource, "setrlimit", lambda _r, v: calls.append(v))
    wanted = ListenerLimits(10, 60, 512)
    assert fit_to_open_file_limit(wanted) == wanted and calls == [(1024, 1024)]
    assert "lowered" not in log_buffer.getvalue()
    assert fit_to_open_file_limit(ListenerLimits(10, 60, 900)).max_connections == 1024 - FD_RESERVE
    assert "web.max_connections lowered" in log_buffer.getvalue()
    limit[0] = (256, 256)  # `ulimit -n 256`: nothing to raise
    assert fit_to_open_file_limit(wanted).max_connections == MIN_CONNECTIONS


def test_idle_sockets_under_a_low_open_file_limit_do_not_stop_scrapes(tmp_path: Path) -> None:
    """The reported case: `ulimit -n 256`, 300 idle sockets, default settings: /metrics must answer.
    (The old listener: scrape timed out, ~2000 "Too many open files" log lines.) The cap is lowered to
    fit the limit, so cap + one accept burst (listen backlog 128) + the daemon's own files fit."""
    import resource
    import socket
    import subprocess
    import sys

    from pve_exporter.simulator import DEFAULT_TOKEN_ID, DEFAULT_TOKEN_SECRET
    from tests.servers import http_get, wait_until

    port = free_port()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(json.dumps({
        "listen": f"127.0.0.1:{port}", "web": {"header_timeout_seconds": 60},  # default max_connections
        "clusters": [{"name": "lab", "endpoints": ["http://127.0.0.1:1"], "token_id": DEFAULT_TOKEN_ID,
                      "token_secret": DEFAULT_TOKEN_SECRET, "timeout_seconds": 1}],
    }))  # fmt: skip
    cfg.chmod(0o600)
    with open(tmp_path / "daemon.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pve_exporter", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)),
        )  # fmt: skip
        socks: list[socket.socket] = []
        try:
            wait_until(lambda: http_get(f"http://127.0.0.1:{port}/-/healthy"), timeout=20, what="daemon")
            socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(300)]
            assert b"pve_exporter_build_info" in http_get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        finally:
            for s in socks:
                s.close()
            proc.terminate()
            proc.wait(15)
    assert "Too many open files" not in (tmp_path / "daemon.log").read_text(errors="replace")
