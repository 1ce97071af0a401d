"""Friendlier configuration (issue 15 item 4): a misspelt key gets the closest known one, a timeout
PVE's delayed 401 would beat is warned about, an endpoint with /api2/json is accepted and the trimming
said, check-config prints computed defaults, and the environment alone may define the clusters."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from pve_exporter import cli
from pve_exporter.settings import ConfigError, config_notes, load_settings

CLUSTER = {"name": "prod", "endpoints": ["pve1.example.com"], "token_id": "monitor@pve!exporter",
           "token_secret": "0d3b2c1a-9f8e-4d7c-b6a5-4f3e2d1c0b9a"}  # fmt: skip


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(None, data=data)
    return str(info.value)


@pytest.mark.parametrize(("data", "message"), [
    ({"clusters": [{**CLUSTER, "intervall_seconds": 5}]},
     "clusters[0].intervall_seconds: unknown key; did you mean `interval_seconds`?"),
    ({"clusters": [{**CLUSTER, "timeout": 5}]}, "clusters[0].timeout: unknown key; did you mean `timeout_seconds`?"),
    ({"clusters": [CLUSTER], "controll": {}}, "controll: unknown key; did you mean `control`?"),
    ({"clusters": [CLUSTER], "control": {"enabled": True, "tokens": [
        {"name": "x", "sha256": "0" * 64, "scope": ["read"]}]}},
     "control.tokens[0].scope: unknown key; did you mean `scopes`?"),
    ({"clusters": [CLUSTER], "collect": {"guest_device": True}},
     "collect.guest_device: unknown key; did you mean `guest_devices`?"),
    ({"clusters": [{**CLUSTER, "bogus": 1}]}, "clusters[0].bogus: unknown key"),
])  # fmt: skip
def test_an_unknown_key_suggests_the_closest_known_one(data: dict[str, Any], message: str) -> None:
    text = error_of(data)
    assert message in text.splitlines()
    if "bogus" in message:
        assert "did you mean" not in text


def test_a_timeout_pve_delayed_401_would_beat_is_warned_about() -> None:
    for t, warned in ((1, True), (3, True), (3.5, False), (5, False)):
        notes = config_notes(load_settings(None, data={"clusters": [{**CLUSTER, "timeout_seconds": t}]}))
        assert any("clusters[0].timeout_seconds" in n and "401" in n for n in notes) is warned, t


def test_an_endpoint_with_api2_json_is_accepted_and_the_trimming_is_said() -> None:
    data = {"clusters": [{**CLUSTER, "endpoints": ["https://pve1:8006/api2/json", "pve2/api2/json/", "pve3"],
                          "node_endpoints": {"pve4": "10.0.0.4/api2/json"}}]}  # fmt: skip
    settings = load_settings(None, data=data)
    assert settings.clusters[0].endpoints == ["https://pve1:8006", "https://pve2:8006", "https://pve3:8006"]
    assert settings.clusters[0].node_endpoints == {"pve4": "https://10.0.0.4:8006"}
    notes = config_notes(settings)
    assert len(notes) == 3 and all("/api2/json path was trimmed" in n for n in notes)
    assert "'https://pve1:8006/api2/json'" in notes[0] and "https://pve1:8006 " in notes[0]
    assert config_notes(load_settings(None, data={"clusters": [CLUSTER]})) == []  # nothing to say


def _write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(doc))
    p.chmod(0o600)
    return p


def test_check_config_shows_computed_defaults_and_the_notes(tmp_path: Path, capsys) -> None:
    doc = {"clusters": [{**CLUSTER, "interval_seconds": 10, "timeout_seconds": 2,
                         "endpoints": ["https://pve1:8006/api2/json"]},
                        {**CLUSTER, "name": "lab", "stale_after_seconds": 33}]}  # fmt: skip
    assert cli.main(["check-config", str(_write(tmp_path, doc))]) == 0
    out = capsys.readouterr()
    shown = yaml.safe_load(out.out)
    assert [c["stale_after_seconds"] for c in shown["clusters"]] == [40.0, 33.0]  # 4 intervals, or as given
    assert shown["clusters"][0]["endpoints"] == ["https://pve1:8006"]
    notes = [line for line in out.err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 2 and "trimmed" in notes[0] and "timeout_seconds" in notes[1]


def test_the_environment_alone_may_define_the_clusters(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PVE_EXPORTER_CLUSTERS", json.dumps([CLUSTER]))
    assert cli.main(["check-config", "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["clusters"][0]["name"] == "prod" and "environment: OK (1 cluster(s))" in out.err
    assert "0d3b2c1a" not in out.out

    started: list[Any] = []

    async def fake_serve(settings: Any, **kw: Any) -> int:
        started.append((settings, kw))
        return 0

    monkeypatch.setattr("pve_exporter.app.serve", fake_serve)
    monkeypatch.setattr(cli, "_limit_malloc_arenas", lambda: None)
    assert cli.main(["--log-format", "console"]) == 0  # no --config
    [(settings, kw)] = started
    assert settings.clusters[0].name == "prod" and kw["config_path"] is None

    monkeypatch.delenv("PVE_EXPORTER_CLUSTERS")
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert "clusters: at least one cluster is required" in err and "PVE_EXPORTER_CLUSTERS" in err


def test_run_logs_the_notes(tmp_path: Path, monkeypatch, capsys) -> None:
    doc = {"clusters": [{**CLUSTER, "endpoints": ["pve1:8006/api2/json"]}]}

    async def fake_serve(settings: Any, **kw: Any) -> int:
        return 0

    monkeypatch.setattr("pve_exporter.app.serve", fake_serve)
    monkeypatch.setattr(cli, "_limit_malloc_arenas", lambda: None)
    assert cli.main(["--config", str(_write(tmp_path, doc)), "--log-format", "json"]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in (captured.out + captured.err).splitlines() if line.startswith("{")]
    assert any("/api2/json path was trimmed" in line.get("event", "") for line in lines), textwrap.shorten(
        captured.out + captured.err, 500)
