"""History store failures (issue 11 item 15): a corrupt database at start leaves monitoring up and the
control API answering 503; a database deleted or failing at run time shows as
`pve_exporter_history_healthy 0` with one log line per change; the file is created 0600."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import time
from pathlib import Path

import aiohttp

from pve_exporter.simulator import DEFAULT_TOKEN_ID, DEFAULT_TOKEN_SECRET, SimulatorServer, build_simulator
from tests.controlharness import TOKENS, control_app, sha
from tests.servers import free_port
from tests.simharness import FixedClock


def _healthy(ctl) -> str:  # type: ignore[no-untyped-def]
    body = ctl.daemon.metrics_body(["lab"], False).decode()
    return next(line for line in body.splitlines() if line.startswith("pve_exporter_history_healthy "))


async def test_a_corrupt_history_at_start_disables_only_the_control_api(tmp_path: Path, log_buffer) -> None:
    db = tmp_path / "ops.sqlite"
    db.write_bytes(b"this is not a database" * 100)
    async with control_app(db) as ctl:
        assert (await ctl.client.get("/metrics")).status == 200
        assert _healthy(ctl) == "pve_exporter_history_healthy 0"
        for path in ("/api/v1/whoami", "/api/v1/guests", "/api/v1/operations"):
            status, body, _ = await ctl.call("GET", path, token="viewer")
            assert status == 503 and body["error_code"] == "HISTORY_UNAVAILABLE", body
            assert "not a database" in body["details"]["reason"] and body["recovery_suggestions"]
        status, body, _ = await ctl.call("POST", "/api/v1/clusters/lab/guests/102/stop")
        assert status == 503 and body["error_code"] == "HISTORY_UNAVAILABLE"
        assert "unavailable" in await (await ctl.client.get("/")).text()
        status, doc, _ = await ctl.call("GET", "/api/v1/openapi.json", token=None)  # public, and documents it
        assert status == 200 and "HISTORY_UNAVAILABLE" in doc["paths"]["/api/v1/whoami"]["get"]["responses"]["503"][
            "description"]
    assert "CONTROL API DISABLED" in log_buffer.getvalue()


async def test_the_daemon_process_with_a_corrupt_history_serves_metrics(tmp_path: Path) -> None:
    """It used to exit 1 (monitoring down with it)."""
    db = tmp_path / "ops.sqlite"
    db.write_bytes(b"garbage" * 1000)
    sim = build_simulator([("lab", 2, 2)], seed=7, auth_delay=0.0, clock=FixedClock())
    port = free_port()
    tokens = [{"name": "ops", "sha256": sha(TOKENS["ops"][0]), "scopes": ["power"]}]
    async with SimulatorServer(sim) as server:
        cfg = {"listen": f"127.0.0.1:{port}", "logging": {"format": "json"}, "collect": {"node_interval_seconds": 3600},
               "clusters": [{"name": "lab", "endpoints": [server.urls["lab"]], "token_id": DEFAULT_TOKEN_ID,
                             "token_secret": DEFAULT_TOKEN_SECRET, "interval_seconds": 3600}],
               "control": {"enabled": True, "history_db": str(db), "tokens": tokens}}  # fmt: skip
        (tmp_path / "cfg.yaml").write_text(json.dumps(cfg))
        log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pve_exporter", "--config", str(tmp_path / "cfg.yaml"), stdout=log, stderr=log,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )
        try:
            async with aiohttp.ClientSession() as http:
                deadline = time.monotonic() + 20
                while True:
                    assert proc.returncode is None, (tmp_path / "daemon.log").read_text()
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                            text = await r.text()
                            if r.status == 200 and "pve_exporter_history_healthy" in text:
                                break
                    except aiohttp.ClientError:
                        pass
                    assert time.monotonic() < deadline, (tmp_path / "daemon.log").read_text()
                    await asyncio.sleep(0.05)
                assert "pve_exporter_history_healthy 0" in text
                async with http.get(f"http://127.0.0.1:{port}/api/v1/whoami",
                                    headers={"Authorization": f"Bearer {TOKENS['ops'][0]}"}) as r:
                    assert r.status == 503 and (await r.json())["error_code"] == "HISTORY_UNAVAILABLE"
        finally:
            proc.terminate()
            rc = await proc.wait()
            log.close()
        assert rc == 0, (tmp_path / "daemon.log").read_text()


async def test_a_history_deleted_at_run_time_is_visible_once(tmp_path: Path, log_buffer) -> None:
    db = tmp_path / "ops.sqlite"
    async with control_app(db) as ctl:
        plane = ctl.daemon.control
        assert plane is not None and _healthy(ctl) == "pve_exporter_history_healthy 1"
        assert await plane.store.check()
        db.unlink()
        assert not await plane.store.check()
        assert not await plane.store.check()  # still gone: no second log line
        assert _healthy(ctl) == "pve_exporter_history_healthy 0"
        assert plane.store.problem is not None and "deleted" in plane.store.problem
    assert log_buffer.getvalue().count("the operation history is failing") == 1


async def test_a_failing_write_is_visible_and_answered_503_then_recovers(tmp_path: Path, log_buffer) -> None:
    db = tmp_path / "ops.sqlite"
    async with control_app(db) as ctl:
        store = ctl.daemon.control.store  # type: ignore[union-attr]
        await store._run(lambda: store._conn().execute("PRAGMA query_only=ON"))  # every write now fails
        status, body, _ = await ctl.call("POST", "/api/v1/clusters/lab/guests/102/stop", json={"force": True})
        assert status == 503 and body["error_code"] == "HISTORY_UNAVAILABLE", body
        assert "readonly" in body["details"]["reason"]
        status, _, _ = await ctl.call("POST", "/api/v1/clusters/lab/guests/105/stop", json={"force": True})
        assert status == 503
        assert _healthy(ctl) == "pve_exporter_history_healthy 0"
        assert not ctl.sim.cluster("lab").stats.requests.get("POST /nodes/{node}/qemu/{vmid}/status/stop")
        await store._run(lambda: store._conn().execute("PRAGMA query_only=OFF"))
        op = await ctl.act("lab", 102, "stop", force=True)
        assert op["status"] == "pending" and _healthy(ctl) == "pve_exporter_history_healthy 1"
    logged = log_buffer.getvalue()
    assert logged.count("the operation history is failing") == 1 and "the operation history works again" in logged


async def test_the_history_file_is_created_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "ops.sqlite"
    old = os.umask(0o022)
    try:
        async with control_app(db) as ctl:
            await ctl.act("lab", 102, "stop", force=True)
            for path in (db, Path(f"{db}-wal")):
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        os.umask(old)


async def test_the_plane_checks_the_history_file_on_its_own_schedule(tmp_path: Path) -> None:
    """The watch sleeps through the injected sleep: the test lets one period pass without waiting for it."""
    from pve_exporter.control.plane import HISTORY_CHECK_SECONDS, ControlPlane
    from pve_exporter.settings import ControlSettings
    from tests.controlharness import control_cfg

    periods: asyncio.Queue[float] = asyncio.Queue()
    go = asyncio.Event()

    async def sleep(seconds: float) -> None:
        await periods.put(seconds)
        await go.wait()
        go.clear()

    async with control_app(tmp_path / "ops.sqlite") as ctl:
        db = tmp_path / "other.sqlite"
        plane = ControlPlane(ctl.daemon, ControlSettings(**control_cfg(db)), sleep=sleep)
        await plane.start()
        try:
            assert await asyncio.wait_for(periods.get(), 5) == HISTORY_CHECK_SECONDS
            assert plane.store.healthy
            db.unlink()
            go.set()  # one period passes
            assert await asyncio.wait_for(periods.get(), 5) == HISTORY_CHECK_SECONDS  # checked, sleeping again
            assert not plane.store.healthy and "deleted" in (plane.store.problem or "")
        finally:
            await plane.stop()
        assert all(t.done() for t in plane._tasks) and not plane._tasks
