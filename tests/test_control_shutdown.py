"""After SIGTERM no power call leaves the daemon (issue 11 item 10): queued bulk members become
`interrupted` at once (never sent), and a running action's next step (the `start` of an LXC forced
restart) is not sent either, even when a slot frees up during the shutdown grace."""

from __future__ import annotations

import asyncio
import sqlite3

from tests.controlharness import control_app
from tests.test_control_recovery import _until


def _posts(lab) -> int:  # type: ignore[no-untyped-def]
    return sum(n for key, n in lab.stats.requests.items() if key.startswith("POST "))


async def test_no_power_call_after_shutdown_begins(tmp_path) -> None:
    db = tmp_path / "ops.sqlite"
    async with control_app(db, control={"shutdown_grace_seconds": 5.0}) as ctl:
        lab = ctl.sim.cluster("lab")
        for vmid in (102, 105, 106, 108, 111):
            lab.power.overrides[vmid] = 100.0
        body = {"action": "stop", "force": True, "concurrency": 1, "timeout_seconds": 600,
                "selector": {"cluster": "lab", "vmids": [102, 105, 106, 108]}}  # fmt: skip
        status, batch, _ = await ctl.call("POST", "/api/v1/actions", json=body)
        assert status == 202
        ids = {o["resource_id"]: o["id"] for o in batch["operations"]}
        lxc = await ctl.act("lab", 111, "restart", force=True, timeout_seconds=600)  # stop, then start
        await ctl.wait_upid(ids[102])
        await ctl.wait_upid(lxc["id"])
        assert ctl.daemon.control is not None
        before = _posts(lab)

        stopping = asyncio.create_task(ctl.daemon.control.stop())  # what SIGTERM does first
        await _until(lambda: not ctl.daemon.control.runner.accepting, "shutdown began")
        ctl.advance(101)  # 102's stop and 111's stop end inside the grace: slots and steps free up
        await stopping
        assert _posts(lab) == before, dict(lab.stats.requests)

        rows = {r[0]: r[1:] for r in sqlite3.connect(db).execute("SELECT id, status, error_message FROM operations")}
        assert rows[ids[102]][0] == "succeeded"
        for vmid in (105, 106, 108):
            assert rows[ids[vmid]] == ("interrupted", "the daemon stopped before this action started"), vmid
            assert lab.guest(vmid).running  # never touched
        status, message = rows[lxc["id"]]
        assert status == "interrupted" and "`start` was not sent" in message and "check the guest" in message
        status, body, _ = await ctl.call("POST", "/api/v1/clusters/lab/guests/109/start")
        assert status == 503 and body["error_code"] == "SHUTTING_DOWN"


async def test_the_web_apps_shutdown_stops_power_calls_before_open_requests_are_awaited(tmp_path) -> None:
    """SIGTERM → aiohttp's runner.cleanup → on_shutdown (this) → waits for open requests (up to 60 s)
    → cleanup (daemon.stop). Nothing may be sent in between."""
    db = tmp_path / "ops.sqlite"
    async with control_app(db) as ctl:
        lab = ctl.sim.cluster("lab")
        for vmid in (102, 105, 106):
            lab.power.overrides[vmid] = 100.0
        body = {"action": "stop", "force": True, "concurrency": 1, "timeout_seconds": 600,
                "selector": {"cluster": "lab", "vmids": [102, 105, 106]}}  # fmt: skip
        status, batch, _ = await ctl.call("POST", "/api/v1/actions", json=body)
        assert status == 202
        ids = {o["resource_id"]: o["id"] for o in batch["operations"]}
        await ctl.wait_upid(ids[102])
        before = _posts(lab)
        await ctl.client.app.shutdown()  # the on_shutdown signal only; the daemon still runs
        ctl.advance(101)
        assert (await ctl.wait_op(ids[102]))["status"] == "succeeded"
        for vmid in (105, 106):
            done = await ctl.wait_op(ids[vmid])
            assert done["status"] == "interrupted" and lab.guest(vmid).running, done
        assert _posts(lab) == before
