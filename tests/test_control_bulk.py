"""Bulk actions: dry run, skipped guests with reasons, bounded concurrency, progress, cancel."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.controlharness import Ctl, control_app

# lab (seed 7, 3 nodes x 4): qemu 100 (HA, running, tags prod;web), 101 (stopped, locked), 102 (running),
# 104 (template), 105 (running), 106 (paused), 108 (running, prod), 109/110 (stopped); lxc 103 (HA), 107, 111.


async def batch(ctl: Ctl, batch_id: str) -> dict[str, Any]:
    status, body, _ = await ctl.call("GET", f"/api/v1/actions/{batch_id}", token="viewer")
    assert status == 200, body
    return body


async def wait_batch(ctl: Ctl, batch_id: str, predicate, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        doc = await batch(ctl, batch_id)
        if predicate(doc):
            return doc
        await asyncio.sleep(0.02)
    raise AssertionError(f"batch never got there: {doc['counts'] if doc else doc}")


async def test_dry_run_lists_the_plan_and_changes_nothing(tmp_path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        body = {"action": "stop", "selector": {"cluster": "lab", "type": "qemu"}, "dry_run": True}
        status, doc, _ = await ctl.call("POST", "/api/v1/actions", json=body)
        assert status == 200 and doc["dry_run"] is True
        assert [g["vmid"] for g in doc["would_run"]] == [100, 102, 105, 106, 108]
        assert doc["would_run"][1]["pve_calls"] == ["POST /nodes/pve1/qemu/102/status/shutdown timeout=120"]
        reasons = {s["vmid"]: s["reason"] for s in doc["skipped"]}
        assert reasons == {101: "already_stopped", 104: "template", 109: "already_stopped", 110: "already_stopped"}
        body["force"] = True
        status, doc, _ = await ctl.call("POST", "/api/v1/actions", json=body)
        assert doc["would_run"][1]["pve_calls"] == ["POST /nodes/pve1/qemu/102/status/stop"]
        restart = {"action": "restart", "selector": {"cluster": "lab", "type": "lxc"}, "force": True, "dry_run": True}
        status, doc, _ = await ctl.call("POST", "/api/v1/actions", json=restart)
        assert doc["would_run"][-1]["pve_calls"] == ["POST /nodes/pve3/lxc/111/status/stop",
                                                    "POST /nodes/pve3/lxc/111/status/start"]
        assert {s["vmid"]: s["reason"] for s in doc["skipped"]} == {107: "not_running"}
        status, hist, _ = await ctl.call("GET", "/api/v1/operations", token="viewer")
        assert hist["total"] == 0
        assert not [t for n in ctl.sim.cluster("lab").nodes.values() for t in n.tasks
                    if t.upid.user == "monitor@pve!exporter"]  # fmt: skip


async def test_selectors_tags_vmids_and_busy_guests(tmp_path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        async def plan(selector: dict[str, Any], action: str = "restart") -> dict[str, Any]:
            status, doc, _ = await ctl.call("POST", "/api/v1/actions",
                                            json={"action": action, "selector": selector, "dry_run": True})
            assert status == 200, doc
            return doc

        assert [g["vmid"] for g in (await plan({"tags": ["prod"]}))["would_run"]] == [100, 108]
        assert [g["vmid"] for g in (await plan({"tags": ["PROD", "web"]}))["would_run"]] == [100]
        assert [g["vmid"] for g in (await plan({"node": "pve3"}))["would_run"]] == [108, 111]
        doc = await plan({"cluster": "lab", "vmids": [102, 103, 4242]})
        assert [g["vmid"] for g in doc["would_run"]] == [102, 103]
        assert doc["skipped"] == [{"cluster": "lab", "vmid": 4242, "node": None, "type": None, "name": None,
                                   "status": None, "reason": "not_found",
                                   "message": "no such guest in the selected cluster(s)"}]  # fmt: skip
        busy = await ctl.act("lab", 102, "restart")
        doc = await plan({"vmids": [102, 105]})
        assert [g["vmid"] for g in doc["would_run"]] == [105]
        assert doc["skipped"][0]["reason"] == "busy" and doc["skipped"][0]["operation_id"] == busy["id"]

        for body, code in [
            ({"action": "stop", "selector": {}}, "INVALID_REQUEST"),
            ({"action": "stop", "selector": {"cluster": "lab"}, "concurrency": 50}, "INVALID_REQUEST"),
            ({"action": "stop", "selector": {"cluster": "nope"}}, "CLUSTER_NOT_FOUND"),
            ({"action": "halt", "selector": {"cluster": "lab"}}, "INVALID_REQUEST"),
            ({"action": "stop", "selector": {"cluster": "lab", "vmids": [1]}}, "INVALID_REQUEST"),
            ({"action": "stop", "selector": {"cluster": "lab", "colour": "red"}}, "INVALID_REQUEST"),
        ]:
            status, doc, _ = await ctl.call("POST", "/api/v1/actions", json=body)
            assert doc["error_code"] == code, (body, doc)
        status, doc, _ = await ctl.call("POST", "/api/v1/actions")
        assert status == 400 and doc["details"]["errors"][0]["field"] == "body"


async def test_bounded_concurrency_progress_and_cancel(tmp_path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        lab = ctl.sim.cluster("lab")
        for vmid in (102, 105, 106, 108):
            lab.power.overrides[vmid] = 100.0  # every hard stop takes 100 s
        body = {"action": "stop", "force": True, "concurrency": 2, "timeout_seconds": 300,
                "selector": {"cluster": "lab", "vmids": [102, 105, 106, 108, 109]}}  # fmt: skip
        status, doc, hd = await ctl.call("POST", "/api/v1/actions", json=body)
        assert status == 202 and hd["Location"] == f"/api/v1/actions/{doc['batch_id']}"
        batch_id = doc["batch_id"]
        assert doc["total"] == 4 and doc["counts"]["pending"] == 4 and doc["status"] == "queued"
        assert [s["vmid"] for s in doc["skipped"]] == [109]
        assert all(op["batch_id"] == batch_id for op in doc["operations"])

        doc = await wait_batch(ctl, batch_id, lambda d: sum(1 for o in d["operations"] if o["upid"]) == 2)
        await asyncio.sleep(0.1)  # the runner has time to start a third one, if it would
        doc = await batch(ctl, batch_id)
        assert doc["counts"]["running"] == 2 and doc["counts"]["pending"] == 2 and doc["status"] == "running"
        assert [o["resource_id"] for o in doc["operations"] if o["status"] == "running"] == [102, 105]

        # a single action on a queued member is refused: the batch holds the guest
        status, err, _ = await ctl.call("POST", "/api/v1/clusters/lab/guests/108/start")
        assert status == 409 and err["error_code"] == "ACTION_IN_PROGRESS"

        status, doc, _ = await ctl.call("DELETE", f"/api/v1/actions/{batch_id}", token="viewer")
        assert status == 403
        status, doc, _ = await ctl.call("DELETE", f"/api/v1/actions/{batch_id}")
        assert status == 200 and doc["counts"]["cancelled"] == 2 and len(doc["cancelled_now"]) == 2
        assert {o["resource_id"] for o in doc["operations"] if o["status"] == "cancelled"} == {106, 108}
        await asyncio.sleep(0.05)
        metrics = ctl.daemon.metrics_body(["lab"], False).decode()
        assert 'pve_exporter_operations_in_progress{cluster="lab"} 2' in metrics  # the cancelled ones left
        assert 'pve_exporter_operations_total{cluster="lab",action="stop",result="cancelled"} 2' in metrics

        ctl.advance(101)
        doc = await wait_batch(ctl, batch_id, lambda d: d["finished"] == 4)
        assert doc["counts"] == {"pending": 0, "running": 0, "succeeded": 2, "failed": 0, "timed_out": 0,
                                 "cancelled": 2, "interrupted": 0}  # fmt: skip
        assert doc["status"] == "cancelled" and doc["cancelled_at"]
        assert not lab.guest(102).running and lab.guest(108).running  # cancelled: never touched
        status, doc, _ = await ctl.call("DELETE", f"/api/v1/actions/{batch_id}")
        assert status == 200 and doc["cancelled_now"] == []
        status, hist, _ = await ctl.call("GET", f"/api/v1/operations?batch_id={batch_id}&status=cancelled",
                                         token="viewer")
        assert hist["total"] == 2
        # the guests are free again
        op = await ctl.act("lab", 108, "stop", force=True)
        assert op["status"] == "pending"


async def test_batch_runs_to_the_end_and_unknown_batches_404(tmp_path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        body = {"action": "restart", "selector": {"cluster": "lab", "tags": ["prod"]}, "concurrency": 1}
        status, doc, _ = await ctl.call("POST", "/api/v1/actions", json=body)
        assert status == 202 and doc["total"] == 2
        batch_id = doc["batch_id"]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            doc = await batch(ctl, batch_id)
            if doc["finished"] == 2:
                break
            ctl.advance(5)
            await asyncio.sleep(0.03)
        assert doc["status"] == "finished" and doc["counts"]["succeeded"] == 2, doc["counts"]
        for path in (f"/api/v1/actions/{'0' * 32}", "/api/v1/actions/not-a-batch"):
            status, err, _ = await ctl.call("GET", path, token="viewer")
            assert status == 404 and err["error_code"] == "BATCH_NOT_FOUND"
