"""GET /api/v1/clusters/{c}/guests/{vmid}/backups: a guest's backups from every source, read now."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from pve_exporter.app import Daemon, build_app
from pve_exporter.pbs.guest_backups import pbs_entries, storage_entries
from pve_exporter.settings import Settings
from pve_exporter.simulator import SimulatorServer, build_simulator
from pve_exporter.simulator.pbs import PBS_TOKEN_ID, PBS_TOKEN_SECRET, PbsServer, SimPbs
from tests.controlharness import TOKENS, control_cfg
from tests.simharness import FixedClock, cluster_cfg

FIX = Path(__file__).parent / "fixtures" / "pbs"
READ = {"Authorization": f"Bearer {TOKENS['viewer'][0]}"}


def test_entries_from_a_pbs_snapshot_list_and_a_storage_listing():
    rows = json.loads((FIX / "snapshots.json").read_text())["data"]
    vm = pbs_entries([r for r in rows if r["backup-id"] == "100"], "backup1", "store1", "prod")
    assert [(e["time"], e["size"], e["verification"]) for e in vm] == [
        ("2026-01-01T00:00:00Z", 34359738368, None), ("2025-12-31T00:00:00Z", 34359738000, "ok")]
    assert vm[0]["id"] == "vm/100/2026-01-01T00:00:00Z" and vm[0]["namespace"] == "prod"
    listing = [
        {"volid": "pbs:backup/vm/100/2026-01-01T00:00:00Z", "content": "backup", "ctime": 1767225600, "size": 5,
         "vmid": 100, "verification": {"state": "failed", "upid": "UPID:x"}, "protected": 1},
        {"volid": "nfs:backup/vzdump-qemu-101-2026_01_01-00_00_00.vma.zst", "content": "backup",
         "ctime": 1767225600, "vmid": 101},
    ]  # fmt: skip
    (e,) = storage_entries(listing, 100, "pve1", "pbs")
    assert (e["source"], e["node"], e["storage"], e["verification"], e["protected"]) == (
        "storage", "pve1", "pbs", "failed", True)


async def test_the_route_joins_every_source_and_reports_a_failing_one(tmp_path):
    clock = FixedClock()
    sim = build_simulator([("lab", 3, 6)], seed=7, auth_delay=0.0, clock=clock)
    async with SimulatorServer(sim) as server, PbsServer(SimPbs(sim, "backup1", ["lab"])) as pbs:
        settings = Settings(
            listen="127.0.0.1:0", clusters=[cluster_cfg("lab", [server.urls["lab"]])],
            backup_servers=[{"name": "backup1", "endpoints": [pbs.url], "token_id": PBS_TOKEN_ID,
                             "token_secret": PBS_TOKEN_SECRET, "clusters": ["lab"]}],
            control=control_cfg(tmp_path / "ops.sqlite"),
        )  # fmt: skip
        daemon = Daemon(settings, autostart=False, clock=clock, monotonic=clock.monotonic)
        async with TestClient(TestServer(build_app(daemon))) as http:
            await daemon.pbs.servers["backup1"].poller.run_once()
            await daemon.clusters["lab"].poller.run_once()
            guests = sim.cluster("lab").guests
            vmid = next(v for v, g in sorted(guests.items()) if g.backed_up and not g.template)
            resp = await http.get(f"/api/v1/clusters/lab/guests/{vmid}/backups", headers=READ)
            assert resp.status == 200, await resp.text()
            doc = await resp.json()
            sources = {e["source"] for e in doc["backups"]}
            assert sources == {"storage", "pbs"} and not doc["errors"]
            assert doc["last_backup"] == max(e["time"] for e in doc["backups"]) == doc["backups"][0]["time"]
            pbs_rows = [e for e in doc["backups"] if e["source"] == "pbs"]
            assert {(e["server"], e["datastore"], e["namespace"]) for e in pbs_rows} == {("backup1", "store1", "lab")}
            assert pbs_rows[0]["verification"] == "failed"  # the simulator's one failed verification
            # A PBS that refuses the snapshot list: its rows go, the storage rows stay, the error is listed.
            pbs.pbs.faults.add("forbidden", path="/admin/datastore/store1/snapshots")
            doc = await (await http.get(f"/api/v1/clusters/lab/guests/{vmid}/backups", headers=READ)).json()
            assert {e["source"] for e in doc["backups"]} == {"storage"}
            assert [(e["source"], e["where"], e["kind"]) for e in doc["errors"]] == [
                ("pbs", "backup1/store1/lab", "permission")]
            never = next(v for v, g in sorted(guests.items()) if not g.backed_up and not g.template)
            doc = await (await http.get(f"/api/v1/clusters/lab/guests/{never}/backups", headers=READ)).json()
            assert doc["backups"] == [] and doc["last_backup"] is None
            resp = await http.get("/api/v1/clusters/lab/guests/99999/backups", headers=READ)
            assert resp.status == 404 and (await resp.json())["error_code"] == "GUEST_NOT_FOUND"
            resp = await http.get("/api/v1/clusters/nope/guests/100/backups", headers=READ)
            assert resp.status == 404 and (await resp.json())["error_code"] == "CLUSTER_NOT_FOUND"
            assert (await http.get(f"/api/v1/clusters/lab/guests/{vmid}/backups")).status == 401
