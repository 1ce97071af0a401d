"""The simulator's power actions behave as pve-api.md §4 and §7.11–17 say: UPIDs, tasks, PVE's errors.

Time moves through the simulator's clock (a FixedClock the test advances), never by sleeping.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from pve_exporter.simulator import (
    AUDITOR_TOKEN_ID,
    AUDITOR_TOKEN_SECRET,
    DEFAULT_AUTH_HEADER,
    SimulatorServer,
    build_simulator,
    parse_upid,
)
from tests.simharness import FixedClock

AUDITOR = f"PVEAPIToken={AUDITOR_TOKEN_ID}={AUDITOR_TOKEN_SECRET}"


class Pve:
    def __init__(self, session: aiohttp.ClientSession, url: str, clock: FixedClock, sim: Any) -> None:
        self.session, self.url, self.clock, self.sim = session, url, clock, sim
        self.lab = sim.cluster("lab")

    async def call(self, method: str, path: str, auth: str = DEFAULT_AUTH_HEADER, **data: Any) -> tuple[int, str, Any]:
        kw = {"params": data} if method == "GET" else {"data": data or None}
        async with self.session.request(method, f"{self.url}/api2/json{path}", headers={"Authorization": auth},
                                        **kw) as r:
            body = await r.json(content_type=None) if r.content_length else None
            return r.status, r.reason or "", body

    async def power(self, node: str, kind: str, vmid: int, action: str, **params: Any) -> tuple[int, str, Any]:
        return await self.call("POST", f"/nodes/{node}/{kind}/{vmid}/status/{action}", **params)

    async def upid(self, node: str, kind: str, vmid: int, action: str, **params: Any) -> str:
        status, reason, body = await self.power(node, kind, vmid, action, **params)
        assert status == 200, (status, reason, body)
        return body["data"]

    async def task(self, upid: str) -> dict[str, Any]:
        node = parse_upid(upid).node  # type: ignore[union-attr]
        status, _, body = await self.call("GET", f"/nodes/{node}/tasks/{upid}/status")
        assert status == 200, body
        return body["data"]

    async def log(self, upid: str) -> list[str]:
        node = parse_upid(upid).node  # type: ignore[union-attr]
        _, _, body = await self.call("GET", f"/nodes/{node}/tasks/{upid}/log", limit="0")
        return [line["t"] for line in body["data"]]

    async def resource(self, vmid: int) -> dict[str, Any]:
        _, _, body = await self.call("GET", "/cluster/resources", type="vm")
        return next(r for r in body["data"] if r["vmid"] == vmid)

    async def finish(self, upid: str, seconds: float = 60) -> dict[str, Any]:
        self.clock.t += seconds
        st = await self.task(upid)
        assert st["status"] == "stopped", st
        return st


@pytest.fixture
async def pve():
    clock = FixedClock()
    sim = build_simulator([("lab", 3, 4)], seed=7, clock=clock)
    async with SimulatorServer(sim) as server, aiohttp.ClientSession() as session:
        yield Pve(session, server.urls["lab"], clock, sim)


async def test_qemu_start_stop_cycle_with_real_upids_status_and_log(pve: Pve) -> None:
    g = pve.lab.guest(102)
    assert g.type == "qemu" and g.running and g.node == "pve1"
    upid = await pve.upid("pve1", "qemu", 102, "shutdown", timeout="30")
    u = parse_upid(upid)
    assert u is not None and (u.node, u.type, u.id, u.user) == ("pve1", "qmshutdown", "102", "monitor@pve!exporter")
    running = await pve.task(upid)
    assert running["status"] == "running" and "exitstatus" not in running
    assert running["user"] == "monitor@pve" and running["tokenid"] == "exporter"
    assert (await pve.resource(102))["status"] == "running"  # nothing changes before the task ends
    done = await pve.finish(upid)
    assert done["exitstatus"] == "OK"
    assert (await pve.log(upid))[-1] == "TASK OK"
    assert (await pve.resource(102))["status"] == "stopped" and not g.running

    upid = await pve.upid("pve1", "qemu", 102, "start")
    assert parse_upid(upid).type == "qmstart"  # type: ignore[union-attr]
    await pve.finish(upid)
    assert (await pve.resource(102))["status"] == "running"
    assert (await pve.resource(102))["uptime"] < 60  # restarted: uptime counts from the start


async def test_qemu_idempotency_is_lenient_on_stop_and_strict_in_the_task_on_start(pve: Pve) -> None:
    upid = await pve.upid("pve1", "qemu", 102, "start")  # already running
    st = await pve.finish(upid)
    assert st["exitstatus"] == "VM 102 already running"
    assert (await pve.log(upid))[-1] == "TASK ERROR: VM 102 already running"
    pve.lab.guest(102).stop()
    for action in ("stop", "shutdown"):
        upid = await pve.upid("pve1", "qemu", 102, action)
        assert (await pve.finish(upid))["exitstatus"] == "OK"  # stopped: OK, nothing done
    for action in ("reboot", "reset", "suspend"):
        status, reason, body = await pve.power("pve1", "qemu", 102, action)
        assert (status, reason) == (500, "VM 102 not running"), action
        assert body == {"data": None, "message": "VM 102 not running\n"}


async def test_lxc_refuses_synchronously_what_qemu_answers_with_a_task(pve: Pve) -> None:
    ct = pve.lab.guest(111)
    assert ct.type == "lxc" and ct.running and ct.node == "pve3" and ct.ha is None
    status, reason, body = await pve.power("pve3", "lxc", 111, "start")
    assert (status, reason) == (500, "CT 111 already running") and body["data"] is None
    upid = await pve.upid("pve3", "lxc", 111, "stop")
    assert parse_upid(upid).type == "vzstop"  # type: ignore[union-attr]
    await pve.finish(upid)
    assert not ct.running
    assert (await pve.power("pve3", "lxc", 111, "stop"))[:2] == (500, "CT 111 not running")
    assert (await pve.power("pve3", "lxc", 111, "shutdown"))[:2] == (500, "CT 111 not running")
    assert (await pve.power("pve3", "lxc", 111, "reboot"))[:2] == (500, "VM 111 not running")  # sic
    upid = await pve.upid("pve3", "lxc", 111, "start")
    assert (await pve.finish(upid))["exitstatus"] == "OK" and ct.running
    upid = await pve.upid("pve3", "lxc", 111, "reboot")
    assert parse_upid(upid).type == "vzreboot"  # type: ignore[union-attr]
    started = ct.started_at
    await pve.finish(upid)
    assert ct.running and ct.started_at > started


async def test_paused_vm_cannot_shut_down_unless_forced(pve: Pve) -> None:
    g = pve.lab.guest(106)
    assert g.qmpstatus == "paused"
    assert (await pve.power("pve2", "qemu", 106, "shutdown"))[:2] == (500, "VM is paused - cannot shutdown")
    assert (await pve.power("pve2", "qemu", 106, "reboot"))[:2] == (500, "VM is paused - cannot shutdown")
    upid = await pve.upid("pve2", "qemu", 106, "shutdown", forceStop="1")
    assert (await pve.finish(upid))["exitstatus"] == "OK" and not g.running


async def test_template_locked_and_wrong_node_fail_inside_the_task(pve: Pve) -> None:
    upid = await pve.upid("pve2", "qemu", 104, "start")  # template
    assert (await pve.finish(upid))["exitstatus"] == "you can't start a vm if it's a template"
    upid = await pve.upid("pve1", "qemu", 101, "start")  # stopped, lock backup
    assert (await pve.finish(upid))["exitstatus"] == "VM is locked (backup)"
    assert (await pve.log(upid))[-1] == "TASK ERROR: VM is locked (backup)"
    upid = await pve.upid("pve2", "lxc", 107, "start")  # CT, lock backup
    assert (await pve.finish(upid))["exitstatus"] == "CT is locked (backup)"
    pve.lab.guest(109).lock = "snapshot"
    upid = await pve.upid("pve3", "qemu", 109, "start")
    assert (await pve.finish(upid))["exitstatus"] == "VM is locked (snapshot)"
    # 102 lives on pve1: asking pve2 finds no config there
    upid = await pve.upid("pve2", "qemu", 102, "start")
    missing = "Configuration file 'nodes/pve2/qemu-server/102.conf' does not exist"
    assert (await pve.finish(upid))["exitstatus"] == missing
    assert (await pve.power("pve2", "qemu", 102, "reset"))[:2] == (
        500, "unable to find configuration file for VM 102 on node 'pve2'")
    assert (await pve.power("pve1", "lxc", 111, "stop"))[:2] == (500, "CT 111 not running")  # not on pve1


async def test_missing_power_privilege_is_403_and_root_only_parameters_400(pve: Pve) -> None:
    status, reason, body = await pve.call("POST", "/nodes/pve1/qemu/102/status/stop", auth=AUDITOR)
    assert (status, reason) == (403, "Permission check failed (/vms/102, VM.PowerMgmt)")
    assert body == {"data": None, "message": "Permission check failed (/vms/102, VM.PowerMgmt)\n"}
    # the auditor token still reads everything
    assert (await pve.call("GET", "/cluster/resources", auth=AUDITOR))[0] == 200
    status, _, body = await pve.power("pve1", "qemu", 102, "stop", skiplock="1")
    assert status == 400 and body["errors"] == {"skiplock": "Only root may use this option."}
    status, _, body = await pve.power("pve1", "qemu", 102, "shutdown", bogus="1")
    assert status == 400 and "bogus" in body["errors"]


async def test_ha_guests_get_hastart_hastop_and_change_later(pve: Pve) -> None:
    g = pve.lab.guest(100)
    assert g.ha == "started" and g.running
    upid = await pve.upid("pve1", "qemu", 100, "shutdown", timeout="60")
    assert parse_upid(upid).type == "hastop"  # type: ignore[union-attr]
    st = await pve.finish(upid, seconds=1)
    assert st["exitstatus"] == "OK" and g.running  # HA was asked; the guest has not changed yet
    assert (await pve.log(upid)) == ["Requesting HA stop for VM 100", "TASK OK"]
    assert (await pve.resource(100))["hastate"] == "stopped"
    pve.clock.t += 40  # the LRM's qmshutdown runs ~15 s later
    assert (await pve.resource(100))["status"] == "stopped"
    lrm = next(t for t in pve.lab.nodes["pve1"].tasks if t.upid.type == "qmshutdown" and t.upid.id == "100")
    assert lrm.upid.user == "root@pam" and lrm.log[0] == "task started by HA resource agent"

    upid = await pve.upid("pve1", "qemu", 100, "start")
    assert parse_upid(upid).type == "hastart"  # type: ignore[union-attr]
    await pve.finish(upid, seconds=1)
    assert not g.running
    pve.clock.t += 30
    assert (await pve.resource(100))["status"] == "running"

    ct = pve.lab.guest(103)  # HA container
    upid = await pve.upid("pve1", "lxc", 103, "stop")
    assert parse_upid(upid).type == "hastop"  # type: ignore[union-attr]
    pve.clock.t += 30
    assert (await pve.resource(103))["status"] == "stopped" and not ct.running


async def test_shutdown_timeout_forcestop_and_config_lock(pve: Pve) -> None:
    g = pve.lab.guest(105)
    g.ignores_acpi = True
    upid = await pve.upid("pve2", "qemu", 105, "shutdown", timeout="20")
    assert (await pve.finish(upid, seconds=25))["exitstatus"] == "VM quit/powerdown failed - got timeout"
    assert g.running
    upid = await pve.upid("pve2", "qemu", 105, "shutdown", timeout="20", forceStop="1")
    assert (await pve.finish(upid, seconds=25))["exitstatus"] == "OK" and not g.running
    assert "VM still running - terminating now with SIGTERM" in await pve.log(upid)

    # a long task holds the config lock: a second action waits 10 s for it, then fails
    pve.lab.power.overrides[105] = 600
    first = await pve.upid("pve2", "qemu", 105, "start")
    second = await pve.upid("pve2", "qemu", 105, "stop")
    pve.clock.t += 11
    locked = "can't lock file '/var/lock/qemu-server/lock-105.conf' - got timeout"
    assert (await pve.task(second))["exitstatus"] == locked
    assert (await pve.task(first))["status"] == "running"


async def test_node_offline_gives_595_and_quorum_loss_blocks_start(pve: Pve) -> None:
    pve.lab.add_fault("node_down", node="pve3")
    status, reason, body = await pve.power("pve3", "qemu", 108, "stop")
    assert (status, reason, body) == (595, "No route to host", None)
    pve.lab.add_fault("node_down", node="pve2")
    assert (await pve.power("pve1", "qemu", 109, "start"))[:2] == (500, "cluster not ready - no quorum?")


def test_clock_jump_runs_whole_ha_chain_in_order() -> None:
    clock = FixedClock()
    sim = build_simulator([("lab", 1, 4)], seed=7, clock=clock)
    lab = sim.cluster("lab")
    order: list[str] = []
    lab.schedule(clock.t + 5, lambda: order.append("timer"))
    lab.add_task("pve1", "qmstart", "101", "root@pam", duration=2, on_finish=lambda t: (
        order.append("task"), lab.schedule(t.endtime + 2, lambda: order.append("chained"))))
    clock.t += 100
    lab.advance()
    assert order == ["task", "chained", "timer"]
