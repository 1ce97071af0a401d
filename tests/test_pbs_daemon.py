"""The daemon with a simulated PBS linked to a simulated cluster: metrics, the join, faults, reload."""

from __future__ import annotations

from contextlib import asynccontextmanager

from aiohttp.test_utils import TestClient, TestServer

from pve_exporter.app import Daemon, build_app
from pve_exporter.settings import Settings
from pve_exporter.simulator import SimulatorServer, build_simulator
from pve_exporter.simulator.pbs import PBS_TOKEN_ID, PBS_TOKEN_SECRET, PbsServer, SimPbs
from tests.simharness import FixedClock, cluster_cfg, series


def pbs_cfg(url: str, **kw):
    cfg = {"name": "backup1", "endpoints": [url], "token_id": PBS_TOKEN_ID, "token_secret": PBS_TOKEN_SECRET,
           "clusters": ["lab"]}  # fmt: skip
    cfg.update(kw)
    return cfg


@asynccontextmanager
async def pbs_daemon(names=("lab",), **pbs_kw):
    clock = FixedClock()
    sim = build_simulator([(c, 3, 6) for c in names], seed=7, auth_delay=0.0, clock=clock)
    async with SimulatorServer(sim) as server, PbsServer(SimPbs(sim, "backup1", names)) as pbs:
        settings = Settings(listen="127.0.0.1:0", clusters=[cluster_cfg(c, [server.urls[c]]) for c in names],
                            backup_servers=[pbs_cfg(pbs.url, **pbs_kw)])  # fmt: skip
        daemon = Daemon(settings, autostart=False, clock=clock, monotonic=clock.monotonic)
        await daemon.start()
        try:
            yield daemon, sim, pbs, clock
        finally:
            await daemon.stop()


def page(daemon: Daemon) -> dict:
    return series(daemon.metrics_body(sorted(daemon.clusters), False, sorted(daemon.pbs.servers)).decode())


def value(s: dict, name: str, **labels: str) -> float | None:
    return s.get((name, frozenset(labels.items())))


def pick(s: dict, name: str, **labels: str) -> dict[frozenset, float]:
    want = set(labels.items())
    return {k[1]: v for k, v in s.items() if k[0] == name and want <= set(k[1])}


async def test_backup_server_series_and_the_join():
    async with pbs_daemon() as (daemon, sim, _pbs, clock):
        await daemon.clusters["lab"].poller.run_once()
        before = pick(page(daemon), "pve_guest_last_backup_timestamp_seconds", cluster="lab")
        snap = await daemon.pbs.servers["backup1"].poller.run_once()
        await daemon.clusters["lab"].poller.run_once()
        s = page(daemon)
        assert value(s, "pbs_up", server="backup1") == 1
        assert value(s, "pbs_version_info", server="backup1", version="3.4", release="1", repoid="5e1m0ck5") == 1
        full = value(s, "pbs_datastore_estimated_full_timestamp_seconds", server="backup1", datastore="store1")
        assert full is not None and full - clock.t < 7 * 86400  # nearly full and filling
        assert value(s, "pbs_job_last_run_success", server="backup1", job_type="sync", job_id="s-offsite",
                     datastore="store2") == 0  # fmt: skip
        verified = pick(s, "pbs_backup_group_last_verified_ok", server="backup1")
        assert sorted(verified.values()).count(0.0) == 1  # one failed verification
        assert value(s, "pve_exporter_pbs_collector_success", server="backup1", collector="snapshots") == 1
        # The join: the newest of PVE's backup storages and the linked PBS, per guest of the cluster.
        after = pick(s, "pve_guest_last_backup_timestamp_seconds", cluster="lab")
        on_pbs = dict(snap.guest_backups["lab"])  # the simulated PBS keeps one namespace per cluster
        assert on_pbs and set(on_pbs) <= {dict(k)["id"] for k in after}
        for labels, t in after.items():
            gid = dict(labels)["id"]
            assert t == max(before.get(labels, 0.0), on_pbs.get(gid, 0.0))
        assert any(t > before.get(k, 0.0) for k, t in after.items())  # PBS had newer backups for some
        never = {f"{g.type}/{g.vmid}" for g in sim.cluster("lab").guests.values() if not g.backed_up and not g.template}
        assert never and not never & {dict(k)["id"] for k in after}  # no backup anywhere: no series


