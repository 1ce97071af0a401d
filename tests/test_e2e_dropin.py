"""End to end, as a prometheus-pve-exporter user switching over (issue 17): a real Prometheus scrapes
two simulated clusters with the same vmids through `/pve?target=` with prometheus-pve-exporter's
scrape config, evaluates a dashboard written in that style (joins on(id, instance)) and alert rules.

One stack for the module (the phases run in file order and undo their faults): every panel returns
data and no error; a node taken down keeps its guests in pve_guest_info and the guest-down rule fires
for them; the cluster API taken down turns that target's `up` to 0 within two scrapes while the other
target stays 1, and back to 1 when the API returns.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pve_exporter.simulator import DEFAULT_TOKEN_ID, DEFAULT_TOKEN_SECRET
from tests.servers import free_port, http_get, require_binary, wait_until
from tests.test_e2e_prometheus import Proc

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).parent / "fixtures" / "dropin"
# Prometheus scrapes every 2 s and the daemon cycles every 1 s: a failing cycle then always lands
# between two scrapes, so "up is 0 within two scrapes" holds by construction, not by luck.
SCRAPE = 2.0
# Grafana's placeholders in the test dashboard, as a user picking "All" would have them.
GRAFANA_VARS = {"$__rate_interval": "10s", "$instance": ".*", "${DS}": "prometheus"}


def ppe_scrape_config(exporter: str, targets: list[str]) -> dict[str, Any]:
    """prometheus-pve-exporter's README scrape config, unchanged but for the exporter address."""
    return {
        "job_name": "pve",
        "metrics_path": "/pve",
        "params": {"module": ["default"], "cluster": ["1"], "node": ["1"]},
        "static_configs": [{"targets": targets}],
        "relabel_configs": [
            {"source_labels": ["__address__"], "target_label": "__param_target"},
            {"source_labels": ["__param_target"], "target_label": "instance"},
            {"target_label": "__address__", "replacement": exporter},
        ],
    }


class PromServer:
    """A real Prometheus with the given scrape config and rule files."""

    def __init__(self, tmp: Path, scrape: dict[str, Any], rule_files: list[str]) -> None:
        binary = require_binary("prometheus", "prometheus")
        self.port = free_port()
        tmp.mkdir(parents=True, exist_ok=True)
        cfg = {"global": {"scrape_interval": f"{SCRAPE:g}s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
               "rule_files": rule_files, "scrape_configs": [scrape]}  # fmt: skip
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        self.log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_until(lambda: http_get(f"{self.url}/-/ready"), timeout=20, what="prometheus ready")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, expr: str) -> tuple[str, Any]:
        """(status, result or error) of an instant query; an error is a result here, not an exception."""
        q = urllib.parse.urlencode({"query": expr})
        try:
            doc = json.loads(http_get(f"{self.url}/api/v1/query?{q}"))
        except urllib.error.HTTPError as exc:
            doc = json.loads(exc.read())
        return doc["status"], doc["data"]["result"] if doc["status"] == "success" else doc.get("error")

    def vector(self, expr: str) -> list[dict[str, Any]]:
        status, result = self.query(expr)
        assert status == "success", (expr, result)
        return result

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.log.close()


