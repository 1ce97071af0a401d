"""SIGTERM on the real `pve-exporter` process during an InfluxDB outage and a running power action:
exit 0 within a bounded time, the InfluxDB queue is in the spool, the operation's state is in the
history, and after a restart the operation is re-checked by its UPID and finished."""

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


def api(base: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(
        base + path, data=None if body is None else json.dumps(body).encode(), method="GET" if body is None else "POST",
        headers={"Authorization": f"Bearer {OPS_TOKEN}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_sigterm_during_outage_and_power_action_loses_nothing(tmp_path):
    sim_port = free_port()
    sim = Proc(["simulate", "--port", str(sim_port), "--cluster-names", "lab", "--nodes", "2",
                "--guests-per-node", "3", "--auth-delay-ms", "0", "--seed", "5"], tmp_path / "sim.log")  # fmt: skip
    procs = [sim]
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{sim_port}/_sim/stats"), timeout=20, what="simulator")
        listen = free_port()
        spool = tmp_path / "spool"
        db = tmp_path / "operations.sqlite"
        cfg = tmp_path / "config.yaml"
        cfg.write_text(textwrap.dedent(f"""
            listen: "127.0.0.1:{listen}"
            clusters:
              - name: lab
                endpoints: ["http://127.0.0.1:{sim_port}"]
                token_id: "{DEFAULT_TOKEN_ID}"
                token_secret: "{DEFAULT_TOKEN_SECRET}"
                interval_seconds: 1
                timeout_seconds: 2
            influxdb:
              api: v1
              url: "http://127.0.0.1:{free_port()}"
              database: pve
              spool_dir: {spool}
              timeout_seconds: 1
              flush_interval_seconds: 0
              retry_initial_seconds: 0.1
              retry_max_seconds: 0.2
            control:
              enabled: true
              history_db: {db}
              shutdown_grace_seconds: 0.5
              tokens: [{{name: ops, sha256: "{sha(OPS_TOKEN)}", scopes: [power]}}]
            logging: {{level: info, format: json}}
        """))
        base = f"http://127.0.0.1:{listen}"
        daemon = Proc(["--config", str(cfg)], tmp_path / "daemon1.log")
        procs.append(daemon)
        wait_until(lambda: http_get(f"{base}/-/ready"), timeout=20, what="daemon ready")
        guests = api(base, "/api/v1/guests?cluster=lab&type=qemu&status=running")["guests"]
        vmid = next(g["vmid"] for g in guests if not g["template"])
        op = api(base, f"/api/v1/clusters/lab/guests/{vmid}/restart", {"timeout_seconds": 120})
        # The reboot task runs for seconds in the simulator: stop the daemon while it runs.
        wait_until(lambda: api(base, f"/api/v1/operations/{op['id']}")["upid"], timeout=15, what="UPID")
        wait_until(lambda: list(spool.glob("*")), timeout=15, what="InfluxDB batches spooled during the outage")
        started = time.monotonic()
        rc = daemon.stop(signal.SIGTERM, timeout=30)
        took = time.monotonic() - started
        out = daemon.output()
        assert rc == 0, out[-3000:]
        assert took < 15, f"shutdown took {took:.1f} s"
        assert "Traceback" not in out
        spooled = [p for p in spool.rglob("*") if p.is_file() and p.stat().st_size > 0]
        assert spooled, "the in-memory InfluxDB queue must be in the spool after SIGTERM"
        with sqlite3.connect(db) as conn:
            row = conn.execute("SELECT status, upid FROM operations WHERE id = ?", (op["id"],)).fetchone()
        assert row is not None and row[1], row  # recorded, with the UPID to re-check

        # Restart: the operation is followed again by its UPID and reaches its real end.
        daemon2 = Proc(["--config", str(cfg)], tmp_path / "daemon2.log")
        procs.append(daemon2)
        wait_until(lambda: http_get(f"{base}/-/ready"), timeout=20, what="daemon ready again")
        final = wait_until(
            lambda: (o := api(base, f"/api/v1/operations/{op['id']}"))["status"] in ("succeeded", "failed") and o,
            timeout=40, interval=0.5, what="operation finished after restart",
        )  # fmt: skip
        assert final["status"] == "succeeded", final
        assert daemon2.stop(signal.SIGTERM, timeout=30) == 0
    finally:
        for p in procs:
            p.stop()
