"""PBS data in the InfluxDB output, in the layout PBS's own metric server pushes (pbs/influx.py)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from types import MappingProxyType

from pve_exporter.export.influx_writer import encode_batches
from pve_exporter.pbs.collectors import NODE_STATUS, USAGE
from pve_exporter.pbs.influx import pbs_lines
from pve_exporter.pbs.poller import PbsSnapshot

FIX = Path(__file__).parent / "fixtures" / "pbs"
T = 1767229500


def snap(fresh) -> PbsSnapshot:
    return PbsSnapshot(server="backup 1", seq=1, started_at=T - 1, finished_at=T + 0.4, reachable=True,
                       last_success=T, reached_mono=1.0, families=(), results=MappingProxyType({}), rendered={},
                       fresh=MappingProxyType(fresh))  # fmt: skip


def load(name: str):
    return json.loads((FIX / f"{name}.json").read_text())["data"]


def test_pbs_points_as_pbs_pushes_them_plus_server():
    lines = pbs_lines(snap({NODE_STATUS.key: load("node_status"), USAGE.key: load("datastore_usage")}))
    ns = f"{T}000000000"
    t = r"object=host,host=backup\ 1"
    sv = r",server=backup\ 1"
    assert lines == [
        f"cpustat,{t}{sv} avg1=0.52,avg15=0.33,avg5=0.41,cpu=0.035,cpu_count=12,iowait_percent=0.002 {ns}",
        f"memory,{t}{sv} memfree=12482248704,memtotal=16777216000,memused=4294967296,swapfree=8589934592,"
        f"swaptotal=8589934592,swapused=0 {ns}",
        f"blockstat,{t}{sv} avail=83000000000,total=100000000000,used=12000000000 {ns}",
        f"blockstat,{t},datastore=store1{sv} avail=90000000000,total=1000000000000,used=910000000000 {ns}",
        f"blockstat,{t},datastore=store2{sv} avail=1800000000000,total=2000000000000,used=200000000000 {ns}",
    ]  # a datastore PBS could not open has no sizes: no point


def test_nothing_fetched_this_cycle_writes_nothing_and_the_writer_encodes_pbs_snapshots():
    assert pbs_lines(snap({})) == []
    (points, _size, body), = encode_batches([snap({USAGE.key: load("datastore_usage")})], 1 << 20)
    assert points == 2 and gzip.decompress(body).decode().startswith("blockstat,object=host,host=backup\\ 1,datastore")


class _Recorder:
    """Stands in for the InfluxDB writer: records what the daemon offers it."""

    def __init__(self) -> None:
        self.offered: list[object] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def offer(self, snap: object) -> None:
        self.offered.append(snap)

    def families(self, clusters: object) -> list:
        return []


async def test_the_daemon_offers_backup_server_snapshots_to_the_influx_output(tmp_path):
    from pve_exporter.app import Daemon
    from pve_exporter.settings import Settings
    from pve_exporter.simulator import SimulatorServer, build_simulator
    from pve_exporter.simulator.pbs import PBS_TOKEN_ID, PBS_TOKEN_SECRET, PbsServer, SimPbs
    from tests.simharness import FixedClock, cluster_cfg

    clock = FixedClock()
    sim = build_simulator([("lab", 2, 2)], seed=7, auth_delay=0.0, clock=clock)
    async with SimulatorServer(sim) as server, PbsServer(SimPbs(sim, "backup1", ["lab"])) as pbs:
        settings = Settings(
            listen="127.0.0.1:0", clusters=[cluster_cfg("lab", [server.urls["lab"]])],
            backup_servers=[{"name": "backup1", "endpoints": [pbs.url], "token_id": PBS_TOKEN_ID,
                             "token_secret": PBS_TOKEN_SECRET, "clusters": ["lab"]}],
            influxdb={"api": "v1", "url": "http://127.0.0.1:9", "database": "pve", "spool_dir": str(tmp_path)},
        )  # fmt: skip
        daemon = Daemon(settings, autostart=False, clock=clock, monotonic=clock.monotonic)
        recorder = _Recorder()
        daemon.influx_factory = lambda cfg: recorder  # type: ignore[assignment,return-value]
        await daemon.start()
        try:
            snap = await daemon.pbs.servers["backup1"].poller.run_once()
        finally:
            await daemon.stop()
    assert snap in recorder.offered
    lines = pbs_lines(snap)
    assert [ln.split(" ", 1)[0] for ln in lines] == [
        "cpustat,object=host,host=backup1,server=backup1", "memory,object=host,host=backup1,server=backup1",
        "blockstat,object=host,host=backup1,server=backup1",
        "blockstat,object=host,host=backup1,datastore=store1,server=backup1",
        "blockstat,object=host,host=backup1,datastore=store2,server=backup1",
    ]  # fmt: skip
