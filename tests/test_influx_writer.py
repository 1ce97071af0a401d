"""The InfluxDB writer against a fake InfluxDB (aiohttp on 127.0.0.1): batching, gzip, retries,
no retry on 400, the on-disk spool (outage, order, full spool, restart, shutdown) and self-metrics.

Sleeps are injected (`FakeSleep`), so backoff and Retry-After are asserted, never waited for.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from pve_exporter.app import Daemon
from pve_exporter.export.influx import snapshot_to_lines
from pve_exporter.export.influx_sink import classify, offending_line, parse_retry_after
from pve_exporter.export.influx_spool import Spool
from pve_exporter.export.influx_writer import InfluxWriter
from pve_exporter.export.prometheus import render
from pve_exporter.settings import InfluxSettings, Settings
from pve_exporter.snapshot import Payload, Snapshot
from tests.servers import free_port

T0 = 1_767_225_600
PASSWORD = "s3cret-influx-pass"
TOKEN = "s3cret-influx-token"


# -- fakes ---------------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    lines: list[str]
    status: int


@dataclass
class FakeInflux:
    """Answers /write (v1) and /api/v2/write (v2); scripted statuses, else 204. Can go down and up."""

    port: int = field(default_factory=free_port)
    script: deque[tuple[int, dict[str, str], str]] = field(default_factory=deque)
    attempts: list[Received] = field(default_factory=list)
    hang: asyncio.Event | None = None
    server: TestServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.attempts if 200 <= r.status < 300]

    def lines(self) -> list[str]:
        return [line for r in self.accepted for line in r.lines]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp undoes Content-Encoding: gzip; a bad gzip body is a 400 there
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        if self.hang is not None:
            await self.hang.wait()
        status, headers, text = self.script.popleft() if self.script else (204, {}, "")
        self.attempts.append(
            Received(request.path, dict(request.query), dict(request.headers), body.decode().splitlines(), status)
        )
        return web.Response(status=status, headers=headers, text=text)

    async def up(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/write", self.handle)
        app.router.add_post("/api/v2/write", self.handle)
        self.server = TestServer(app, host="127.0.0.1", port=self.port)
        await self.server.start_server()

    async def down(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None


class FakeSleep:
    """Records every delay; returns at once (`auto`) or when the test calls `release()`."""

    def __init__(self, auto: bool = True) -> None:
        self.delays: list[float] = []
        self.auto = auto
        self._gate = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self.auto:
            await asyncio.sleep(0)
        else:
            await self._gate.wait()

    def release(self) -> None:
        self._gate.set()
        self._gate = asyncio.Event()


async def until(pred, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll a condition with a deadline (the writer runs meanwhile)."""
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.005)


def snapshot(k: int, nodes: int = 1, cluster: str = "lab") -> Snapshot:
    """Cycle k: one `system` line per node with uptime=k, stamped T0 + 10k."""
    t = float(T0 + 10 * k)
    payloads = {f"/nodes/pve{n}/status": Payload({"uptime": k}, t) for n in range(1, nodes + 1)}
    return Snapshot(cluster=cluster, seq=k, started_at=t, finished_at=t, reachable=True, last_success=t,
                    families=(), results=MappingProxyType({}), payloads=MappingProxyType(payloads))  # fmt: skip


def cfg(url: str, tmp: Path | None, **kw: Any) -> InfluxSettings:
    base: dict[str, Any] = {
        "url": url, "api": "v1", "database": "pve", "username": "writer", "password": PASSWORD,
        "flush_interval_seconds": 0, "shutdown_timeout_seconds": 0.5,
    }  # fmt: skip
    if tmp is not None:
        base["spool_dir"] = tmp / "spool"
    if kw.get("api") == "v2":
        for k in ("database", "username", "password"):
            base.pop(k)
        base.update(org="proxmox", bucket="pve", token=TOKEN)
    base.update(kw)
    return InfluxSettings(**base)


