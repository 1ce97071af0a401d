"""End to end with real servers from Debian packages on 127.0.0.1: the daemon polls the built-in
simulator and pushes every snapshot to VictoriaMetrics (InfluxDB v2 API, through influxdb-client)
and to InfluxDB 1.6 (v1 `/write`); the points are read back with each server's own query API.

The outage test stops the real sink while cycles keep coming, restarts the whole daemon in
between, brings the sink back, and proves every cycle's points arrived exactly once and in order.
Locally these skip when a binary is missing; under CI=true that is a failure (tests/servers.py).
"""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path
from typing import Any

import pytest

from pve_exporter.app import Daemon
from pve_exporter.export.influx import snapshot_to_lines
from pve_exporter.export.influx_sink import Sink, WriteOutcome, make_sink
from pve_exporter.export.influx_writer import InfluxWriter
from pve_exporter.settings import InfluxSettings, Settings
from pve_exporter.simulator import SimulatorServer, build_simulator
from pve_exporter.snapshot import Snapshot
from tests.servers import InfluxDB1, VictoriaMetrics
from tests.simharness import FixedClock, cluster_cfg
from tests.test_influx_writer import FakeSleep

pytestmark = pytest.mark.e2e

CLUSTER = "lab"
STEP = 10.0  # fake seconds between cycles: every cycle has its own timestamp


class RecordingSink:
    """The real sink, plus a record of what each successful write carried (to prove exactly-once order)."""

    def __init__(self, inner: Sink, delivered: list[str]) -> None:
        self.inner = inner
        self.output = inner.output
        self.delivered = delivered

    async def write(self, body_gz: bytes) -> WriteOutcome:
        out = await self.inner.write(body_gz)
        if out.ok:
            self.delivered.extend(gzip.decompress(body_gz).decode().splitlines())
        return out

    async def close(self) -> None:
        await self.inner.close()


