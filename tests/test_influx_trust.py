"""The InfluxDB output when things go wrong (issue 11 items 3, 6, 19): a spool file deleted behind
the writer's back, two daemons on one spool directory, a reload that replaces the writer, and
counters that exist before their first event."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from pve_exporter.app import Daemon
from pve_exporter.export.influx_spool import SpoolInUseError
from pve_exporter.export.influx_writer import DROP_REASONS, FAILURE_REASONS
from pve_exporter.export.prometheus import render
from pve_exporter.settings import Settings
from tests.test_influx_writer import FakeSleep, cfg, offer_one, sink, snapshot, until, uptimes, writer

__all__ = ["sink"]  # the fixture, imported for the tests below


def spooled(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "spool").glob("*.lp.gz"))


# -- item 6: a vanished spool file -------------------------------------------------------------------


async def test_a_spool_file_deleted_behind_the_writer_is_dropped_counted_and_logged_once(sink, tmp_path, log_buffer):
    await sink.down()
    sleep = FakeSleep(auto=False)
    w1 = writer(cfg(sink.url, tmp_path), sleep)
    await w1.start()
    for k in (1, 2, 3):
        await offer_one(w1, snapshot(k, nodes=2))
    await w1.stop()  # three batches in the spool for the next run
    assert len(spooled(tmp_path)) == 3
    await sink.up()
    w = writer(cfg(sink.url, tmp_path))
    await w.start()  # indexes the three files; the sender has not run yet
    assert w.spool is not None
    reads = 0
    real_read = w.spool.read

    def counting_read(entry):  # type: ignore[no-untyped-def]
        nonlocal reads
        reads += 1
        return real_read(entry)

    w.spool.read = counting_read  # type: ignore[method-assign]
    spooled(tmp_path)[0].unlink()  # an operator cleans up by hand
    await w.wait_idle(5)  # before the fix: the sender re-read the missing file forever (~8800/s)
    await w.stop()
    assert uptimes(sink.lines()) == [2, 2, 3, 3]
    assert reads == 3  # the missing one once, then each other batch once
    assert w.stats.dropped["spool_lost"] == 2 and w.spool.files == 0
    text = render(w.families()).decode()
    assert f'pve_exporter_influx_points_dropped_total{{output="{w.output}",reason="spool_lost"}} 2' in text
    assert log_buffer.getvalue().count("a spooled batch file vanished") == 1


# -- item 6: one spool directory, one daemon ------------------------------------------------------------


HOLD = textwrap.dedent("""
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0); os.write(fd, b"%d\\n" % os.getpid())
    print("locked", flush=True)
    sys.stdin.read()
""")


@pytest.fixture
def other_daemon(tmp_path):
    """Another process holding the spool directory's lock, as a running pve-exporter does."""
    (tmp_path / "spool").mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "spool" / ".lock")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    yield proc
    proc.communicate(timeout=10)  # closes stdin (the holder exits) and both pipes


async def test_a_second_writer_on_a_locked_spool_directory_fails_at_start(sink, tmp_path, other_daemon):
    w = writer(cfg(sink.url, tmp_path))
    with pytest.raises(SpoolInUseError) as err:
        await w.start()
    msg = str(err.value)
    assert "influxdb.spool_dir" in msg and str(tmp_path / "spool") in msg and f"pid {other_daemon.pid}" in msg
    await w.stop()  # safe after a failed start