def writer(c: InfluxSettings, sleep: FakeSleep | None = None) -> InfluxWriter:
    return InfluxWriter(c, sleep=sleep or FakeSleep(), rng=lambda: 0.5, clock=lambda: float(T0 + 999))


async def offer_one(w: InfluxWriter, snap: Snapshot) -> None:
    """Offer, then wait until it is encoded: one batch per snapshot."""
    w.offer(snap)
    await until(lambda: not w._pending and not w._encoding, what="encoded")


def uptimes(lines: list[str]) -> list[int]:
    return [int(line.split("uptime=")[1].split()[0]) for line in lines]


@pytest.fixture
async def sink():
    fake = FakeInflux()
    await fake.up()
    yield fake
    if fake.hang is not None:
        fake.hang.set()
    await fake.down()


# -- transport -----------------------------------------------------------------------------------


async def test_v1_write_is_gzipped_with_db_rp_precision_and_basic_auth(sink, tmp_path):
    w = writer(cfg(sink.url, tmp_path, retention_policy="autogen"))
    await w.start()
    s = snapshot(1, nodes=3)
    w.offer(s)
    await w.wait_idle(10)
    await w.stop()
    (req,) = sink.attempts
    assert req.path == "/write"
    assert req.query == {"db": "pve", "rp": "autogen", "precision": "s"}
    assert req.headers["Content-Encoding"] == "gzip"
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(f"writer:{PASSWORD}".encode()).decode()
    assert req.lines == snapshot_to_lines(s)
    assert w.stats.points_written == 3 and w.stats.batches_written == 1


async def test_v2_write_goes_through_influxdb_client_with_precision_s_and_gzip(sink, tmp_path):
    w = writer(cfg(sink.url, tmp_path, api="v2"))
    await w.start()
    s = snapshot(1, nodes=2)
    w.offer(s)
    await w.wait_idle(10)
    await w.stop()
    (req,) = sink.attempts
    assert req.path == "/api/v2/write"
    assert req.query == {"org": "proxmox", "bucket": "pve", "precision": "s"}
    assert req.headers["Authorization"] == f"Token {TOKEN}"
    assert req.headers["Content-Encoding"] == "gzip"
    assert req.lines == snapshot_to_lines(s)


async def test_v2_posts_the_gzipped_batch_as_it_is(sink, tmp_path, monkeypatch):
    """Issue 11 item 7: no inflate and level-9 recompression of every v2 batch on the event loop."""
    from pve_exporter.export.influx_sink import V2Sink

    body = gzip.compress(b"system,object=nodes,host=pve1 uptime=1 1767225600\n", 1)
    touched: list[str] = []

    def forbidden(name: str):
        def call(*a: Any, **kw: Any) -> bytes:
            touched.append(name)
            raise AssertionError(f"gzip.{name} called while sending")
        return call

    monkeypatch.setattr(gzip, "compress", forbidden("compress"))
    monkeypatch.setattr(gzip, "decompress", forbidden("decompress"))
    v2 = V2Sink(cfg(sink.url, None, api="v2"))
    try:
        outcome = await v2.write(body)
    finally:
        await v2.close()
        monkeypatch.undo()
    assert outcome.ok and touched == []
    (req,) = sink.attempts
    assert req.headers["Content-Encoding"] == "gzip" and req.headers["Authorization"] == f"Token {TOKEN}"
    assert req.query == {"org": "proxmox", "bucket": "pve", "precision": "s"}
    assert req.lines == ["system,object=nodes,host=pve1 uptime=1 1767225600"]


