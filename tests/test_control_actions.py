"""Power actions through /api/v1 against the simulator, each followed by its UPID to the end.

The simulator and the daemon share a FixedClock: a PVE task ends when the test moves the clock
past its duration; `drive` does that in steps and polls the operation with a real-time deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from types import MappingProxyType
from typing import Any

import pytest

from pve_exporter.simulator import AUDITOR_TOKEN_ID, AUDITOR_TOKEN_SECRET, parse_upid
from tests.controlharness import TERMINAL, Ctl, control_app
from tests.simharness import series

OUR_TOKEN = "monitor@pve!exporter"

# (guest type, vmid, node): 102 is a running qemu VM on pve1, 111 a running container on pve3 (neither HA).
GUESTS = {"qemu": (102, "pve1"), "lxc": (111, "pve3")}
# (type, action, force) -> the PVE task types the operation must produce, in order
EXPECTED_TASKS = {
    ("qemu", "start", False): ["qmstart"], ("qemu", "start", True): ["qmstart"],
    ("qemu", "stop", False): ["qmshutdown"], ("qemu", "stop", True): ["qmstop"],
    ("qemu", "restart", False): ["qmreboot"], ("qemu", "restart", True): ["qmreset"],
    ("lxc", "start", False): ["vzstart"], ("lxc", "start", True): ["vzstart"],
    ("lxc", "stop", False): ["vzshutdown"], ("lxc", "stop", True): ["vzstop"],
    ("lxc", "restart", False): ["vzreboot"], ("lxc", "restart", True): ["vzstop", "vzstart"],
}  # fmt: skip


async def drive(ctl: Ctl, op_id: str, *, step: float = 5.0, max_sim_seconds: float = 400.0) -> dict[str, Any]:
    """Move the clock in steps until the operation is final; wait for the runner between steps."""
    moved = 0.0
    deadline = time.monotonic() + 20
    last, same = None, 0
    while time.monotonic() < deadline:
        doc = await ctl.op(op_id)
        if doc["status"] in TERMINAL:
            return doc
        state = (doc["status"], doc["upid"])
        same = same + 1 if state == last else 0
        if same >= 2 and moved < max_sim_seconds:  # the runner has settled on a running task: move time
            ctl.advance(step)
            moved += step
            same = 0
        last = state
        await asyncio.sleep(0.03)
    raise AssertionError(f"operation {op_id} did not finish: {doc}")


def our_tasks(ctl: Ctl, node: str, vmid: int, since: float) -> list[str]:
    tasks = ctl.sim.cluster("lab").nodes[node].tasks
    return [t.upid.type for t in tasks if t.upid.user == OUR_TOKEN and t.upid.id == str(vmid)
            and t.upid.starttime >= int(since)]  # fmt: skip


@pytest.mark.parametrize("force", [False, True], ids=["graceful", "force"])
@pytest.mark.parametrize("action", ["start", "stop", "restart"])
@pytest.mark.parametrize("kind", ["qemu", "lxc"])
async def test_action_matrix(tmp_path, kind: str, action: str, force: bool) -> None:
    vmid, node = GUESTS[kind]
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        g = ctl.sim.cluster("lab").guest(vmid)
        if action == "start":
            g.stop()
            await ctl.cycle()
        started_before = g.started_at
        t0 = ctl.clock.t
        op = await ctl.act("lab", vmid, action, force=force, timeout_seconds=300)
        assert op["status"] == "pending" and op["upid"] is None
        assert (op["cluster"], op["node"], op["resource_type"], op["resource_id"]) == ("lab", node, kind, vmid)
        assert (op["operation"], op["force"], op["user"], op["client_ip"]) == (action, force, "ops", "127.0.0.1")
        done = await drive(ctl, op["id"])
        assert done["status"] == "succeeded", done
        assert done["error_message"] is None and done["duration_seconds"] is not None
        assert done["started_at"] and done["finished_at"] and done["finished_at"] >= done["started_at"]
        upid = parse_upid(done["upid"])
        assert upid is not None and upid.node == node and upid.user == OUR_TOKEN
        assert our_tasks(ctl, node, vmid, t0) == EXPECTED_TASKS[(kind, action, force)]
        assert upid.type == EXPECTED_TASKS[(kind, action, force)][-1]
        st = await ctl.daemon.clusters["lab"].client.get(f"/nodes/{node}/tasks/{done['upid']}/status")
        assert st["status"] == "stopped" and st["exitstatus"] == "OK"
        resources = await ctl.daemon.clusters["lab"].client.get("/cluster/resources", {"type": "vm"})
        status = next(r["status"] for r in resources if r["vmid"] == vmid)
        assert status == ("stopped" if action == "stop" else "running")
        if action == "restart" and not (kind == "qemu" and force):  # a QEMU reset keeps its process
            assert g.started_at > started_before


async def test_pve_refusals_fail_with_pves_message(tmp_path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        lab = ctl.sim.cluster("lab")
        lab.guest(110).running = False
        cases = [
            (102, "start", {}, "VM 102 already running"),  # qemu: task error
            (111, "start", {}, "CT 111 already running"),  # lxc: synchronous 500
            (106, "stop", {}, "VM is paused - cannot shutdown"),
            (104, "start", {}, "you can't start a vm if it's a template"),
            (101, "start", {}, "VM is locked (backup)"),
            (107, "start", {}, "CT is locked (backup)"),
            (109, "restart", {}, "VM 109 not running"),
        ]
        ops = [(await ctl.act("lab", vmid, action, **body), msg) for vmid, action, body, msg in cases]
        for op, msg in ops:
            done = await drive(ctl, op["id"])
            assert (done["status"], done["error_message"]) == ("failed", msg), done
        # lxc stop of a stopped container: PVE says "not running"; the runner checks it did not move, then fails
        lab.guest(111).stop()
        op = await ctl.act("lab", 111, "stop", force=True)
        done = await drive(ctl, op["id"])
        assert (done["status"], done["error_message"]) == ("failed", "CT 111 not running")
        # the same action on qemu is fine: stopping a stopped VM is OK in PVE
        lab.guest(102).stop()
        done = await drive(ctl, (await ctl.act("lab", 102, "stop", force=True))["id"])
        assert done["status"] == "succeeded"


async def test_missing_power_privilege_fails_with_pves_403_text(tmp_path) -> None:
    async with control_app(tmp_path / "ops.sqlite", token_id=AUDITOR_TOKEN_ID,
                           token_secret=AUDITOR_TOKEN_SECRET) as ctl:
        done = await drive(ctl, (await ctl.act("lab", 102, "restart"))["id"])
        assert done["status"] == "failed"
        assert done["error_message"] == "Permission check failed (/vms/102, VM.PowerMgmt)"
        assert done["upid"] is None


async def test_offline_node_fails_with_the_relay_error(tmp_path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        ctl.sim.cluster("lab").add_fault("node_down", node="pve3")
        done = await drive(ctl, (await ctl.act("lab", 108, "stop", force=True))["id"])
        assert done["status"] == "failed"
        assert "595" in done["error_message"] and "No route to host" in done["error_message"]


async def test_task_outliving_the_timeout_is_timed_out(tmp_path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        ctl.sim.cluster("lab").power.overrides[102] = 600  # a reset that hangs for 10 minutes
        op = await ctl.act("lab", 102, "restart", force=True, timeout_seconds=30)
        await ctl.wait_upid(op["id"])
        ctl.advance(31)
        done = await ctl.wait_op(op["id"])
        assert done["status"] == "timed_out"
        assert done["upid"] in done["error_message"] and "still running" in done["error_message"]


async def test_graceful_stop_that_pve_gives_up_on_fails_with_pves_timeout_text(tmp_path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        ctl.sim.cluster("lab").guest(105).ignores_acpi = True
        op = await ctl.act("lab", 105, "stop", timeout_seconds=20)
        await ctl.wait_upid(op["id"])
        ctl.advance(25)
        done = await ctl.wait_op(op["id"])
        assert (done["status"], done["error_message"]) == ("failed", "VM quit/powerdown failed - got timeout")


async def test_ha_guest_waits_for_the_real_state(tmp_path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        lab = ctl.sim.cluster("lab")
        op = await ctl.act("lab", 100, "stop", timeout_seconds=120)
        await ctl.wait_upid(op["id"])
        ctl.advance(2)  # hastop finishes OK, the guest still runs
        await asyncio.sleep(0.1)
        mid = await ctl.op(op["id"])
        assert mid["status"] == "running" and parse_upid(mid["upid"]).type == "hastop"  # type: ignore[union-attr]
        assert lab.guest(100).running
        done = await drive(ctl, op["id"])
        assert done["status"] == "succeeded" and not lab.guest(100).running

        lab.power.ha_lrm_delay = 500  # HA never gets to it within the timeout
        op = await ctl.act("lab", 100, "start", timeout_seconds=30)
        await ctl.wait_upid(op["id"])
        ctl.advance(31)
        done = await ctl.wait_op(op["id"])
        assert done["status"] == "timed_out" and "HA accepted the request" in done["error_message"]


async def test_second_action_on_a_busy_guest_is_409_with_the_running_operation(tmp_path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        first = await ctl.act("lab", 102, "restart")
        status, body, _ = await ctl.call("POST", "/api/v1/clusters/lab/guests/102/stop", json={"force": True})
        assert status == 409 and body["error_code"] == "ACTION_IN_PROGRESS"
        assert body["details"]["operation_id"] == first["id"] and body["recovery_suggestions"]
        status, body, _ = await ctl.call("GET", "/api/v1/guests?cluster=lab&status=running", token="viewer")
        assert next(g for g in body["guests"] if g["vmid"] == 102)["active_operation"] == first["id"]
        # other guests are free
        other = await ctl.act("lab", 105, "restart")
        assert (await drive(ctl, first["id"]))["status"] == "succeeded"
        assert (await drive(ctl, other["id"]))["status"] == "succeeded"
        again = await ctl.act("lab", 102, "stop", force=True)
        assert (await drive(ctl, again["id"]))["status"] == "succeeded"


async def test_idempotency_key_returns_the_same_operation(tmp_path) -> None:
    db = tmp_path / "ops.sqlite"
    path = "/api/v1/clusters/lab/guests/102/restart"
    async with control_app(db) as ctl:
        h = {"Idempotency-Key": "restart-102-2026-01-01"}
        results = await asyncio.gather(*(ctl.call("POST", path, json={"force": True}, headers=h) for _ in range(3)))
        assert {s for s, _, _ in results} == {202}
        assert len({b["id"] for _, b, _ in results}) == 1
        assert sum(1 for _, _, hd in results if hd.get("Idempotent-Replayed") == "true") == 2
        op_id = results[0][1]["id"]
        status, body, _ = await ctl.call("POST", path, json={"force": False}, headers=h)
        assert status == 422 and body["error_code"] == "IDEMPOTENCY_KEY_REUSED"
        assert body["details"]["operation_id"] == op_id
        done = await drive(ctl, op_id)
        status, body, hd = await ctl.call("POST", path, json={"force": True}, headers=h)
        assert status == 202 and body["id"] == op_id and body["status"] == done["status"] == "succeeded"
        # keys belong to a token: another token's same key is a new request
        status, body, _ = await ctl.call("POST", path, json={"force": True}, headers=h, token="boss")
        assert status == 202 and body["id"] != op_id
        await drive(ctl, body["id"])
        status, body, _ = await ctl.call("POST", path, headers={"Idempotency-Key": "bad key with spaces"})
        assert status == 400 and body["error_code"] == "INVALID_REQUEST"
    async with control_app(db) as ctl:  # and across a restart
        status, body, hd = await ctl.call("POST", path, json={"force": True}, headers=h)
        assert status == 202 and body["id"] == op_id and hd["Idempotent-Replayed"] == "true"


async def test_guest_found_even_when_missing_from_the_snapshot_or_moved(tmp_path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        snap = ctl.daemon.store.get("lab")
        guests = {k: v for k, v in snap.guests.items() if k != 105}
        ctl.daemon.store.put(dataclasses.replace(snap, guests=MappingProxyType(guests)))
        op = await ctl.act("lab", 105, "restart")  # looked up in /cluster/resources
        assert op["node"] == "pve2" and op["resource_type"] == "qemu"
        assert (await drive(ctl, op["id"]))["status"] == "succeeded"

        ctl.sim.cluster("lab").move_guest(102, "pve3")  # migrated after the last cycle
        op = await ctl.act("lab", 102, "restart")
        assert op["node"] == "pve1"  # what the snapshot said
        done = await drive(ctl, op["id"])
        assert done["status"] == "succeeded" and done["node"] == "pve3"
        assert parse_upid(done["upid"]).node == "pve3"  # type: ignore[union-attr]


async def test_unknown_guest_cluster_vmid_and_action(tmp_path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        status, body, _ = await ctl.call("POST", "/api/v1/clusters/lab/guests/999/start")
        assert status == 404 and body["error_code"] == "GUEST_NOT_FOUND" and body["details"]["vmid"] == 999
        status, body, _ = await ctl.call("POST", "/api/v1/clusters/nope/guests/102/start")
        assert status == 404 and body["error_code"] == "CLUSTER_NOT_FOUND" and body["details"]["configured"] == ["lab"]
        status, body, _ = await ctl.call("POST", "/api/v1/clusters/lab/guests/12/start")
        assert status == 400 and body["error_code"] == "INVALID_REQUEST"
        status, body, _ = await ctl.call("POST", "/api/v1/clusters/lab/guests/102/reset")
        assert status == 400 and body["details"]["errors"][0]["field"] == "action"
        status, body, _ = await ctl.call("POST", "/api/v1/clusters/lab/guests/102/start", json={"forse": True})
        assert status == 400 and body["details"]["errors"] == [{"field": "forse", "message": "unknown field"}]
        status, body, _ = await ctl.call("POST", "/api/v1/clusters/lab/guests/102/start", json={"timeout_seconds": 0})
        assert status == 400 and body["details"]["errors"][0]["field"] == "timeout_seconds"
        status, body, _ = await ctl.call("POST", "/api/v1/clusters/lab/guests/102/start", data=b"{not json",
                                         headers={"Content-Type": "application/json"})
        assert status == 400 and body["error_code"] == "INVALID_REQUEST"
        status, body, _ = await ctl.call("POST", "/api/v1/clusters/lab/guests/102/start", data=b"force=1",
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 415 and body["error_code"] == "UNSUPPORTED_MEDIA_TYPE"
        status, body, _ = await ctl.call("POST", "/api/v1/clusters/lab/guests/102/start", data=b" " * 20_000,
                                         headers={"Content-Type": "application/json"})
        assert status == 413 and body["error_code"] == "PAYLOAD_TOO_LARGE"
        status, body, _ = await ctl.call("GET", "/api/v1/nothing-here")
        assert status == 404 and body["error_code"] == "NOT_FOUND"
        status, body, hd = await ctl.call("DELETE", "/api/v1/guests")
        assert status == 405 and body["error_code"] == "METHOD_NOT_ALLOWED" and "GET" in hd["Allow"]


async def test_metrics_count_operations_and_the_poller_is_triggered(tmp_path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        ok = await ctl.act("lab", 102, "restart")
        bad = await ctl.act("lab", 104, "start")
        await drive(ctl, ok["id"])
        await drive(ctl, bad["id"])
        assert ctl.daemon.clusters["lab"].poller.triggered  # a refresh was asked for
        s = series(ctl.daemon.metrics_body(["lab"], False).decode())

        def val(name: str, **labels: str) -> float | None:
            return next((v for (n, lb), v in s.items() if n == name and dict(lb) == labels), None)

        assert val("pve_exporter_operations_total", cluster="lab", action="restart", result="succeeded") == 1
        assert val("pve_exporter_operations_total", cluster="lab", action="start", result="failed") == 1
        assert val("pve_exporter_operation_duration_seconds_total", cluster="lab", action="restart") > 0
        assert val("pve_exporter_operations_in_progress", cluster="lab") == 0
        status, body, _ = await ctl.call("POST", "/api/v1/clusters/lab/collect", token="boss")
        assert status == 202 and body["triggered"] is True
        status, body, _ = await ctl.call("POST", "/api/v1/clusters/lab/collect", token="ops")
        assert status == 403 and body["details"]["required_scope"] == "admin"


async def test_duration_is_measured_on_the_monotonic_clock_across_a_wall_clock_step(tmp_path) -> None:
    """An operation that spans an NTP step keeps its real duration (found by the chaos soak: ~3600 s more)."""
    vmid, _node = GUESTS["qemu"]
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        op = await ctl.act("lab", vmid, "restart", timeout_seconds=300)
        mono0 = ctl.clock.monotonic()
        while (await ctl.op(op["id"]))["upid"] is None:
            await asyncio.sleep(0.02)
        ctl.clock.step_wall(3600)  # the system clock jumps an hour ahead while the task runs
        done = await drive(ctl, op["id"])
        took = ctl.clock.monotonic() - mono0
        assert done["status"] == "succeeded", done
        assert done["duration_seconds"] <= took + 1e-6, (done["duration_seconds"], took)
        text = ctl.daemon.metrics_body(["lab"], False).decode()
        total = next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                     if line.startswith("pve_exporter_operation_duration_seconds_total{") and '"restart"' in line)
        assert total <= took + 1e-6


async def test_an_old_history_file_is_upgraded_in_place(tmp_path) -> None:
    """A history written before elapsed_seconds existed opens, keeps its rows and gains the column."""
    import sqlite3

    from pve_exporter.control.operations import SCHEMA_VERSION, OperationStore

    db = tmp_path / "ops.sqlite"
    store = OperationStore(db, clock=lambda: 1_767_225_600.0)
    await store.open()
    await store.close()
    con = sqlite3.connect(db)
    con.execute("ALTER TABLE operations DROP COLUMN elapsed_seconds")
    con.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    con.commit()
    con.close()
    store = OperationStore(db, clock=lambda: 1_767_225_600.0)
    await store.open()
    try:
        assert store.is_open
    finally:
        await store.close()
    con = sqlite3.connect(db)
    cols = {row[1] for row in con.execute("PRAGMA table_info(operations)")}
    version = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    con.close()
    assert "elapsed_seconds" in cols and int(version) == SCHEMA_VERSION


async def test_an_operation_outlives_the_removal_of_its_cluster(tmp_path) -> None:
    """Found by the chaos soak: a reload that removed a cluster while one of its tasks was followed
    ended the operation `failed` although PVE carried it out. The removed cluster's client now stays
    with the operations it follows (no new action is accepted) and is closed when they end."""
    vmid, _node = GUESTS["qemu"]
    async with control_app(tmp_path / "ops.sqlite", clusters=(("lab", 3, 4), ("prod", 2, 2))) as ctl:
        op = await ctl.act("lab", vmid, "restart", timeout_seconds=300)
        await ctl.wait_upid(op["id"])
        client = ctl.daemon.clusters["lab"].client
        # the same transaction as a reload that drops `lab` from the config
        assert await ctl.daemon.retarget({"prod"})
        assert "lab" not in ctl.daemon.clusters and not client.closed
        status, body, _ = await ctl.call("POST", "/api/v1/clusters/lab/guests/101/start", json={})
        assert status == 404, body  # no new action on a removed cluster
        done = await drive(ctl, op["id"])
        assert done["status"] == "succeeded", done
        for _ in range(100):  # the drain task closes the client right after the operation ends
            if client.closed:
                break
            await asyncio.sleep(0.01)
        assert client.closed and not ctl.daemon._draining
