"""`coordination:` settings: one DSN source, never echoed, and exclusive with `shard` and `control.history_db`."""

from __future__ import annotations

import json
import socket

import pytest

from pve_exporter.settings import ConfigError, load_settings, masked

DSN = "postgresql://exporter:hunter2-secret@db.example:5432/pve"


def test_defaults_and_the_password_is_a_secret():
    s = load_settings(None, data={"coordination": {"dsn": DSN}})
    assert s.coordination is not None
    assert s.coordination.lease_seconds == 30 and s.coordination.replica == socket.gethostname()
    assert {DSN, "hunter2-secret"} <= set(s.secrets())  # the log redactor masks both
    assert "hunter2" not in json.dumps(masked(s)) and "hunter2" not in repr(s)


def test_dsn_file(tmp_path):
    f = tmp_path / "dsn"
    f.write_text(DSN + "\n")
    s = load_settings(None, data={"coordination": {"dsn_file": str(f), "replica": "r1", "lease_seconds": 3}})
    assert s.coordination is not None and s.coordination.secret() == DSN and s.coordination.replica == "r1"


@pytest.mark.parametrize(
    ("coordination", "expected"),
    [
        ({}, "coordination.dsn: give exactly one of dsn or dsn_file"),
        ({"dsn": DSN, "dsn_file": "/x"}, "coordination.dsn: give exactly one of dsn or dsn_file"),
        ({"dsn": "mysql://exporter:hunter2-secret@db/pve"}, "coordination.dsn: must be a postgresql:// URL"),
        ({"dsn_file": "/nonexistent/dsn"}, "dsn_file: file not found"),
        ({"dsn": DSN, "lease_seconds": 0}, "coordination.lease_seconds"),
    ],
)
def test_bad_coordination_names_the_key_and_never_echoes_the_dsn(coordination, expected):
    with pytest.raises(ConfigError) as e:
        load_settings(None, data={"coordination": coordination})
    assert expected in str(e.value)
    assert "hunter2" not in str(e.value)


def test_coordination_and_shard_are_one_error_naming_both(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_settings(None, data={"coordination": {"dsn": DSN}, "shard": {"index": 0, "total": 2}})
    assert "coordination and shard" in str(e.value) and "hunter2" not in str(e.value)


def test_coordination_and_a_history_file_are_one_error_naming_both(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_settings(None, data={"coordination": {"dsn": DSN}, "control": {"history_db": str(tmp_path / "h.db")}})
    assert "coordination and control.history_db" in str(e.value)


async def test_the_dsn_password_never_reaches_the_log_or_the_page(log_buffer):
    import asyncio

    from pve_exporter.app import Daemon
    from tests.servers import free_port

    dsn = f"postgresql://exporter:hunter2-secret@127.0.0.1:{free_port()}/pve"  # nothing listens there
    d = Daemon(load_settings(None, data={"listen": "127.0.0.1:0", "coordination": {"dsn": dsn, "replica": "r1"}}))
    await d.start()
    try:
        assert d.coord is not None
        for _ in range(200):  # the first renewal runs at once and fails
            if "PostgreSQL unreachable" in log_buffer.getvalue():
                break
            await asyncio.sleep(0.01)
        assert "PostgreSQL unreachable" in log_buffer.getvalue()
        page = d.metrics_body([], False).decode()
        assert "pve_exporter_coordination_up 0" in page and 'pve_exporter_replica_info{replica="r1"} 1' in page
    finally:
        await d.stop()
    assert "hunter2" not in log_buffer.getvalue()
