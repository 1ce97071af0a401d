"""Replicas sharing targets through a real PostgreSQL (Debian's server, started by tests/pgharness.py):
the lease statements on the database's clock, three daemons owning each target once, takeover of a
stopped or SIGKILLed replica's targets, PostgreSQL stopped and started again, and config reloads."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from pve_exporter.app import Daemon
from pve_exporter.coord import schema
from pve_exporter.coord.store import PgLeaseStore
from pve_exporter.settings import load_settings
from pve_exporter.simulator import DEFAULT_TOKEN_ID, DEFAULT_TOKEN_SECRET, SimulatorServer, build_simulator
from tests import pgharness
from tests.pgharness import PgServer, fresh_database
from tests.servers import free_port
from tests.simharness import FixedClock, series

LEASE = 3.0
INTERVAL = LEASE / 3  # the renewal interval

pg_server_dsn = pgharness.pg_server_dsn  # fixtures
pg_dsn = pgharness.pg_dsn


async def eventually(predicate: Callable[[], Any], *, timeout: float, what: str) -> float:
    """Poll (never a fixed sleep) until true; returns the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


# -- the statements --------------------------------------------------------------------------------


async def test_migrations_are_versioned_and_run_once_when_replicas_start_together(pg_dsn):
    conns = [await asyncpg.connect(pg_dsn) for _ in range(3)]
    try:
        applied = await asyncio.gather(*(schema.migrate(c) for c in conns))
        assert sorted(len(a) for a in applied) == [0, 0, len(schema.MIGRATIONS)]
        rows = await conns[0].fetch("SELECT version FROM pve_exporter_schema ORDER BY version")
        assert [r["version"] for r in rows] == [v for v, _ in schema.MIGRATIONS]
        await conns[0].execute("INSERT INTO pve_exporter_schema (version) VALUES ($1)", schema.LATEST + 1)
        with pytest.raises(schema.SchemaTooNewError):
            await schema.migrate(conns[1])
    finally:
        for c in conns:
            await c.close()


async def test_one_statement_decides_a_race_and_expiry_follows_the_databases_clock(pg_dsn):
    stores = [PgLeaseStore(pg_dsn, timeout=5) for _ in range(4)]
    try:
        won = await asyncio.gather(*(s.acquire(f"r{i}", ["t1", "t2"], 1.0) for i, s in enumerate(stores)))
        assert sorted(len(w) for w in won) in ([0, 0, 0, 2], [0, 0, 1, 1])  # each target to exactly one
        owner = next(f"r{i}" for i, w in enumerate(won) if "t1" in w)
        other = next(f"r{i}" for i in range(4) if f"r{i}" != owner)
        assert await stores[0].acquire(other, ["t1"], 1.0) == set()  # held: not taken
        assert await stores[0].acquire(owner, ["t1"], 1.0) == {"t1"}  # renewed by its owner
        conn = await asyncpg.connect(pg_dsn)
        try:  # the lease ends when the database's now() passes it, whatever the replicas' clocks say
            await conn.execute("UPDATE pve_exporter_leases SET expires = now() - interval '1 second'")
        finally:
            await conn.close()
        assert await stores[0].acquire(other, ["t1"], 1.0) == {"t1"}
        assert (await stores[0].view()).holders["t1"] == other
    finally:
        for s in stores:
            await s.close()


# -- daemons ---------------------------------------------------------------------------------------


def config(path: Path, urls: dict[str, str], names: list[str], dsn: str, replica: str, **coord: Any) -> Path:
    cfg = {
        "listen": "127.0.0.1:0",
        "collect": {"node_interval_seconds": 60},
        "clusters": [{"name": n, "endpoints": [urls[n]], "token_id": DEFAULT_TOKEN_ID,
                      "token_secret": DEFAULT_TOKEN_SECRET, "interval_seconds": 1} for n in names],
        "coordination": {"dsn": dsn, "replica": replica, "lease_seconds": LEASE, **coord},
    }  # fmt: skip
    path.write_text(json.dumps(cfg))
    return path


