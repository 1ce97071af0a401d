"""Config errors and check-config never echo a secret; secrets readable by others are warned about
(issue 11, item 16)."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pve_exporter import cli
from pve_exporter.settings import ConfigError, load_settings, permission_warnings

SECRET = "S3CRET-0d3b2c1a-9f8e-4d7c"
CLUSTER = {"name": "prod", "endpoints": ["pve1.example.com"], "token_id": "monitor@pve!exporter",
           "token_secret": "0d3b2c1a-9f8e-4d7c-b6a5"}  # fmt: skip
INFLUX_V2 = {"url": "http://influx:8086", "org": "o", "bucket": "b", "token": "influx-token-123456"}
INFLUX_V1 = {"url": "http://influx:8086", "api": "v1", "database": "proxmox", "username": "u",
             "password": "influx-password-123456"}  # fmt: skip


def check_config(tmp_path: Path, doc: dict[str, Any], capsys) -> tuple[int, str]:
    p = tmp_path / "config.yaml"
    p.write_text(json.dumps(doc))  # JSON is YAML
    p.chmod(0o600)
    code = cli.main(["check-config", str(p)])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("pasted", [
    f"root@pam!mock={SECRET}",  # the header form people paste
    f"PVEAPIToken=root@pam!mock={SECRET}",
    f"root@pam!mock:{SECRET}",  # PBS style
    f"root@pam!mock = {SECRET}",
])  # fmt: skip
def test_token_id_with_the_secret_is_rejected_without_echoing_it(tmp_path, capsys, pasted: str) -> None:
    code, text = check_config(tmp_path, {"clusters": [{**CLUSTER, "token_id": pasted}]}, capsys)
    assert code == 2
    assert ("clusters[0].token_id: token_id must be user@realm!tokenname without the secret; "
            "put the secret in token_secret_file") in text  # fmt: skip
    assert SECRET not in text and SECRET[:8] not in text


@pytest.mark.parametrize("url", [
    f"http://admin:{SECRET}@influx:8086",
    f"ftp://admin:{SECRET}@influx:8086",
    f"http://admin:{SECRET}@influx:notaport",
    f"http://{SECRET}@influx:8086",
    f"http://admin:{SECRET}@influx:8086/?q=1",
])  # fmt: skip
def test_influx_url_userinfo_is_never_echoed(tmp_path, capsys, url: str) -> None:
    code, text = check_config(tmp_path, {"clusters": [CLUSTER], "influxdb": {**INFLUX_V2, "url": url}}, capsys)
    assert code == 2 and "influxdb.url" in text
    assert SECRET not in text


@pytest.mark.parametrize("endpoint", [f"ftp://admin:{SECRET}@pve1", f"https://root:{SECRET}@pve1:notaport"])
def test_endpoint_userinfo_is_never_echoed(tmp_path, capsys, endpoint: str) -> None:
    code, text = check_config(tmp_path, {"clusters": [{**CLUSTER, "endpoints": [endpoint]}]}, capsys)
    assert code == 2 and "clusters[0].endpoints" in text
    assert SECRET not in text


# Every key that holds a secret, with every kind of wrong value that still carries the secret's text.
SECRET_KEYS: list[tuple[str, Any]] = [
    ("clusters[0].token_secret", lambda v: {"clusters": [{**CLUSTER, "token_secret": v}]}),
    ("influxdb.token", lambda v: {"clusters": [CLUSTER], "influxdb": {**INFLUX_V2, "token": v}}),
    ("influxdb.password", lambda v: {"clusters": [CLUSTER], "influxdb": {**INFLUX_V1, "password": v}}),
    ("control.tokens[0].sha256", lambda v: {"clusters": [CLUSTER], "control": {"tokens": [
        {"name": "ops", "sha256": v, "scopes": ["read"]}]}}),
]
WRONG_VALUES = [[SECRET], {"nested": SECRET}, {SECRET: 1}, SECRET + "\n" * 3 + "x" * 70]


@pytest.mark.parametrize(("key", "doc"), SECRET_KEYS, ids=[k for k, _ in SECRET_KEYS])
@pytest.mark.parametrize("value", WRONG_VALUES, ids=["list", "dict", "key", "long"])
def test_no_pydantic_error_of_a_secret_key_echoes_its_value(tmp_path, capsys, key: str, doc, value) -> None:
    code, text = check_config(tmp_path, doc(value), capsys)
    if key.endswith("sha256") or not isinstance(value, str):
        assert code == 2 and key.split("[")[0] in text, text
    assert SECRET not in text


def test_misspelt_secret_keys_and_env_values_are_not_echoed(tmp_path, capsys, monkeypatch) -> None:
    code, text = check_config(tmp_path, {"clusters": [{**CLUSTER, "token_secrte": SECRET}]}, capsys)
    assert code == 2 and "clusters[0].token_secrte: unknown key" in text and SECRET not in text
    monkeypatch.setenv("PVE_EXPORTER_INFLUXDB", json.dumps({**INFLUX_V2, "token": [SECRET]}))
    code, text = check_config(tmp_path, {"clusters": [CLUSTER]}, capsys)
    assert code == 2 and "influxdb.token" in text and SECRET not in text


def test_check_config_masks_every_secret(tmp_path, capsys) -> None:
    doc = {"clusters": [{**CLUSTER, "token_secret": SECRET}], "influxdb": {**INFLUX_V1, "password": SECRET + "x"}}
    code, text = check_config(tmp_path, doc, capsys)
    assert code == 0 and SECRET not in text and text.count("********") == 2


# ---- permissions ----------------------------------------------------------------------------------


def write(path: Path, text: str, mode: int) -> Path:
    path.write_text(textwrap.dedent(text))
    path.chmod(mode)
    return path


def test_world_readable_config_with_an_inline_secret_is_warned_about(tmp_path, capsys) -> None:
    cfg = write(tmp_path / "config.yaml", json.dumps({"clusters": [{**CLUSTER, "token_secret": SECRET}]}), 0o644)
    warnings = permission_warnings(cfg, load_settings(cfg))
    assert warnings == [f"{cfg} holds secrets and is readable by group or others (mode 0644); chmod 600 {cfg}"]
    assert cli.main(["check-config", str(cfg)]) == 0  # a warning, not an error
    err = capsys.readouterr().err
    assert f"warning: {warnings[0]}" in err and SECRET not in err
    cfg.chmod(0o600)
    assert permission_warnings(cfg, load_settings(cfg)) == []
    cfg.chmod(0o640)
    assert len(permission_warnings(cfg, load_settings(cfg))) == 1  # group-readable counts too


def test_readable_secret_files_are_warned_about_and_config_without_secrets_is_not(tmp_path) -> None:
    pve = write(tmp_path / "pve", SECRET, 0o644)
    influx = write(tmp_path / "influx", "influx-secret-123456", 0o604)
    ctl = write(tmp_path / "ctl", "control-token-123456", 0o600)
    cluster = {k: v for k, v in CLUSTER.items() if k != "token_secret"} | {"token_secret_file": str(pve)}
    influxdb = {k: v for k, v in INFLUX_V2.items() if k != "token"} | {"token_file": str(influx)}
    doc = {"clusters": [cluster], "influxdb": influxdb,
           "control": {"tokens": [{"name": "ops", "secret_file": str(ctl), "scopes": ["read"]}]}}  # fmt: skip
    cfg = write(tmp_path / "config.yaml", json.dumps(doc), 0o644)  # no secret in it: may be readable
    warnings = permission_warnings(cfg, load_settings(cfg))
    assert warnings == [
        f"{pve} holds secrets and is readable by group or others (mode 0644); chmod 600 {pve}",
        f"{influx} holds secrets and is readable by group or others (mode 0604); chmod 600 {influx}",
    ]
    assert all(SECRET not in w for w in warnings)


def test_running_daemon_logs_the_permission_warning(tmp_path, monkeypatch) -> None:
    cfg = write(tmp_path / "config.yaml", json.dumps({"clusters": [{**CLUSTER, "token_secret": SECRET}]}), 0o644)
    seen: list[str] = []

    async def fake_serve(settings, **kw):
        return 0

    monkeypatch.setattr("pve_exporter.app.serve", fake_serve)
    monkeypatch.setattr("pve_exporter.cli._warn", seen.append)
    assert cli.main(["--config", str(cfg)]) == 0
    assert seen == [f"{cfg} holds secrets and is readable by group or others (mode 0644); chmod 600 {cfg}"]


def test_config_error_message_has_no_secret_even_in_the_exception_chain(tmp_path) -> None:
    p = write(tmp_path / "c.yaml", json.dumps({"clusters": [{**CLUSTER, "token_id": f"a@pve!b={SECRET}"}]}), 0o600)
    with pytest.raises(ConfigError) as info:
        load_settings(p)
    assert SECRET not in str(info.value) and info.value.__cause__ is None and info.value.__suppress_context__
    assert os.environ.get("PVE_EXPORTER_CLUSTERS") is None


def test_readable_tls_key_is_warned_about_at_start(tmp_path, monkeypatch) -> None:
    from pve_exporter.webconfig import TlsServerConfig, WebConfig

    cfg = write(tmp_path / "config.yaml", json.dumps({"clusters": [CLUSTER]}), 0o600)
    cert = write(tmp_path / "server.crt", "cert", 0o644)  # a certificate is public
    key = write(tmp_path / "server.key", "key", 0o644)
    seen: list[str] = []

    async def fake_serve(settings, **kw):
        return 0

    monkeypatch.setattr("pve_exporter.webconfig.load_web_config",
                        lambda _p: WebConfig(tls_server_config=TlsServerConfig(cert_file=cert, key_file=key)))
    monkeypatch.setattr("pve_exporter.app.serve", fake_serve)
    monkeypatch.setattr("pve_exporter.cli._warn", seen.append)
    assert cli.main(["--config", str(cfg), "--web-config-file", "web.yml"]) == 0
    assert seen == [f"{key} holds secrets and is readable by group or others (mode 0644); chmod 600 {key}"]
