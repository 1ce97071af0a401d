"""One control plane over all replicas (issue 16 item 4): the operation history in PostgreSQL, one
unfinished operation per guest across replicas (a partial unique index), 503 COORDINATION_UNAVAILABLE
while the database is down, and a dead replica's running operation adopted by another replica."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pve_exporter.app import Daemon, build_app
from pve_exporter.control.errors import ApiProblem
from pve_exporter.control.operations import Operation, OperationFilter, new_id
from pve_exporter.coord.history import CoordinationUnavailableError, PgOperationStore
from pve_exporter.settings import Settings
from pve_exporter.simulator import SimulatorServer, build_simulator
from tests import pgharness
from tests.controlharness import TOKENS, control_cfg
from tests.pgharness import PgServer, fresh_database
from tests.servers import free_port
from tests.simharness import FixedClock, cluster_cfg

pg_server_dsn = pgharness.pg_server_dsn  # fixtures
pg_dsn = pgharness.pg_dsn

LEASE = 3.0


def op(cluster: str = "lab", vmid: int = 101, **kw: Any) -> Operation:
    return Operation(id=new_id(), requested_at=time.time(), cluster=cluster, resource_id=vmid, operation="stop",
                     force=False, user="ops", **kw)  # fmt: skip


async def test_one_unfinished_operation_per_guest_over_all_replicas(pg_dsn):
    stores = [PgOperationStore(pg_dsn, replica=f"r{i}", owned=set, clock=time.time) for i in range(2)]
    for s in stores:
        await s.open()
    try:
        ops = [op(), op()]
        results = await asyncio.gather(*(s.insert(o) for s, o in zip(stores, ops, strict=True)),
                                       return_exceptions=True)  # fmt: skip
        won = [o for o, r in zip(ops, results, strict=True) if r is None]
        lost = [r for r in results if isinstance(r, ApiProblem)]
        assert len(won) == 1 and len(lost) == 1
        assert lost[0].code == "ACTION_IN_PROGRESS" and lost[0].details["operation_id"] == won[0].id
        # another guest, and the same guest once the first operation finished, are fine
        await stores[1].insert(op(vmid=102))
        await stores[0].save(_finished(won[0]))
        await stores[1].insert(op())
        page, total = await stores[0].query(OperationFilter(cluster=("lab",), resource_id=(101,)))
        assert total == 2 and {o.status for o in page} == {"succeeded", "pending"}
        assert (await stores[1].get(won[0].id)) == _finished(won[0])  # one history for every replica
    finally:
        for s in stores:
            await s.close()


def _finished(o: Operation) -> Operation:
    from dataclasses import replace

    return replace(o, status="succeeded", started_at=o.requested_at, finished_at=o.requested_at + 1)


async def test_an_unreachable_database_is_coordination_unavailable():
    store = PgOperationStore(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", replica="r0", owned=set,
                             clock=time.time, timeout=1.0)  # fmt: skip
    await store.open()  # not an error at start: the pool reconnects when the server is back
    try:
        with pytest.raises(CoordinationUnavailableError):
            await store.insert(op())
        with pytest.raises(CoordinationUnavailableError):
            await store.query(OperationFilter())
        assert await store.unfinished() == []  # claimed later, when a lease is won with the server back
        assert not store.healthy
    finally:
        await store.close()


async def test_unfinished_claims_own_rows_and_a_dead_replicas_on_owned_clusters_only(pg_dsn):
    me = PgOperationStore(pg_dsn, replica="me", owned=lambda: {"lab"}, clock=time.time)
    dead = PgOperationStore(pg_dsn, replica="dead", owned=set, clock=time.time)
    alive = PgOperationStore(pg_dsn, replica="alive", owned=set, clock=time.time)
    for s in (me, dead, alive):
        await s.open()
    try:
        conn_rows = [(alive, op(vmid=1)), (dead, op(vmid=2)), (dead, op(cluster="other", vmid=3)), (me, op(vmid=4))]
        for s, o in conn_rows:
            await s.insert(o)
        c = await asyncpg.connect(pg_dsn)
        try:
            await c.execute("INSERT INTO pve_exporter_replicas (name, expires) VALUES "
                            "('alive', now() + interval '1 h'),"
                            " ('dead', now() - interval '1 s')")  # fmt: skip
        finally:
            await c.close()
        claimed = await me.unfinished()
        assert sorted(o.resource_id for o in claimed) == [2, 4]  # not the live replica's, not another cluster's
        assert await dead.unfinished() == [o for s, o in conn_rows if s is dead and o.cluster == "other"]
    finally:
        for s in (me, dead, alive):
            await s.close()


# -- two daemons with the control API ------------------------------------------------------------


def settings_for(url: str, dsn: str, replica: str) -> Settings:
    control = control_cfg(None)  # type: ignore[arg-type]
    del control["history_db"]  # the history is in PostgreSQL
    return Settings(
        listen="127.0.0.1:0", clusters=[cluster_cfg("lab", [url])], control=control,
        coordination={"dsn": dsn, "replica": replica, "lease_seconds": LEASE},
    )  # fmt: skip


class Replica:
    def __init__(self, daemon: Daemon, client: TestClient) -> None:
        self.daemon, self.client = daemon, client

    async def call(self, method: str, path: str, token: str = "ops", json: Any = None) -> tuple[int, Any]:
        resp = await self.client.request(method, path, json=json,
                                         headers={"Authorization": f"Bearer {TOKENS[token][0]}"})  # fmt: skip
        return resp.status, await resp.json(content_type=None)

    async def status(self, op_id: str) -> str:
        code, doc = await self.call("GET", f"/api/v1/operations/{op_id}", token="viewer")
        assert code == 200, doc
        return str(doc["status"])


async def eventually(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def replicas(stack: AsyncExitStack, url: str, dsn: str, clock: FixedClock, n: int = 2) -> list[Replica]:
    out = []
    for i in range(n):
        d = Daemon(settings_for(url, dsn, f"r{i}"), autostart=False, clock=clock, monotonic=time.monotonic)
        client = await stack.enter_async_context(TestClient(TestServer(build_app(d))))
        out.append(Replica(d, client))
    return out


async def test_the_same_guest_on_two_replicas_at_once_gets_one_202_and_one_409(pg_dsn):
    clock = FixedClock()
    sim = build_simulator([("lab", 2, 3)], seed=7, auth_delay=0.0, clock=clock)
    vmid = 102  # running: a forced restart takes the 300 s set below
    sim.cluster("lab").power.overrides[vmid] = 300.0
    async with SimulatorServer(sim) as server, AsyncExitStack() as stack:
        a, b = await replicas(stack, server.urls["lab"], pg_dsn, clock)
        await eventually(lambda: _true(len([r for r in (a, b) if "lab" in r.daemon.clusters]) == 1), 10, "a lease")
        results = await asyncio.gather(*(r.call("POST", f"/api/v1/clusters/lab/guests/{vmid}/restart",
                                                json={"force": True}) for r in (a, b)))  # fmt: skip
        codes = sorted(code for code, _ in results)
        assert codes == [202, 409], results
        accepted = next(doc for code, doc in results if code == 202)
        refused = next(doc for code, doc in results if code == 409)
        assert refused["error_code"] == "ACTION_IN_PROGRESS"
        assert refused["details"]["operation_id"] == accepted["id"], refused
        for r in (a, b):  # one history: both replicas show the operation
            assert await r.status(accepted["id"]) in ("pending", "running")


async def _true(value: bool) -> bool:
    return value


async def test_a_dead_replicas_running_operation_is_adopted_and_followed_to_its_end(pg_dsn):
    clock = FixedClock()
    sim = build_simulator([("lab", 2, 3)], seed=7, auth_delay=0.0, clock=clock)
    vmid = 102  # running: a forced restart takes the 300 s set below
    sim.cluster("lab").power.overrides[vmid] = 300.0
    async with SimulatorServer(sim) as server, AsyncExitStack() as stack:
        a, b = await replicas(stack, server.urls["lab"], pg_dsn, clock)
        await eventually(lambda: _true(any("lab" in r.daemon.clusters for r in (a, b))), 10, "a lease")
        code, doc = await a.call("POST", f"/api/v1/clusters/lab/guests/{vmid}/restart", json={"force": True})
        assert code == 202, doc
        await eventually(lambda: _upid(a, doc["id"]), 10, "the UPID")
        await a.daemon.stop()  # leaves the operation `running` (with its UPID) and the replica's leases go
        assert await b.status(doc["id"]) == "running"
        clock.t += 400  # the task ends in PVE meanwhile
        await eventually(lambda: _is(b, doc["id"], "succeeded"), LEASE + 10, "adoption and the real end")
        c = await asyncpg.connect(pg_dsn)
        try:
            assert await c.fetchval("SELECT owner FROM pve_exporter_operations WHERE id = $1", doc["id"]) == "r1"
        finally:
            await c.close()


async def _upid(r: Replica, op_id: str) -> bool:
    code, doc = await r.call("GET", f"/api/v1/operations/{op_id}", token="viewer")
    return code == 200 and bool(doc["upid"])


async def _is(r: Replica, op_id: str, status: str) -> bool:
    return await r.status(op_id) == status


async def test_power_actions_and_history_answer_503_while_postgresql_is_down(tmp_path):
    pg = PgServer()
    try:
        pg.start()
        dsn = await fresh_database(pg.dsn)
        clock = FixedClock()
        sim = build_simulator([("lab", 2, 3)], seed=7, auth_delay=0.0, clock=clock)
        async with SimulatorServer(sim) as server, AsyncExitStack() as stack:
            (a,) = await replicas(stack, server.urls["lab"], dsn, clock, n=1)
            await eventually(lambda: _true("lab" in a.daemon.clusters), 10, "a lease")
            pg.stop()
            code, doc = await a.call("POST", "/api/v1/clusters/lab/guests/101/stop", json={"force": True})
            assert (code, doc["error_code"]) == (503, "COORDINATION_UNAVAILABLE"), doc
            code, doc = await a.call("GET", "/api/v1/operations", token="viewer")
            assert (code, doc["error_code"]) == (503, "COORDINATION_UNAVAILABLE"), doc
            assert "lab" in a.daemon.clusters  # monitoring goes on
            pg.start()
            await eventually(lambda: _accepts(a), 10, "power actions again")
    finally:
        pg.remove()


async def _accepts(r: Replica) -> bool:
    code, _ = await r.call("POST", "/api/v1/clusters/lab/guests/102/stop", json={"force": True})
    return code == 202
