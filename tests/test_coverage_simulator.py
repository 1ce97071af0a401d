"""Issue 13 on the simulator: the daemon publishes pools, ZFS, disks, certificates, allocation and HA,
the simulator's built-in problems show, and its `/_sim` hooks flip them (within one slow cycle)."""

from __future__ import annotations

import aiohttp

from pve_exporter.simulator import DEFAULT_AUTH_HEADER
from tests.simharness import cycle, series, sim_daemon

AUTH = {"Authorization": DEFAULT_AUTH_HEADER}


def values(text: str, name: str) -> dict[frozenset, float]:
    return {labels: v for (n, labels), v in series(text).items() if n == name}


def one(text: str, name: str, **labels: str) -> float | None:
    for lbls, v in values(text, name).items():
        if all(dict(lbls).get(k) == val for k, val in labels.items()):
            return v
    return None


def body(daemon) -> str:
    return daemon.exposition.body(["lab"]).decode()


async def test_families_appear_and_hooks_flip_them():
    async with sim_daemon(clusters=(("lab", 3, 4),)) as (daemon, sim, server):
        snap = await cycle(daemon)
        assert all(r.ok for r in snap.results.values()), {k: r.error for k, r in snap.results.items() if not r.ok}
        text = body(daemon)
        lab = sim.cluster("lab")
        now = lab.now()
        # pools: info from /pools, members from /cluster/resources, /pool/NAME aggregates in usage families
        assert one(text, "pve_pool_info", pool="prod", comment="production guests") == 1
        assert one(text, "pve_pool_info", pool="dev", comment="") == 1
        members = {dict(k)["id"] for k in values(text, "pve_pool_member_info")}
        assert members == {f"{g.type}/{g.vmid}" for g in lab.guests.values() if g.pool}
        assert one(text, "pve_memory_size_bytes", id="/pool/prod") is not None
        # ZFS: pve3's tank is DEGRADED by design, rpool everywhere ONLINE; ARC from the PVE 9 RRD
        assert one(text, "pve_zfs_pool_healthy", node="pve3", pool="tank") == 0
        assert one(text, "pve_zfs_pool_info", node="pve3", pool="tank", health="DEGRADED") == 1
        assert one(text, "pve_zfs_pool_healthy", node="pve1", pool="rpool") == 1
        assert (one(text, "pve_node_zfs_arc_size_bytes", id="node/pve1") or 0) > 0
        # disks: a failed HDD, an SSD at 6 %, an unknown USB stick (no health series)
        assert one(text, "pve_physical_disk_healthy", node="pve3", device="/dev/sdb") == 0
        assert one(text, "pve_physical_disk_wearout_ratio", node="pve3", device="/dev/sdc") == 0.06
        assert one(text, "pve_physical_disk_healthy", node="pve3", device="/dev/sdd") is None
        assert one(text, "pve_physical_disk_wearout_ratio", node="pve3", device="/dev/sda") is None
        # certificates: pve3's ACME certificate expires in ten days
        exp = one(text, "pve_node_certificate_expiry_timestamp_seconds", node="pve3", filename="pveproxy-ssl.pem")
        assert exp is not None and 9 * 86400 < exp - now <= 10 * 86400
        # allocation and HA
        running = sum(g.maxmem for g in lab.guests.values() if g.node == "pve1" and g.running and not g.template)
        assert one(text, "pve_node_allocated_memory_bytes", id="node/pve1", state="running") == running
        assert one(text, "pve_ha_quorate") == 1
        assert one(text, "pve_ha_resources", state="started") is not None

        url = server.urls["lab"]
        async with aiohttp.ClientSession() as s:
            for path, payload in (
                ("/_sim/nodes/pve3/zfs/tank", {"health": "ONLINE"}),
                ("/_sim/nodes/pve3/disks", {"devpath": "/dev/sdb", "health": "PASSED"}),
                ("/_sim/nodes/pve3/disks", {"devpath": "/dev/sdc", "wearout": 80}),
                ("/_sim/nodes/pve3/certificates/pveproxy-ssl.pem", {"expires_in_seconds": 90 * 86400}),
            ):
                async with s.post(url + path, json=payload) as resp:
                    assert resp.status == 200, (path, await resp.text())
            for path, payload, status in (
                ("/_sim/nodes/pve3/zfs/tank", {"health": "SICK"}, 400),
                ("/_sim/nodes/pve3/zfs/nope", {"health": "ONLINE"}, 404),
                ("/_sim/nodes/pve3/disks", {"devpath": "/dev/sdc", "wearout": 101}, 400),
                ("/_sim/nodes/pve9/disks", {"devpath": "/dev/sdc"}, 404),
                ("/_sim/nodes/pve3/certificates/pve-ssl.pem", {"expires": 1}, 400),
            ):
                async with s.post(url + path, json=payload) as resp:
                    assert resp.status == status, (path, await resp.text())
            async with s.get(url + "/api2/json/pools", params={"poolid": "prod"}, headers=AUTH) as resp:
                listed = (await resp.json())["data"]
            assert listed[0]["poolid"] == "prod" and {m["id"] for m in listed[0]["members"]} <= members

        daemon.clock.t += daemon.clusters["lab"].poller.timing.slow_interval
        await cycle(daemon)
        text = body(daemon)
        assert one(text, "pve_zfs_pool_healthy", node="pve3", pool="tank") == 1
        assert one(text, "pve_physical_disk_healthy", node="pve3", device="/dev/sdb") == 1
        assert one(text, "pve_physical_disk_wearout_ratio", node="pve3", device="/dev/sdc") == 0.8
        exp = one(text, "pve_node_certificate_expiry_timestamp_seconds", node="pve3", filename="pveproxy-ssl.pem")
        assert exp is not None and exp - lab.now() > 80 * 86400


async def test_offline_node_loses_its_per_node_series_and_costs_no_calls():
    async with sim_daemon(clusters=(("lab", 3, 2),)) as (daemon, sim, _):
        sim.cluster("lab").set_node_online("pve3", False)
        lab = sim.cluster("lab")
        lab.stats.reset()
        snap = await cycle(daemon)
        assert snap.results["zfs"].ok and snap.results["disks"].ok and snap.results["certificates"].ok
        text = body(daemon)
        assert {dict(k)["node"] for k in values(text, "pve_zfs_pool_healthy")} == {"pve1", "pve2"}
        assert not [k for k in values(text, "pve_node_allocated_cpus") if dict(k)["id"] == "node/pve3"]
        assert lab.stats.by_node["pve3"] == 0  # nothing asked of the offline node
        for template in ("/nodes/{node}/disks/zfs", "/nodes/{node}/disks/list", "/nodes/{node}/certificates/info"):
            assert lab.stats.requests[f"GET {template}"] == 2  # pve1 and pve2
