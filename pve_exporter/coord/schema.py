"""Versioned schema migrations, applied at start-up by whichever replica connects first.

Each migration runs once, in order, inside one transaction that holds an advisory lock, so replicas
starting together never apply one twice. A database migrated by a newer release (a version this one
does not know) is refused rather than used with a schema it does not understand.
"""

from __future__ import annotations

import asyncpg

LOCK_KEY = 0x5056_4558  # "PVEX": the advisory lock all replicas take to migrate

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE pve_exporter_replicas (
            name text PRIMARY KEY,
            expires timestamptz NOT NULL,
            started timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE pve_exporter_leases (
            target text PRIMARY KEY,
            owner text NOT NULL,
            expires timestamptz NOT NULL,
            acquired timestamptz NOT NULL
        );
        CREATE INDEX pve_exporter_leases_owner ON pve_exporter_leases (owner);
        """,
    ),
)
LATEST = MIGRATIONS[-1][0]


class SchemaTooNewError(Exception):
    """The database was migrated by a newer release."""


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply the migrations this database lacks; returns the versions applied now."""
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS pve_exporter_schema ("
            "version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM pve_exporter_schema")}
        if done and max(done) > LATEST:
            raise SchemaTooNewError(f"the database schema is version {max(done)}; this release knows up to {LATEST}")
        for version, sql in MIGRATIONS:
            if version not in done:
                await conn.execute(sql)
                await conn.execute("INSERT INTO pve_exporter_schema (version) VALUES ($1)", version)
                applied.append(version)
    return applied
