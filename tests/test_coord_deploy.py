"""The replica deployment examples parse, agree with each other and with the settings."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pve_exporter.settings import load_settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_compose_ha_runs_postgres_two_replicas_and_prometheus_scraping_both():
    compose = yaml.safe_load((DEPLOY / "compose-ha.yaml").read_text())
    services = compose["services"]
    replicas = [n for n in services if n.startswith("pve-exporter-")]
    assert {"postgres", "prometheus"} <= set(services) and len(replicas) == 2
    assert len({services[r]["hostname"] for r in replicas}) == 2  # distinct replica names
    prom = yaml.safe_load((DEPLOY / "prometheus-ha.yml").read_text())
    job = prom["scrape_configs"][0]
    assert job["honor_labels"] is True
    assert sorted(job["static_configs"][0]["targets"]) == sorted(f"{services[r]['hostname']}:9221" for r in replicas)


def test_prometheus_ha_config_passes_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package 'prometheus')")
    doc = yaml.safe_load((DEPLOY / "prometheus-ha.yml").read_text())
    doc.pop("rule_files")  # mounted from alerts/ in the container
    (tmp_path / "p.yml").write_text(yaml.safe_dump(doc))
    subprocess.run([promtool, "check", "config", str(tmp_path / "p.yml")], check=True, capture_output=True)


def test_the_replicas_config_is_valid(tmp_path):
    doc = yaml.safe_load((DEPLOY / "config-ha.yaml").read_text())
    (tmp_path / "dsn").write_text("postgresql://pve_exporter:pw@postgres:5432/pve_exporter\n")
    (tmp_path / "tok").write_text("00000000-0000-0000-0000-000000000000\n")
    doc["coordination"]["dsn_file"] = str(tmp_path / "dsn")
    for c in doc["clusters"]:
        c["token_secret_file"] = str(tmp_path / "tok")
    s = load_settings(None, data=doc)
    assert s.coordination is not None and s.coordination.lease_seconds == 30


def test_kubernetes_example_has_two_replicas_a_budget_and_the_dsn_in_a_secret():
    docs = {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "k8s" / "pve-exporter.yaml").read_text())}
    assert {"Deployment", "PodDisruptionBudget", "Secret"} <= set(docs)
    dep = docs["Deployment"]
    assert dep["spec"]["replicas"] == 2
    assert docs["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    assert docs["PodDisruptionBudget"]["spec"]["selector"] == dep["spec"]["selector"]
    assert "dsn" in docs["Secret"]["stringData"]
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert {"key": "dsn", "path": "pve-exporter-dsn"} in volumes["secrets"]["secret"]["items"]
    config = yaml.safe_load((DEPLOY / "config-ha.yaml").read_text())
    assert config["coordination"]["dsn_file"] == "/run/secrets/pve-exporter-dsn"
