"""The operation history: filters, paging, retention, persistence, and recovery after a crash."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from pve_exporter.control.operations import Operation, OperationFilter, OperationStore, new_id
from pve_exporter.simulator import DEFAULT_TOKEN_ID, DEFAULT_TOKEN_SECRET, SimulatorServer, build_simulator
from tests.controlharness import TOKENS, Ctl, control_app, sha
from tests.servers import free_port
from tests.simharness import FixedClock
from tests.test_control_actions import drive

T0 = 1_767_225_600.0  # the harness clock's start: 2026-01-01T00:00:00Z


async def history(ctl: Ctl, query: str = "") -> dict[str, Any]:
    status, body, _ = await ctl.call("GET", f"/api/v1/operations{query}", token="viewer")
    assert status == 200, body
    return body


async def test_filters_paging_and_order(tmp_path) -> None:
    async with control_app(tmp_path / "ops.sqlite", clusters=(("lab", 3, 4), ("prod", 2, 3))) as ctl:
        plan = [("lab", 102, "restart", "ops"), ("lab", 104, "start", "boss"), ("prod", 100, "restart", "ops"),
                ("lab", 105, "stop", "ops"), ("lab", 111, "restart", "boss")]  # fmt: skip
        ids = []
        for cluster, vmid, action, token in plan:
            op = await ctl.act(cluster, vmid, action, token=token, force=True)
            ids.append(op["id"])
            await drive(ctl, op["id"])
            ctl.advance(60)  # one minute between requests
        everything = await history(ctl)
        assert everything["total"] == 5 and [o["id"] for o in everything["operations"]] == ids[::-1]
        assert everything["limit"] == 50 and everything["offset"] == 0

        async def ids_for(query: str) -> list[str]:
            return [o["id"] for o in (await history(ctl, query))["operations"]]

        assert await ids_for("?cluster=prod") == [ids[2]]
        assert await ids_for("?user=boss") == [ids[4], ids[1]]
        assert await ids_for("?operation=restart&cluster=lab") == [ids[4], ids[0]]
        assert await ids_for("?status=failed") == [ids[1]]  # the template
        assert await ids_for("?status=succeeded,failed&resource_type=lxc") == [ids[4]]
        assert await ids_for("?resource_id=105&resource_id=102") == [ids[3], ids[0]]
        assert await ids_for("?node=pve2&cluster=lab") == [ids[3], ids[1]]
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + 100))
        assert await ids_for(f"?since={since}") == ids[:1:-1]
        assert await ids_for(f"?until={T0 + 100:.0f}") == [ids[1], ids[0]]
        page = await history(ctl, "?limit=2&offset=2")
        assert page["total"] == 5 and [o["id"] for o in page["operations"]] == [ids[2], ids[1]]
        assert (await history(ctl, "?limit=2&offset=4"))["operations"][0]["id"] == ids[0]
        assert (await history(ctl, "?offset=10"))["operations"] == []

        op = (await history(ctl, "?resource_id=104"))["operations"][0]
        assert op["error_message"] == "you can't start a vm if it's a template" and op["status"] == "failed"
        status, one, _ = await ctl.call("GET", f"/api/v1/operations/{ids[0]}", token="viewer")
        assert status == 200 and one["id"] == ids[0] and list(one) == [
            "id", "requested_at", "started_at", "finished_at", "duration_seconds", "cluster", "node",
            "resource_type", "resource_id", "resource_name", "operation", "force", "status", "user", "client_ip",
            "upid", "error_message", "batch_id"]  # fmt: skip
        for query, field in [("?status=done", "status"), ("?limit=0", "limit"), ("?limit=5000", "limit"),
                             ("?since=yesterday", "since"), ("?resource_id=abc", "resource_id"),
                             ("?resource_type=vm", "resource_type"), ("?colour=red", "colour")]:
            status, err, _ = await ctl.call("GET", f"/api/v1/operations{query}", token="viewer")
            assert status == 400 and err["error_code"] == "INVALID_REQUEST", query
            assert err["details"]["errors"][0]["field"] == field
        status, err, _ = await ctl.call("GET", f"/api/v1/operations/{'f' * 32}", token="viewer")
        assert status == 404 and err["error_code"] == "OPERATION_NOT_FOUND"


async def test_history_survives_a_restart(tmp_path) -> None:
    db = tmp_path / "ops.sqlite"
    async with control_app(db) as ctl:
        op = await ctl.act("lab", 102, "restart")
        done = await drive(ctl, op["id"])
    async with control_app(db) as ctl:
        again = await ctl.op(op["id"])
        assert again == done
        assert (await history(ctl))["total"] == 1
    mode = sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


async def test_retention_by_count_and_age(tmp_path) -> None:
    clock = FixedClock()
    store = OperationStore(tmp_path / "ops.sqlite", max_operations=10, max_age_days=1, clock=clock)
    await store.open()
    try:
        made = []
        for i in range(15):
            op = Operation(id=new_id(), requested_at=clock.t, cluster="lab", resource_id=100 + i, operation="start",
                           force=False, user="ops", status="succeeded", finished_at=clock.t)  # fmt: skip
            made.append(op.id)
            await store.insert(op)
            clock.t += 1
        running = Operation(id=new_id(), requested_at=clock.t, cluster="lab", resource_id=999, operation="stop",
                            force=False, user="ops", status="running")  # fmt: skip
        await store.insert(running)
        ops, total = await store.query(OperationFilter(), limit=100)
        assert total == 11  # 10 finished + the running one, which retention never drops
        assert {o.id for o in ops} == {*made[5:], running.id}
        clock.t += 2 * 86_400
        await store.prune()
        ops, total = await store.query(OperationFilter(), limit=100)
        assert [o.id for o in ops] == [running.id]
    finally:
        await store.close()


async def test_unfinished_rows_are_rechecked_by_upid_at_start(tmp_path) -> None:
    """A daemon that stops mid-action: its rows are finished from the task (or interrupted) at next start."""
    db = tmp_path / "ops.sqlite"
    clock = FixedClock()
    sim = build_simulator([("lab", 3, 4)], seed=7, auth_delay=0.0, clock=clock)
    lab = sim.cluster("lab")
    for vmid in (102, 105):
        lab.power.overrides[vmid] = 300.0
    async with control_app(db, sim=sim, clock=clock, control={"shutdown_grace_seconds": 0.2}) as ctl:
        a = await ctl.act("lab", 102, "restart", force=True, timeout_seconds=600)
        b = await ctl.act("lab", 105, "restart", force=True, timeout_seconds=600)
        await ctl.wait_upid(a["id"])
        await ctl.wait_upid(b["id"])
        queued_body = {"action": "stop", "force": True, "concurrency": 1,
                       "selector": {"cluster": "lab", "vmids": [108, 111]}}  # fmt: skip
        lab.power.overrides[108] = 300.0
        status, q, _ = await ctl.call("POST", "/api/v1/actions", json=queued_body)
        assert status == 202
        await asyncio.sleep(0.1)
    # the daemon stopped within its grace: a and b stay `running` (with their UPIDs), the queued one is interrupted
    raw = {r[0]: (r[1], r[2]) for r in sqlite3.connect(db).execute("SELECT id, status, upid FROM operations")}
    assert raw[a["id"]][0] == "running" and raw[a["id"]][1]
    assert raw[b["id"]][0] == "running"
    queued = {op["resource_id"]: op["id"] for op in q["operations"]}
    assert raw[queued[108]][0] == "running" and raw[queued[111]][0] == "interrupted"

    clock.t += 400  # while the daemon was down, a's task finished
    task_b = lab.find_task("pve2", raw[b["id"]][1])
    lab.nodes["pve2"].tasks.remove(task_b)  # and b's task is gone from PVE (node reinstalled, log rotated)
    async with control_app(db, sim=sim, clock=clock) as ctl:
        done_a = await ctl.wait_op(a["id"])
        assert done_a["status"] == "succeeded" and done_a["upid"] == raw[a["id"]][1]
        done_b = await ctl.op(b["id"])
        assert done_b["status"] == "interrupted" and "no such task" in done_b["error_message"]
        # 108's stop was cut off while running; its task ended (OK) while the daemon was down
        assert (await ctl.wait_op(queued[108]))["status"] == "succeeded"
        gone = await ctl.op(queued[111])
        assert gone["error_message"] == "the daemon stopped before this action started"


async def test_pending_row_without_upid_becomes_interrupted(tmp_path) -> None:
    db = tmp_path / "ops.sqlite"
    store = OperationStore(db, clock=FixedClock())
    await store.open()
    crashed = Operation(id=new_id(), requested_at=T0 - 10, cluster="lab", resource_id=102, operation="stop",
                        force=False, user="ops", node="pve1", resource_type="qemu", status="running",
                        started_at=T0 - 9)  # fmt: skip
    await store.insert(crashed)
    await store.close()
    async with control_app(db) as ctl:
        op = await ctl.op(crashed.id)
        assert op["status"] == "interrupted" and op["finished_at"]
        assert "before PVE confirmed" in op["error_message"]


async def test_kill_during_an_action_then_restart(tmp_path) -> None:
    """A real daemon process is SIGKILLed mid-action; the next daemon reads the tasks back by UPID."""
    clock = FixedClock()
    sim = build_simulator([("lab", 3, 4)], seed=7, auth_delay=0.0, clock=clock)
    lab = sim.cluster("lab")
    for vmid in (102, 105):
        lab.power.overrides[vmid] = 300.0
    db = tmp_path / "ops.sqlite"
    port = free_port()
    async with SimulatorServer(sim) as server:
        cfg = {
            "listen": f"127.0.0.1:{port}",
            "logging": {"format": "json"},
            "collect": {"node_interval_seconds": 3600},  # not shorter than the cluster's interval
            "clusters": [{"name": "lab", "endpoints": [server.urls["lab"]], "token_id": DEFAULT_TOKEN_ID,
                          "token_secret": DEFAULT_TOKEN_SECRET, "interval_seconds": 3600}],
            "control": {"enabled": True, "history_db": str(db), "task_poll_seconds": 0.05,
                        "tokens": [{"name": "ops", "sha256": sha(TOKENS["ops"][0]), "scopes": ["power"]}]},
        }  # fmt: skip
        (tmp_path / "cfg.yaml").write_text(json.dumps(cfg))
        log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pve_exporter", "--config", str(tmp_path / "cfg.yaml"),
            stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {TOKENS['ops'][0]}"}
        try:
            async with aiohttp.ClientSession() as http:
                deadline = time.monotonic() + 20
                while True:
                    try:
                        async with http.get(f"{base}/-/ready") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    assert time.monotonic() < deadline and proc.returncode is None, (
                        (tmp_path / "daemon.log").read_text())
                    await asyncio.sleep(0.05)
                ops = {}
                for vmid in (102, 105):
                    async with http.post(f"{base}/api/v1/clusters/lab/guests/{vmid}/restart", headers=auth,
                                         json={"force": True, "timeout_seconds": 900}) as r:
                        assert r.status == 202, await r.text()
                        ops[vmid] = (await r.json())["id"]
                deadline = time.monotonic() + 20
                upids: dict[int, str] = {}
                while len(upids) < 2:
                    for vmid, op_id in ops.items():
                        async with http.get(f"{base}/api/v1/operations/{op_id}", headers=auth) as r:
                            doc = await r.json()
                        if doc["upid"]:
                            upids[vmid] = doc["upid"]
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            log.close()
        assert proc.returncode == -signal.SIGKILL
        rows = dict(sqlite3.connect(db).execute("SELECT id, status FROM operations").fetchall())
        assert rows == {ops[102]: "running", ops[105]: "running"}  # exactly what the kill left behind

    clock.t += 400  # 102's reset finished meanwhile; 105's task vanished from PVE
    lab.nodes["pve2"].tasks.remove(lab.find_task("pve2", upids[105]))
    async with control_app(db, sim=sim, clock=clock) as ctl:
        done = await ctl.wait_op(ops[102])
        assert done["status"] == "succeeded" and done["upid"] == upids[102]
        lost = await ctl.op(ops[105])
        assert lost["status"] == "interrupted" and upids[105] in lost["error_message"]