class Harness:
    """Simulator + daemon (cycles driven by the test, fake clock) + a real InfluxDB-protocol sink."""

    def __init__(self, tmp: Path, influx: dict[str, Any]) -> None:
        self.tmp = tmp
        self.clock = FixedClock()
        self.influx = influx
        self.snapshots: list[Snapshot] = []
        self.delivered: list[str] = []
        self.sleep = FakeSleep()
        self.daemon: Daemon | None = None

    async def __aenter__(self) -> Harness:
        self.sim = build_simulator([(CLUSTER, 3, 4)], seed=7, clock=self.clock)
        self.server = SimulatorServer(self.sim)
        await self.server.start()
        await self.start_daemon()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.sleep.auto = True
        self.sleep.release()
        await self.stop_daemon()
        await self.server.stop()

    def settings(self) -> Settings:
        influx = {"spool_dir": str(self.tmp / "spool"), "flush_interval_seconds": 0, "timeout_seconds": 5,
                  **self.influx}  # fmt: skip
        return Settings(
            listen="127.0.0.1:0", clusters=[cluster_cfg(CLUSTER, [self.server.urls[CLUSTER]])], influxdb=influx
        )

    async def start_daemon(self) -> None:
        daemon = Daemon(self.settings(), autostart=False, clock=self.clock, monotonic=self.clock.monotonic)

        def factory(cfg: InfluxSettings) -> InfluxWriter:
            sink = RecordingSink(make_sink(cfg), self.delivered)
            return InfluxWriter(cfg, sink=sink, clock=self.clock, sleep=self.sleep)

        daemon.influx_factory = factory
        daemon.store.subscribe(self.snapshots.append)
        await daemon.start()
        self.daemon = daemon

    async def stop_daemon(self) -> None:
        if self.daemon is not None:
            await self.daemon.stop()
            self.daemon = None

    @property
    def writer(self) -> InfluxWriter:
        assert self.daemon is not None and self.daemon.influx is not None
        return self.daemon.influx

    async def cycle(self) -> Snapshot:
        assert self.daemon is not None
        self.clock.t += STEP
        return await self.daemon.clusters[CLUSTER].poller.run_once()

    async def settle(self, timeout: float = 30) -> None:
        await self.writer.wait_idle(timeout)

    async def until(self, pred, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                await asyncio.sleep(0.01)

    def expected_lines(self) -> list[str]:
        return [line for s in self.snapshots for line in snapshot_to_lines(s)]


def node_uptimes(snapshots: list[Snapshot], node: str) -> list[tuple[int, float]]:
    """(timestamp s, uptime) of `node` in each snapshot, as the writer stamped them."""
    out = []
    for s in snapshots:
        st = s.fresh_payloads().get(f"/nodes/{node}/status")
        if st is not None:
            out.append((int(s.finished_at), float(st["uptime"])))
    return out


# -- VictoriaMetrics: InfluxDB v2 API through influxdb-client ---------------------------------------


async def test_victoriametrics_receives_the_v2_writes_in_pve_schema_with_cluster_tag(tmp_path):
    vm = VictoriaMetrics(tmp_path / "vm")
    try:
        v2 = {"url": vm.url, "api": "v2", "org": "proxmox", "bucket": "proxmox", "token": "unused-by-vm"}
        async with Harness(tmp_path, v2) as h:
            await h.cycle()
            await h.cycle()
            await h.settle()
            assert h.delivered == h.expected_lines() and h.delivered
        series = vm.export('{__name__=~"(system|cpustat|memory|blockstat|nics|ballooninfo)_.+"}')
        assert series and all(s["metric"].get("cluster") == CLUSTER for s in series)
        by_key = {(s["metric"]["__name__"], frozenset(s["metric"].items())): s for s in series}
        assert len(by_key) == len(series)
        names = {s["metric"]["__name__"] for s in series}
        assert {"system_uptime", "cpustat_cpu", "cpustat_avg1", "memory_memtotal", "blockstat_per",
                "nics_netin", "blockstat_rd_bytes", "ballooninfo_actual", "system_maxdisk"} <= names  # fmt: skip
        objects = {s["metric"]["object"] for s in series}
        assert {"nodes", "qemu", "storages"} <= objects
        # PVE's tags: instance on nics/blockstat, vmid+nodename+host on guests, type on storages
        nics = [s["metric"] for s in series if s["metric"]["__name__"] == "nics_netin"]
        assert all(m["instance"].startswith("tap") and m["object"] == "qemu" and "vmid" in m and "nodename" in m
                   for m in nics)  # fmt: skip
        storages = [s["metric"] for s in series if s["metric"]["object"] == "storages"]
        assert storages and all("type" in m and "nodename" in m and "host" in m for m in storages)
        # values and timestamps: the node's uptime at each cycle, stamped with the collection second
        (pve1,) = [s for s in series if s["metric"]["__name__"] == "system_uptime"
                   and s["metric"]["object"] == "nodes" and s["metric"]["host"] == "pve1"]  # fmt: skip
        got = sorted(zip((t // 1000 for t in pve1["timestamps"]), pve1["values"], strict=True))
        assert got == node_uptimes(h.snapshots, "pve1")
    finally:
        vm.stop()


# -- InfluxDB 1.6: v1 /write, read back with InfluxQL ---------------------------------------------


async def test_influxdb1_receives_the_v1_writes_and_influxql_reads_them_back(tmp_path):
    ix = InfluxDB1(tmp_path / "influxd")
    try:
        ix.query("CREATE DATABASE proxmox")
        v1 = {"url": ix.url, "api": "v1", "database": "proxmox", "retention_policy": "autogen"}
        async with Harness(tmp_path, v1) as h:
            await h.cycle()
            await h.cycle()
            await h.settle()
        doc = ix.query('SELECT "uptime" FROM "system" WHERE "object"=\'nodes\' AND "host"=\'pve1\'', db="proxmox")
        rows = [tuple(v) for v in doc["results"][0]["series"][0]["values"]]
        assert rows == [(t, u) for t, u in node_uptimes(h.snapshots, "pve1")]
        tags = ix.query('SHOW TAG VALUES WITH KEY = "cluster"', db="proxmox")
        assert {v[1] for s in tags["results"][0]["series"] for v in s["values"]} == {CLUSTER}
        measurements = ix.query("SHOW MEASUREMENTS", db="proxmox")["results"][0]["series"][0]["values"]
        assert {"system", "cpustat", "memory", "blockstat", "nics", "ballooninfo"} <= {m[0] for m in measurements}
        keys = ix.query('SHOW FIELD KEYS FROM "system"', db="proxmox")["results"][0]["series"][0]["values"]
        types = dict((k, t) for k, t in keys)
        assert types["name"] == "string" and types["tags"] == "string" and types["status"] == "string"
        assert types["cpu"] == "float" and types["uptime"] == "float"  # no `i` suffix: floats, as PVE writes
        qemu = ix.query('SELECT last("cpu") FROM "system" WHERE "object"=\'qemu\' GROUP BY "vmid","host","nodename"',
                        db="proxmox")["results"][0]["series"]  # fmt: skip
        guests = [r for r in h.snapshots[-1].fresh_payloads().items() if r[0].endswith("/qemu?full=1")]
        assert len(qemu) == sum(len(rows) for _, rows in guests)
    finally:
        ix.stop()


# -- outage: the sink goes away, the daemon restarts, nothing is lost or doubled -------------------


@pytest.mark.parametrize("target", ["v2-victoriametrics", "v1-influxdb"])
async def test_outage_and_daemon_restart_every_cycle_arrives_exactly_once_in_order(tmp_path, target):
    if target.startswith("v2"):
        sink_server: VictoriaMetrics | InfluxDB1 = VictoriaMetrics(tmp_path / "vm")
        influx = {"url": sink_server.url, "api": "v2", "org": "proxmox", "bucket": "proxmox", "token": "unused"}
    else:
        sink_server = InfluxDB1(tmp_path / "influxd")
        sink_server.query("CREATE DATABASE proxmox")
        influx = {"url": sink_server.url, "api": "v1", "database": "proxmox"}
    try:
        async with Harness(tmp_path, influx) as h:
            h.sleep.auto = False  # retries wait for the test, never for the wall clock
            for _ in range(3):
                await h.cycle()
            await h.settle()
            assert h.writer.spool is not None and h.writer.spool.files == 0

            sink_server.stop()  # outage while collection goes on
            for _ in range(3):
                await h.cycle()
            await h.until(lambda: h.writer.spool.files >= 3 and h.writer.idle() is False and not h.writer._pending
                          and not h.writer._memory and h.writer._inflight is not None)  # fmt: skip
            assert h.writer.stats.failures["connection"] >= 1

            await h.stop_daemon()  # SIGTERM path: what is in memory goes to the spool
            spooled = sorted(p.name for p in (tmp_path / "spool").glob("*.lp.gz"))
            assert len(spooled) >= 3
            await h.start_daemon()  # a new daemon (fresh pollers) on the same spool
            for _ in range(3):
                await h.cycle()
            await h.until(lambda: not h.writer._pending and not h.writer._encoding)

            sink_server.start()  # back
            h.sleep.auto = True
            h.sleep.release()
            await h.settle()
            for _ in range(2):
                await h.cycle()
            await h.settle()

            assert len(h.snapshots) == 11
            assert h.delivered == h.expected_lines()  # every line once, in cycle order
        stamps = [t for t, _ in node_uptimes(h.snapshots, "pve1")]
        assert len(stamps) == 11 and stamps == sorted(set(stamps))
        if isinstance(sink_server, VictoriaMetrics):
            (s,) = [s for s in sink_server.export('{__name__="system_uptime",object="nodes",host="pve1"}')]
            got = sorted(zip((t // 1000 for t in s["timestamps"]), s["values"], strict=True))
        else:
            doc = sink_server.query('SELECT "uptime" FROM "system" WHERE "object"=\'nodes\' AND "host"=\'pve1\'',
                                    db="proxmox")  # fmt: skip
            got = [tuple(v) for v in doc["results"][0]["series"][0]["values"]]
        assert got == node_uptimes(h.snapshots, "pve1")  # each cycle once, none missing
    finally:
        sink_server.stop()
