"""The lease table in PostgreSQL: every decision is one statement, and every expiry is `now()` of the
database, so the replicas' own clocks (which may step or drift) never decide who owns a target.

A lease is taken or renewed by one `INSERT … ON CONFLICT … DO UPDATE … WHERE expired OR mine
RETURNING`: the row lock of the conflicting row serialises replicas racing for the same target, and
what comes back is exactly what this replica holds now.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

import asyncpg
import structlog

from pve_exporter.coord.balance import View
from pve_exporter.coord.schema import migrate

log = structlog.get_logger("pve_exporter.coord.store")

HEARTBEAT = """
INSERT INTO pve_exporter_replicas AS r (name, expires) VALUES ($1, now() + make_interval(secs => $2))
ON CONFLICT (name) DO UPDATE SET expires = EXCLUDED.expires
"""

ACQUIRE = """
INSERT INTO pve_exporter_leases AS l (target, owner, expires, acquired)
SELECT t, $2, now() + make_interval(secs => $3), now() FROM unnest($1::text[]) AS t
ON CONFLICT (target) DO UPDATE
   SET owner = EXCLUDED.owner, expires = EXCLUDED.expires,
       acquired = CASE WHEN l.owner = EXCLUDED.owner AND l.expires > now() THEN l.acquired ELSE now() END
 WHERE l.expires <= now() OR l.owner = EXCLUDED.owner
RETURNING target
"""

RELEASE = "DELETE FROM pve_exporter_leases WHERE owner = $1 AND target = ANY($2::text[])"

VIEW = """
SELECT 'replica' AS kind, name AS key, NULL AS owner FROM pve_exporter_replicas WHERE expires > now()
UNION ALL
SELECT 'lease', target, owner FROM pve_exporter_leases WHERE expires > now()
"""


class LeaseStore(Protocol):
    """What the coordinator needs from the database (PostgreSQL here, a fake in unit tests)."""

    async def renew(self, me: str, held: Collection[str], lease_seconds: float) -> set[str]:
        """Heartbeat and renew `held` at the same `now()`; returns those still held."""
        ...

    async def view(self) -> View: ...

    async def acquire(self, me: str, targets: Collection[str], lease_seconds: float) -> set[str]:
        """Take these targets where free or expired; returns those taken."""
        ...

    async def release(self, me: str, targets: Collection[str]) -> None: ...

    async def leave(self, me: str) -> None:
        """Hand back every lease and the heartbeat (a polite stop: the others take over at once)."""
        ...

    async def reset(self) -> None:
        """Drop the connection after an error; the next call connects again."""
        ...

    async def close(self) -> None: ...


class PgLeaseStore:
    """LeaseStore over one asyncpg connection, made (and the schema migrated) on first use."""

    def __init__(self, dsn: str, *, timeout: float) -> None:
        self._dsn = dsn
        self.timeout = timeout  # per connect and per statement
        self._conn: asyncpg.Connection | None = None

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await asyncpg.connect(self._dsn, timeout=self.timeout, command_timeout=self.timeout)
            try:
                applied = await migrate(conn)
            except BaseException:
                await conn.close(timeout=self.timeout)
                raise
            if applied:
                log.info("coordination schema migrated", versions=applied)
            self._conn = conn
        return self._conn

    async def renew(self, me: str, held: Collection[str], lease_seconds: float) -> set[str]:
        conn = await self._connection()
        async with conn.transaction():  # one now() for the heartbeat and the leases: they expire together
            await conn.execute(HEARTBEAT, me, float(lease_seconds))
            rows = await conn.fetch(ACQUIRE, list(held), me, float(lease_seconds)) if held else []
        return {r["target"] for r in rows}

    async def view(self) -> View:
        conn = await self._connection()
        rows = await conn.fetch(VIEW)
        return View(
            replicas=frozenset(r["key"] for r in rows if r["kind"] == "replica"),
            holders={r["key"]: r["owner"] for r in rows if r["kind"] == "lease"},
        )

    async def acquire(self, me: str, targets: Collection[str], lease_seconds: float) -> set[str]:
        conn = await self._connection()
        rows = await conn.fetch(ACQUIRE, list(targets), me, float(lease_seconds))
        return {r["target"] for r in rows}

    async def release(self, me: str, targets: Collection[str]) -> None:
        conn = await self._connection()
        await conn.execute(RELEASE, me, list(targets))

    async def leave(self, me: str) -> None:
        conn = await self._connection()
        async with conn.transaction():
            await conn.execute("DELETE FROM pve_exporter_leases WHERE owner = $1", me)
            await conn.execute("DELETE FROM pve_exporter_replicas WHERE name = $1", me)

    async def reset(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()  # the server may be gone: no goodbye round trip

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=self.timeout)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                conn.terminate()
