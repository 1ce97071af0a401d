"""A power call whose answer never comes (issue 11 item 9): the outcome is unknown, so the runner
looks the task up in the node's task list (type, vmid, our token, since the call) and follows it if
PVE ran it; otherwise the operation ends `timed_out` saying the outcome is unknown."""

from __future__ import annotations

from typing import Any

import aiohttp

from pve_exporter.control.actions import outcome_unknown, pick_task, task_types
from pve_exporter.pve.errors import PveApiError, PveTimeoutError, PveUnreachableError
from pve_exporter.simulator import parse_upid
from tests.controlharness import control_app
from tests.test_control_recovery import _until

POST_STOP = "/nodes/pve1/qemu/102/status/stop"
TOKEN = "monitor@pve!exporter"


async def test_a_stop_whose_answer_times_out_but_that_pve_ran_is_followed_to_success(tmp_path) -> None:
    async with control_app(tmp_path / "ops.sqlite") as ctl:
        lab = ctl.sim.cluster("lab")
        lab.power.overrides[102] = 20.0
        client = ctl.daemon.clusters["lab"].client
        real_post = client.post

        async def answer_lost(path: str, data: Any = None, *, failover: bool = True) -> Any:
            """PVE runs the call, but its answer never arrives (a slow pveproxy, a dropped connection)."""
            await real_post(path, data, failover=failover)
            raise PveTimeoutError("no answer within 0.2s", path=path)

        client.post = answer_lost  # type: ignore[method-assign]
        op = await ctl.act("lab", 102, "stop", force=True, timeout_seconds=120)
        doc = await ctl.wait_upid(op["id"])  # found in the task list, not from the (lost) answer
        upid = parse_upid(doc["upid"])
        assert upid is not None and upid.type == "qmstop" and upid.id == "102" and doc["status"] == "running"
        assert lab.stats.requests["GET /nodes/{node}/tasks"] >= 1
        ctl.advance(21)
        done = await ctl.wait_op(op["id"])
        assert done["status"] == "succeeded" and done["error_message"] is None, done
        assert not lab.guest(102).running
        posts = [t for t in lab.nodes["pve1"].tasks if t.upid.id == "102" and t.upid.type == "qmstop"]
        assert len(posts) == 1  # found, never sent twice


async def test_a_stop_that_never_reached_pve_ends_timed_out_with_the_outcome_unknown(tmp_path) -> None:
    async with control_app(tmp_path / "ops.sqlite", cluster_kw={"timeout_seconds": 0.2}) as ctl:
        lab = ctl.sim.cluster("lab")
        lab.add_fault("timeout", method="POST", path=POST_STOP, count=1)  # swallowed: never carried out
        op = await ctl.act("lab", 102, "stop", force=True, timeout_seconds=60)
        await _until(lambda: lab.stats.requests["GET /nodes/{node}/tasks"] >= 2, "task list looked up")
        assert (await ctl.op(op["id"]))["status"] == "running"  # still looking until the deadline
        ctl.advance(61)
        done = await ctl.wait_op(op["id"])
        assert done["status"] == "timed_out", done
        msg = done["error_message"]
        assert "did not answer the `stop` call" in msg and "outcome is unknown" in msg and "check the guest" in msg
        assert done["upid"] is None and lab.guest(102).running


def test_pick_task_matches_type_guest_owner_and_time() -> None:
    def upid(kind: str, vmid: str, start: int, user: str = TOKEN) -> str:
        return f"UPID:pve1:000B7E3A:02F5C1D8:{start:08X}:{kind}:{vmid}:{user}:"

    since = 1_767_225_600
    mine = upid("qmstop", "102", since + 3)
    rows = [
        {"upid": upid("qmstop", "102", since - 10)},  # before the call
        {"upid": upid("qmstop", "103", since + 1)},  # another guest
        {"upid": upid("qmstart", "102", since + 1)},  # another action
        {"upid": upid("qmstop", "102", since + 1, "root@pam")},  # someone else
        {"upid": mine},
        {"upid": upid("qmstop", "102", since + 9)},  # a later one of ours: the earliest wins
        {"upid": "garbage"},
        "not a row",
    ]
    kw = {"types": task_types("stop", "qemu"), "vmid": 102, "user": TOKEN, "since": since}
    assert pick_task(rows, exclude=frozenset(), **kw) == mine
    assert pick_task(rows, exclude=frozenset({mine}), **kw) == upid("qmstop", "102", since + 9)
    assert pick_task({"not": "a list"}, exclude=frozenset(), **kw) is None
    assert task_types("shutdown", "lxc") == {"vzshutdown", "hastop"}
    assert task_types("start", "qemu") == {"qmstart", "hastart"}
    assert task_types("reset", "qemu") == {"qmreset"}


def test_which_failures_leave_the_outcome_unknown() -> None:
    assert outcome_unknown(PveTimeoutError("no answer within 5s"))
    lost = PveUnreachableError("ServerDisconnectedError: Server disconnected")
    lost.__cause__ = aiohttp.ServerDisconnectedError()
    assert outcome_unknown(lost)
    assert outcome_unknown(PveUnreachableError("Connection timed out", status=596))  # relay sent it on
    assert outcome_unknown(PveUnreachableError("Connection reset by peer", status=597))
    never = PveUnreachableError("ClientConnectorError: refused")
    never.__cause__ = aiohttp.ClientConnectorError.__new__(aiohttp.ClientConnectorError)
    assert not outcome_unknown(never)  # nothing was sent
    assert not outcome_unknown(PveUnreachableError("No route to host", status=595))  # the relay could not connect
    assert not outcome_unknown(PveApiError("VM 102 already running", status=500))  # PVE answered
