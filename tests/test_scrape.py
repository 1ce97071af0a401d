"""/metrics as a client sees it: cluster selection, plain text off the event loop, gzip untouched."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from types import MappingProxyType

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pve_exporter.app import Daemon, build_app
from pve_exporter.collect.base import Family
from pve_exporter.export import prometheus
from pve_exporter.settings import Settings
from pve_exporter.snapshot import Snapshot


def cluster(name: str) -> dict[str, object]:
    return {"name": name, "endpoints": ["https://127.0.0.1:9"], "token_id": "exporter@pve!t", "token_secret": "x"}


def snap(name: str, samples: int, seq: int = 1) -> Snapshot:
    fam = Family("pve_up", "gauge", "Up.", ("id",), tuple(((f"qemu/{i}",), 1.0) for i in range(samples)))
    return Snapshot(name, seq, 0.0, 1.0, True, 1.0, (fam,), MappingProxyType({}))


@pytest.fixture
async def client() -> AsyncIterator[tuple[Daemon, TestClient]]:
    daemon = Daemon(Settings(listen="127.0.0.1:0", clusters=[cluster("a"), cluster("b")]), autostart=False)
    async with TestClient(TestServer(build_app(daemon))) as c:
        yield daemon, c


def data_lines(text: str, cluster_name: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(f'pve_up{{cluster="{cluster_name}"')]


async def test_a_cluster_asked_for_twice_is_served_once_in_order(client):
    daemon, c = client
    daemon.store.put(snap("a", 3))
    daemon.store.put(snap("b", 2))
    resp = await c.get("/metrics?cluster=a&cluster=a", headers={"Accept-Encoding": "identity"})
    text = await resp.text()
    assert resp.status == 200
    assert len(data_lines(text, "a")) == 3 and text.count("# TYPE pve_up gauge") == 1
    resp = await c.get("/metrics?cluster=b&cluster=a&cluster=b", headers={"Accept-Encoding": "gzip"})
    text = await resp.text()  # aiohttp inflates it
    assert len(data_lines(text, "a")) == 3 and len(data_lines(text, "b")) == 2


async def test_a_plain_scrape_inflates_in_a_worker_thread_once_per_snapshot(client, monkeypatch):
    daemon, c = client
    calls: list[bool] = []
    real = prometheus._inflate

    def spy(deflate: bytes) -> bytes:
        calls.append(threading.current_thread() is threading.main_thread())
        return real(deflate)

    monkeypatch.setattr(prometheus, "_inflate", spy)
    daemon.store.put(snap("a", 100_000))  # a few MB of text
    daemon.store.put(snap("b", 10))
    plain = {"Accept-Encoding": "identity"}
    first = await (await c.get("/metrics", headers=plain)).text()
    again = await (await c.get("/metrics", headers=plain)).text()
    assert len(data_lines(first, "a")) == 100_000
    assert data_lines(again, "a") == data_lines(first, "a")
    assert calls == [False, False]  # each cluster inflated once, and not on the event loop's thread
    gz = await c.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert gz.headers["Content-Encoding"] == "gzip" and len(data_lines(await gz.text(), "a")) == 100_000
    assert calls == [False, False]  # a gzip scrape never inflates
    daemon.store.put(snap("a", 5, seq=2))
    assert daemon.exposition._plain == {}  # the old plain page is freed at the swap
    text = await (await c.get("/metrics", headers=plain)).text()
    assert len(data_lines(text, "a")) == 5 and len(data_lines(text, "b")) == 10
    assert calls == [False, False, False]  # only the changed cluster is inflated again


async def test_a_changed_page_is_joined_in_a_worker_thread(client, monkeypatch):
    """Joining ~2000 compressed parts (MBs, a CRC combine each) is no work for the event loop."""
    from pve_exporter.export import gzipjoin

    daemon, c = client
    calls: list[bool] = []
    real = gzipjoin.concat

    def spy(parts):  # type: ignore[no-untyped-def]
        calls.append(threading.current_thread() is threading.main_thread())
        return real(parts)

    monkeypatch.setattr(gzipjoin, "concat", spy)
    daemon.store.put(snap("a", 1000))
    for enc in ("gzip", "gzip", "identity"):
        resp = await c.get("/metrics", headers={"Accept-Encoding": enc})
        assert len(data_lines(await resp.text(), "a")) == 1000
    assert calls == [False]  # once per change, off the loop; the plain scrape reuses the joined page
    daemon.store.put(snap("a", 7, seq=2))
    resp = await c.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert len(data_lines(await resp.text(), "a")) == 7 and calls == [False, False]


async def test_concurrent_plain_scrapes_share_one_inflate(client, monkeypatch):
    daemon, c = client
    calls: list[int] = []
    real = prometheus._inflate

    def spy(deflate: bytes) -> bytes:
        calls.append(1)
        return real(deflate)

    monkeypatch.setattr(prometheus, "_inflate", spy)
    daemon.store.put(snap("a", 20_000))
    plain = {"Accept-Encoding": "identity"}
    pages = await asyncio.gather(*(c.get("/metrics?cluster=a", headers=plain) for _ in range(4)))
    texts = [await r.text() for r in pages]
    assert all(len(data_lines(t, "a")) == 20_000 for t in texts)
    assert calls == [1]


async def test_the_plain_page_is_the_gzip_page_inflated_with_families_grouped():
    """Per-cluster texts joined per family give byte for byte what the gzip stream holds."""
    import gzip

    from pve_exporter.export.prometheus import Exposition

    def multi(name: str, n: int, seq: int = 1) -> Snapshot:
        fams = tuple(
            Family(f"pve_f{k}", "gauge", f"F{k}.", ("id",), tuple(((f"qemu/{i}",), float(i * k)) for i in range(n)))
            for k in range(3)
        )
        return Snapshot(name, seq, 0.0, 1.0, True, 1.0, fams, MappingProxyType({}))

    e = Exposition()
    for name, n in (("a", 50), ("b", 7), ("c", 0)):
        e.update(multi(name, n))
    for selection in (["a", "b", "c"], ["b"], ["c", "a"]):
        plain = await e.plain(selection)
        assert plain == gzip.decompress(e.gzipped(selection)) == e.body(selection)
    e.update(multi("b", 3, seq=2))  # one cluster changes: the page follows
    assert await e.plain(["a", "b"]) == e.body(["a", "b"])


async def test_self_metrics_are_rendered_at_most_once_a_second_and_after_every_swap(monkeypatch):
    """At 20 clusters the self-metrics are ~2 600 series: four scrapers must not each render them."""
    from pve_exporter.clock import ManualClock
    from pve_exporter.selfmetrics import SelfStats

    clock = ManualClock()
    daemon = Daemon(Settings(listen="127.0.0.1:0", clusters=[cluster("a"), cluster("b")]), autostart=False,
                    clock=clock, monotonic=clock.monotonic)  # fmt: skip
    made: list[int] = []
    real = SelfStats.families

    def counting(self, selection):
        made.append(1)
        return real(self, selection)

    monkeypatch.setattr(SelfStats, "families", counting)
    async with TestClient(TestServer(build_app(daemon))) as c:
        daemon.store.put(snap("a", 3))
        for _ in range(4):
            assert (await c.get("/metrics", headers={"Accept-Encoding": "gzip"})).status == 200
        assert len(made) == 1
        daemon.store.put(snap("a", 4, seq=2))  # a new snapshot: its collection self-metrics are new too
        text = await (await c.get("/metrics", headers={"Accept-Encoding": "identity"})).text()
        assert len(made) == 2 and "pve_exporter_cycles_total" in text
        clock.t += 1.0  # a second later even an unchanged page gets fresh counters
        await c.get("/metrics")
        assert len(made) == 3
        await c.get("/metrics?cluster=b")  # another selection has its own
        assert len(made) == 4
