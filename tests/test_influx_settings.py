"""The `influxdb:` section: defaults, one clear message per problem naming the key, secrets kept secret."""

from __future__ import annotations

import pytest
import structlog

from pve_exporter import logs
from pve_exporter.settings import ConfigError, load_settings, masked

V2 = {"url": "http://127.0.0.1:8086", "org": "proxmox", "bucket": "proxmox", "token": "influx-token-123"}
V1 = {"url": "http://127.0.0.1:8086/", "api": "v1", "database": "proxmox", "username": "pve", "password": "pw-123456"}


def load(influx):
    return load_settings(None, data={"influxdb": influx})


def error(influx) -> str:
    with pytest.raises(ConfigError) as exc:
        load(influx)
    return str(exc.value)


def test_absent_section_means_no_output():
    assert load_settings(None, data={}).influxdb is None


def test_v2_defaults():
    s = load(V2).influxdb
    assert s is not None
    assert (s.api, s.schema_name, s.url, s.spool_dir) == ("v2", "pve", "http://127.0.0.1:8086", None)
    assert (int(s.batch_bytes), int(s.max_spool_bytes), s.timeout_seconds) == (1 << 20, 1 << 30, 10.0)


def test_v1_with_sizes_in_units_and_trailing_slash_trimmed():
    s = load({**V1, "batch_bytes": "256KiB", "max_spool_bytes": "2GiB", "spool_dir": "/var/lib/x"}).influxdb
    assert s is not None and s.url == "http://127.0.0.1:8086"
    assert int(s.batch_bytes) == 256 * 1024 and int(s.max_spool_bytes) == 2 << 30


@pytest.mark.parametrize(
    ("influx", "message"),
    [
        ({**V2, "org": None}, "influxdb.org: required with api: v2"),
        ({k: v for k, v in V2.items() if k != "bucket"}, "influxdb.bucket: required with api: v2"),
        ({k: v for k, v in V2.items() if k != "token"}, "influxdb.token: required with api: v2"),
        ({**V2, "database": "x"}, "influxdb.database: only used with api: v1"),
        ({k: v for k, v in V1.items() if k != "database"}, "influxdb.database: required with api: v1"),
        ({**V1, "token": "abcdefgh"}, "influxdb.token: only used with api: v2"),
        ({**V1, "username": None}, "influxdb.username: required when a password is given"),
        ({**V1, "url": "http://user:pw@127.0.0.1:8086"}, "influxdb.url: must not contain credentials"),
        ({**V1, "url": "127.0.0.1:8086"}, "influxdb.url: must be http(s)://host[:port]"),
        ({**V1, "api": "v3"}, "influxdb.api:"),
        ({**V1, "schema": "telegraf"}, "influxdb.schema:"),
        ({**V1, "batch_bytes": 10}, "influxdb.batch_bytes:"),
        ({**V1, "max_spool_bytes": 2048, "batch_bytes": 4096}, "influxdb.max_spool_bytes: must be at least"),
        ({**V1, "bogus": 1}, "influxdb.bogus: unknown key"),
        ({**V2, "token_file": "/nonexistent/token"}, "influxdb.token: give token or token_file, not both"),
    ],
)
def test_errors_name_the_key(influx, message):
    assert message in error(influx)


def test_secret_files_are_read_and_secrets_are_masked_and_registered(tmp_path, log_buffer):
    token_file = tmp_path / "influx-token"
    token_file.write_text("file-token-987654\n")
    s = load({**{k: v for k, v in V2.items() if k != "token"}, "token_file": str(token_file)})
    assert s.influxdb is not None and s.influxdb.token is not None
    assert s.influxdb.token.get_secret_value() == "file-token-987654"
    assert "file-token-987654" in s.secrets()
    doc = masked(s)["influxdb"]
    assert doc["token"] == "********" and doc["schema"] == "pve" and "schema_name" not in doc
    assert "file-token-987654" not in repr(s) and "file-token-987654" not in str(doc)
    logs.register_secrets(s.secrets())
    structlog.get_logger("t").info("oops", detail="token is file-token-987654")
    assert "file-token-987654" not in log_buffer.getvalue()


def test_missing_secret_file_is_named():
    no_token = {k: v for k, v in V2.items() if k != "token"}
    assert error({**no_token, "token_file": "/nonexistent/t"}) == "influxdb.token_file: file not found: /nonexistent/t"


def test_environment_sets_nested_keys(monkeypatch):
    monkeypatch.setenv("PVE_EXPORTER_INFLUXDB__URL", "http://127.0.0.1:8428")
    monkeypatch.setenv("PVE_EXPORTER_INFLUXDB__ORG", "o")
    monkeypatch.setenv("PVE_EXPORTER_INFLUXDB__BUCKET", "b")
    monkeypatch.setenv("PVE_EXPORTER_INFLUXDB__TOKEN", "env-token-123")
    s = load_settings(None, data={})
    assert s.influxdb is not None and s.influxdb.url == "http://127.0.0.1:8428"
    assert s.influxdb.token is not None and s.influxdb.token.get_secret_value() == "env-token-123"