def sim_post(base: str, path: str, doc: dict[str, Any] | None = None, method: str = "POST") -> None:
    data = json.dumps(doc).encode() if doc is not None else None
    req = urllib.request.Request(f"{base}{path}", data=data, headers={"Content-Type": "application/json"},
                                 method=method)  # fmt: skip
    urllib.request.urlopen(req, timeout=5).read()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("dropin")
    require_binary("prometheus", "prometheus")
    procs: list[Proc] = []
    sims = {}
    try:
        for name in ("lab", "prod"):  # the same seed: the same vmids in both clusters
            port = free_port()
            procs.append(Proc(["simulate", "--port", str(port), "--cluster-names", name, "--nodes", "3",
                               "--guests-per-node", "3", "--auth-delay-ms", "0", "--seed", "3"],
                              tmp / f"sim-{name}.log"))  # fmt: skip
            sims[name] = f"http://127.0.0.1:{port}"
        for base in sims.values():
            wait_until(lambda b=base: http_get(f"{b}/_sim/stats"), timeout=20, what="simulator")
        listen = free_port()
        secret = tmp / "secret"
        secret.write_text(DEFAULT_TOKEN_SECRET + "\n")
        clusters = "".join(textwrap.dedent(f"""
              - name: {name}
                endpoints: ["{base}"]
                token_id: "{DEFAULT_TOKEN_ID}"
                token_secret_file: {secret}
                interval_seconds: 1
                timeout_seconds: 1
            """) for name, base in sims.items())  # fmt: skip
        cfg = tmp / "config.yaml"
        cfg.write_text(f'listen: "127.0.0.1:{listen}"\nclusters:{textwrap.indent(clusters, "  ")}\n')
        procs.append(Proc(["--config", str(cfg)], tmp / "daemon.log"))
        base = f"http://127.0.0.1:{listen}"
        wait_until(lambda: http_get(f"{base}/-/ready"), timeout=20, what="daemon ready")
        prod_target = sims["prod"].split("//", 1)[1]  # prometheus-pve-exporter users name a PVE host:port
        prom = PromServer(tmp / "prom", ppe_scrape_config(f"127.0.0.1:{listen}", ["lab", prod_target]),
                          [str(FIXTURES / "ppe-rules.yml")])  # fmt: skip
        try:
            wait_until(lambda: len(prom.vector('up{job="pve"} == 1')) == 2, timeout=40, interval=0.5,
                       what="both targets up")  # fmt: skip
            yield {"prom": prom, "sims": sims, "base": base, "instances": {"lab": "lab", "prod": prod_target},
                   "daemon": procs[-1]}  # fmt: skip
        finally:
            prom.stop()
    finally:
        for p in procs:
            p.stop()


def panel_queries() -> list[tuple[str, str]]:
    doc = json.loads((FIXTURES / "ppe-dashboard.json").read_text())
    out = []
    for var in doc["templating"]["list"]:
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((.*),\s*\w+\)", q)
        assert m, q
        out.append((f"variable {var['name']}", m.group(1)))
    stack = list(doc["panels"])
    while stack:
        p = stack.pop(0)
        stack.extend(p.get("panels", []))
        out.extend((p["title"], t["expr"]) for t in p.get("targets", []))
    subst = []
    for title, expr in out:
        for k in sorted(GRAFANA_VARS, key=len, reverse=True):
            expr = expr.replace(k, GRAFANA_VARS[k])
        subst.append((title, expr))
    return subst


def test_every_panel_returns_data_and_no_error_with_two_clusters_of_the_same_vmids(stack):
    prom = stack["prom"]
    queries = panel_queries()
    assert len(queries) == 18

    def all_answer():
        results = {title: prom.query(expr) for title, expr in queries}
        errors = {t: r for t, (status, r) in results.items() if status != "success"}
        assert not errors, errors  # e.g. "found duplicate series for the match group" fails at once
        empty = [t for t, (_, r) in results.items() if not r]
        return results if not empty else None

    results = wait_until(all_answer, timeout=40, interval=1.0, what="data for every panel")
    # The same vmids in both clusters, never mixed: each instance's guests carry its own cluster.
    guests = results["Guests"][1]
    by_instance: dict[str, set[str]] = {}
    for r in guests:
        m = r["metric"]
        assert stack["instances"][m["cluster"]] == m["instance"], m
        by_instance.setdefault(m["instance"], set()).add(m["id"])
    assert set(by_instance) == set(stack["instances"].values())
    assert by_instance["lab"] == by_instance[stack["instances"]["prod"]] and len(by_instance["lab"]) == 9


def test_node_down_keeps_its_guests_and_the_guest_down_rule_fires_for_them(stack):
    prom = stack["prom"]
    on_pve2 = 'pve_guest_info{instance="lab", node="pve2"}'
    before = {r["metric"]["id"]: r["metric"]["name"] for r in prom.vector(on_pve2)}
    assert before
    sim_post(stack["sims"]["lab"], "/_sim/faults", {"kind": "node_down", "node": "pve2"})
    try:

        def firing():
            alerts = prom.vector('ALERTS{alertname="PveGuestDown", alertstate="firing", instance="lab"}')
            ids = {a["metric"]["id"] for a in alerts}
            return ids if set(before) <= ids else None

        wait_until(firing, timeout=30, interval=0.5, what="PveGuestDown firing for every guest of pve2")
        after = {r["metric"]["id"]: r["metric"]["name"] for r in prom.vector(on_pve2)}
        assert after == before  # still there, with their names
        down = prom.vector('pve_up{instance="lab", id=~"(qemu|lxc)/.*"} == 0')
        assert {r["metric"]["id"] for r in down} >= set(before)
        assert prom.vector('ALERTS{alertname="PveNodeDown", alertstate="firing", id="node/pve2"}')
        # The other cluster, with the same vmids, alerts only for its own stopped guests: joins do not mix.
        prod = stack["instances"]["prod"]

        def prod_alerts_are_its_own() -> bool:
            alerted = prom.vector(f'ALERTS{{alertname="PveGuestDown", alertstate="firing", instance="{prod}"}}')
            stopped = prom.vector(f'pve_up{{instance="{prod}", id=~"(qemu|lxc)/.*"}} == 0')
            return {a["metric"]["id"] for a in alerted} == {r["metric"]["id"] for r in stopped}

        wait_until(prod_alerts_are_its_own, timeout=10, interval=0.5, what="prod alerts for its own guests only")
    finally:
        sim_post(stack["sims"]["lab"], "/_sim/faults", method="DELETE")


