"""PVE's error text is scrubbed of anything secret-shaped before it is stored or answered (issue 11 item 12)."""

from __future__ import annotations

import sqlite3

import pytest

from pve_exporter.control.operations import Operation, OperationStore, new_id
from pve_exporter.control.scrub import scrub_secrets
from pve_exporter.logs import MASK
from pve_exporter.simulator import DEFAULT_TOKEN_SECRET
from tests.controlharness import control_app
from tests.simharness import FixedClock

SECRET = "1b9e2c4d-5f6a-4b7c-8d9e-0f1a2b3c4d5e"


@pytest.mark.parametrize(("text", "kept", "gone"), [
    (f"proxy: Authorization: PVEAPIToken=monitor@pve!power={SECRET} refused", "proxy: Authorization:", SECRET),
    (f"bad header PVEAPIToken=root@pam!mock={SECRET}", "PVEAPIToken=root@pam!mock=", SECRET),
    ("PBSAPIToken=backup@pbs!scan:s3cretvalue rejected", "PBSAPIToken=backup@pbs!scan:", "s3cretvalue"),
    ("upstream said Bearer abcdefghijklmnop0123", "Bearer", "abcdefghijklmnop0123"),
    ("Cookie: PVEAuthCookie=PVE:root@pam:67A1B2C3::abcDEF+/== x", "Cookie:", "abcDEF"),
    ('{"token_secret": "hunter2hunter2", "password": "pw123456"}', "token_secret", "hunter2"),
    (f"id={SECRET}", "id=", SECRET),
])  # fmt: skip
def test_secret_shapes_are_masked(text: str, kept: str, gone: str) -> None:
    out = scrub_secrets(text)
    assert out is not None and gone not in out and kept in out and MASK in out


@pytest.mark.parametrize("text", [
    "VM 102 already running", "Permission check failed (/vms/102, VM.PowerMgmt)",
    "Configuration file 'nodes/pve1/qemu-server/101.conf' does not exist", "VM quit/powerdown failed - got timeout",
    "can't lock file '/run/lock/lxc/pve-config-101.lock' - got timeout",
    "PVE could not reach the node (595 No route to host)",
    "the PVE task UPID:pve1:000B7E3A:02F5C1D8:67A1B2C3:qmshutdown:101:monitor@pve!power: was still running",
])  # fmt: skip
def test_ordinary_pve_messages_are_unchanged(text: str) -> None:
    assert scrub_secrets(text) == text


async def test_a_refusal_carrying_a_token_is_stored_and_answered_scrubbed(tmp_path) -> None:
    db = tmp_path / "ops.sqlite"
    async with control_app(db) as ctl:
        lab = ctl.sim.cluster("lab")
        leak = f"proxy rejected Authorization: PVEAPIToken=monitor@pve!exporter={DEFAULT_TOKEN_SECRET}"
        lab.add_fault("http_error", method="POST", path="/nodes/pve1/qemu/102/status/stop", status=500,
                      message=leak, count=1)  # fmt: skip
        op = await ctl.act("lab", 102, "stop", force=True)
        done = await ctl.wait_op(op["id"])
        assert done["status"] == "failed" and done["error_message"].startswith("proxy rejected Authorization:")
        assert DEFAULT_TOKEN_SECRET not in done["error_message"] and "PVEAPIToken" not in done["error_message"]
        status, listing, _ = await ctl.call("GET", "/api/v1/operations", token="viewer")
        assert status == 200 and DEFAULT_TOKEN_SECRET not in str(listing)
    stored = sqlite3.connect(db).execute("SELECT error_message FROM operations WHERE id=?", (op["id"],)).fetchone()[0]
    assert DEFAULT_TOKEN_SECRET not in stored and MASK in stored


async def test_rows_written_before_scrubbing_existed_are_answered_scrubbed(tmp_path) -> None:
    db = tmp_path / "ops.sqlite"
    clock = FixedClock()
    store = OperationStore(db, clock=clock)
    await store.open()
    old = Operation(id=new_id(), requested_at=clock.t, cluster="lab", resource_id=102, operation="stop", force=True,
                    user="ops", status="failed", finished_at=clock.t,
                    error_message=f"echo: PVEAPIToken=a@pve!b={SECRET}")
    await store.insert(old)
    got = await store.get(old.id)
    await store.close()
    assert got is not None and SECRET not in (got.as_api()["error_message"] or "")