async def test_batches_are_bounded_by_bytes_and_keep_the_order(sink, tmp_path):
    w = writer(cfg(sink.url, tmp_path, batch_bytes=1024))
    await w.start()
    snaps = [snapshot(k, nodes=20) for k in range(1, 6)]
    for s in snaps:
        w.offer(s)
    await w.wait_idle(10)
    await w.stop()
    expected = [line for s in snaps for line in snapshot_to_lines(s)]
    assert sink.lines() == expected
    assert len(sink.accepted) > 5  # 5 × 20 lines of ~60 bytes do not fit 1 KiB batches
    for r in sink.accepted:
        assert sum(len(line) + 1 for line in r.lines) <= 1024
    assert w.stats.points_written == len(expected)
    assert w.stats.bytes_written == sum(len(line) + 1 for line in expected)


# -- retries -------------------------------------------------------------------------------------


async def test_retries_5xx_and_429_with_backoff_and_retry_after(sink, tmp_path):
    sink.script.extend([(503, {"Retry-After": "7"}, ""), (503, {"Retry-After": "7"}, ""), (429, {}, ""),
                        (500, {}, "")])  # fmt: skip
    sleep = FakeSleep()
    w = writer(cfg(sink.url, tmp_path, retry_initial_seconds=1, retry_max_seconds=6), sleep)
    await w.start()
    w.offer(snapshot(1))
    await w.wait_idle(10)
    await w.stop()
    # equal jitter with rng 0.5: 3/4 of 1, 2, 4, then capped at 6; never less than Retry-After
    assert sleep.delays == [7.0, 7.0, 3.0, 4.5]
    assert [r.status for r in sink.attempts] == [503, 503, 429, 500, 204]
    assert uptimes(sink.lines()) == [1]  # written once
    assert w.stats.retries == 4
    assert dict(w.stats.failures) == {"http_503": 2, "http_429": 1, "http_500": 1}
    assert w.stats.last_success == T0 + 999


async def test_connection_errors_are_retried_until_the_sink_answers(tmp_path):
    fake = FakeInflux()  # not up yet: connection refused
    sleep = FakeSleep(auto=False)
    w = writer(cfg(fake.url, tmp_path), sleep)
    await w.start()
    w.offer(snapshot(1))
    await until(lambda: len(sleep.delays) >= 1)
    assert w.stats.failures["connection"] >= 1 and w.stats.up is False
    await fake.up()
    try:
        sleep.release()
        await w.wait_idle(10)
        assert uptimes(fake.lines()) == [1]
        assert w.stats.up is True
    finally:
        await w.stop()
        await fake.down()


async def test_400_is_not_retried_and_logged_once_with_the_offending_line(sink, tmp_path, log_buffer):
    bad = {"code": "invalid", "message": "unable to parse points: line 2: invalid field format"}
    sink.script.append((400, {"Content-Type": "application/json"}, json.dumps(bad)))
    sleep = FakeSleep()
    w = writer(cfg(sink.url, tmp_path), sleep)
    await w.start()
    s = snapshot(1, nodes=3)
    w.offer(s)
    await w.wait_idle(10)
    w.offer(snapshot(2))
    await w.wait_idle(10)
    await w.stop()
    assert [r.status for r in sink.attempts] == [400, 204]  # no retry; the next batch goes through
    assert sleep.delays == []
    assert w.stats.dropped["rejected"] == 3 and w.stats.failures["http_400"] == 1
    events = [json.loads(x) for x in log_buffer.getvalue().splitlines()]
    rejected = [e for e in events if e["event"].startswith("influxdb rejected")]
    assert len(rejected) == 1
    assert rejected[0]["line"] == snapshot_to_lines(s)[1]
    assert "line 2: invalid field format" in rejected[0]["error"]
    assert rejected[0]["output"] == f"v1:{sink.url}"