def test_cluster_api_down_turns_its_up_to_0_within_two_scrapes_and_back(stack):
    prom, lab = stack["prom"], stack["sims"]["lab"]
    prod = stack["instances"]["prod"]
    wait_until(lambda: len(prom.vector('up{job="pve"} == 1')) == 2, timeout=20, what="both targets up")
    t_fault = time.time()
    sim_post(lab, "/_sim/faults", {"kind": "http_error", "path": "/cluster/resources", "status": 500})
    try:
        wait_until(lambda: prom.vector('up{instance="lab"} == 0'), timeout=20, interval=0.2, what="lab up 0")
        wait_until(lambda: prom.vector('ALERTS{alertname="PveExporterDown", alertstate="firing", instance="lab"}'),
                   timeout=20, interval=0.2, what="PveExporterDown firing")  # fmt: skip
        # Count lab's scrapes after the fault: the first or the second one already failed.
        samples = prom.vector('up{instance="lab"}[30s]')[0]["values"]
        after = [float(v) for t, v in samples if float(t) > t_fault]
        assert 0.0 in after[:2], after
        status = urllib.request.Request(f"{stack['base']}/pve?target=lab")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(status, timeout=5)
        reason = err.value.read().decode()
        assert err.value.code == 503 and reason.count("\n") == 1 and "lab" in reason

        # The other cluster's target never failed (its scrapes since the fault, at least two of them).
        def prod_since_fault() -> list[float] | None:
            values = [
                float(v) for t, v in prom.vector(f'up{{instance="{prod}"}}[30s]')[0]["values"] if float(t) > t_fault
            ]
            return values if len(values) >= 2 else None

        assert set(wait_until(prod_since_fault, timeout=10, interval=0.2, what="prod scrapes")) == {1.0}
    finally:
        sim_post(lab, "/_sim/faults", method="DELETE")
    wait_until(lambda: prom.vector('up{instance="lab"} == 1'), timeout=20, interval=0.2, what="lab up again")


def test_metrics_cluster_with_instance_set_to_the_cluster_works_for_the_same_joins(stack, tmp_path):
    """The README's second setup: /metrics?cluster=NAME, one target per cluster, instance = cluster."""
    listen = stack["base"].rsplit(":", 1)[1]
    job = {
        "job_name": "pve", "honor_labels": True, "static_configs": [{"targets": ["lab", "prod"]}],
        "relabel_configs": [
            {"source_labels": ["__address__"], "target_label": "__param_cluster"},
            {"source_labels": ["__param_cluster"], "target_label": "instance"},
            {"target_label": "__address__", "replacement": f"127.0.0.1:{listen}"},
        ],
    }  # fmt: skip
    prom = PromServer(tmp_path / "prom2", job, [])
    try:

        def joined():
            rows = prom.vector("pve_guest_info * on(id, instance) group_left() pve_up")
            per = {}
            for r in rows:
                assert r["metric"]["cluster"] == r["metric"]["instance"], r["metric"]
                per.setdefault(r["metric"]["instance"], set()).add(r["metric"]["id"])
            return per if set(per) == {"lab", "prod"} else None

        per = wait_until(joined, timeout=40, interval=0.5, what="guests joined per cluster")
        assert len(per["lab"]) == len(per["prod"]) == 9 and per["lab"] == per["prod"]
        assert {r["metric"]["instance"] for r in prom.vector("pve_exporter_cluster_up == 1")} == {"lab", "prod"}
    finally:
        prom.stop()
