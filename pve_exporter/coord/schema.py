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
    (
        2,
        """
        CREATE TABLE pve_exporter_operations (
            seq bigserial PRIMARY KEY,
            id text NOT NULL UNIQUE,
            requested_at double precision NOT NULL,
            started_at double precision,
            finished_at double precision,
            cluster text NOT NULL,
            node text,
            resource_type text,
            resource_id integer NOT NULL,
            resource_name text,
            operation text NOT NULL,
            force boolean NOT NULL,
            status text NOT NULL,
            "user" text NOT NULL,
            client_ip text,
            upid text,
            error_message text,
            batch_id text,
            timeout_seconds double precision NOT NULL,
            idempotency_key text,
            step integer NOT NULL DEFAULT 0,
            owner text NOT NULL
        );
        -- one unfinished operation per guest over all replicas: the database says so, not a read-then-write
        CREATE UNIQUE INDEX pve_exporter_operations_one_unfinished ON pve_exporter_operations (cluster, resource_id)
            WHERE status IN ('pending', 'running');
        CREATE UNIQUE INDEX pve_exporter_operations_idempotency ON pve_exporter_operations ("user", idempotency_key)
            WHERE idempotency_key IS NOT NULL;
        CREATE INDEX pve_exporter_operations_requested ON pve_exporter_operations (requested_at DESC, seq DESC);
        CREATE INDEX pve_exporter_operations_status ON pve_exporter_operations (status);
        CREATE INDEX pve_exporter_operations_batch ON pve_exporter_operations (batch_id);
        CREATE TABLE pve_exporter_batches (
            id text PRIMARY KEY,
            requested_at double precision NOT NULL,
            "user" text NOT NULL,
            client_ip text,
            action text NOT NULL,
            force boolean NOT NULL,
            concurrency integer NOT NULL,
            timeout_seconds double precision NOT NULL,
            selector jsonb NOT NULL,
            skipped jsonb NOT NULL,
            cancelled_at double precision
        );
        """,
    ),
    (
        3,
        """
        ALTER TABLE pve_exporter_operations ADD COLUMN elapsed_seconds double precision;
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