def test_retry_after_forms_and_classification():
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT", now=lambda: 1792567670.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert classify(204, None, b"").ok
    assert classify(400, None, b'{"error":"unable to parse \'x\': bad"}').rejected
    assert classify(413, None, b"").rejected and classify(422, None, b"").rejected
    for status in (401, 403, 404, 429, 500, 502, 503):
        out = classify(status, "3", b"")
        assert not out.ok and not out.rejected and out.reason == f"http_{status}" and out.retry_after == 3.0
    body = gzip.compress(b"a x=1 1\nb y=bad 1\n")
    assert offending_line("partial write: line 2: invalid number", body) == "b y=bad 1"
    assert offending_line("no line number here", body) is None


# -- the spool -----------------------------------------------------------------------------------


async def test_outage_spools_every_batch_and_drains_them_in_order(sink, tmp_path):
    await sink.down()
    sleep = FakeSleep(auto=False)
    w = writer(cfg(sink.url, tmp_path), sleep)
    await w.start()
    for k in range(1, 8):
        await offer_one(w, snapshot(k))
    await until(lambda: w.spool is not None and w.spool.files == 7)
    assert not w._memory  # while the sink fails, new batches go straight to disk
    assert sorted(p.name for p in (tmp_path / "spool").glob("*.lp.gz")) == [
        f"{seq:020d}-1-{len(snapshot_to_lines(snapshot(seq))[0]) + 1}.lp.gz" for seq in range(1, 8)
    ]
    await sink.up()
    sleep.release()
    await w.wait_idle(10)
    await w.stop()
    assert uptimes(sink.lines()) == list(range(1, 8))  # each exactly once, in order
    assert w.stats.points_spooled == 7 and w.spool is not None and w.spool.files == 0


async def test_full_spool_drops_the_oldest_batches_and_counts_them(sink, tmp_path):
    await sink.down()
    sleep = FakeSleep(auto=False)
    w = writer(cfg(sink.url, tmp_path, max_spool_bytes=1024, batch_bytes=1024), sleep)
    await w.start()
    for k in range(1, 31):
        await offer_one(w, snapshot(k, nodes=2))
    assert w.spool is not None
    assert w.spool.bytes <= 1024
    dropped = w.stats.dropped["spool_full"]
    assert dropped > 0 and dropped % 2 == 0
    await sink.up()
    sleep.release()
    await w.wait_idle(10)
    await w.stop()
    got = uptimes(sink.lines())
    assert len(got) + dropped == 60
    first = 31 - len(got) // 2
    assert got == [k for k in range(first, 31) for _ in (1, 2)]  # the newest survive, oldest went first
    families = {f.name: f for f in w.families()}
    samples = dict(families["pve_exporter_influx_points_dropped_total"].samples)
    assert samples[(w.output, "spool_full")] == dropped


async def test_a_restart_drains_the_spool_before_new_data(sink, tmp_path):
    await sink.down()
    sleep = FakeSleep(auto=False)
    w1 = writer(cfg(sink.url, tmp_path), sleep)
    await w1.start()
    for k in (1, 2, 3):
        await offer_one(w1, snapshot(k))
    await w1.stop()
    assert len(list((tmp_path / "spool").glob("*.lp.gz"))) == 3
    await sink.up()
    w2 = writer(cfg(sink.url, tmp_path))
    await w2.start()
    w2.offer(snapshot(4))
    await w2.wait_idle(10)
    await w2.stop()
    assert uptimes(sink.lines()) == [1, 2, 3, 4]
    assert list((tmp_path / "spool").glob("*.lp.gz")) == []  # (and the .lock file, released)


async def test_stop_puts_in_flight_memory_and_pending_data_in_the_spool_within_its_timeout(sink, tmp_path):
    sink.hang = asyncio.Event()  # the sink takes the request and never answers
    w = writer(cfg(sink.url, tmp_path, shutdown_timeout_seconds=0.2, timeout_seconds=60))
    await w.start()
    await offer_one(w, snapshot(1))
    await until(lambda: w._inflight is not None)
    await offer_one(w, snapshot(2))  # healthy sink as far as the writer knows: kept in memory
    assert len(w._memory) == 1
    w.offer(snapshot(3))  # not even encoded yet
    async with asyncio.timeout(5):
        await w.stop()
    assert len(list((tmp_path / "spool").glob("*.lp.gz"))) == 3
    sink.hang.set()
    sink.hang = None
    w2 = writer(cfg(sink.url, tmp_path))
    await w2.start()
    await w2.wait_idle(10)
    await w2.stop()
    assert uptimes(sink.lines()) == [1, 2, 3]  # the cut-off request is sent again, nothing lost


