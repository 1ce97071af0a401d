"""The operation history of coordinated replicas, in PostgreSQL: one history over all replicas.

`PgOperationStore` answers the control plane exactly like the SQLite `OperationStore` (it is one, to
the plane), with two differences that are the point of it:
- one unfinished operation per guest over all replicas is a partial unique index, so of two replicas
  that accept an action on one guest at the same moment exactly one inserts its row; the other answers
  409 ACTION_IN_PROGRESS naming the holder;
- every row names the replica that follows it (`owner`); `unfinished()` claims, in one statement, this
  replica's own rows and those of dead replicas (no live heartbeat) on clusters it now owns, so a dead
  replica's running operation is adopted by the new owner of its cluster and followed to its end.
While PostgreSQL cannot be reached every call raises `CoordinationUnavailableError` (503
COORDINATION_UNAVAILABLE: the per-guest lock cannot be guaranteed); the pool reconnects by itself.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import structlog

from pve_exporter.control.errors import ApiProblem
from pve_exporter.control.operations import (
    ACTIVE,
    STATUSES,
    Batch,
    HistoryError,
    Operation,
    OperationFilter,
    OperationStore,
)
from pve_exporter.coord.coordinator import unreachable
from pve_exporter.coord.schema import migrate
from pve_exporter.settings import Settings

log = structlog.get_logger("pve_exporter.coord.history")

T = TypeVar("T")
_COLUMNS = tuple(f for f in Operation.__dataclass_fields__)
_COLS = ", ".join(f'"{c}"' for c in _COLUMNS)
_ACTIVE = sorted(ACTIVE)
ONE_UNFINISHED = "pve_exporter_operations_one_unfinished"


class CoordinationUnavailableError(HistoryError):
    """PostgreSQL cannot be reached: no power action may start (the per-guest lock is not guaranteed)."""

    code = "COORDINATION_UNAVAILABLE"


def _op(row: Mapping[str, Any]) -> Operation:
    return Operation(**{c: row[c] for c in _COLUMNS})


def _values(op: Operation, owner: str) -> list[Any]:
    d = asdict(op)
    return [d[c] for c in _COLUMNS] + [owner]


def _where(flt: OperationFilter, args: list[Any]) -> str:
    clauses = []
    for name in ("cluster", "node", "resource_type", "resource_id", "operation", "status", "user", "batch_id"):
        values = getattr(flt, name)
        if values:
            args.append(list(values))
            clauses.append(f'"{name}" = ANY(${len(args)})')
    if flt.since is not None:
        args.append(flt.since)
        clauses.append(f"requested_at >= ${len(args)}")
    if flt.until is not None:
        args.append(flt.until)
        clauses.append(f"requested_at <= ${len(args)}")
    return (" WHERE " + " AND ".join(clauses)) if clauses else ""


class PgOperationStore(OperationStore):
    """The history in PostgreSQL behind OperationStore's interface (see the module docstring)."""

    def __init__(
        self,
        dsn: str,
        *,
        replica: str,
        owned: Callable[[], set[str]],
        max_operations: int = 100_000,
        max_age_days: float = 90.0,
        clock: Callable[[], float],
        timeout: float = 5.0,
    ) -> None:
        super().__init__(Path("postgresql"), max_operations=max_operations, max_age_days=max_age_days, clock=clock)
        self._dsn = dsn
        self.replica = replica
        self._owned = owned  # clusters whose leases this replica holds (adoption)
        self.timeout = timeout
        self._pg: asyncpg.Pool | None = None
        self._migrated = False

    # ---- lifecycle ------------------------------------------------------------------------------
    async def open(self) -> None:
        """Make the pool; an unreachable server is not an error here (calls answer 503 until it is back)."""
        self._pg = await asyncpg.create_pool(self._dsn, min_size=0, max_size=4, timeout=self.timeout,
                                             command_timeout=self.timeout)  # fmt: skip
        try:
            await self._call(lambda c: c.fetchval("SELECT 1"))
        except CoordinationUnavailableError as exc:
            log.warning("operation history in PostgreSQL not reachable yet; power actions answer 503 until it is",
                        error=str(exc))  # fmt: skip
        except HistoryError:
            await self.close()
            raise
        log.info("operation history in PostgreSQL", replica=self.replica)

    async def close(self) -> None:
        pool, self._pg = self._pg, None
        self.healthy = False
        if pool is not None:
            try:
                await pool.close()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                pool.terminate()

    @property
    def is_open(self) -> bool:
        return self._pg is not None

    async def check(self) -> bool:
        with contextlib.suppress(HistoryError):
            await self._call(lambda c: c.fetchval("SELECT 1"))
        return self.healthy

    async def _call(self, fn: Callable[[asyncpg.Connection], Any]) -> Any:
        if self._pg is None:
            raise HistoryError("the operation history is closed")
        try:
            async with self._pg.acquire(timeout=self.timeout) as conn:
                if not self._migrated:
                    await migrate(conn)
                    self._migrated = True
                result = await fn(conn)
        except ApiProblem:
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            down = unreachable(exc) or isinstance(exc, TimeoutError)
            self._set_health(False, f"{type(exc).__name__}: {exc}")
            if down:
                raise CoordinationUnavailableError(f"PostgreSQL cannot be reached: {exc}") from exc
            raise HistoryError(f"the operation history in PostgreSQL failed: {exc}") from exc
        if not self.healthy:
            self._set_health(True, None)
        return result

    # ---- operations -----------------------------------------------------------------------------
    async def insert(self, op: Operation) -> None:
        await self.insert_many([op])

    async def insert_many(self, ops: Iterable[Operation]) -> None:
        rows = [_values(op, self.replica) for op in ops]

        async def run(c: asyncpg.Connection) -> None:
            async with c.transaction():
                await self._insert_rows(c, rows)

        await self._call(run)
        await self.prune()  # retention as in the SQLite history: on every insert

    async def _insert_rows(self, c: asyncpg.Connection, rows: list[list[Any]]) -> None:
        marks = ", ".join(f"${i}" for i in range(1, len(_COLUMNS) + 2))
        try:
            await c.executemany(f"INSERT INTO pve_exporter_operations ({_COLS}, owner) VALUES ({marks})", rows)
        except asyncpg.UniqueViolationError as exc:
            raise await self._conflict(exc, rows) from None

    async def _conflict(self, exc: asyncpg.UniqueViolationError, rows: list[list[Any]]) -> ApiProblem:
        """The guest has an unfinished operation (maybe on another replica): 409 naming it."""
        if exc.constraint_name != ONE_UNFINISHED:
            return ApiProblem("ACTION_IN_PROGRESS", "this Idempotency-Key is being used by a request on another "
                              "replica right now", details={"constraint": exc.constraint_name})  # fmt: skip
        assert self._pg is not None
        i_cluster, i_vmid = _COLUMNS.index("cluster"), _COLUMNS.index("resource_id")
        guests = [(r[i_cluster], r[i_vmid]) for r in rows]
        async with self._pg.acquire(timeout=self.timeout) as c:
            found = await c.fetch(
                "SELECT id, cluster, resource_id, owner FROM pve_exporter_operations WHERE status = ANY($1) "
                "AND (cluster, resource_id) IN (SELECT * FROM unnest($2::text[], $3::int[]))",
                _ACTIVE, [g[0] for g in guests], [g[1] for g in guests],
            )  # fmt: skip
        holder = found[0] if found else None
        cluster, vmid = (holder["cluster"], holder["resource_id"]) if holder else guests[0]
        return ApiProblem(
            "ACTION_IN_PROGRESS", f"guest {vmid} in cluster {cluster!r} has an action in progress",
            details={"operation_id": holder["id"] if holder else None, "cluster": cluster, "vmid": vmid,
                     "replica": holder["owner"] if holder else None},
        )  # fmt: skip

    async def save(self, op: Operation) -> None:
        sets = ", ".join(f'"{c}" = ${i}' for i, c in enumerate(_COLUMNS[1:], start=2))
        values = _values(op, self.replica)[: len(_COLUMNS)]
        await self._call(lambda c: c.execute(f"UPDATE pve_exporter_operations SET {sets} WHERE id = $1", *values))

    async def get(self, op_id: str) -> Operation | None:
        row = await self._call(lambda c: c.fetchrow("SELECT * FROM pve_exporter_operations WHERE id = $1", op_id))
        return _op(row) if row else None

    async def by_idempotency_key(self, user: str, key: str) -> Operation | None:
        row = await self._call(lambda c: c.fetchrow(
            'SELECT * FROM pve_exporter_operations WHERE "user" = $1 AND idempotency_key = $2', user, key))
        return _op(row) if row else None

    async def query(self, flt: OperationFilter, *, limit: int = 50, offset: int = 0) -> tuple[list[Operation], int]:
        args: list[Any] = []
        where = _where(flt, args)

        async def run(c: asyncpg.Connection) -> tuple[list[Operation], int]:
            total = await c.fetchval(f"SELECT count(*) FROM pve_exporter_operations{where}", *args)
            rows = await c.fetch(
                f"SELECT * FROM pve_exporter_operations{where} ORDER BY requested_at DESC, seq DESC "
                f"LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}", *args, limit, offset,
            )  # fmt: skip
            return [_op(r) for r in rows], int(total)

        result: tuple[list[Operation], int] = await self._call(run)
        return result

    async def count_by_status(self) -> dict[str, int]:
        rows = await self._call(lambda c: c.fetch(
            "SELECT status, count(*) AS n FROM pve_exporter_operations GROUP BY status"))
        counts = dict.fromkeys(STATUSES, 0)
        for r in rows:
            if r["status"] in counts:
                counts[r["status"]] = int(r["n"])
        return counts

    async def unfinished(self) -> list[Operation]:
        """Claim (one statement) this replica's unfinished rows and those of dead replicas on clusters it
        owns; oldest first. Another replica's live operations are never touched. While PostgreSQL cannot
        be reached nothing can be claimed: none now, they are claimed when this replica next wins a lease."""
        try:
            rows = await self._claim()
        except CoordinationUnavailableError as exc:
            log.warning("unfinished operations cannot be claimed while PostgreSQL is unreachable", error=str(exc))
            return []
        return sorted((_op(r) for r in rows), key=lambda op: (op.requested_at, op.id))

    async def _claim(self) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._call(lambda c: c.fetch(
            """
            UPDATE pve_exporter_operations o SET owner = $1
             WHERE status = ANY($2) AND (owner = $1 OR (cluster = ANY($3) AND NOT EXISTS (
                   SELECT 1 FROM pve_exporter_replicas r WHERE r.name = o.owner AND r.expires > now())))
            RETURNING *
            """, self.replica, _ACTIVE, sorted(self._owned()),
        ))  # fmt: skip
        return rows

    # ---- batches --------------------------------------------------------------------------------
    async def insert_batch(self, batch: Batch, ops: Iterable[Operation]) -> None:
        rows = [_values(op, self.replica) for op in ops]

        async def run(c: asyncpg.Connection) -> None:
            async with c.transaction():
                await c.execute(
                    'INSERT INTO pve_exporter_batches (id, requested_at, "user", client_ip, action, force, '
                    "concurrency, timeout_seconds, selector, skipped, cancelled_at) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb, $11)",
                    batch.id, batch.requested_at, batch.user, batch.client_ip, batch.action, batch.force,
                    batch.concurrency, batch.timeout_seconds, json.dumps(batch.selector), json.dumps(batch.skipped),
                    batch.cancelled_at,
                )  # fmt: skip
                await self._insert_rows(c, rows)

        await self._call(run)

    async def get_batch(self, batch_id: str) -> Batch | None:
        row = await self._call(lambda c: c.fetchrow("SELECT * FROM pve_exporter_batches WHERE id = $1", batch_id))
        if row is None:
            return None
        return Batch(
            id=row["id"], requested_at=row["requested_at"], user=row["user"], client_ip=row["client_ip"],
            action=row["action"], force=row["force"], concurrency=row["concurrency"],
            timeout_seconds=row["timeout_seconds"], selector=json.loads(row["selector"]),
            skipped=json.loads(row["skipped"]), cancelled_at=row["cancelled_at"],
        )  # fmt: skip

    async def cancel_operations(self, batch_id: str, op_ids: Iterable[str], at: float) -> list[Operation]:
        ids = list(op_ids)

        async def run(c: asyncpg.Connection) -> list[Operation]:
            async with c.transaction():
                await c.execute("UPDATE pve_exporter_batches SET cancelled_at = COALESCE(cancelled_at, $1) "
                                "WHERE id = $2", at, batch_id)  # fmt: skip
                rows = await c.fetch(
                    "UPDATE pve_exporter_operations SET status = 'cancelled', finished_at = $1, started_at = $1, "
                    "error_message = $2 WHERE id = ANY($3) AND batch_id = $4 AND status = 'pending' RETURNING *",
                    at, "cancelled before it started (DELETE /api/v1/actions/{batch_id})", ids, batch_id,
                )  # fmt: skip
            by_id = {r["id"]: r for r in rows}
            return [_op({**by_id[i], "status": "pending", "finished_at": None, "started_at": None,
                         "error_message": None}) for i in ids if i in by_id]  # fmt: skip

        result: list[Operation] = await self._call(run)
        return result

    # ---- retention ------------------------------------------------------------------------------
    async def prune(self) -> int:
        cutoff = self.clock() - self.max_age_seconds

        async def run(c: asyncpg.Connection) -> int:
            async with c.transaction():
                a = await c.execute("DELETE FROM pve_exporter_operations WHERE requested_at < $1 AND "
                                    "NOT (status = ANY($2))", cutoff, _ACTIVE)  # fmt: skip
                b = await c.execute(
                    "DELETE FROM pve_exporter_operations WHERE seq IN (SELECT seq FROM pve_exporter_operations "
                    "WHERE NOT (status = ANY($1)) ORDER BY requested_at DESC, seq DESC OFFSET $2)",
                    _ACTIVE, self.max_operations,
                )  # fmt: skip
                await c.execute("DELETE FROM pve_exporter_batches WHERE requested_at < $1 AND id NOT IN "
                                "(SELECT DISTINCT batch_id FROM pve_exporter_operations WHERE batch_id IS NOT NULL)",
                                cutoff)  # fmt: skip
            return int(a.split()[-1]) + int(b.split()[-1])

        n: int = await self._call(run)
        return n


def history_for(
    settings: Settings, *, clock: Callable[[], float], owned: Callable[[], set[str]]
) -> OperationStore | None:
    """The shared history when the replicas coordinate (None: the SQLite file of `control.history_db`)."""
    coord = settings.coordination
    if coord is None:
        return None
    return PgOperationStore(coord.secret(), replica=coord.replica, owned=owned, clock=clock,
                            max_operations=settings.control.max_operations,
                            max_age_days=settings.control.max_age_days,
                            timeout=max(1.0, coord.lease_seconds / 6))  # fmt: skip
