"""A restart during a PVE outage (issue 11 item 8): the listener answers at once, unfinished
operations stay `running` while PVE does not answer about their task, are re-checked in the
background (bounded, with backoff) and finish from the task once PVE is back; `interrupted` only
when PVE says it does not know the task, or after `control.recovery_give_up_seconds`."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from pve_exporter.control.actions import task_gone
from pve_exporter.pve.errors import PveApiError, PveNotFoundError, PveTimeoutError, PveUnreachableError
from pve_exporter.simulator import Simulator, build_simulator
from tests.controlharness import Ctl, control_app
from tests.simharness import FixedClock

STATUS = "GET /nodes/{node}/tasks/{upid}/status"


async def _leave_running(db: Path, sim: Simulator, clock: FixedClock, vmids: tuple[int, ...]) -> dict[int, str]:
    """A first daemon starts a long forced restart per guest and stops while they run."""
    lab = sim.cluster("lab")
    for vmid in vmids:
        lab.power.overrides[vmid] = 300.0
    async with control_app(db, sim=sim, clock=clock, control={"shutdown_grace_seconds": 0.0}) as ctl:
        ops = {vmid: (await ctl.act("lab", vmid, "restart", force=True, timeout_seconds=900))["id"] for vmid in vmids}
        for op_id in ops.values():
            await ctl.wait_upid(op_id)
    rows = dict(sqlite3.connect(db).execute("SELECT id, status FROM operations").fetchall())
    assert set(rows.values()) == {"running"}, rows
    return ops


async def _until(check: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


def _setup() -> tuple[FixedClock, Simulator]:
    clock = FixedClock()
    return clock, build_simulator([("lab", 3, 4)], seed=7, auth_delay=0.0, clock=clock)


async def test_restart_while_pve_answers_596_keeps_operations_running_until_pve_is_back(tmp_path) -> None:
    db = tmp_path / "ops.sqlite"
    clock, sim = _setup()
    lab = sim.cluster("lab")
    ops = await _leave_running(db, sim, clock, (102, 105, 106, 108))
    faults = [lab.add_fault("http_error", status=596, path=f"/nodes/{n}/tasks") for n in ("pve1", "pve2", "pve3")]
    lab.stats.reset()
    async with control_app(db, sim=sim, clock=clock) as ctl:
        started = time.monotonic()
        resp = await ctl.client.get("/metrics")
        assert resp.status == 200 and time.monotonic() - started < 2.0
        body = await resp.text()
        assert 'pve_exporter_operations_in_progress{cluster="lab"} 4' in body
        assert "pve_exporter_history_healthy 1" in body
        # every operation is asked about more than once: re-checked with backoff, not given up
        await _until(lambda: lab.stats.requests[STATUS] >= 8, "re-checks while PVE answers 596")
        for op_id in ops.values():
            doc = await ctl.op(op_id)
            assert doc["status"] == "running" and doc["finished_at"] is None, doc
        status, body, _ = await ctl.call("POST", "/api/v1/clusters/lab/guests/102/stop", json={"force": True})
        assert status == 409 and body["details"]["operation_id"] == ops[102]  # the guest stays held

        for f in faults:
            lab.remove_fault(f.id)
        ctl.advance(301)  # the tasks ended meanwhile
        for op_id in ops.values():
            done = await ctl.wait_op(op_id)
            assert done["status"] == "succeeded", done


async def test_restart_while_pve_hangs_binds_at_once_and_stops_cleanly(tmp_path) -> None:
    """The first re-check hangs (PVE accepts the connection, never answers): /metrics and the API
    answer meanwhile, and a stop cancels the re-checks (owned by the plane) without recording anything."""
    db = tmp_path / "ops.sqlite"
    clock, sim = _setup()
    lab = sim.cluster("lab")
    ops = await _leave_running(db, sim, clock, (102, 105))
    faults = [lab.add_fault("timeout", path=f"/nodes/{n}/tasks") for n in ("pve1", "pve2", "pve3")]
    lab.stats.reset()
    async with control_app(db, sim=sim, clock=clock, cluster_kw={"timeout_seconds": 30}) as ctl:
        await _until(lambda: lab.stats.requests[STATUS] >= 2, "both re-checks sent (and hanging)")
        started = time.monotonic()
        assert (await ctl.client.get("/metrics")).status == 200
        doc = await ctl.op(ops[102])
        assert doc["status"] == "running"
        assert time.monotonic() - started < 2.0
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 5.0  # the hanging re-checks were cancelled, not waited for
    for f in faults:
        lab.remove_fault(f.id)
    rows = dict(sqlite3.connect(db).execute("SELECT id, status FROM operations").fetchall())
    assert set(rows.values()) == {"running"}, rows  # nothing was decided while PVE did not answer


async def test_no_answer_for_the_documented_limit_ends_interrupted(tmp_path) -> None:
    db = tmp_path / "ops.sqlite"
    clock, sim = _setup()
    lab = sim.cluster("lab")
    ops = await _leave_running(db, sim, clock, (102,))
    lab.add_fault("http_error", status=503, path="/nodes/pve1/tasks")
    lab.stats.reset()
    async with control_app(db, sim=sim, clock=clock, control={"recovery_give_up_seconds": 600}) as ctl:
        await _until(lambda: lab.stats.requests[STATUS] >= 2, "re-checked")
        ctl.advance(599)
        seen = lab.stats.requests[STATUS]
        await _until(lambda: lab.stats.requests[STATUS] > seen + 1, "re-checked after 599 s")
        assert (await ctl.op(ops[102]))["status"] == "running"
        ctl.advance(2)
        done = await ctl.wait_op(ops[102])
        assert done["status"] == "interrupted"
        assert "recovery_give_up_seconds" in done["error_message"] and "check the guest" in done["error_message"]


async def test_recovery_concurrency_is_bounded(tmp_path) -> None:
    from pve_exporter.control.actions import RECOVERY_CONCURRENCY

    db = tmp_path / "ops.sqlite"
    clock, sim = _setup()
    lab = sim.cluster("lab")
    await _leave_running(db, sim, clock, (102, 105, 106, 108, 111))
    faults = [lab.add_fault("timeout", path=f"/nodes/{n}/tasks") for n in ("pve1", "pve2", "pve3")]
    lab.stats.reset()
    async with control_app(db, sim=sim, clock=clock, cluster_kw={"timeout_seconds": 30}) as ctl:
        await _until(lambda: lab.stats.requests[STATUS] >= RECOVERY_CONCURRENCY, "re-checks sent")
        await asyncio.sleep(0.2)  # give the runner the chance to send more, if it would
        assert lab.stats.requests[STATUS] == RECOVERY_CONCURRENCY
        assert isinstance(ctl, Ctl)
    for f in faults:
        lab.remove_fault(f.id)


def test_only_a_pve_answer_that_it_does_not_know_the_task_counts_as_gone() -> None:
    assert task_gone(PveApiError("Parameter verification failed. {'upid': 'no such task'}", status=400))
    assert task_gone(PveApiError("no such task", status=500))
    assert task_gone(PveNotFoundError("Not Found", status=404))
    assert not task_gone(PveUnreachableError("Connection timed out", status=596))
    assert not task_gone(PveUnreachableError("ClientConnectorError: refused"))
    assert not task_gone(PveTimeoutError("no answer within 5s"))
    assert not task_gone(PveApiError("Service Unavailable", status=503))
    assert not task_gone(PveApiError("internal error", status=500))
