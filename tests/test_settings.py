"""Settings: one readable message naming the key per rule; env overrides; secrets masked."""

from __future__ import annotations

import hashlib
import io
import textwrap

import pytest

from pve_exporter import cli
from pve_exporter.settings import ConfigError, load_settings

GOOD = """
listen: "127.0.0.1:9221"
clusters:
  - name: prod
    endpoints: ["pve1.example.com", "https://pve2.example.com:8006", "http://127.0.0.1:18006"]
    token_id: "monitor@pve!exporter"
    token_secret: "0d3b2c1a-9f8e-4d7c-b6a5-4f3e2d1c0b9a"
"""


def write(tmp_path, text, name="config.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def error_of(tmp_path, text) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    return str(info.value)


def test_good_config_defaults(tmp_path):
    s = load_settings(write(tmp_path, GOOD))
    (c,) = s.clusters
    assert c.endpoints == ["https://pve1.example.com:8006", "https://pve2.example.com:8006", "http://127.0.0.1:18006"]
    assert (c.verify_ssl, c.timeout_seconds, c.interval_seconds, c.max_concurrency) == (True, 5.0, 15.0, 8)
    assert c.stale_after == 60.0
    assert s.listen_host == "127.0.0.1" and s.listen_port == 9221


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (GOOD + "    bogus: 1\n", "clusters[0].bogus: unknown key"),
        (GOOD + "unknown_top: 1\n", "unknown_top: unknown key"),
        (GOOD.replace("monitor@pve!exporter", "monitor@pve"), "clusters[0].token_id: must look like user@realm!"),
        (GOOD.replace("monitor@pve!exporter", "exporter"), "clusters[0].token_id"),
        (GOOD + GOOD.split("clusters:\n", 1)[1], "clusters[1].name: duplicate cluster name 'prod'"),
        (GOOD.replace('token_secret: "0d3b2c1a-9f8e-4d7c-b6a5-4f3e2d1c0b9a"', "token_secret_file: /nonexistent/s"),
         "clusters[0].token_secret_file: file not found: /nonexistent/s"),
        (GOOD.replace('    token_secret: "0d3b2c1a-9f8e-4d7c-b6a5-4f3e2d1c0b9a"\n', ""),
         "clusters[0]: token_secret or token_secret_file is required"),
        (GOOD.replace('"127.0.0.1:9221"', '"nope"'), "listen: must be host:port"),
        (GOOD.replace('"127.0.0.1:9221"', '"127.0.0.1:９２２１"'), "listen: must be host:port"),  # ASCII only
        (GOOD + "web: {header_timeout_seconds: 0}\n", "web.header_timeout_seconds"),
        (GOOD + "web: {max_connections: 1}\n", "web.max_connections"),
        (GOOD + "    interval_seconds: 0\n", "clusters[0].interval_seconds"),
        (GOOD + "    timeout_seconds: -1\n", "clusters[0].timeout_seconds"),
        (GOOD + "    max_concurrency: 0\n", "clusters[0].max_concurrency"),
        (GOOD.replace('"pve1.example.com", ', '"ftp://x", '), "clusters[0].endpoints"),
        (GOOD + "    ca_file: /nonexistent/ca.pem\n", "clusters[0].ca_file: file not found"),
        (GOOD.replace("name: prod", "name: 'bad name'"), "clusters[0].name"),
    ],
)  # fmt: skip
def test_each_rule_names_the_key(tmp_path, yaml_text, expected):
    assert expected in error_of(tmp_path, yaml_text)


def test_not_yaml_and_missing_file(tmp_path):
    assert "not valid YAML at line" in error_of(tmp_path, "clusters: [\n")
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "missing.yaml")
    assert "top level must be a mapping" in error_of(tmp_path, "- 1\n- 2\n")


def test_secret_file_read_and_stripped(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("abcdef-123456\n")
    s = load_settings(write(tmp_path, GOOD.replace(
        'token_secret: "0d3b2c1a-9f8e-4d7c-b6a5-4f3e2d1c0b9a"', f"token_secret_file: {secret}")))
    assert s.clusters[0].secret() == "abcdef-123456"


def test_env_overrides_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PVE_EXPORTER_LISTEN", "127.0.0.1:9999")
    monkeypatch.setenv("PVE_EXPORTER_COLLECT__ALL_ENUM_STATES", "true")
    s = load_settings(write(tmp_path, GOOD))
    assert s.listen == "127.0.0.1:9999"
    assert s.collect.all_enum_states is True


def test_clusters_from_env_json(monkeypatch):
    monkeypatch.setenv(
        "PVE_EXPORTER_CLUSTERS",
        '[{"name": "lab", "endpoints": ["h"], "token_id": "a@pve!b", "token_secret": "s3cr3t-value"}]',
    )
    s = load_settings(None)
    assert s.clusters[0].name == "lab" and s.clusters[0].secret() == "s3cr3t-value"


def test_check_config_masks_secrets(tmp_path, capsys):
    assert cli.main(["check-config", str(write(tmp_path, GOOD))]) == 0
    out = capsys.readouterr()
    assert "0d3b2c1a" not in out.out + out.err
    assert "token_secret: '********'" in out.out
    assert "OK (1 cluster(s))" in out.err


def test_check_config_error_exit_2(tmp_path, capsys):
    assert cli.main(["check-config", str(write(tmp_path, GOOD + "    bogus: 1\n"))]) == 2
    err = capsys.readouterr().err
    assert "clusters[0].bogus: unknown key" in err


def test_run_with_bad_config_exits_2_before_starting(tmp_path, capsys):
    assert cli.main(["--config", str(write(tmp_path, GOOD + "    bogus: 1\n"))]) == 2
    assert "clusters[0].bogus" in capsys.readouterr().err


def test_hash_token(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("my-token\n"))
    assert cli.main(["hash-token"]) == 0
    assert capsys.readouterr().out.strip() == hashlib.sha256(b"my-token").hexdigest()
