"""A private PostgreSQL for the coordination tests: Debian's server on a free port in a temporary
directory (as the `postgres` user when the tests run as root: PostgreSQL refuses root), or an existing
server given by PVE_EXPORTER_TEST_PG_DSN. Locally a missing server skips with the reason; under CI=true
it fails (.ci/run installs the `postgresql` package)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import asyncpg
import pytest

from tests.servers import IN_CI, free_port

DSN_ENV = "PVE_EXPORTER_TEST_PG_DSN"


def _bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


def _missing(msg: str) -> None:
    if IN_CI:
        pytest.fail(msg + " — CI must not skip the PostgreSQL tests")
    pytest.skip(msg)


class PgServer:
    """One private server: start(), stop() and start() again (same data), remove() at the end."""

    def __init__(self) -> None:
        bindir = _bindir()
        if bindir is None:
            _missing("PostgreSQL not installed (Debian package 'postgresql'; .ci/run installs it) "
                     f"and {DSN_ENV} not set")  # fmt: skip
        assert bindir is not None
        self.bindir = bindir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pve-exporter-pg-"))  # not under pytest's 0700 tmp: postgres reads it
        self.dir.chmod(0o755)
        self._as: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.data = self.dir / "data"
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._as, str(self.bindir / tool), *args], check=True, capture_output=True, timeout=120)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


async def fresh_database(server_dsn: str) -> str:
    """A new, empty database on the server (tests never share tables); returns its DSN."""
    name = "t_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, _ = server_dsn.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def pg_server_dsn():
    """The DSN of a server the tests may create databases on (started once per session)."""
    given = os.environ.get(DSN_ENV)
    if given:
        yield given
        return
    server = PgServer()
    try:
        server.start()
        yield server.dsn
    finally:
        server.remove()


@pytest.fixture
async def pg_dsn(pg_server_dsn: str) -> str:
    return await fresh_database(pg_server_dsn)