async def test_join_keeps_clusters_apart_by_namespace():
    """Two clusters with the same vmids back up to one server, one namespace each."""
    spaces = {"lab": "lab", "prod": "prod"}
    async with pbs_daemon(("lab", "prod"), clusters=["lab", "prod"], cluster_namespaces=spaces) as (daemon, *_):
        snap = await daemon.pbs.servers["backup1"].poller.run_once()
        lab, prod = daemon.pbs.guest_backups("lab"), daemon.pbs.guest_backups("prod")
        assert lab == snap.guest_backups["lab"] and prod == snap.guest_backups["prod"]
        assert set(lab) & set(prod)  # the same ids, told apart by namespace
        await daemon.pbs.servers["backup1"].poller.run_once()
    async with pbs_daemon(("lab", "prod"), clusters=["lab"]) as (daemon, *_):
        await daemon.pbs.servers["backup1"].poller.run_once()
        assert daemon.pbs.guest_backups("prod") == {}  # not linked: nothing joins


async def test_server_selection_and_unknown_server():
    async with pbs_daemon() as (daemon, _sim, _pbs, _clock):
        await daemon.pbs.servers["backup1"].poller.run_once()
        only = series(daemon.metrics_body([], False, ["backup1"]).decode())
        assert value(only, "pbs_up", server="backup1") == 1
        assert not pick(only, "pve_up")
        assert not pick(series(daemon.metrics_body(["lab"], False).decode()), "pbs_up")
        app = build_app(daemon)
        async with TestClient(TestServer(app)) as http:
            resp = await http.get("/metrics?server=nope")
            assert resp.status == 400 and (await resp.json())["error_code"] == "UNKNOWN_BACKUP_SERVER"
            resp = await http.get("/metrics?server=backup1")
            text = await resp.text()
            assert 'pbs_up{server="backup1"} 1' in text and "pve_up{" not in text


async def test_landing_page_lists_the_backup_servers():
    async with pbs_daemon() as (daemon, _sim, _pbs, _clock):
        app = build_app(daemon)
        async with TestClient(TestServer(app)) as http:
            page = await (await http.get("/")).text()
            assert "backup-servers" in page and "<td>backup1</td><td>starting</td>" in page
            await daemon.pbs.servers["backup1"].poller.run_once()
            page = await (await http.get("/")).text()
            assert "<td>backup1</td><td class='ok'>ok</td>" in page and "metrics?server=backup1" in page


async def test_down_keeps_stale_data_then_drops_it():
    async with pbs_daemon() as (daemon, _sim, pbs, clock):
        poller = daemon.pbs.servers["backup1"].poller
        await poller.run_once()
        await pbs.stop()  # the server goes away
        clock.t += 15
        await poller.run_once()
        s = page(daemon)
        assert value(s, "pbs_up", server="backup1") == 0
        assert value(s, "pbs_datastore_used_bytes", server="backup1", datastore="store1") is not None  # kept
        assert value(s, "pve_exporter_pbs_collector_stale", server="backup1", collector="datastores") == 1
        assert value(s, "pve_exporter_pbs_collector_error_info", server="backup1", collector="version",
                     kind="unreachable") == 1  # fmt: skip
        clock.t += 61  # past stale_after (4 intervals)
        await poller.run_once()
        s = page(daemon)
        assert value(s, "pbs_datastore_used_bytes", server="backup1", datastore="store1") is None  # dropped
        assert value(s, "pve_exporter_pbs_collector_stale", server="backup1", collector="datastores") == 0


async def test_401_403_and_slow():
    async with pbs_daemon(timeout_seconds=0.3) as (daemon, _sim, pbs, clock):
        poller = daemon.pbs.servers["backup1"].poller
        fault = pbs.pbs.faults.add("auth_fail")
        await poller.run_once()
        s = page(daemon)
        assert value(s, "pbs_up", server="backup1") == 0
        assert (
            value(s, "pve_exporter_pbs_collector_error_info", server="backup1", collector="version", kind="auth") == 1
        )
        pbs.pbs.faults.remove(fault.id)
        pbs.pbs.faults.add("forbidden", path="/admin/datastore/store1/snapshots")
        pbs.pbs.faults.add("slow", path="/nodes/localhost/status", latency_ms=600)
        clock.t += 400  # the slow tier is due again
        await poller.run_once()
        s = page(daemon)
        assert value(s, "pbs_up", server="backup1") == 1
        ok = pick(s, "pve_exporter_pbs_collector_success", server="backup1")
        failing = {dict(k)["collector"] for k, v in ok.items() if v == 0}
        assert failing == {"snapshots", "node"}  # partial: only their own series are affected
        assert value(s, "pve_exporter_pbs_collector_error_info", server="backup1", collector="snapshots",
                     kind="permission") == 1  # fmt: skip
        assert value(s, "pve_exporter_pbs_collector_error_info", server="backup1", collector="node",
                     kind="timeout") == 1  # fmt: skip
        assert value(s, "pbs_datastore_used_bytes", server="backup1", datastore="store1") is not None


