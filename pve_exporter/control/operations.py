"""The operation history: one SQLite database (WAL) written by a single worker thread.

Every power action is a row, inserted before PVE is called and updated as it progresses, so
a crash leaves a `pending` or `running` row behind; on the next start the runner re-checks
those by UPID (see `actions.ActionRunner.recover`). Bulk actions add a `batches` row. All
database work runs in one thread (`ThreadPoolExecutor(max_workers=1)`): one writer, no locks
in Python, the event loop never blocks on disk.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import structlog

from pve_exporter.control.scrub import scrub_secrets

log = structlog.get_logger("pve_exporter.control.operations")

STATUSES = ("pending", "running", "succeeded", "failed", "timed_out", "cancelled", "interrupted")
ACTIVE = frozenset({"pending", "running"})
TERMINAL = frozenset(STATUSES) - ACTIVE
ACTIONS = ("start", "stop", "restart")
RESOURCE_TYPES = ("qemu", "lxc")
SCHEMA_VERSION = 2  # 2: operations.elapsed_seconds
T = TypeVar("T")

# The API fields of an operation, in the order of design §2.5.
API_FIELDS = (
    "id", "requested_at", "started_at", "finished_at", "duration_seconds", "cluster", "node", "resource_type",
    "resource_id", "resource_name", "operation", "force", "status", "user", "client_ip", "upid", "error_message",
    "batch_id",
)  # fmt: skip
_TIME_FIELDS = ("requested_at", "started_at", "finished_at")


def new_id() -> str:
    return uuid.uuid4().hex


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_UNIX_TIME = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")
MAX_TIME = 253_402_300_799.0  # 9999-12-31T23:59:59Z


def parse_time(value: str) -> float:
    """A Unix timestamp (`1767225600`) or an ISO 8601 time (`2026-01-01T00:00:00Z`); naive = UTC.
    ASCII digits only and a time from 1970 to 9999: `nan`, `inf`, `1e400` or `１７６７…` are errors."""
    text = value.strip()
    if _UNIX_TIME.fullmatch(text):
        t = float(text)
    elif not text.isascii() or not text[:1].isdigit():
        raise ValueError("not a Unix timestamp or ISO 8601 time")
    else:
        try:
            d = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"not a Unix timestamp or ISO 8601 time: {value!r}") from None
        t = (d if d.tzinfo else d.replace(tzinfo=dt.UTC)).timestamp()
    if not 0 <= t <= MAX_TIME:
        raise ValueError(f"must be a time from 1970 to 9999 (Unix seconds up to {MAX_TIME:.0f})")
    return t


@dataclass(frozen=True, slots=True)
class Operation:
    """One power action on one guest, as stored and as answered (see `as_api`)."""

    id: str
    requested_at: float
    cluster: str
    resource_id: int
    operation: str
    force: bool
    user: str
    status: str = "pending"
    started_at: float | None = None
    finished_at: float | None = None
    node: str | None = None
    resource_type: str | None = None
    resource_name: str | None = None
    client_ip: str | None = None
    upid: str | None = None
    error_message: str | None = None
    batch_id: str | None = None
    # not part of the API answer:
    timeout_seconds: float = 120.0
    idempotency_key: str | None = None
    step: int = 0  # index of the PVE call being followed (lxc forced restart has two)
    # How long it ran, measured on the monotonic clock: the wall times above may straddle a clock
    # step. None when it was not measured (an operation finished after a restart of the daemon).
    elapsed_seconds: float | None = None

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None or self.started_at is None:
            return None
        if self.elapsed_seconds is not None:
            return round(max(0.0, self.elapsed_seconds), 3)
        return round(max(0.0, self.finished_at - self.started_at), 3)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def as_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in API_FIELDS:
            value = getattr(self, name)
            out[name] = iso(value) if name in _TIME_FIELDS else value
        out["error_message"] = scrub_secrets(self.error_message)  # rows stored by older versions too
        return out


_COLUMNS = tuple(f.name for f in fields(Operation))


def _upgrade(db: sqlite3.Connection, version: int) -> None:
    """Bring a history written by an older release up to SCHEMA_VERSION, in one transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if version < 2:
            db.execute("ALTER TABLE operations ADD COLUMN elapsed_seconds REAL")
        db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS operations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    requested_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    cluster TEXT NOT NULL,
    node TEXT,
    resource_type TEXT,
    resource_id INTEGER NOT NULL,
    resource_name TEXT,
    operation TEXT NOT NULL,
    force INTEGER NOT NULL,
    status TEXT NOT NULL,
    user TEXT NOT NULL,
    client_ip TEXT,
    upid TEXT,
    error_message TEXT,
    batch_id TEXT,
    timeout_seconds REAL NOT NULL,
    idempotency_key TEXT,
    step INTEGER NOT NULL DEFAULT 0,
    elapsed_seconds REAL
);
CREATE INDEX IF NOT EXISTS operations_requested ON operations (requested_at DESC, seq DESC);
CREATE INDEX IF NOT EXISTS operations_guest ON operations (cluster, resource_id);
CREATE INDEX IF NOT EXISTS operations_status ON operations (status);
CREATE INDEX IF NOT EXISTS operations_batch ON operations (batch_id);
CREATE UNIQUE INDEX IF NOT EXISTS operations_idempotency ON operations (user, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    requested_at REAL NOT NULL,
    user TEXT NOT NULL,
    client_ip TEXT,
    action TEXT NOT NULL,
    force INTEGER NOT NULL,
    concurrency INTEGER NOT NULL,
    timeout_seconds REAL NOT NULL,
    selector TEXT NOT NULL,
    skipped TEXT NOT NULL,
    cancelled_at REAL
);
"""


@dataclass(frozen=True, slots=True)
class Batch:
    """A bulk action: what was asked, what was skipped and why; its operations carry `batch_id`."""

    id: str
    requested_at: float
    user: str
    client_ip: str | None
    action: str
    force: bool
    concurrency: int
    timeout_seconds: float
    selector: dict[str, Any]
    skipped: list[dict[str, Any]] = field(default_factory=list)
    cancelled_at: float | None = None


@dataclass(frozen=True, slots=True)
class OperationFilter:
    cluster: tuple[str, ...] = ()
    node: tuple[str, ...] = ()
    resource_type: tuple[str, ...] = ()
    resource_id: tuple[int, ...] = ()
    operation: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    user: tuple[str, ...] = ()
    batch_id: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        for name in ("cluster", "node", "resource_type", "resource_id", "operation", "status", "user", "batch_id"):
            values = getattr(self, name)
            if values:
                clauses.append(f"{name} IN ({','.join('?' * len(values))})")
                args.extend(values)
        if self.since is not None:
            clauses.append("requested_at >= ?")
            args.append(self.since)
        if self.until is not None:
            clauses.append("requested_at <= ?")
            args.append(self.until)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


class HistoryError(Exception):
    """The history database cannot be opened or written."""


class OperationStore:
    """Async facade over the SQLite file; every call runs in the store's single worker thread.

    `healthy` turns False when a database call fails or the file was deleted or replaced under the
    open connection (`check`); each change is logged once and shown as `pve_exporter_history_healthy`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_operations: int = 100_000,
        max_age_days: float = 90.0,
        clock: Callable[[], float],
    ) -> None:
        self.path = Path(path).expanduser()
        self.max_operations = max_operations
        self.max_age_seconds = max_age_days * 86_400
        self.clock = clock
        self._pool: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file that was opened
        self.healthy = False
        self.problem: str | None = None  # why it is not healthy

    # ---- lifecycle ------------------------------------------------------------------------------
    async def open(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history-db")
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._open_sync)
        except (sqlite3.Error, OSError) as exc:
            await self.close()
            self.problem = f"cannot open the operation history {self.path}: {exc}"
            raise HistoryError(self.problem) from exc
        self.healthy, self.problem = True, None
        log.info("operation history opened", path=str(self.path))

    def _open_sync(self) -> None:
        # Created owner-only (it holds user names, client addresses and PVE's messages); SQLite gives
        # the -wal and -shm files the database file's mode.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        db.row_factory = sqlite3.Row
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"journal_mode stays {mode!r}; WAL is required")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(_SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta(key, value) VALUES('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise sqlite3.OperationalError(f"written by a newer pve_exporter (schema {row[0]} > {SCHEMA_VERSION})")
        elif int(row[0]) < SCHEMA_VERSION:
            _upgrade(db, int(row[0]))
        st = os.stat(self.path)
        self._identity = (st.st_dev, st.st_ino)
        self._db = db
        self._prune_sync()

    async def close(self) -> None:
        if self._pool is None:
            return
        self.healthy = False
        pool, self._pool = self._pool, None
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.get_running_loop().run_in_executor(pool, db.close)
        pool.shutdown(wait=True)

    @property
    def is_open(self) -> bool:
        return self._pool is not None and self._db is not None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            raise HistoryError("the operation history is closed")
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except (sqlite3.Error, OSError) as exc:
            self._set_health(False, f"{type(exc).__name__}: {exc}")
            raise HistoryError(f"the operation history {self.path} failed: {exc}") from exc
        if not self.healthy and not self._file_gone:
            self._set_health(True, None)  # a failed call was followed by one that works
        return result

    @property
    def _file_gone(self) -> bool:
        return bool(self.problem and self.problem.startswith("the database file"))

    def _set_health(self, healthy: bool, problem: str | None) -> None:
        """Log each change once, not every failing call."""
        was = self.healthy
        self.healthy, self.problem = healthy, problem
        if was and not healthy:
            log.error("the operation history is failing; power actions may not be recorded", path=str(self.path),
                      error=problem)  # fmt: skip
        elif healthy and not was:
            log.info("the operation history works again", path=str(self.path))

    async def check(self) -> bool:
        """Is the open file still the one on disk? A deleted or replaced database keeps working
        through the open handle, but nothing written to it would survive a restart."""
        if self._pool is None or self._identity is None:
            return self.healthy
        try:
            problem = await asyncio.get_running_loop().run_in_executor(self._pool, self._check_sync)
        except (sqlite3.Error, OSError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if problem is not None:
            if self.healthy or self.problem != problem:
                self._set_health(False, problem)
        elif not self.healthy:
            self._set_health(True, None)
        return self.healthy

    def _check_sync(self) -> str | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return "the database file was deleted while the daemon runs; restart it to create a new one"
        if (st.st_dev, st.st_ino) != self._identity:
            return "the database file was replaced while the daemon runs; restart the daemon to use it"
        self._conn().execute("SELECT 1 FROM meta LIMIT 1").fetchone()
        return None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise HistoryError("the operation history is closed")
        return self._db

    # ---- operations -----------------------------------------------------------------------------
    async def insert(self, op: Operation) -> None:
        await self._run(self._insert_sync, [op])

    async def insert_many(self, ops: Iterable[Operation]) -> None:
        await self._run(self._insert_sync, list(ops))

    def _insert_sync(self, ops: list[Operation]) -> None:
        db = self._conn()
        cols = ",".join(_COLUMNS)
        marks = ",".join("?" * len(_COLUMNS))
        with db:
            db.execute("BEGIN")
            db.executemany(f"INSERT INTO operations ({cols}) VALUES ({marks})", [_row(op) for op in ops])
        self._prune_sync()

    async def save(self, op: Operation) -> None:
        """Write every field of `op` (matched by id)."""
        await self._run(self._save_sync, op)

    def _save_sync(self, op: Operation) -> None:
        sets = ",".join(f"{c}=?" for c in _COLUMNS if c != "id")
        values = [v for c, v in zip(_COLUMNS, _row(op), strict=True) if c != "id"]
        self._conn().execute(f"UPDATE operations SET {sets} WHERE id=?", [*values, op.id])

    async def get(self, op_id: str) -> Operation | None:
        return await self._run(self._get_sync, op_id)

    def _get_sync(self, op_id: str) -> Operation | None:
        row = self._conn().execute("SELECT * FROM operations WHERE id=?", (op_id,)).fetchone()
        return _op(row) if row else None

    async def by_idempotency_key(self, user: str, key: str) -> Operation | None:
        return await self._run(self._by_key_sync, user, key)

    def _by_key_sync(self, user: str, key: str) -> Operation | None:
        row = self._conn().execute(
            "SELECT * FROM operations WHERE user=? AND idempotency_key=?", (user, key)
        ).fetchone()
        return _op(row) if row else None

    async def query(self, flt: OperationFilter, *, limit: int = 50, offset: int = 0) -> tuple[list[Operation], int]:
        """Newest first; returns (page, total matching rows)."""
        return await self._run(self._query_sync, flt, limit, offset)

    def _query_sync(self, flt: OperationFilter, limit: int, offset: int) -> tuple[list[Operation], int]:
        where, args = flt.where()
        db = self._conn()
        total = db.execute(f"SELECT COUNT(*) FROM operations{where}", args).fetchone()[0]
        rows = db.execute(
            f"SELECT * FROM operations{where} ORDER BY requested_at DESC, seq DESC LIMIT ? OFFSET ?",
            [*args, limit, offset],
        ).fetchall()
        return [_op(r) for r in rows], int(total)

    async def count_by_status(self) -> dict[str, int]:
        """Every status with its number of operations (0 for none): the landing page's summary."""
        return await self._run(self._count_sync)

    def _count_sync(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for status, n in self._conn().execute("SELECT status, COUNT(*) FROM operations GROUP BY status"):
            if status in counts:
                counts[status] = int(n)
        return counts

    async def unfinished(self) -> list[Operation]:
        """Rows left `pending` or `running` (by a crash, or by a stop that cut actions off)."""
        ops, _ = await self.query(OperationFilter(status=tuple(sorted(ACTIVE))), limit=1_000_000)
        return list(reversed(ops))

    # ---- batches --------------------------------------------------------------------------------
    async def insert_batch(self, batch: Batch, ops: Iterable[Operation]) -> None:
        await self._run(self._insert_batch_sync, batch, list(ops))

    def _insert_batch_sync(self, batch: Batch, ops: list[Operation]) -> None:
        db = self._conn()
        cols = ",".join(_COLUMNS)
        marks = ",".join("?" * len(_COLUMNS))
        with db:
            db.execute("BEGIN")
            db.execute(
                "INSERT INTO batches (id, requested_at, user, client_ip, action, force, concurrency, timeout_seconds,"
                " selector, skipped, cancelled_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (batch.id, batch.requested_at, batch.user, batch.client_ip, batch.action, int(batch.force),
                 batch.concurrency, batch.timeout_seconds, json.dumps(batch.selector), json.dumps(batch.skipped),
                 batch.cancelled_at),
            )  # fmt: skip
            db.executemany(f"INSERT INTO operations ({cols}) VALUES ({marks})", [_row(op) for op in ops])
        self._prune_sync()

    async def get_batch(self, batch_id: str) -> Batch | None:
        return await self._run(self._get_batch_sync, batch_id)

    def _get_batch_sync(self, batch_id: str) -> Batch | None:
        row = self._conn().execute("SELECT * FROM batches WHERE id=?", (batch_id,)).fetchone()
        if row is None:
            return None
        return Batch(
            id=row["id"], requested_at=row["requested_at"], user=row["user"], client_ip=row["client_ip"],
            action=row["action"], force=bool(row["force"]), concurrency=row["concurrency"],
            timeout_seconds=row["timeout_seconds"], selector=json.loads(row["selector"]),
            skipped=json.loads(row["skipped"]), cancelled_at=row["cancelled_at"],
        )  # fmt: skip

    async def cancel_operations(self, batch_id: str, op_ids: Iterable[str], at: float) -> list[Operation]:
        """Mark the batch cancelled and the given (still pending) operations `cancelled`; returns those."""
        return await self._run(self._cancel_sync, batch_id, list(op_ids), at)

    def _cancel_sync(self, batch_id: str, op_ids: list[str], at: float) -> list[Operation]:
        db = self._conn()
        out: list[Operation] = []
        with db:
            db.execute("BEGIN")
            db.execute("UPDATE batches SET cancelled_at=COALESCE(cancelled_at, ?) WHERE id=?", (at, batch_id))
            for op_id in op_ids:
                row = db.execute(
                    "SELECT * FROM operations WHERE id=? AND batch_id=? AND status='pending'", (op_id, batch_id)
                ).fetchone()
                if row is None:
                    continue
                db.execute(
                    "UPDATE operations SET status='cancelled', finished_at=?, started_at=?, error_message=? "
                    "WHERE id=?",
                    (at, at, "cancelled before it started (DELETE /api/v1/actions/{batch_id})", op_id),
                )
                out.append(_op(row))
        return out

    # ---- retention ------------------------------------------------------------------------------
    async def prune(self) -> int:
        return await self._run(self._prune_sync)

    def _prune_sync(self) -> int:
        """Drop finished rows older than max_age, then the oldest finished rows beyond max_operations."""
        db = self._conn()
        cutoff = self.clock() - self.max_age_seconds
        placeholders = ",".join("?" * len(ACTIVE))
        active = sorted(ACTIVE)
        with db:
            db.execute("BEGIN")
            n = db.execute(
                f"DELETE FROM operations WHERE requested_at < ? AND status NOT IN ({placeholders})",
                [cutoff, *active],
            ).rowcount
            n += db.execute(
                f"DELETE FROM operations WHERE seq IN (SELECT seq FROM operations WHERE status NOT IN ({placeholders})"
                " ORDER BY requested_at DESC, seq DESC LIMIT -1 OFFSET ?)",
                [*active, self.max_operations],
            ).rowcount
            db.execute(
                "DELETE FROM batches WHERE requested_at < ? AND id NOT IN "
                "(SELECT DISTINCT batch_id FROM operations WHERE batch_id IS NOT NULL)",
                (cutoff,),
            )
        if n:
            log.debug("operation history pruned", removed=n)
        return n


def _row(op: Operation) -> list[Any]:
    d = asdict(op)
    d["force"] = int(op.force)
    return [d[c] for c in _COLUMNS]


def _op(row: Mapping[str, Any] | sqlite3.Row) -> Operation:
    kw = {c: row[c] for c in _COLUMNS}
    kw["force"] = bool(kw["force"])
    return Operation(**kw)


def evolve(op: Operation, **changes: Any) -> Operation:
    return replace(op, **changes)