class Replicas:
    """Three (or more) in-process daemons with real pollers against one simulator."""

    def __init__(self, tmp: Path, urls: dict[str, str], names: list[str], dsn: str, n: int = 3) -> None:
        self.tmp, self.urls, self.dsn = tmp, urls, dsn
        self.daemons: dict[str, Daemon] = {}
        for i in range(n):
            name = f"replica-{i}"
            path = config(tmp / f"{name}.yaml", urls, names, dsn, name)
            self.daemons[name] = Daemon(load_settings(path), config_path=str(path))

    async def __aenter__(self) -> Replicas:
        for d in self.daemons.values():
            await d.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for d in self.daemons.values():
            await d.stop()

    def polled(self) -> dict[str, set[str]]:
        return {r: set(d.clusters) for r, d in self.daemons.items()}

    def each_once(self, names: list[str]) -> bool:
        """Every target polled by exactly one replica, and the shares fair (⌊N/R⌋..⌈N/R⌉)."""
        polled = self.polled()
        flat = [t for s in polled.values() for t in s]
        if sorted(flat) != sorted(names):
            return False
        n, r = len(names), len(polled)
        return all(n // r <= len(s) <= -(-n // r) for s in polled.values())

    async def reconfigure(self, names: list[str]) -> None:
        for r, d in self.daemons.items():
            config(self.tmp / f"{r}.yaml", self.urls, names, self.dsn, r)
            assert await d.reload()

    async def hard_stop(self, replica: str) -> None:
        """Stop without handing the leases back (as a crash would leave them)."""
        d = self.daemons.pop(replica)
        assert d.coord is not None
        store = d.coord.store

        async def leave_nothing() -> None:
            await store.close()

        d.coord.leave = leave_nothing  # type: ignore[method-assign]
        await d.stop()


def own_series(d: Daemon) -> dict[tuple[str, frozenset], float]:
    return series(d.metrics_body(sorted(d.clusters), False).decode())


def sim_for(names: list[str]):
    return build_simulator([(n, 1, 2) for n in names], seed=5, auth_delay=0.0, clock=FixedClock())


async def test_three_replicas_own_each_target_once_and_take_over_a_stopped_one(tmp_path, pg_dsn):
    names = [f"c{i}" for i in range(7)]
    async with SimulatorServer(sim_for(names)) as server, Replicas(tmp_path, server.urls, names, pg_dsn) as reps:
        await eventually(lambda: reps.each_once(names), timeout=10, what="each target owned once")
        for d in reps.daemons.values():
            s = own_series(d)
            assert s[("pve_exporter_coordination_up", frozenset())] == 1.0
            owned = {dict(lab)["target"] for (n, lab), v in s.items() if n == "pve_exporter_target_owned" and v}
            assert owned == set(d.clusters)
            assert s[("pve_exporter_coordination_lease_losses_total", frozenset())] == 0.0
        # stable: another few renewals move nothing
        before = reps.polled()
        await asyncio.sleep(3 * INTERVAL)
        assert reps.polled() == before
        # a replica stops without releasing: its targets move within the lease + one renewal interval
        victim = max(before, key=lambda r: len(before[r]))
        orphaned = before[victim]
        start = time.monotonic()
        await reps.hard_stop(victim)
        took = await eventually(lambda: reps.each_once(names), timeout=LEASE + INTERVAL + 3, what="takeover")
        elapsed = time.monotonic() - start
        print(f"takeover of {len(orphaned)} targets: {elapsed:.2f} s (lease {LEASE} s, renewal {INTERVAL} s)")
        assert took <= LEASE + INTERVAL + 0.5
        for r, targets in before.items():
            if r != victim:
                assert targets <= reps.polled()[r]  # the survivors kept theirs


async def test_a_reload_adding_and_removing_targets_on_all_replicas(tmp_path, pg_dsn):
    everything = [f"c{i}" for i in range(8)]
    first, second = everything[:5], everything[2:]  # c0, c1 removed; c5..c7 added
    async with SimulatorServer(sim_for(everything)) as server, Replicas(tmp_path, server.urls, first, pg_dsn) as reps:
        await eventually(lambda: reps.each_once(first), timeout=10, what="each target owned once")
        await reps.reconfigure(second)
        await eventually(lambda: reps.each_once(second), timeout=10, what="the new config owned once")
        conn = await asyncpg.connect(pg_dsn)
        try:  # removed targets are handed back at the next renewal, not left to expire
            deadline = time.monotonic() + 2 * INTERVAL + 1
            while True:
                rows = await conn.fetch("SELECT target FROM pve_exporter_leases")
                if sorted(r["target"] for r in rows) == sorted(second) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
        finally:
            await conn.close()
        assert sorted(r["target"] for r in rows) == sorted(second)


async def test_postgresql_stopped_and_started_again(tmp_path):
    server_pg = PgServer()  # its own server: this test stops it
    try:
        server_pg.start()
        dsn = await fresh_database(server_pg.dsn)
        names = [f"c{i}" for i in range(6)]
        extra = "c6"
        sim = sim_for([*names, extra])
        async with SimulatorServer(sim) as server, Replicas(tmp_path, server.urls, names, dsn) as reps:
            await eventually(lambda: reps.each_once(names), timeout=10, what="each target owned once")
            before = reps.polled()
            server_pg.stop()
            down_at = time.monotonic()
            await eventually(lambda: all(d.coord and not d.coord.up for d in reps.daemons.values()),
                             timeout=2 * INTERVAL + 2, what="coordination_up 0 everywhere")  # fmt: skip
            await reps.reconfigure([*names, extra])  # a new target while the database is down
            seqs = {t: d.store.get(t).seq for d in reps.daemons.values() for t in d.clusters}  # type: ignore[union-attr]
            await asyncio.sleep(max(0.0, LEASE + INTERVAL - (time.monotonic() - down_at)))  # past every lease
            assert reps.polled() == before  # monitoring goes on, nothing new is taken
            for d in reps.daemons.values():
                for t in d.clusters:
                    snap = d.store.get(t)
                    assert snap is not None and snap.seq > seqs[t] and snap.reachable  # still collecting
                assert own_series(d)[("pve_exporter_coordination_up", frozenset())] == 0.0
            server_pg.start()  # no restart of the replicas: they recover by themselves
            await eventually(lambda: reps.each_once([*names, extra]), timeout=4 * INTERVAL + 5, what="recovery")
            after = reps.polled()
            assert all(before[r] <= after[r] for r in before)  # stable: nobody lost what it had
            assert all(d.coord and d.coord.up for d in reps.daemons.values())
    finally:
        server_pg.remove()


# -- a real process, SIGKILLed ----------------------------------------------------------------------


async def _owned(http: aiohttp.ClientSession, port: int) -> set[str] | None:
    try:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
            text = await r.text()
    except aiohttp.ClientError:
        return None
    return {dict(lab)["target"] for (n, lab), v in series(text).items() if n == "pve_exporter_target_owned" and v}


async def test_sigkill_of_a_replica_process_and_takeover_in_time(tmp_path, pg_dsn):
    names = [f"c{i}" for i in range(4)]
    ports = [free_port(), free_port()]
    procs, logs = [], []
    async with SimulatorServer(sim_for(names)) as server, aiohttp.ClientSession() as http:
        try:
            for i, port in enumerate(ports):
                path = config(tmp_path / f"p{i}.yaml", server.urls, names, pg_dsn, f"proc-{i}")
                doc = json.loads(path.read_text())
                doc["listen"] = f"127.0.0.1:{port}"
                path.write_text(json.dumps(doc))
                log = open(tmp_path / f"p{i}.log", "wb")  # noqa: SIM115
                logs.append(log)
                procs.append(await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "pve_exporter", "--config", str(path), stdout=log, stderr=log,
                    env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
                ))  # fmt: skip
            owned: list[set[str] | None] = [None, None]

            async def split() -> bool:
                for i, port in enumerate(ports):
                    owned[i] = await _owned(http, port)
                a, b = owned
                return a is not None and b is not None and len(a) == len(b) == 2 and a | b == set(names)

            deadline = time.monotonic() + 20
            while not await split():
                assert time.monotonic() < deadline, [p.read_text() for p in tmp_path.glob("p*.log")]
                await asyncio.sleep(0.05)
            elsewhere = sorted(set(names) - (owned[1] or set()))[0]
            async with http.get(f"http://127.0.0.1:{ports[1]}/pve", params={"target": elsewhere}) as r:
                assert r.status == 404 and "another replica" in await r.text()
            procs[0].send_signal(signal.SIGKILL)
            killed = time.monotonic()
            await procs[0].wait()
            while (await _owned(http, ports[1])) != set(names):
                assert time.monotonic() - killed < LEASE + INTERVAL + 3, "no takeover in time"
                await asyncio.sleep(0.02)
            took = time.monotonic() - killed
            print(f"SIGKILL takeover: {took:.2f} s (lease {LEASE} s, renewal interval {INTERVAL} s)")
            assert took <= LEASE + INTERVAL + 0.5
        finally:
            for p in procs:
                if p.returncode is None:
                    p.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(p.wait(), 10)
                    except TimeoutError:
                        p.kill()
                        await p.wait()
            for log in logs:
                log.close()