async def test_without_a_spool_the_memory_queue_is_bounded_and_drops_oldest(sink, tmp_path):
    await sink.down()
    sleep = FakeSleep(auto=False)
    w = writer(cfg(sink.url, None, max_queue_bytes=1024), sleep)
    await w.start()
    for k in range(1, 40):
        await offer_one(w, snapshot(k, nodes=3))
    assert w._memory_bytes <= 1024 or len(w._memory) == 1
    assert w.stats.dropped["queue_full"] > 0
    await sink.up()
    sleep.release()
    await w.wait_idle(10)
    await w.stop()
    got = uptimes(sink.lines())
    assert got == sorted(got) and got[-1] == 39 and got[0] == 1  # the in-flight first batch, then the newest


def test_spool_files_are_atomic_ordered_and_survive_reopen(tmp_path):
    sp = Spool(tmp_path, max_bytes=10_000)
    assert sp.open() == []
    (tmp_path / "00000000000000000009-1-5.lp.gz.tmp").write_bytes(b"half")  # a crash mid-write
    (tmp_path / "unrelated.txt").write_text("x")
    for seq in (3, 1, 2):
        sp.put(seq, 10 * seq, 100 * seq, gzip.compress(b"m x=%d 1\n" % seq))
    sp.close()  # one open spool per directory: the next run opens it after this one let go
    again = Spool(tmp_path, max_bytes=10_000)
    entries = again.open()
    assert [e.seq for e in entries] == [1, 2, 3] and [e.points for e in entries] == [10, 20, 30]
    assert not list(tmp_path.glob("*.tmp"))
    assert gzip.decompress(again.read(entries[0])) == b"m x=1 1\n"
    assert again.last_seq() == 3 and again.files == 3
    assert again.remove(2) is not None and not again.has(2) and again.files == 2


def test_spool_evicts_oldest_beyond_its_size(tmp_path):
    sp = Spool(tmp_path, max_bytes=250)
    sp.open()
    evicted = []
    for seq in range(1, 6):
        evicted += sp.put(seq, 1, 1, b"x" * 100)
    assert [e.seq for e in evicted] == [1, 2, 3]
    assert sp.bytes == 200
    sp.close()
    assert [e.seq for e in Spool(tmp_path, 250).open()] == [4, 5]


# -- self-metrics, secrets, daemon wiring --------------------------------------------------------


async def test_self_metrics_carry_the_output_label_and_no_secret(sink, tmp_path, log_buffer):
    sink.script.append((503, {}, ""))
    w = writer(cfg(sink.url, tmp_path))
    await w.start()
    w.offer(snapshot(1, nodes=2))
    await w.wait_idle(10)
    text = render(w.families()).decode()
    await w.stop()
    out = f'output="v1:{sink.url}"'
    names = (
        "points_written_total", "bytes_written_total", "write_duration_seconds_total", "retries_total",
        "failures_total", "spool_bytes", "spool_files", "points_dropped_total", "last_success_timestamp_seconds",
        "requests_total", "up", "points_spooled_total", "last_write_duration_seconds",
    )  # fmt: skip
    for name in names:
        assert f"pve_exporter_influx_{name}{{{out}" in text, name
    assert f'pve_exporter_influx_points_written_total{{{out}}} 2' in text
    assert f'pve_exporter_influx_failures_total{{{out},reason="http_503"}} 1' in text
    assert PASSWORD not in text and PASSWORD not in log_buffer.getvalue()