async def test_reload_adds_changes_and_removes_backup_servers(tmp_path):
    async with pbs_daemon() as (daemon, _sim, pbs, _clock):
        old = daemon.pbs.servers["backup1"]
        await old.poller.run_once()
        base = {"listen": "127.0.0.1:0", "clusters": [c.model_dump(mode="json") for c in daemon.settings.clusters]}
        base["clusters"][0]["token_secret"] = daemon.settings.clusters[0].secret()
        path = tmp_path / "c.yaml"
        import yaml

        changed = dict(base, backup_servers=[pbs_cfg(pbs.url, interval_seconds=30)])
        path.write_text(yaml.safe_dump(changed))
        daemon.config_path = str(path)
        assert await daemon.reload()
        new = daemon.pbs.servers["backup1"]
        assert new is not old and old.client.closed and new.cfg.interval_seconds == 30
        assert "backup1" in daemon.pbs.snapshots  # the old snapshot serves until the new poller's first cycle
        bad = dict(base, backup_servers=[pbs_cfg(pbs.url, clusters=["nope"])])
        path.write_text(yaml.safe_dump(bad))
        assert not await daemon.reload()
        assert daemon.pbs.servers["backup1"] is new and not new.client.closed
        path.write_text(yaml.safe_dump(base))
        assert await daemon.reload()
        assert not daemon.pbs.servers and new.client.closed and "backup1" not in daemon.pbs.snapshots


async def test_gzip_scrape_carries_the_same_backup_server_page():
    import gzip

    from pve_exporter.export import gzipjoin

    a, b = b"first part\n", b"second part\n"
    joined = gzipjoin.finish(gzipjoin.concat([]), gzipjoin.combine(gzipjoin.Part.of(a), gzipjoin.Part.of(b)))
    assert gzip.decompress(joined) == a + b
    async with pbs_daemon() as (daemon, *_):
        await daemon.pbs.servers["backup1"].poller.run_once()
        await daemon.clusters["lab"].poller.run_once()
        plain = daemon.metrics_body(["lab"], False, ["backup1"]).decode()
        zipped = gzip.decompress(daemon.metrics_body(["lab"], True, ["backup1"])).decode()
        pick_pbs = lambda text: [ln for ln in text.splitlines() if "pbs" in ln]  # noqa: E731
        assert pick_pbs(plain) and pick_pbs(zipped) == pick_pbs(plain)
        first = daemon.pbs._data(["backup1"])[1]
        assert daemon.pbs._data(["backup1"])[1] is first  # compressed once per snapshot, not per scrape
        await daemon.pbs.servers["backup1"].poller.run_once()
        assert daemon.pbs._data(["backup1"])[1] is not first


async def test_with_static_shards_one_replica_exposes_a_backup_server_and_every_replica_joins():
    clock = FixedClock()
    sim = build_simulator([("lab", 3, 6)], seed=7, auth_delay=0.0, clock=clock)
    async with SimulatorServer(sim) as server, PbsServer(SimPbs(sim, "backup1", ["lab"])) as pbs:
        exposed = []
        for index in (0, 1):
            settings = Settings(listen="127.0.0.1:0", clusters=[cluster_cfg("lab", [server.urls["lab"]])],
                                backup_servers=[pbs_cfg(pbs.url)], shard={"index": index, "total": 2})  # fmt: skip
            daemon = Daemon(settings, autostart=False, clock=clock, monotonic=clock.monotonic)
            await daemon.start()
            try:
                await daemon.pbs.servers["backup1"].poller.run_once()  # polled by both: the join needs it
                assert daemon.pbs.guest_backups("lab")
                if value(page(daemon), "pbs_up", server="backup1") == 1:
                    exposed.append(index)
                assert (index in exposed) == settings.owns("backup1")
            finally:
                await daemon.stop()
        assert len(exposed) == 1
