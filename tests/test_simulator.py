"""The PVE simulator answers like real PVE (pve-api.md): shapes, JSON types, errors, faults.

Everything runs in-process on 127.0.0.1; time moves through an injected clock, never by sleeping.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from pve_exporter.simulator import (
    DEFAULT_AUTH_HEADER,
    DEFAULT_TOKEN_ID,
    DEFAULT_TOKEN_SECRET,
    PVE_AUDITOR,
    SimCluster,
    Simulator,
    build_simulator,
    format_upid,
    make_app,
    parse_upid,
)
from pve_exporter.simulator.generate import ODD_NAME

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
AUTH = {"Authorization": DEFAULT_AUTH_HEADER}


class FakeClock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_sim(clock: FakeClock, version: int | str = 9, **kw: Any) -> Simulator:
    return build_simulator([("lab", kw.pop("nodes", 3), kw.pop("guests", 10))], clock=clock,
                           pve_version=version, **kw)


@pytest.fixture
def sim(clock: FakeClock) -> Simulator:
    return make_sim(clock)


@pytest.fixture
async def client(aiohttp_client: Any, sim: Simulator) -> Any:
    return await aiohttp_client(make_app(sim, sim.clusters["lab"]), headers=AUTH)


async def api(client: Any, path: str, *, headers: dict[str, str] | None = None,
              **params: Any) -> tuple[int, str, Any]:
    """GET /api2/json<path>; returns (status, reason, parsed body or raw bytes if not JSON)."""
    async with client.get("/api2/json" + path, params=params or None, headers=headers) as resp:
        raw = await resp.read()
        body: Any = raw
        if resp.headers.get("Content-Type", "").startswith("application/json"):
            body = json.loads(raw)
        return resp.status, resp.reason, body


async def data(client: Any, path: str, **params: Any) -> Any:
    status, reason, body = await api(client, path, **params)
    assert status == 200, (path, status, reason, body)
    return body["data"]


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in rows}


# ---- version and cluster endpoints ----------------------------------------------------------------
@pytest.mark.parametrize(("version", "text", "repoid_len"), [(7, "7.4-17", 8), (8, "8.4.1", 16),
                                                             (9, "9.1.5", 16)])
async def test_version_format_per_flavour(aiohttp_client: Any, clock: FakeClock, version: int, text: str,
                                          repoid_len: int) -> None:
    sim = make_sim(clock, version)
    client = await aiohttp_client(make_app(sim, sim.clusters["lab"]), headers=AUTH)
    v = await data(client, "/version")
    assert v["version"] == text
    assert v["release"] == text[:3]
    assert len(v["repoid"]) == repoid_len
    assert await data(client, "/nodes/pve2/version") == v


async def test_cluster_status_shape(client: Any) -> None:
    rows = await data(client, "/cluster/status")
    assert rows[0] == {"type": "cluster", "id": "cluster", "name": "lab", "nodes": 3, "version": 7,
                       "quorate": 1}
    nodes = rows[1:]
    names = [n["name"] for n in nodes]
    assert sorted(names) == ["pve1", "pve2", "pve3"]
    assert names != sorted(names), "node order must not be sorted (PVE uses hash order)"
    for n in nodes:
        assert set(n) == {"type", "id", "name", "nodeid", "ip", "local", "online", "level"}
        assert n["ip"] == "127.0.0.1"
        assert all(isinstance(n[k], int) for k in ("nodeid", "local", "online"))
        assert isinstance(n["level"], str)
    assert sum(n["local"] for n in nodes) == 1
    assert next(n for n in nodes if n["local"])["name"] == "pve1"


async def test_standalone_node_has_no_cluster_entry(clock: FakeClock) -> None:
    from pve_exporter.simulator import render

    c = SimCluster("solo", nodes=1, standalone=True, clock=clock)
    assert render.cluster_status(c) == [{"type": "node", "id": "node/pve1", "name": "pve1", "nodeid": 0,
                                         "ip": "127.0.0.1", "local": 1, "online": 1, "level": "c"}]


async def test_cluster_resources_order_and_types(client: Any) -> None:
    rows = await data(client, "/cluster/resources")
    types = [r["type"] for r in rows]
    # pools, guests, nodes, storages, then network/sdn
    order = ["pool", "qemu|lxc", "node", "storage", "network"]
    ranks = [next(i for i, o in enumerate(order) if t in o.split("|")) for t in types]
    assert ranks == sorted(ranks)
    pools = [r for r in rows if r["type"] == "pool"]
    assert [p["id"] for p in pools] == ["/pool/dev", "/pool/prod"]
    guests = [r for r in rows if r["type"] in ("qemu", "lxc")]
    assert [g["vmid"] for g in guests] == sorted((g["vmid"] for g in guests), key=str)
    assert len(guests) == 30
    for g in guests:
        assert isinstance(g["vmid"], int) and g["id"] == f"{g['type']}/{g['vmid']}"
        assert isinstance(g["template"], int) and g["template"] in (0, 1)
        for k in ("uptime", "maxmem", "mem", "maxdisk", "disk", "netin", "netout", "diskread", "diskwrite"):
            assert isinstance(g[k], int), k
        assert isinstance(g["maxcpu"], int | float) and isinstance(g["cpu"], int | float)
        assert ("memhost" in g) == (g["type"] == "qemu")
        if g["status"] == "stopped":
            assert g["uptime"] == 0 and g["mem"] == 0 and g["netin"] == 0
        if g["type"] == "qemu":
            assert g["disk"] == 0
    g = by_id(rows)
    assert g["qemu/100"]["name"] == "web-01" and g["qemu/100"]["tags"] == "prod;web"
    assert g["qemu/100"]["hastate"] == "started" and g["qemu/100"]["pool"] == "prod"
    assert g["qemu/101"]["name"] == "VM 101" and g["qemu/101"]["lock"] == "backup"
    assert g["qemu/101"]["status"] == "stopped"
    assert g["qemu/102"]["name"] == ODD_NAME
    assert g["lxc/103"]["maxcpu"] == 1.5
    assert g["qemu/104"]["template"] == 1 and g["qemu/104"]["status"] == "stopped"
    assert g["qemu/105"]["name"] == "66601" and g["qemu/105"]["netin"] > 2**53
    assert g["qemu/106"]["status"] == "paused"
    assert g["lxc/107"]["name"] == "CT107"
    nodes = [r for r in rows if r["type"] == "node"]
    assert [n["node"] for n in nodes] != sorted(n["node"] for n in nodes)
    for n in nodes:
        assert "name" not in n
        assert n["status"] == "online" and isinstance(n["cgroup-mode"], int) and n["hastate"] == "online"
        for k in ("uptime", "maxcpu", "mem", "maxmem", "disk", "maxdisk"):
            assert isinstance(n[k], int), k
    storages = [r for r in rows if r["type"] == "storage"]
    assert len(storages) == 9
    assert {s["shared"] for s in storages} == {0, 1}
    unknown = [s for s in storages if s["status"] == "unknown"]
    assert [s["id"] for s in unknown] == ["storage/pve3/nfs-backup"]
    assert "disk" not in unknown[0] and "maxdisk" not in unknown[0]
    network = [r for r in rows if r["type"] == "network"]
    assert network[0]["id"] == "network/pve1/zone/localnetwork"


@pytest.mark.parametrize("version", [7, 8])
async def test_cluster_resources_older_flavours(aiohttp_client: Any, clock: FakeClock, version: int) -> None:
    sim = make_sim(clock, version)
    client = await aiohttp_client(make_app(sim, sim.clusters["lab"]), headers=AUTH)
    rows = await data(client, "/cluster/resources")
    assert not any("memhost" in r for r in rows)
    nodes = [r for r in rows if r["type"] == "node"]
    assert all(("hastate" in n) == (version == 8) for n in nodes)  # node hastate from 8.3
    sdn = [r for r in rows if r["type"] in ("sdn", "network")]
    assert [r["type"] for r in sdn] == (["sdn"] * 3 if version == 8 else [])


async def test_cluster_resources_type_filter(client: Any) -> None:
    assert {r["type"] for r in await data(client, "/cluster/resources", type="vm")} == {"qemu", "lxc"}
    assert {r["type"] for r in await data(client, "/cluster/resources", type="node")} == {"node"}
    assert {r["type"] for r in await data(client, "/cluster/resources", type="storage")} == {"storage"}
    assert await data(client, "/cluster/resources", type="sdn") == []  # 9.1 moved it to `network`
    for bad in ("qemu", "pool", "lxc"):
        status, reason, body = await api(client, "/cluster/resources", type=bad)
        assert (status, reason) == (400, "Parameter verification failed.")
        assert body == {"data": None, "message": "Parameter verification failed.\n", "errors": {
            "type": f"value '{bad}' does not have a value in the enumeration 'vm, storage, node, sdn'"}}


async def test_pool_aggregates(client: Any) -> None:
    rows = by_id(await data(client, "/cluster/resources"))
    prod = rows["/pool/prod"]
    members = [r for r in rows.values()
               if r["type"] in ("qemu", "lxc") and r.get("pool") == "prod" and r["status"] != "stopped"]
    assert prod["maxmem"] == sum(r["maxmem"] for r in members)
    assert prod["uptime"] == max(r["uptime"] for r in members)


# ---- node endpoints -------------------------------------------------------------------------------
@pytest.mark.parametrize("version", [7, 8, 9])
async def test_node_status_types(aiohttp_client: Any, clock: FakeClock, version: int) -> None:
    sim = make_sim(clock, version)
    client = await aiohttp_client(make_app(sim, sim.clusters["lab"]), headers=AUTH)
    s = await data(client, "/nodes/pve1/status")
    assert s["idle"] == 0 and isinstance(s["uptime"], int)
    assert len(s["loadavg"]) == 3 and all(isinstance(x, str) for x in s["loadavg"])
    assert isinstance(s["cpuinfo"]["mhz"], str) and s["cpuinfo"]["hvm"] == "1"
    assert isinstance(s["cpuinfo"]["cpus"], int)
    assert set(s["memory"]) == ({"total", "used", "free", "available"} if version == 9
                                else {"total", "used", "free"})
    assert ("current-kernel" in s) == (version >= 8) and ("boot-info" in s) == (version >= 8)
    assert s["pveversion"].startswith(f"pve-manager/{sim.clusters['lab'].version.version}/")
    assert set(s["rootfs"]) == {"total", "used", "avail", "free"}
    if version == 7:
        assert s["memory"]["used"] + s["memory"]["free"] == s["memory"]["total"]
    else:  # 8.4+: used = total - available, free = MemFree
        assert s["memory"]["used"] + s["memory"]["free"] < s["memory"]["total"]


async def test_nodes_list(client: Any) -> None:
    rows = await data(client, "/nodes")
    assert len(rows) == 3
    for n in rows:
        assert "cgroup-mode" not in n and "hastate" not in n
        assert n["ssl_fingerprint"].count(":") == 31


@pytest.mark.parametrize("version", [8, 9])
async def test_qemu_list_modes(aiohttp_client: Any, clock: FakeClock, version: int) -> None:
    sim = make_sim(clock, version)
    client = await aiohttp_client(make_app(sim, sim.clusters["lab"]), headers=AUTH)
    rows = {r["vmid"]: r for r in await data(client, "/nodes/pve1/qemu")}
    assert set(rows) == {100, 101, 102, 104, 105, 106, 108, 109}
    assert "type" not in rows[100]
    assert list(rows) != sorted(rows), "guest lists come in hash order"
    web, stopped, tmpl, paused = rows[100], rows[101], rows[104], rows[106]
    assert isinstance(web["pid"], int) and "pid" not in stopped
    assert "template" not in web and tmpl["template"] == 1
    assert paused["status"] == "running"  # the QMP state shows only in qmpstatus / resources
    if version == 9:
        assert "diskread" not in web and web["memhost"] > 0 and stopped["memhost"] == 0
        assert isinstance(web["pressurecpusome"], int | float)
        assert "pressurecpusome" not in stopped
    else:
        assert web["diskread"] == 0 and web["diskwrite"] == 0
        assert "memhost" not in web and "pressurecpusome" not in web
    full = {r["vmid"]: r for r in await data(client, "/nodes/pve1/qemu", full=1)}
    assert full[100]["qmpstatus"] == "running" and full[106]["qmpstatus"] == "paused"
    assert full[101]["qmpstatus"] == "stopped" and "nics" not in full[101]
    assert full[100]["nics"]["tap100i0"]["netin"] == full[100]["netin"]
    assert full[100]["diskread"] == full[100]["blockstat"]["scsi0"]["rd_bytes"]
    assert full[100]["blockstat"]["scsi0"]["account_invalid"] is True
    assert "idle_time_ns" not in full[100]["blockstat"]["ide2"]


async def test_lxc_list_types(client: Any) -> None:
    rows = {r["vmid"]: r for r in await data(client, "/nodes/pve1/lxc")}
    assert set(rows) == {103, 107}
    dns, ct = rows[103], rows[107]
    assert dns["type"] == "lxc" and dns["cpus"] == "1.5"  # a raw cpulimit string
    assert dns["pressurecpusome"].count(".") == 1 and isinstance(dns["pressureiofull"], str)
    assert ct["name"] == "CT107" and ct["status"] == "stopped" and "pid" not in ct
    for k in ("diskread", "diskwrite", "swap", "maxswap", "disk"):
        assert isinstance(ct[k], int)


async def test_status_current_and_config(client: Any) -> None:
    q = await data(client, "/nodes/pve1/qemu/100/status/current")
    assert q["ha"] == {"managed": 1, "state": "started"}
    assert q["agent"] == 1 and q["clipboard"] is None and q["qmpstatus"] == "running"
    s = await data(client, "/nodes/pve1/qemu/101/status/current")
    assert s["ha"] == {"managed": 0} and s["qmpstatus"] == "stopped" and s["lock"] == "backup"
    ct = await data(client, "/nodes/pve1/lxc/103/status/current")
    assert ct["ha"]["managed"] == 1 and ct["type"] == "lxc"
    cfg = await data(client, "/nodes/pve1/qemu/100/config")
    assert isinstance(cfg["memory"], str)
    assert cfg["agent"] == "1" and cfg["onboot"] == 1 and isinstance(cfg["cores"], int)
    assert len(cfg["digest"]) == 40 and cfg["cpu"] == "x86-64-v2-AES"
    ccfg = await data(client, "/nodes/pve1/lxc/103/config")
    assert ccfg["cpulimit"] == "1.5" and isinstance(ccfg["memory"], int) and "cores" not in ccfg

    for path, message in [
        ("/nodes/pve2/qemu/100/status/current", "Configuration file 'nodes/pve2/qemu-server/100.conf' does not exist"),
        ("/nodes/pve1/qemu/103/status/current", "Configuration file 'nodes/pve1/qemu-server/103.conf' does not exist"),
        ("/nodes/pve1/lxc/999/status/current", "Configuration file 'nodes/pve1/lxc/999.conf' does not exist"),
        ("/nodes/pve1/qemu/4242/config", "Configuration file 'nodes/pve1/qemu-server/4242.conf' does not exist"),
    ]:
        status, reason, body = await api(client, path)
        assert (status, reason) == (500, message)
        assert body == {"data": None, "message": message + "\n"}
    status, _, body = await api(client, "/nodes/pve1/qemu/42/status/current")
    assert status == 400 and body["errors"] == {"vmid": "value must have a minimum value of 100"}


async def test_config_memory_is_int_on_7(aiohttp_client: Any, clock: FakeClock) -> None:
    sim = make_sim(clock, 7)
    client = await aiohttp_client(make_app(sim, sim.clusters["lab"]), headers=AUTH)
    assert isinstance((await data(client, "/nodes/pve1/qemu/100/config"))["memory"], int)


async def test_node_storage(aiohttp_client: Any, clock: FakeClock) -> None:
    sim = make_sim(clock, 8, storages=4)
    client = await aiohttp_client(make_app(sim, sim.clusters["lab"]), headers=AUTH)
    rows = {r["storage"]: r for r in await data(client, "/nodes/pve1/storage")}
    assert list(rows) == ["local", "local-lvm", "nfs-backup", "pbs-archive"]
    local = rows["local"]
    assert local["avail"] == local["total"] - local["used"] and 0 < local["used_fraction"] < 1
    assert isinstance(rows["pbs-archive"]["total"], float)  # >= 1e15 before pve-storage 9.1.1
    inactive = {r["storage"]: r for r in await data(client, "/nodes/pve3/storage")}["nfs-backup"]
    assert (inactive["active"], inactive["total"], inactive["used"], inactive["avail"]) == (0, 0, 0, 0)
    assert "used_fraction" not in inactive
    assert [r["storage"] for r in await data(client, "/nodes/pve1/storage", content="images")] == ["local-lvm"]
    status, _, body = await api(client, "/nodes/pve1/storage", storage="nope")
    assert status == 400 and body["errors"] == {"storage": "No such storage."}


async def test_subscription(client: Any) -> None:
    active = await data(client, "/nodes/pve1/subscription")
    assert active["status"] == "active" and active["level"] == "c"
    assert active["key"].startswith("pve") and isinstance(active["checktime"], int)
    assert active["nextduedate"] == "2027-03-01" and "Community" in active["productname"]
    none = await data(client, "/nodes/pve3/subscription")
    assert set(none) == {"status", "message", "serverid", "url"}
    assert none["status"] == "notfound" and none["message"] == "There is no subscription key"


async def test_ha_endpoints(client: Any) -> None:
    current = await data(client, "/cluster/ha/status/current")
    assert current[0] == {"id": "quorum", "type": "quorum", "node": "pve1", "status": "OK", "quorate": 1}
    assert current[1]["type"] == "master" and current[1]["node"] == "pve2"
    services = {r["sid"]: r for r in current if r["type"] == "service"}
    assert services["vm:100"]["status"] == "vm:100 (pve1, started)" and services["vm:100"]["failback"] == 1
    assert "ct:103" in services
    manager = await data(client, "/cluster/ha/status/manager_status")
    assert manager["quorum"]["quorate"] == "1"  # a Perl boolean: "1" or ""
    assert manager["manager_status"]["node_status"] == {"pve1": "online", "pve2": "online", "pve3": "online"}
    assert set(manager["lrm_status"]) == {"pve1", "pve2", "pve3"}


async def test_replication(client: Any) -> None:
    jobs = {j["id"]: j for j in await data(client, "/cluster/replication")}
    assert set(jobs) == {"100-0", "103-0", "108-0"}
    assert jobs["100-0"] == {"id": "100-0", "type": "local", "guest": 100, "jobnum": 0, "target": "pve2",
                             "schedule": "*/30", "source": "pve1", "rate": 50}
    assert jobs["103-0"]["disable"] == 1
    node = {j["id"]: j for j in await data(client, "/nodes/pve1/replication")}
    assert isinstance(node["100-0"]["duration"], float) and node["100-0"]["vmtype"] == "qemu"
    assert node["100-0"]["next_sync"] > node["100-0"]["last_sync"]
    assert node["108-0"]["fail_count"] == 3 and "error" in node["108-0"]
    assert await data(client, "/nodes/pve2/replication") == []
    assert [j["id"] for j in await data(client, "/nodes/pve1/replication", guest=100)] == ["100-0"]


async def test_not_backed_up_and_qdevice(client: Any, aiohttp_client: Any, clock: FakeClock) -> None:
    rows = await data(client, "/cluster/backup-info/not-backed-up")
    assert {"vmid": 102, "name": ODD_NAME, "type": "qemu"} in rows
    assert all(set(r) == {"vmid", "name", "type"} and r["type"] in ("qemu", "lxc") for r in rows)
    assert await data(client, "/cluster/config/qdevice") == {}
    even = make_sim(clock, nodes=4)
    client4 = await aiohttp_client(make_app(even, even.clusters["lab"]), headers=AUTH)
    q = await data(client4, "/cluster/config/qdevice")
    assert set(q) == {"Model", "Algorithm", "QNetd host", "Tie-breaker", "State"} and q["State"] == "Connected"


async def test_ceph_status(client: Any, aiohttp_client: Any, clock: FakeClock) -> None:
    status, reason, _ = await api(client, "/cluster/ceph/status")
    assert (status, reason) == (500, "binary not installed: /usr/bin/ceph-mon")
    sim = make_sim(clock, ceph=True)
    ceph = await aiohttp_client(make_app(sim, sim.clusters["lab"]), headers=AUTH)
    body = await data(ceph, "/cluster/ceph/status")
    assert body["health"]["status"] == "HEALTH_OK"


# ---- tasks ----------------------------------------------------------------------------------------
def test_upid_roundtrip() -> None:
    text = format_upid("pve1", 753210, 0x1_02F5C1D8, 1738650307, "qmstart", "101", "monitor@pve!power")
    assert text == "UPID:pve1:000B7E3A:102F5C1D8:67A1B2C3:qmstart:101:monitor@pve!power:"
    u = parse_upid(text)
    assert u is not None and u.pstart == 0x1_02F5C1D8 and u.split_user() == ("monitor@pve", "power")
    assert u.text == text
    assert parse_upid("UPID:pve1:nope") is None


async def test_task_lists(client: Any) -> None:
    rows = await data(client, "/cluster/tasks")
    assert [r["starttime"] for r in rows] == sorted((r["starttime"] for r in rows), reverse=True)
    running = [r for r in rows if "endtime" not in r]
    assert len(running) == 1 and "status" not in running[0] and isinstance(running[0]["pid"], int)
    finished = [r for r in rows if "endtime" in r]
    assert all("pid" not in r and "pstart" not in r for r in finished)
    statuses = {r["status"] for r in finished}
    assert {"OK", "WARNINGS: 2", "job errors", "VM quit/powerdown failed - got timeout"} <= statuses
    token_task = next(r for r in rows if r["type"] == "qmshutdown")
    assert token_task["user"] == "monitor@pve" and token_task["tokenid"] == "power"
    assert {type(r["saved"]) for r in rows} == {str, int}

    status, _, body = await api(client, "/nodes/pve1/tasks", limit=2)
    assert status == 200 and len(body["data"]) == 2 and body["total"] == 4
    assert set(body["data"][0]) >= {"upid", "node", "pid", "pstart", "starttime", "type", "id", "user",
                                    "endtime", "status"}
    errors = (await api(client, "/nodes/pve1/tasks", errors=1))[2]
    assert [r["status"] for r in errors["data"]] == ["VM quit/powerdown failed - got timeout"]
    assert (await api(client, "/nodes/pve1/tasks", typefilter="vzdump"))[2]["total"] == 1
    active = (await api(client, "/nodes/pve3/tasks", source="active"))[2]["data"]
    assert [r["status"] for r in active] == ["RUNNING"]


async def test_task_status_and_log(client: Any, sim: Simulator, clock: FakeClock) -> None:
    tasks = await data(client, "/cluster/tasks")
    failed = next(r for r in tasks if r.get("status") == "job errors")
    upid = failed["upid"]
    node = failed["node"]
    st = await data(client, f"/nodes/{node}/tasks/{upid}/status")
    assert st["status"] == "stopped" and st["exitstatus"] == "job errors" and "endtime" not in st
    assert st["pstart"] == parse_upid(upid).pstart  # type: ignore[union-attr]
    status, _, log = await api(client, f"/nodes/{node}/tasks/{upid}/log")
    assert status == 200 and log["data"][-1] == {"n": log["total"], "t": "TASK ERROR: job errors"}
    assert log["data"][0]["n"] == 1
    other = "pve1" if node != "pve1" else "pve2"
    status, _, body = await api(client, f"/nodes/{other}/tasks/{upid}/status")
    assert status == 400 and body["errors"] == {"upid": "no such task"}
    status, _, body = await api(client, "/nodes/pve1/tasks/UPID:garbage/status")
    assert status == 400 and body["errors"] == {"upid": "unable to parse worker upid"}

    # tasks registered by the model finish lazily when the clock passes their end
    c = sim.clusters["lab"]
    done: list[str] = []
    task = c.add_task("pve1", "qmstart", "101", DEFAULT_TOKEN_ID, duration=5.0, log=["starting"],
                      on_finish=lambda t: done.append(t.text))
    path = f"/nodes/pve1/tasks/{task.text}/status"
    running = await data(client, path)
    assert running["status"] == "running" and running["tokenid"] == "exporter"
    assert ":monitor@pve!exporter:" in task.text
    clock.advance(6)
    assert (await data(client, path))["exitstatus"] == "OK"
    assert done == [task.text]


# ---- time and determinism -------------------------------------------------------------------------
async def test_counters_grow_with_the_clock(client: Any, clock: FakeClock) -> None:
    before = by_id(await data(client, "/cluster/resources"))
    node_before = await data(client, "/nodes/pve1/status")
    clock.advance(60)
    after = by_id(await data(client, "/cluster/resources"))
    node_after = await data(client, "/nodes/pve1/status")
    web0, web1 = before["qemu/100"], after["qemu/100"]
    assert web1["uptime"] == web0["uptime"] + 60
    for k in ("netin", "netout", "diskread", "diskwrite"):
        assert web1[k] > web0[k], k
    assert after["qemu/101"]["netin"] == 0  # stopped
    assert node_after["uptime"] == node_before["uptime"] + 60
    assert after["node/pve1"]["cpu"] != before["node/pve1"]["cpu"]  # jitter moves per 10 s


def test_same_seed_same_cluster(clock: FakeClock) -> None:
    from pve_exporter.simulator import render
    from pve_exporter.simulator.auth import Caller

    caller = Caller("monitor@pve", "exporter", PVE_AUDITOR)

    def snapshot(seed: int) -> str:
        c = build_simulator([("lab", 4, 12)], clock=FakeClock(), seed=seed).clusters["lab"]
        return json.dumps([render.cluster_resources(c, T0, caller, None), render.cluster_status(c),
                           render.cluster_tasks(c, T0, caller)])

    assert snapshot(7) == snapshot(7)
    assert snapshot(7) != snapshot(8)


def test_startup_is_fast() -> None:
    started = time.perf_counter()
    sim = build_simulator([("big", 200, 100)], clock=FakeClock())
    elapsed = time.perf_counter() - started
    assert len(sim.clusters["big"].guests) == 20_000
    assert elapsed < 2.0, f"200 nodes x 100 guests took {elapsed:.2f} s"


async def test_clock_control(client: Any, sim: Simulator) -> None:
    async with client.post("/_sim/clock", json={"advance": 30}) as resp:
        assert resp.status == 200 and (await resp.json())["now"] == T0 + 30
    assert sim.now() == T0 + 30
    async with client.post("/_sim/clock", json={"advance": -1}) as resp:
        assert resp.status == 400


# ---- offline nodes ---------------------------------------------------------------------------------
async def test_node_down(client: Any, sim: Simulator) -> None:
    sim.clusters["lab"].set_node_online("pve2", False)
    status_rows = {r["id"]: r for r in await data(client, "/cluster/status")}
    assert status_rows["node/pve2"]["online"] == 0 and status_rows["node/pve2"]["ip"] == "127.0.0.1"
    assert status_rows["cluster"]["quorate"] == 1
    rows = by_id(await data(client, "/cluster/resources"))
    assert rows["node/pve2"] == {"id": "node/pve2", "type": "node", "node": "pve2", "status": "offline",
                                 "cgroup-mode": 2, "hastate": "unknown"}
    down_guests = [r for r in rows.values() if r.get("node") == "pve2" and r["type"] in ("qemu", "lxc")]
    assert len(down_guests) == 10
    for g in down_guests:
        assert g["status"] == "unknown"
        assert set(g) <= {"id", "vmid", "node", "type", "status", "tags", "lock", "pool", "hastate"}
    assert rows["lxc/111"]["hastate"] == "fence"
    for s in (r for r in rows.values() if r["type"] == "storage" and r["node"] == "pve2"):
        assert s["status"] == "unknown" and "disk" not in s and "maxdisk" not in s
    nodes = {n["node"]: n for n in await data(client, "/nodes")}
    assert set(nodes["pve2"]) == {"id", "type", "node", "status", "ssl_fingerprint"}
    for path in ("/nodes/pve2/status", "/nodes/pve2/qemu", "/nodes/pve2/lxc", "/nodes/pve2/storage",
                 "/nodes/pve2/version", "/nodes/pve2/qemu/110/status/current", "/nodes/pve2/tasks"):
        status, reason, body = await api(client, path)
        assert (status, reason, body) == (595, "No route to host", b""), path
    sim.clusters["lab"].set_node_online("pve2", True)
    assert (await api(client, "/nodes/pve2/status"))[0] == 200


async def test_quorum_lost(client: Any, sim: Simulator) -> None:
    c = sim.clusters["lab"]
    c.set_node_online("pve1", False)
    c.set_node_online("pve2", False)
    rows = await data(client, "/cluster/status")
    assert rows[0]["quorate"] == 0
    assert next(r for r in rows[1:] if r["local"])["name"] == "pve3"
    ha = await data(client, "/cluster/ha/status/current")
    assert ha[0]["status"] == "No quorum on node 'pve3'!" and ha[0]["quorate"] == 0
    assert (await data(client, "/cluster/ha/status/manager_status"))["quorum"]["quorate"] == ""


# ---- authentication and permissions -----------------------------------------------------------------
async def test_401_without_credentials(aiohttp_client: Any, sim: Simulator) -> None:
    client = await aiohttp_client(make_app(sim, sim.clusters["lab"]))
    async with client.get("/api2/json/version") as resp:
        assert (resp.status, resp.reason) == (401, "No ticket")
        assert await resp.read() == b""
        assert "Content-Type" not in resp.headers


@pytest.mark.parametrize(("version", "header", "reason"), [
    (9, f"PVEAPIToken={DEFAULT_TOKEN_ID}=wrong", "Authentication failed!"),
    (9, "PVEAPIToken=nobody@pve!tok=1", "Authentication failed!"),
    (8, f"PVEAPIToken={DEFAULT_TOKEN_ID}=wrong", "invalid token value!"),
    (8, "PVEAPIToken=monitor@pve!other=1", "no such token 'other' for user 'monitor@pve'"),
    (8, "PVEAPIToken=nobody@pve!tok=1", "no such user ('nobody@pve')"),
    (7, "PVEAPIToken=foo=1", "'foo' is not a valid token ID - not able to split into user and token parts"),
    (8, "PVEAuthCookie=PVE:root@pam:1234::sig", "permission denied - invalid PVE ticket"),
])
async def test_401_bad_token(aiohttp_client: Any, clock: FakeClock, version: int, header: str,
                             reason: str) -> None:
    sim = make_sim(clock, version)
    client = await aiohttp_client(make_app(sim, sim.clusters["lab"]))
    status, got_reason, body = await api(client, "/version", headers={"Authorization": header})
    assert (status, got_reason, body) == (401, reason, b"")


async def test_token_header_variants(aiohttp_client: Any, sim: Simulator) -> None:
    client = await aiohttp_client(make_app(sim, sim.clusters["lab"]))
    for header in (f"PVEAPIToken {DEFAULT_TOKEN_ID}={DEFAULT_TOKEN_SECRET}",
                   f"PVEAPIToken={DEFAULT_TOKEN_ID.replace('!', '%21')}={DEFAULT_TOKEN_SECRET}"):
        assert (await api(client, "/version", headers={"Authorization": header}))[0] == 200


async def test_401_is_delayed(aiohttp_client: Any, clock: FakeClock) -> None:
    sim = make_sim(clock, auth_delay=0.2)
    client = await aiohttp_client(make_app(sim, sim.clusters["lab"]))
    started = time.perf_counter()
    assert (await api(client, "/version"))[0] == 401
    assert time.perf_counter() - started >= 0.2


async def test_403_and_filtering(aiohttp_client: Any, clock: FakeClock) -> None:
    tokens = {"vm@pve!only": ("s", {"VM.Audit"}), "none@pve!nothing": ("s", set())}
    sim = make_sim(clock, tokens=tokens)
    client = await aiohttp_client(make_app(sim, sim.clusters["lab"]),
                                  headers={"Authorization": "PVEAPIToken=vm@pve!only=s"})
    status, reason, body = await api(client, "/cluster/status")
    assert (status, reason) == (403, "Permission check failed (/, Sys.Audit)")
    assert body == {"data": None, "message": "Permission check failed (/, Sys.Audit)\n"}
    status, reason, _ = await api(client, "/nodes/pve1/status")
    assert (status, reason) == (403, "Permission check failed (/nodes/pve1, Sys.Audit)")
    rows = await data(client, "/cluster/resources")
    assert not any(r["type"] in ("storage", "pool", "network") for r in rows)
    assert not any("pool" in r for r in rows)  # no Pool.Audit: the key is dropped
    nodes = [r for r in rows if r["type"] == "node"]
    assert len(nodes) == 3 and all("cpu" not in n and "maxmem" not in n and "level" in n for n in nodes)
    assert len([r for r in rows if r["type"] in ("qemu", "lxc")]) == 30
    assert await data(client, "/cluster/tasks") == []  # a token without Sys.Audit sees no tasks
    status, _, _ = await api(client, "/nodes/pve1/qemu/100/status/current")
    assert status == 200

    nobody = {"Authorization": "PVEAPIToken=none@pve!nothing=s"}
    rows = (await api(client, "/cluster/resources", headers=nobody))[2]["data"]
    assert {r["type"] for r in rows} == {"node"}
    status, reason, _ = await api(client, "/nodes/pve1/qemu/100/status/current", headers=nobody)
    assert (status, reason) == (403, "Permission check failed (/vms/100, VM.Audit)")
    assert (await api(client, "/nodes/pve1/qemu", headers=nobody))[2]["data"] == []


async def test_error_body_before_8_4(aiohttp_client: Any, clock: FakeClock) -> None:
    sim = make_sim(clock, "8.3.2")
    client = await aiohttp_client(make_app(sim, sim.clusters["lab"]), headers=AUTH)
    status, reason, body = await api(client, "/nodes/pve1/qemu/999/config")
    assert (status, body) == (500, {"data": None})
    assert reason == "Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist"
    status, _, body = await api(client, "/nodes/pve1/qemu", full="yes")
    assert (status, body) == (400, {"data": None, "errors": {"full": "type check ('boolean') failed - got 'yes'"}})


# ---- parameter and routing errors ---------------------------------------------------------------------
async def test_400_parameters(client: Any) -> None:
    status, reason, body = await api(client, "/nodes/pve1/qemu", full="true")
    assert (status, reason) == (400, "Parameter verification failed.")
    assert body["errors"] == {"full": "type check ('boolean') failed - got 'true'"}
    status, _, body = await api(client, "/cluster/resources", foo="1")
    assert status == 400
    assert body["errors"] == {"foo": "property is not defined in schema and the schema does not allow "
                                     "additional properties"}
    status, _, body = await api(client, "/nodes/pve1/tasks", limit="abc")
    assert body["errors"] == {"limit": "type check ('integer') failed - got 'abc'"}
    assert (await api(client, "/cluster/resources", _dc="123"))[0] == 200
    assert (await api(client, "/nodes/pve1/qemu", full="0"))[0] == 200


async def test_501_and_unknown_node(client: Any) -> None:
    status, reason, body = await api(client, "/nodes/pve1/foo")
    assert (status, reason) == (501, "Method 'GET /nodes/pve1/foo' not implemented")
    assert body["message"] == "Method 'GET /nodes/pve1/foo' not implemented\n"
    async with client.post("/api2/json/cluster/resources") as resp:
        assert (resp.status, resp.reason) == (501, "Method 'POST /cluster/resources' not implemented")
    status, reason, _ = await api(client, "/nodes/nosuch/qemu")
    assert (status, reason) == (500, "hostname lookup 'nosuch' failed - failed to get address info for: "
                                     "nosuch: Name or service not known")
    assert (await api(client, "/nodes/localhost/status"))[0] == 200


async def test_success_headers(client: Any) -> None:
    async with client.get("/api2/json/cluster/resources") as resp:
        assert resp.headers["Content-Type"] == "application/json;charset=UTF-8"
        assert resp.headers["Server"] == "pve-api-daemon/3.0"
        assert resp.headers.get("Content-Encoding") in ("gzip", "deflate")  # bodies > 1 KiB


# ---- faults -------------------------------------------------------------------------------------------
async def post_fault(client: Any, **spec: Any) -> str:
    async with client.post("/_sim/faults", json=spec) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return body["id"]


async def test_fault_http_error_with_count(client: Any) -> None:
    await post_fault(client, kind="http_error", path="/cluster/resources", status=500,
                     message="ipcc_send_rec[1] failed: Connection refused", count=2)
    for _ in range(2):
        status, reason, body = await api(client, "/cluster/resources", type="vm")
        assert (status, reason) == (500, "ipcc_send_rec[1] failed: Connection refused")
        assert body["message"] == "ipcc_send_rec[1] failed: Connection refused\n"
    assert (await api(client, "/cluster/resources"))[0] == 200
    assert (await api(client, "/version"))[0] == 200
    async with client.get("/_sim/faults") as resp:
        assert (await resp.json())["faults"] == []


async def test_fault_kinds(client: Any) -> None:
    fid = await post_fault(client, kind="http_error", status=596, node="pve3")
    assert await api(client, "/nodes/pve3/status") == (596, "Connection timed out", b"")
    assert (await api(client, "/nodes/pve1/status"))[0] == 200
    async with client.delete(f"/_sim/faults/{fid}") as resp:
        assert resp.status == 200
    async with client.delete(f"/_sim/faults/{fid}") as resp:
        assert resp.status == 404

    await post_fault(client, kind="auth_fail", path="/nodes", count=1)
    assert await api(client, "/nodes") == (401, "Authentication failed!", b"")
    await post_fault(client, kind="forbidden", path="/nodes/pve1/status", count=1)
    status, reason, _ = await api(client, "/nodes/pve1/status")
    assert (status, reason) == (403, "Permission check failed (/nodes/pve1, Sys.Audit)")
    await post_fault(client, kind="slow", latency_ms=50, path="/version", count=1)
    started = time.perf_counter()
    assert (await api(client, "/version"))[0] == 200
    assert time.perf_counter() - started >= 0.05

    async with client.post("/_sim/faults", json={"kind": "nope"}) as resp:
        assert resp.status == 400
    async with client.post("/_sim/faults", json={"kind": "slow"}) as resp:
        assert resp.status == 400


async def test_fault_node_down_and_clear(client: Any, sim: Simulator) -> None:
    fid = await post_fault(client, kind="node_down", node="pve3")
    assert sim.clusters["lab"].nodes["pve3"].online is False
    assert await api(client, "/nodes/pve3/status") == (595, "No route to host", b"")
    async with client.get("/_sim/faults") as resp:
        assert [f["id"] for f in (await resp.json())["faults"]] == [fid]
    async with client.delete("/_sim/faults") as resp:
        assert (await resp.json())["removed"] == [fid]
    assert sim.clusters["lab"].nodes["pve3"].online is True
    async with client.post("/_sim/nodes/pve1/online", json={"online": False}) as resp:
        assert resp.status == 200
    assert (await api(client, "/nodes/pve1/status"))[0] == 595
    async with client.post("/_sim/nodes/pve9/online", json={"online": False}) as resp:
        assert resp.status == 404


async def test_fault_timeout_does_not_block_others(client: Any) -> None:
    await post_fault(client, kind="timeout", path="/nodes/pve1/status")
    hanging = asyncio.ensure_future(api(client, "/nodes/pve1/status"))
    for _ in range(3):
        assert (await api(client, "/version"))[0] == 200
    assert not hanging.done()
    with pytest.raises(asyncio.TimeoutError):
        async with client.get("/api2/json/nodes/pve1/status", timeout=aiohttp.ClientTimeout(total=0.1)):
            pass
    hanging.cancel()


async def test_model_fault_api(sim: Simulator) -> None:
    c = sim.clusters["lab"]
    f = c.add_fault("node_down", node="pve2")
    g = c.add_fault("node_down", node="pve2")
    c.remove_fault(f.id)
    assert not c.nodes["pve2"].online  # still held down by the second fault
    c.remove_fault(g.id)
    assert c.nodes["pve2"].online


# ---- request statistics ----------------------------------------------------------------------------
async def test_stats_by_templated_path(client: Any) -> None:
    await data(client, "/cluster/resources")
    await data(client, "/cluster/resources", type="vm")
    for node in ("pve1", "pve2", "pve3"):
        await data(client, f"/nodes/{node}/status")
    await data(client, "/nodes/pve1/qemu/100/status/current")
    await api(client, "/nodes/pve1/nope")
    async with client.get("/_sim/stats") as resp:
        stats = await resp.json()
    assert stats["total"] == 7
    assert stats["requests"]["GET /cluster/resources"] == 2
    assert stats["requests"]["GET /nodes/{node}/status"] == 3
    assert stats["requests"]["GET /nodes/{node}/qemu/{vmid}/status/current"] == 1
    assert stats["by_node"] == {"pve1": 3, "pve2": 1, "pve3": 1}
    async with client.post("/_sim/stats/reset") as resp:
        assert (await resp.json())["total"] == 0
    async with client.get("/_sim/stats") as resp:
        assert (await resp.json()) == {"total": 0, "requests": {}, "by_node": {}}


async def test_global_latency(client: Any, sim: Simulator) -> None:
    sim.latency_ms = 60
    started = time.perf_counter()
    assert (await api(client, "/version"))[0] == 200
    assert time.perf_counter() - started >= 0.06
    async with client.get("/_sim/stats") as resp:  # the control API is never delayed or counted
        assert (await resp.json())["total"] == 1


@pytest.mark.parametrize("spec", [
    {"pve_version": 7, "nodes": 2, "guests_per_node": 5},
    {"pve_version": "8.0.4", "nodes": 1, "guests_per_node": 0, "storages": 0},
    {"pve_version": "9.0.6", "nodes": 1, "guests_per_node": 3, "standalone": True, "ceph": True},
    {"pve_version": 9, "nodes": 5, "guests_per_node": 9, "storages": 7, "node_ip": "10.0.0.{n}"},
])
async def test_every_endpoint_answers(aiohttp_client: Any, clock: FakeClock, spec: dict[str, Any]) -> None:
    from pve_exporter.simulator.routing import ROUTES

    sim = build_simulator([{"name": "edge", **spec}], clock=clock)
    c = sim.clusters["edge"]
    client = await aiohttp_client(make_app(sim, c), headers=AUTH)
    node = next(iter(c.nodes.values()))
    task = node.tasks[0]
    for route in ROUTES:
        if route.method != "GET":
            continue
        kinds = ("qemu", "lxc") if "{vmid}" in route.template else (None,)
        for kind in kinds:
            guest = next((g for g in node.guests if g.type == kind), None)
            if kind and (guest is None or f"/{kind}/" not in route.template):
                continue
            path = route.template.format(node=node.name, vmid=guest.vmid if guest else 0, upid=task.text,
                                         storage=node.storages[0].storage if node.storages else "local",
                                         poolid=c.pools[0])
            if route.template.endswith("/rrddata"):
                path += "?timeframe=hour"  # required by PVE
            status, reason, body = await api(client, path)
            if path == "/cluster/ceph/status" and not c.ceph:
                assert status == 500
                continue
            if "{storage}" in route.template and not node.storages:
                assert status == 500  # no storage on this node: PVE says it does not exist
                continue
            if route.template.endswith("/agent/get-fsinfo") and (not guest.agent or not guest.running):
                assert status == 500  # no agent configured, or the VM is not running
                continue
            assert status == 200, (path, status, reason, body)
            assert "data" in body
