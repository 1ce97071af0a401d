"""The five-minute stack (issue 15 item 3): deploy/compose.yaml checked against a schema of the compose
keys it may use (no Docker engine needed), every file it mounts present, Prometheus' config and rules
wired through its mounts, Grafana's provisioning resolving to the shipped dashboards and their data source
variables, the shipped deploy/config.yaml valid, and `pve-exporter demo --prometheus-config FILE` giving a
config a real Prometheus starts with, scraping the demo and loading the alert rules."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pve_exporter import demo
from pve_exporter.settings import load_settings
from tests.servers import free_port, require_binary, wait_until

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
NOT_SHIPPED = {"./secrets"}  # the user's secrets: created by hand (deploy/config.yaml says how)


# ---- a schema of the compose keys the stack uses (a subset of the Compose Specification) -----------------
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class NetworkAttachment(Strict):
    aliases: list[str] = Field(default_factory=list)


class Service(Strict):
    image: str | None = Field(default=None, pattern=r"^[a-z0-9./_-]+(:[A-Za-z0-9._-]+)?$")
    build: str | None = None
    command: list[str] | None = None
    profiles: list[Literal["demo", "pve"]] | None = None
    restart: Literal["no", "always", "on-failure", "unless-stopped"] | None = None
    ports: list[str] = Field(default_factory=list)
    environment: dict[str, str] = Field(default_factory=dict)
    volumes: list[str] = Field(default_factory=list)
    networks: dict[str, NetworkAttachment] | None = None
    depends_on: list[str] | None = None


class Compose(Strict):
    services: dict[str, Service]
    volumes: dict[str, None] = Field(default_factory=dict)


def compose() -> Compose:
    return Compose.model_validate(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def mounts(svc: Service) -> dict[str, str]:
    """container path -> source (a path relative to deploy/, or a named volume)."""
    out = {}
    for v in svc.volumes:
        source, target, *mode = v.split(":")
        assert not mode or mode == ["ro"], v
        out[target] = source
    return out


def host_path(svc: Service, container_path: str) -> Path:
    """Where a path inside the container comes from on the host (through a bind mount)."""
    p = PurePosixPath(container_path)
    for target, source in sorted(mounts(svc).items(), key=lambda kv: -len(kv[0])):
        if p == PurePosixPath(target) or PurePosixPath(target) in p.parents:
            assert source.startswith("."), f"{container_path} is in the named volume {source}"
            return (DEPLOY / source / p.relative_to(target)).resolve()
    raise AssertionError(f"{container_path} is not mounted")


def test_compose_file_matches_the_schema_and_everything_it_mounts_exists() -> None:
    doc = compose()
    for name, svc in doc.services.items():
        assert svc.image or svc.build, name  # something to run
        if svc.build is not None:
            assert (DEPLOY / svc.build / "Dockerfile").is_file()
        for port in svc.ports:
            assert re.fullmatch(r"(127\.0\.0\.1:)?\d{2,5}:\d{2,5}", port), (name, port)
        for target, source in mounts(svc).items():
            assert target.startswith("/"), (name, target)
            if source.startswith("."):
                assert source in NOT_SHIPPED or (DEPLOY / source).exists(), (name, source)
            else:
                assert source in doc.volumes, f"{name}: named volume {source!r} is not declared"
        for dep in svc.depends_on or ():
            assert dep in doc.services
    assert set(doc.volumes) == {s for svc in doc.services.values() for s in mounts(svc).values()
                                if not s.startswith(".")}  # fmt: skip

    # both profiles bring a daemon Prometheus finds under the same name; Prometheus and Grafana come always
    assert doc.services["pve-exporter"].profiles == ["pve"] and doc.services["demo"].profiles == ["demo"]
    assert doc.services["demo"].networks["default"].aliases == ["pve-exporter"]
    assert doc.services["demo"].command[:1] == ["demo"] and "0.0.0.0:9221" in doc.services["demo"].command
    assert doc.services["prometheus"].profiles is None and doc.services["grafana"].profiles is None
    assert mounts(doc.services["pve-exporter"])["/etc/pve-exporter/config.yaml"] == "./config.yaml"


def test_the_schema_catches_mistakes() -> None:
    raw = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    raw["services"]["grafana"]["enviroment"] = raw["services"]["grafana"].pop("environment")
    with pytest.raises(ValidationError, match="enviroment"):
        Compose.model_validate(raw)
    raw = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    raw["services"]["demo"]["profiles"] = ["dmeo"]
    with pytest.raises(ValidationError):
        Compose.model_validate(raw)


def test_prometheus_config_scrapes_the_daemon_and_its_rules_resolve_through_the_mounts(tmp_path: Path) -> None:
    doc = compose()
    prom = doc.services["prometheus"]
    config_path = host_path(prom, "/etc/prometheus/prometheus.yml")
    cfg = yaml.safe_load(config_path.read_text())
    [job] = cfg["scrape_configs"]
    assert job["honor_labels"] is True and job["static_configs"][0]["targets"] == ["pve-exporter:9221"]
    rules = []
    for pattern in cfg["rule_files"]:
        where = host_path(prom, str(PurePosixPath(pattern).parent))
        rules += [p for p in where.iterdir() if fnmatch.fnmatch(p.name, PurePosixPath(pattern).name)]
    assert rules == [ROOT / "alerts" / "pve-exporter.rules.yml"]
    promtool = require_binary("promtool", "prometheus")
    cfg["rule_files"] = [str(r) for r in rules]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    run = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                         text=True)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def dashboards() -> dict[Path, dict[str, Any]]:
    return {p: json.loads(p.read_text()) for p in sorted((ROOT / "dashboards").glob("*.json"))}


def test_grafana_provisioning_resolves_to_the_shipped_dashboards_and_data_sources() -> None:
    grafana = compose().services["grafana"]
    assert host_path(grafana, "/etc/grafana/provisioning") == PROVISIONING.resolve()

    sources = yaml.safe_load((PROVISIONING / "datasources" / "pve-exporter.yaml").read_text())
    assert sources["apiVersion"] == 1
    by_type: dict[str, list[dict[str, Any]]] = {}
    services = compose().services
    for ds in sources["datasources"]:
        assert {"name", "uid", "type", "access", "url"} <= set(ds), ds
        assert ds["access"] == "proxy"
        host, port = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", ds["url"]).groups()
        assert host in services, f"{ds['name']} points at {host!r}, not a compose service"
        assert any(p.endswith(":" + port) for p in services[host].ports), (host, port)
        by_type.setdefault(ds["type"], []).append(ds)
    assert [d["name"] for d in by_type["prometheus"] if d.get("isDefault")] == ["Prometheus"]
    assert len({d["uid"] for d in sources["datasources"]}) == len(sources["datasources"])
    influx = by_type["influxdb"][0]
    assert influx["secureJsonData"]["httpHeaderValue1"] == "Token ${INFLUX_TOKEN}"
    assert "INFLUX_TOKEN" in grafana.environment

    providers = yaml.safe_load((PROVISIONING / "dashboards" / "pve-exporter.yaml").read_text())
    assert providers["apiVersion"] == 1
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    folder = host_path(grafana, provider["options"]["path"])
    assert folder == (ROOT / "dashboards").resolve()
    home = host_path(grafana, grafana.environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home.is_file()

    boards = dashboards()
    assert len(boards) >= 5
    uids = {d["uid"] for d in boards.values()}
    assert len(uids) == len(boards), "dashboard uids must be unique"
    assert json.loads(home.read_text())["uid"] in uids
    for path, board in boards.items():
        text = path.read_text()
        for uid in re.findall(r"/d/([A-Za-z0-9_-]+)", text):  # links between dashboards
            assert uid in uids, f"{path.name} links to /d/{uid}, which no provisioned dashboard has"
        variables = {v["name"]: v for v in board["templating"]["list"] if v["type"] == "datasource"}
        assert variables, f"{path.name} has no data source variable"
        for var in variables.values():
            found = [d["name"] for d in by_type.get(var["query"], [])]
            assert found, f"{path.name}: no provisioned {var['query']} data source for ${var['name']}"
            if var.get("regex"):
                assert any(re.search(var["regex"].strip("/"), n) for n in found), path.name
        for ref in re.findall(r'"datasource": (\{[^{}]*\})', text):
            ds = json.loads(ref)
            m = re.fullmatch(r"\$\{(\w+)\}", ds.get("uid", ""))
            if m:  # a panel's data source is the variable, of the variable's type
                assert m.group(1) in variables and variables[m.group(1)]["query"] == ds["type"], (path.name, ds)


def test_the_shipped_config_is_valid_and_takes_every_secret_from_a_mounted_file(tmp_path: Path) -> None:
    doc = yaml.safe_load((DEPLOY / "config.yaml").read_text())
    daemon = compose().services["pve-exporter"]
    secrets: list[str] = []

    def relocate(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: relocate(v) for k, v in node.items()}
        if isinstance(node, list):
            return [relocate(v) for v in node]
        if isinstance(node, str) and node.startswith("/run/secrets/"):
            secrets.append(node)
            local = tmp_path / Path(node).name
            local.write_text(f"secret-of-{local.name}-0d3b2c1a9f8e4d7cb6a5\n")
            local.chmod(0o600)
            return str(local)
        return node

    text = (DEPLOY / "config.yaml").read_text()
    assert not re.search(r"(secret|token|password):\s*['\"]?[A-Za-z0-9]", text), "a secret written in the file"
    for path in ("/var/lib/pve-exporter/spool", "/var/lib/pve-exporter/operations.sqlite"):
        assert mounts(daemon)["/var/lib/pve-exporter"] == "pve-exporter-state" and path in text
    local = relocate(doc)
    local["influxdb"]["spool_dir"] = str(tmp_path / "spool")
    local["control"]["history_db"] = str(tmp_path / "ops.sqlite")
    settings = load_settings(None, data=local)
    assert settings.clusters[0].token_secret_file is not None and settings.influxdb is not None
    assert {t.name: t.scopes for t in settings.control.tokens} == {"ops": ["power"], "viewer": ["read"]}
    assert set(secrets) == {"/run/secrets/pve-prod", "/run/secrets/influx-token", "/run/secrets/control-ops",
                            "/run/secrets/control-ro"}  # fmt: skip
    assert mounts(daemon)["/run/secrets"] == "./secrets"
    influxdb = compose().services["influxdb"]
    assert influxdb.environment["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN_FILE"] == "/run/secrets/influx-token"


def test_demo_prometheus_config_is_valid_for_promtool(tmp_path: Path) -> None:
    text = demo.prometheus_config("0.0.0.0:9321", 5, demo.ALERT_RULES)
    cfg = yaml.safe_load(text)
    assert cfg["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:9321"]}]
    assert cfg["rule_files"] == [str(ROOT / "alerts" / "pve-exporter.rules.yml")]
    assert cfg["global"]["scrape_interval"] == "5s" and cfg["scrape_configs"][0]["honor_labels"] is True
    assert yaml.safe_load(demo.prometheus_config("127.0.0.1:9221", 15, None))["rule_files"] == []
    assert demo.main(["--prometheus-config", str(tmp_path / "no" / "such" / "dir.yml")]) == 2  # nothing started
    (tmp_path / "p.yml").write_text(text)
    promtool = require_binary("promtool", "prometheus")
    run = subprocess.run([promtool, "check", "config", str(tmp_path / "p.yml")], capture_output=True, text=True)
    assert run.returncode == 0 and "SUCCESS" in run.stdout + run.stderr, run.stdout + run.stderr


def free_port_block(n: int) -> int:
    """A first port of `n` consecutive free ones, below the ephemeral range (where client
    connections of other processes come and go): the demo binds sim_port, +1, +2."""
    import random
    import socket

    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 30_000)
        socks = []
        try:
            for port in range(base, base + n):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise AssertionError(f"no {n} consecutive free ports")


def _json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def test_a_local_prometheus_started_in_one_line_scrapes_the_demo_and_loads_the_rules(tmp_path: Path) -> None:
    prometheus = require_binary("prometheus", "prometheus")
    port, prom_port, sim_port = free_port(), free_port(), free_port_block(len(demo.CLUSTERS) + 1)
    config = tmp_path / "prometheus.yml"
    out = tmp_path / "demo.out"
    with out.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "pve_exporter", "demo", "--listen", f"127.0.0.1:{port}",
                                 "--sim-port", str(sim_port), "--fault-every", "0", "--interval", "1",
                                 "--prometheus-config", str(config), "--log-level", "warning"],
                                stdout=sink, stderr=subprocess.STDOUT)  # fmt: skip
    prom = None
    try:
        wait_until(lambda: proc.poll() is not None or "prometheus config" in out.read_text(), timeout=60,
                   what="the demo to start")  # fmt: skip
        assert proc.poll() is None, f"the demo exited with {proc.returncode}"
        line = next(x for x in out.read_text().splitlines() if "prometheus config" in x)
        command = line.split(": ", 1)[1].split()  # the one line the demo prints
        assert command[0] == "prometheus" and f"--config.file={config}" in command
        command = [prometheus, *[a for a in command[1:] if not a.startswith("--storage.tsdb.path")],
                   f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"]
        prom = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{prom_port}"
        rules = wait_until(lambda: _json(f"{base}/api/v1/rules")["data"]["groups"], timeout=30, what="the rules")
        assert sum(len(g["rules"]) for g in rules) >= 20
        up = wait_until(lambda: [t for t in _json(f"{base}/api/v1/targets")["data"]["activeTargets"]
                                 if t["health"] == "up"], timeout=30, what="the demo scraped")  # fmt: skip
        assert up[0]["labels"]["job"] == "pve"
        series = wait_until(lambda: _json(f"{base}/api/v1/query?query=count(pve_up)")["data"]["result"], timeout=30,
                            what="pve_up in Prometheus")  # fmt: skip
        assert int(series[0]["value"][1]) > 10
    except AssertionError as exc:
        raise AssertionError(f"{exc} (demo: {proc.poll()})\n--- demo output ---\n{out.read_text()[-3000:]}") from None
    finally:
        for p in (prom, proc):
            if p is not None:
                p.terminate()
        for p in (prom, proc):
            if p is not None:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
    assert proc.returncode == 0