async def test_daemon_starts_feeds_and_stops_the_writer(sink, tmp_path):
    settings = Settings(
        listen="127.0.0.1:0",
        influxdb={"url": sink.url, "api": "v1", "database": "pve", "username": "u", "password": PASSWORD,
                  "spool_dir": str(tmp_path / "spool"), "flush_interval_seconds": 0},
    )  # fmt: skip
    assert PASSWORD in settings.secrets()
    daemon = Daemon(settings, autostart=False)
    assert "storage" in {c.name for c in daemon._collectors()}  # per-node storage lists feed `storages` points
    await daemon.start()
    assert daemon.influx is not None
    daemon.store.put(snapshot(1, nodes=2))
    await daemon.influx.wait_idle(10)
    body = daemon.metrics_body([], False).decode()
    assert f'pve_exporter_influx_points_written_total{{output="v1:{sink.url}"}} 2' in body
    await sink.down()
    daemon.store.put(snapshot(2, nodes=2))  # sink gone: this one must reach the spool on stop
    await daemon.stop()
    assert daemon.influx is None
    assert list((tmp_path / "spool").glob("*.lp.gz"))
    assert uptimes(sink.lines()) == [1, 1]


async def test_daemon_without_influxdb_has_no_writer_and_no_storage_collector():
    daemon = Daemon(Settings(listen="127.0.0.1:0"), autostart=False)
    assert "storage" not in {c.name for c in daemon._collectors()}
    await daemon.start()
    assert daemon.influx is None
    assert "pve_exporter_influx" not in daemon.metrics_body([], False).decode()
    await daemon.stop()


async def test_reload_with_a_changed_influxdb_section_restarts_the_output(sink, tmp_path):
    path = tmp_path / "config.yml"
    doc = {"listen": "127.0.0.1:0", "influxdb": {"url": sink.url, "api": "v1", "database": "pve",
                                                 "spool_dir": str(tmp_path / "a"), "flush_interval_seconds": 0}}
    path.write_text(yaml.safe_dump(doc))
    daemon = Daemon(Settings(**doc), autostart=False, config_path=str(path))
    await daemon.start()
    first = daemon.influx
    doc["influxdb"]["database"] = "other"
    path.write_text(yaml.safe_dump(doc))
    assert await daemon.reload()
    assert daemon.influx is not None and daemon.influx is not first
    daemon.store.put(snapshot(1))
    await daemon.influx.wait_idle(10)
    assert sink.accepted[-1].query["db"] == "other"
    second = daemon.influx
    assert await daemon.reload()  # unchanged: the same writer keeps running
    assert daemon.influx is second
    await daemon.stop()


async def test_v2_errors_from_influxdb_client_are_classified_like_v1(sink, tmp_path):
    bad = {"code": "invalid", "message": "unable to parse points: line 1: bad timestamp"}
    sink.script.extend([(503, {"Retry-After": "9"}, ""), (400, {"Content-Type": "application/json"}, json.dumps(bad))])
    sleep = FakeSleep()
    w = writer(cfg(sink.url, tmp_path, api="v2"), sleep)
    await w.start()
    w.offer(snapshot(1))
    await w.wait_idle(10)
    await w.stop()
    assert [r.status for r in sink.attempts] == [503, 400]
    assert sleep.delays == [9.0]
    assert dict(w.stats.failures) == {"http_503": 1, "http_400": 1} and w.stats.dropped["rejected"] == 1


def test_the_listener_only_queues_and_its_queue_is_bounded(tmp_path):
    w = writer(cfg("http://127.0.0.1:9", tmp_path))  # never started: nothing consumes
    for k in range(70):
        assert w.offer(snapshot(k)) is None
    assert len(w._pending) == 64 and w.stats.snapshots_dropped == 6
    assert [s.seq for s in w._pending][:2] == [6, 7]  # the oldest went first
