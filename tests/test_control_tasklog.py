"""An operation's PVE task log (GET /api/v1/operations/{id}/log) and the guest figures of GET /api/v1/guests,
against the simulator: the log grows while the task runs and pages like PVE's; the figures come from the
snapshot's /cluster/resources rows; an unreachable cluster is said to be one, never just an empty list."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from pve_exporter.control.plane import ControlPlane
from pve_exporter.control.tasklog import LogLine, parse_task_log
from tests.controlharness import control_app

ERROR_KEYS = {"success", "error", "error_code", "details", "recovery_suggestions", "request_id", "timestamp"}


def test_parse_task_log_masks_secrets_and_keeps_pves_numbering() -> None:
    rows = [{"n": 3, "t": "auth PVEAPIToken=monitor@pve!exporter=0b1c2d3e-aaaa-4bbb-8ccc-0123456789ab"},
            {"n": "4", "t": "TASK OK"}, {"t": "no number"}, "junk", {"n": 5, "t": None}]  # fmt: skip
    page = parse_task_log(rows, 5, 2)
    assert page.total == 5
    assert [line.n for line in page.lines] == [3, 4, 5]
    assert "0b1c2d3e" not in page.lines[0].t and "monitor@pve!exporter" in page.lines[0].t
    assert page.lines[1:] == (LogLine(4, "TASK OK"), LogLine(5, ""))
    # no total in the envelope: at least the lines seen
    assert parse_task_log([{"n": 1, "t": "a"}, {"n": 2, "t": "b"}], None, 0).total == 2
    assert parse_task_log("not a list", None, 7).total == 7


async def test_task_log_grows_while_the_task_runs_and_pages_like_pve(tmp_path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        g = ctl.sim.cluster("lab").guests[102]
        g.stop()
        g.lock = "suspended"  # hibernated: PVE's qmstart logs "resuming VM from saved state", then runs ~3 s
        await ctl.cycle()
        op = await ctl.act("lab", 102, "start")
        op = await ctl.wait_upid(op["id"])

        status, doc, _ = await ctl.call("GET", f"/api/v1/operations/{op['id']}/log", token="viewer")
        assert status == 200, doc
        assert doc["operation_status"] == "running" and doc["upid"] == op["upid"] and doc["node"] == "pve1"
        assert doc["lines"] == [{"n": 1, "t": "resuming VM from saved state"}] and doc["total"] == 1
        assert (doc["start"], doc["limit"]) == (0, 50)

        ctl.advance(5)
        assert (await ctl.wait_op(op["id"]))["status"] == "succeeded"
        status, doc, _ = await ctl.call("GET", f"/api/v1/operations/{op['id']}/log", token="viewer")
        assert status == 200 and doc["operation_status"] == "succeeded"
        assert doc["total"] == 2 and doc["lines"][-1] == {"n": 2, "t": "TASK OK"}

        # paged like PVE: start skips lines, n stays the line's number in the whole log
        status, doc, _ = await ctl.call("GET", f"/api/v1/operations/{op['id']}/log?start=1&limit=1", token="viewer")
        assert status == 200 and doc["lines"] == [{"n": 2, "t": "TASK OK"}] and doc["total"] == 2
        status, doc, _ = await ctl.call("GET", f"/api/v1/operations/{op['id']}/log?start=0&limit=1", token="viewer")
        assert doc["lines"] == [{"n": 1, "t": "resuming VM from saved state"}] and doc["total"] == 2
        status, doc, _ = await ctl.call("GET", f"/api/v1/operations/{op['id']}/log?start=9", token="viewer")
        assert status == 200 and doc["lines"] == [] and doc["total"] == 2

        for bad in ("limit=0", "limit=1001", "start=-1", "start=x", "offset=3"):
            status, doc, _ = await ctl.call("GET", f"/api/v1/operations/{op['id']}/log?{bad}", token="viewer")
            assert status == 400 and doc["error_code"] == "INVALID_REQUEST", bad


async def test_simulated_forced_shutdown_writes_its_line_when_the_timeout_passes(tmp_path) -> None:
    """The simulator's logs grow with time: a forced shutdown of a guest that ignores ACPI logs
    `VM still running - terminating now with SIGTERM` at the timeout, not when the task starts."""
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        ctl.sim.cluster("lab").guests[102].ignores_acpi = True
        client = ctl.daemon.clusters["lab"].client
        upid = await client.post("/nodes/pve1/qemu/102/status/shutdown", {"timeout": 30, "forceStop": 1})
        path = f"/nodes/pve1/tasks/{upid}/log"
        assert (await client.get_page(path))[0] == [{"n": 1, "t": "no content"}]
        ctl.advance(30)
        assert await client.get_page(path) == ([{"n": 1, "t": "VM still running - terminating now with SIGTERM"}], 1)
        ctl.advance(1)
        lines, total = await client.get_page(path)
        assert total == 2 and lines[-1] == {"n": 2, "t": "TASK OK"}


async def test_operation_without_a_task_or_whose_task_is_gone_is_404_with_the_error_body(tmp_path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        op = await ctl.act("lab", 111, "start")  # a running container: PVE refuses at once, no UPID
        op = await ctl.wait_op(op["id"])
        assert op["status"] == "failed" and op["upid"] is None
        status, doc, _ = await ctl.call("GET", f"/api/v1/operations/{op['id']}/log", token="viewer")
        assert status == 404 and set(doc) == ERROR_KEYS and doc["error_code"] == "TASK_LOG_NOT_FOUND"
        assert doc["details"] == {"id": op["id"], "status": "failed"}

        status, doc, _ = await ctl.call("GET", "/api/v1/operations/" + "0" * 32 + "/log", token="viewer")
        assert status == 404 and doc["error_code"] == "OPERATION_NOT_FOUND"
        status, doc, _ = await ctl.call("GET", f"/api/v1/operations/{op['id']}/log", token=None)
        assert status == 401

        op = await ctl.act("lab", 102, "restart")
        op = await ctl.wait_upid(op["id"])
        node = ctl.sim.cluster("lab").nodes["pve1"]
        node.tasks = [t for t in node.tasks if t.text != op["upid"]]  # log rotated away: PVE says no such task
        status, doc, _ = await ctl.call("GET", f"/api/v1/operations/{op['id']}/log", token="viewer")
        assert status == 404 and doc["error_code"] == "TASK_LOG_NOT_FOUND" and doc["details"]["upid"] == op["upid"]

        ctl.sim.cluster("lab").add_fault("http_error", path="/nodes/pve2/tasks", status=500, message="boom")
        op2 = await ctl.act("lab", 105, "restart")
        await ctl.wait_upid(op2["id"])
        status, doc, _ = await ctl.call("GET", f"/api/v1/operations/{op2['id']}/log", token="viewer")
        assert status == 502 and doc["error_code"] == "PVE_ERROR" and doc["details"]["pve_status"] == 500


async def test_guest_rows_carry_the_snapshots_figures(tmp_path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        status, doc, _ = await ctl.call("GET", "/api/v1/guests?cluster=lab", token="viewer")
        assert status == 200
        rows = {r["vmid"]: r for r in ctl.daemon.clusters["lab"].poller.store.get("lab").shared.resources
                if r.get("type") in ("qemu", "lxc")}  # fmt: skip
        by_id = {g["vmid"]: g for g in doc["guests"]}
        running = by_id[102]
        assert running["status"] == "running" and running["node_online"] is True
        assert running["cpu"] == round(rows[102]["cpu"], 4) and running["maxcpu"] == rows[102]["maxcpu"]
        assert (running["mem"], running["maxmem"], running["uptime"]) == \
            (rows[102]["mem"], rows[102]["maxmem"], rows[102]["uptime"])
        assert running["data_age_seconds"] == 0
        stopped = by_id[101]
        assert stopped["status"] == "stopped" and stopped["cpu"] is None and stopped["uptime"] is None
        assert stopped["maxmem"] == rows[101]["maxmem"]
        [lab] = doc["clusters"]
        assert lab["name"] == "lab" and lab["health"] == "ok" and lab["nodes"] == 3 and lab["nodes_online"] == 3
        assert lab["guests"] == 12 and lab["guests_running"] == sum(g["status"] == "running" for g in doc["guests"])

        ctl.advance(7)  # the figures' age is the age of the rows, on the monotonic clock
        status, doc, _ = await ctl.call("GET", "/api/v1/guests?cluster=lab&status=running", token="viewer")
        assert {g["data_age_seconds"] for g in doc["guests"]} == {7}


async def test_guest_rows_carry_the_last_backup_over_every_source(tmp_path) -> None:
    """`last_backup` is the snapshot's joined pve_guest_last_backup_timestamp_seconds (the same number
    Prometheus gets), null for a guest with no backup anywhere."""
    from pve_exporter.control.operations import iso
    from tests.simharness import series

    async with control_app(tmp_path / "ops.sqlite") as ctl:
        status, doc, _ = await ctl.call("GET", "/api/v1/guests?cluster=lab", token="viewer")
        assert status == 200
        text = ctl.daemon.metrics_body(["lab"], False).decode()
    newest = {dict(lab)["id"]: v for (n, lab), v in series(text).items()
              if n == "pve_guest_last_backup_timestamp_seconds"}  # fmt: skip
    assert newest, "the simulator has backups"
    for g in doc["guests"]:
        assert g["last_backup"] == iso(newest.get(f"{g['type']}/{g['vmid']}")), g
    assert any(g["last_backup"] is None for g in doc["guests"]) or len(newest) == len(doc["guests"])


async def test_an_offline_node_and_an_unreachable_cluster_are_reported(tmp_path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        lab = ctl.sim.cluster("lab")
        fault = lab.add_fault("node_down", node="pve3")
        await ctl.cycle()
        status, doc, _ = await ctl.call("GET", "/api/v1/guests?cluster=lab&node=pve3", token="viewer")
        assert doc["guests"] and all(g["node_online"] is False and g["status"] == "unknown" for g in doc["guests"])
        assert doc["clusters"][0]["nodes_online"] == 2
        lab.remove_fault(fault.id)

        lab.add_fault("http_error", path="/cluster/resources", status=500)
        lab.add_fault("http_error", path="/cluster/status", status=500)
        ctl.advance(1)
        await ctl.cycle()
        status, doc, _ = await ctl.call("GET", "/api/v1/guests?cluster=lab", token="viewer")
        assert status == 200
        [health] = doc["clusters"]
        assert health["health"] == "unreachable" and "resources" in health["failing_collectors"]
        # the last known guests are still listed, with their age: nothing looks like an empty cluster
        assert doc["total"] == 12 and {g["data_age_seconds"] for g in doc["guests"]} == {1}


async def test_guests_answer_names_a_cluster_before_its_first_collection(tmp_path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        ctl.daemon.store.remove("lab")  # as before the first cycle
        deadline = time.monotonic() + 5
        while ctl.daemon.store.get("lab") is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        status, doc, _ = await ctl.call("GET", "/api/v1/guests?cluster=lab", token="viewer")
        assert status == 200 and doc["guests"] == [] and doc["clusters"][0]["health"] == "starting"


async def test_the_guest_list_is_built_off_the_event_loop(tmp_path, monkeypatch) -> None:
    """20 000 guests take a fifth of a second to list and encode: meanwhile the daemon keeps answering."""
    entered, gate = threading.Event(), threading.Event()
    real = ControlPlane.guests

    def held(self: ControlPlane, **kw: Any) -> list[dict[str, Any]]:
        entered.set()
        assert gate.wait(10), "the list was built on the event loop: nothing else could be answered"
        return real(self, **kw)

    monkeypatch.setattr(ControlPlane, "guests", held)
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        listing = asyncio.ensure_future(ctl.call("GET", "/api/v1/guests", token="viewer"))
        deadline = time.monotonic() + 10
        while not entered.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        resp = await ctl.client.get("/-/healthy")  # answered while the list is being built
        assert resp.status == 200
        gate.set()
        status, doc, headers = await listing
        assert status == 200 and doc["total"] == 12 and headers["Content-Type"].startswith("application/json")
        assert headers["Cache-Control"] == "no-store"
