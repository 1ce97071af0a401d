"""The real `pve-exporter` process restarted while PVE hangs (issue 11 item 8): the listener answers
at once although every unfinished operation's re-check hangs, the operations stay `running`, and
they finish `succeeded` once PVE answers again. (It used to re-check one operation at a time before
binding, and to mark them `interrupted` because PVE did not answer.)"""

from __future__ import annotations

import json
import signal
import sqlite3
import textwrap
import time
import urllib.request

import pytest

from pve_exporter.simulator import DEFAULT_TOKEN_ID, DEFAULT_TOKEN_SECRET
from tests.controlharness import TOKENS, sha
from tests.servers import free_port, http_get, wait_until
from tests.test_e2e_prometheus import Proc

pytestmark = pytest.mark.e2e
OPS_TOKEN = TOKENS["ops"][0]
PVE_TIMEOUT = 4  # s per PVE request: three hanging re-checks in a row would keep the old daemon deaf for 12 s


def call(url: str, body: dict | None = None, method: str | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method or ("GET" if body is None else "POST"),
        headers={"Authorization": f"Bearer {OPS_TOKEN}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_restart_while_pve_hangs_binds_at_once_and_finishes_the_operations(tmp_path) -> None:
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    procs = [Proc(["simulate", "--port", str(sim_port), "--cluster-names", "lab", "--nodes", "2",
                   "--guests-per-node", "4", "--auth-delay-ms", "0", "--seed", "5"], tmp_path / "sim.log")]  # fmt: skip
    try:
        wait_until(lambda: http_get(f"{sim_url}/_sim/stats"), timeout=20, what="simulator")
        listen = free_port()
        db = tmp_path / "operations.sqlite"
        cfg = tmp_path / "config.yaml"
        cfg.write_text(textwrap.dedent(f"""
            listen: "127.0.0.1:{listen}"
            clusters:
              - name: lab
                endpoints: ["{sim_url}"]
                token_id: "{DEFAULT_TOKEN_ID}"
                token_secret: "{DEFAULT_TOKEN_SECRET}"
                interval_seconds: 60
                timeout_seconds: {PVE_TIMEOUT}
            control:
              enabled: true
              history_db: {db}
              shutdown_grace_seconds: 0
              task_poll_seconds: 0.2
              tokens: [{{name: ops, sha256: "{sha(OPS_TOKEN)}", scopes: [power]}}]
            logging: {{level: info, format: json}}
        """))
        base = f"http://127.0.0.1:{listen}"
        first = Proc(["--config", str(cfg)], tmp_path / "daemon1.log")
        procs.append(first)
        wait_until(lambda: http_get(f"{base}/-/ready"), timeout=20, what="daemon ready")
        guests = call(f"{base}/api/v1/guests?cluster=lab&type=qemu&status=running")["guests"]
        vmids = [g["vmid"] for g in guests if not g["template"]][:3]
        assert len(vmids) == 3, guests
        ops = [call(f"{base}/api/v1/clusters/lab/guests/{v}/restart", {"timeout_seconds": 600})["id"] for v in vmids]
        for op_id in ops:
            wait_until(lambda o=op_id: call(f"{base}/api/v1/operations/{o}")["upid"], timeout=15, what="UPID")
        assert first.stop(signal.SIGTERM, timeout=30) == 0, first.output()[-3000:]
        rows = dict(sqlite3.connect(db).execute("SELECT id, status FROM operations").fetchall())
        assert all(rows[o] == "running" for o in ops), rows  # cut off with their UPIDs

        # PVE now accepts connections but never answers a task status request.
        for node in ("pve1", "pve2"):
            call(f"{sim_url}/_sim/faults", {"kind": "timeout", "path": f"/nodes/{node}/tasks"})
        started = time.monotonic()
        second = Proc(["--config", str(cfg)], tmp_path / "daemon2.log")
        procs.append(second)
        wait_until(lambda: http_get(f"{base}/metrics"), timeout=20, interval=0.05, what="/metrics after restart")
        took = time.monotonic() - started
        assert took < 2 * PVE_TIMEOUT, f"/metrics took {took:.1f} s after the restart: recovery blocked the listener"
        for op_id in ops:
            assert call(f"{base}/api/v1/operations/{op_id}")["status"] == "running"
        wait_until(lambda: "does not answer about an unfinished operation" in second.output(), timeout=3 * PVE_TIMEOUT,
                   what="a re-check ran into PVE's silence")  # fmt: skip
        for op_id in ops:
            assert call(f"{base}/api/v1/operations/{op_id}")["status"] == "running"

        call(f"{sim_url}/_sim/faults", method="DELETE")  # PVE answers again
        for op_id in ops:
            final = wait_until(
                lambda o=op_id: (d := call(f"{base}/api/v1/operations/{o}"))["status"] not in ("running", "pending")
                and d, timeout=60, interval=0.3, what="operation finished after PVE came back",
            )  # fmt: skip
            assert final["status"] == "succeeded", final
        assert second.stop(signal.SIGTERM, timeout=30) == 0
        assert "Traceback" not in second.output()
    finally:
        for p in procs:
            p.stop()
