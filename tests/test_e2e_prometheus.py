"""End to end: the real `pve-exporter` command against `pve-exporter simulate`, scraped by a real Prometheus."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request

import pytest
import yaml

from pve_exporter.simulator import DEFAULT_TOKEN_ID, DEFAULT_TOKEN_SECRET
from tests.servers import Prometheus, free_port, http_get, wait_until

pytestmark = pytest.mark.e2e


class Proc:
    def __init__(self, args, log_path):
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.p = subprocess.Popen([sys.executable, "-m", "pve_exporter", *args], stdout=self.log,
                                  stderr=subprocess.STDOUT, env=env)  # fmt: skip

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=15) -> int:
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait(timeout=5)
        if not self.log.closed:
            self.log.close()
        return rc


@pytest.fixture
def stack(tmp_path):
    """Simulator (2 clusters) + daemon as real processes on 127.0.0.1."""
    sim_port = free_port()
    sim_port2 = free_port()
    procs = []
    sims = []
    for port, name, nodes in ((sim_port, "lab", 3), (sim_port2, "prod", 2)):
        sims.append(Proc(["simulate", "--port", str(port), "--cluster-names", name, "--nodes", str(nodes),
                          "--guests-per-node", "3", "--auth-delay-ms", "0", "--seed", "3"],
                         tmp_path / f"sim-{name}.log"))  # fmt: skip
    procs.extend(sims)
    for port in (sim_port, sim_port2):
        wait_until(lambda p=port: http_get(f"http://127.0.0.1:{p}/_sim/stats"), timeout=20, what="simulator")
    listen = free_port()
    cfg = tmp_path / "config.yaml"
    secret = tmp_path / "secret"
    secret.write_text(DEFAULT_TOKEN_SECRET + "\n")
    cfg.write_text(textwrap.dedent(f"""
        listen: "127.0.0.1:{listen}"
        clusters:
          - name: lab
            endpoints: ["http://127.0.0.1:{sim_port}"]
            token_id: "{DEFAULT_TOKEN_ID}"
            token_secret_file: {secret}
            interval_seconds: 1
            timeout_seconds: 2
          - name: prod
            endpoints: ["http://127.0.0.1:{sim_port2}"]
            token_id: "{DEFAULT_TOKEN_ID}"
            token_secret_file: {secret}
            interval_seconds: 1
            timeout_seconds: 2
        logging: {{level: debug, format: json}}
    """))
    daemon = Proc(["--config", str(cfg)], tmp_path / "daemon.log")
    procs.append(daemon)
    base = f"http://127.0.0.1:{listen}"
    try:
        wait_until(lambda: http_get(f"{base}/-/ready"), timeout=20, what="daemon ready")
        yield {"base": base, "daemon": daemon, "sim": f"http://127.0.0.1:{sim_port}", "listen": listen, "cfg": cfg}
    finally:
        for p in procs:
            p.stop()


def test_prometheus_scrapes_every_cluster(stack, tmp_path):
    prom = Prometheus(tmp_path / "prom", [f"127.0.0.1:{stack['listen']}"])
    try:
        def up_series():
            res = prom.query('pve_up{id=~"(node|qemu|lxc)/.*"}')
            return res if {r["metric"].get("cluster") for r in res} == {"lab", "prod"} else None

        result = wait_until(up_series, timeout=40, interval=0.5, what="pve_up in Prometheus")
        by_cluster: dict[str, set[str]] = {}
        for r in result:
            by_cluster.setdefault(r["metric"]["cluster"], set()).add(r["metric"]["id"])
        assert {"node/pve1", "node/pve2", "node/pve3"} <= by_cluster["lab"]
        assert len([i for i in by_cluster["lab"] if not i.startswith("node/")]) == 9  # 3 nodes × 3 guests
        assert len([i for i in by_cluster["prod"] if not i.startswith("node/")]) == 6
        assert prom.query('up{job="pve"}')[0]["value"][1] == "1"
        # Self-metrics arrive too, and no sample has a timestamp that Prometheus would reject.
        assert prom.query("pve_exporter_cluster_up == 1")
        targets = prom.api("/api/v1/targets")["activeTargets"]
        assert targets[0]["health"] == "up" and not targets[0]["lastError"]
    finally:
        prom.stop()


def test_node_down_seen_through_prometheus_path(stack):
    req = urllib.request.Request(
        f"{stack['sim']}/_sim/faults", data=json.dumps({"kind": "node_down", "node": "pve2"}).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )  # fmt: skip
    urllib.request.urlopen(req, timeout=5).read()

    def pve2_down():
        text = http_get(f"{stack['base']}/metrics?cluster=lab").decode()
        return 'pve_up{cluster="lab",id="node/pve2"} 0' in text and text

    text = wait_until(pve2_down, timeout=15, what="pve2 down in /metrics")
    assert 'pve_up{cluster="lab",id="node/pve1"} 1' in text
    assert 'pve_node_load1{cluster="lab",id="node/pve2"}' not in text


def test_sigterm_exits_cleanly_and_logs_no_secret(stack):
    daemon = stack["daemon"]
    assert http_get(f"{stack['base']}/metrics")
    rc = daemon.stop(signal.SIGTERM)
    out = daemon.output()
    assert rc == 0, out[-2000:]
    assert "Traceback" not in out
    assert DEFAULT_TOKEN_SECRET not in out
    assert '"event": "stopped"' in out


def test_promtool_check_metrics(stack):
    from tests.servers import require_binary

    promtool = require_binary("promtool", "prometheus")
    text = http_get(f"{stack['base']}/metrics")
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


def test_sighup_reload_removes_a_cluster_and_keeps_the_other(stack):
    cfg = stack["cfg"]
    doc = yaml.safe_load(cfg.read_text())
    doc["clusters"] = [c for c in doc["clusters"] if c["name"] != "prod"]
    cfg.write_text(yaml.safe_dump(doc))
    stack["daemon"].p.send_signal(signal.SIGHUP)

    def prod_gone():
        body = http_get(f"{stack['base']}/metrics").decode()
        return 'cluster="prod"' not in body and body

    body = wait_until(prod_gone, timeout=15, what="prod removed after SIGHUP")
    assert 'pve_up{cluster="lab",id="node/pve1"} 1' in body
    assert "pve_exporter_config_last_reload_successful 1" in body
    assert stack["daemon"].p.poll() is None