def test_the_daemon_exits_with_a_clear_message_when_its_spool_directory_is_taken(tmp_path, other_daemon):
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({
        "listen": "127.0.0.1:0",
        "clusters": [{"name": "a", "endpoints": ["https://127.0.0.1:9"], "token_id": "e@pve!t", "token_secret": "x"}],
        "influxdb": {"url": "http://127.0.0.1:9", "api": "v1", "database": "pve", "spool_dir": str(tmp_path / "spool")},
    }))  # fmt: skip
    run = subprocess.run([sys.executable, "-m", "pve_exporter", "--config", str(config), "--log-format", "console"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode in (1, 2), out
    assert "influxdb.spool_dir" in out and "in use by another process" in out
    assert "Traceback" not in out


async def test_the_lock_is_released_at_stop_so_the_next_run_can_take_the_directory(sink, tmp_path):
    w1 = writer(cfg(sink.url, tmp_path))
    await w1.start()
    await w1.stop()
    w2 = writer(cfg(sink.url, tmp_path))
    await w2.start()
    await w2.stop()


# -- item 3: a reload replaces the writer ------------------------------------------------------------------


async def test_a_new_writer_on_the_same_spool_takes_it_over_when_the_old_one_stops(sink, tmp_path):
    """The reload order: build and start the new writer, swap, stop the old one. Nothing is lost,
    nothing is sent twice, the old writer's leftovers go first."""
    await sink.down()
    old = writer(cfg(sink.url, tmp_path), FakeSleep(auto=False))
    await old.start()
    for k in (1, 2):
        await offer_one(old, snapshot(k))
    old.offer(snapshot(3))  # still pending when the reload happens
    new = writer(cfg(sink.url, tmp_path, batch_bytes=2048))
    await new.start()  # the directory is the old writer's: the new one waits for it
    assert new.spool is not None and not new._spool_ready.is_set()
    new.offer(snapshot(4))  # arrives during the reload: queued in the new writer
    await sink.up()
    await old.stop()  # flushes 1..3 into the spool and lets go of it
    await new.wait_idle(10)
    await new.stop()
    assert uptimes(sink.lines()) == [1, 2, 3, 4]
    assert spooled(tmp_path) == []


async def test_stop_with_a_successor_hands_over_what_was_not_delivered(sink, tmp_path):
    await sink.down()
    old = writer(cfg(sink.url, None), FakeSleep(auto=False))  # no spool: memory only
    await old.start()
    for k in (1, 2):
        await offer_one(old, snapshot(k))
    await until(lambda: old.stats.failures["connection"] >= 1)
    old.offer(snapshot(3))
    new = writer(cfg(sink.url, tmp_path))
    await new.start()
    new.offer(snapshot(4))
    await sink.up()
    await old.stop(successor=new)
    await new.wait_idle(10)
    await new.stop()
    assert sorted(uptimes(sink.lines())) == [1, 2, 3, 4]
    assert new.stats.dropped["shutdown"] == 0 and new.stats.dropped["writer_restart"] == 0
    assert new.stats.failures["connection"] >= 1  # the same output: its counters kept counting up
    assert new.stats.points_written == 4


async def test_a_rolled_back_new_writer_leaves_the_spool_to_the_running_one(sink, tmp_path):
    old = writer(cfg(sink.url, tmp_path))
    await old.start()
    new = writer(cfg(sink.url, tmp_path))
    await new.start()
    await new.stop()  # the reload failed elsewhere: the old writer keeps running
    await offer_one(old, snapshot(1))
    await old.wait_idle(10)
    await old.stop()
    again = writer(cfg(sink.url, tmp_path))
    await again.start()  # the lock was released by the old writer
    await again.stop()
    assert uptimes(sink.lines()) == [1]


async def test_snapshots_arriving_during_a_reload_of_the_influxdb_section_all_arrive(sink, tmp_path):
    path = tmp_path / "config.yml"
    doc = {"listen": "127.0.0.1:0", "influxdb": {"url": sink.url, "api": "v1", "database": "pve",
                                                 "spool_dir": str(tmp_path / "spool"), "flush_interval_seconds": 0}}
    path.write_text(yaml.safe_dump(doc))
    daemon = Daemon(Settings(**doc), autostart=False, config_path=str(path))
    make = daemon.influx_factory

    def factory(c):  # type: ignore[no-untyped-def]
        w = make(c)
        daemon.store.put(snapshot(2))  # a cycle finishes while the new writer is being made
        real_start = w.start

        async def start() -> None:
            daemon.store.put(snapshot(3))
            await real_start()
            daemon.store.put(snapshot(4))

        w.start = start  # type: ignore[method-assign]
        return w

    await daemon.start()
    daemon.influx_factory = factory  # from here: the reload's new writer
    daemon.store.put(snapshot(1))
    doc["influxdb"]["database"] = "other"
    path.write_text(yaml.safe_dump(doc))
    assert await daemon.reload()
    daemon.store.put(snapshot(5))
    assert daemon.influx is not None
    await daemon.influx.wait_idle(10)
    await daemon.stop()
    assert sorted(uptimes(sink.lines())) == [1, 2, 3, 4, 5]


# -- item 19: counters from the start -------------------------------------------------------------------------


def test_every_influx_counter_is_exported_at_zero_before_its_first_event(tmp_path):
    w = writer(cfg("http://127.0.0.1:9", tmp_path))
    text = render(w.families()).decode()
    out = f'output="{w.output}"'
    for reason in DROP_REASONS:
        assert f'pve_exporter_influx_points_dropped_total{{{out},reason="{reason}"}} 0\n' in text, reason
    for reason in FAILURE_REASONS:
        assert f'pve_exporter_influx_failures_total{{{out},reason="{reason}"}} 0\n' in text, reason
    for name in ("points_written", "points_spooled", "retries", "batches_written", "bytes_written",
                 "snapshots_dropped"):  # fmt: skip
        assert f"pve_exporter_influx_{name}_total{{{out}}} 0\n" in text, name
    assert {"spool_lost", "writer_restart", "shutdown", "queue_full"} <= set(DROP_REASONS)
