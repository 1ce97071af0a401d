"""A bounded on-disk queue of gzipped line-protocol batches for the InfluxDB writer (blocking I/O).

One file per batch, named `<seq>-<points>-<bytes>.lp.gz` (bytes: uncompressed size) with a
zero-padded, monotonically increasing sequence number, so `sorted(names)` is the delivery order
and a restart resumes it. Files are
written as `*.tmp`, fsynced and renamed, so a crash leaves whole batches or nothing. When the
total size would pass `max_bytes`, the OLDEST batches are deleted and reported (the caller counts
their points as dropped). The writer calls every method through `asyncio.to_thread`; a lock keeps
the in-memory index consistent when two calls overlap.

One directory, one writer: `open` takes an exclusive `flock` on `<dir>/.lock` (holding the pid)
until `close`, so a second daemon pointed at the same directory fails at start instead of
interleaving its batches with ours.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(r"^(\d{20})-(\d+)-(\d+)\.lp\.gz$")
LOCK_FILE = ".lock"


class SpoolInUseError(RuntimeError):
    """Another process holds the spool directory's lock (two daemons configured with one spool_dir)."""

    def __init__(self, directory: Path, holder: str) -> None:
        self.directory = directory
        self.holder = holder
        who = f"another process (pid {holder})" if holder.isdigit() else "another process"
        super().__init__(
            f"influxdb.spool_dir {str(directory)!r} is in use by {who}: two daemons cannot share a spool "
            "directory; give each its own influxdb.spool_dir"
        )


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    seq: int
    points: int
    raw_bytes: int  # line protocol before gzip
    size: int  # the file

    @property
    def name(self) -> str:
        return f"{self.seq:020d}-{self.points}-{self.raw_bytes}.lp.gz"


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: list[SpoolEntry] = []  # sorted by seq
        self._seqs: list[int] = []
        self._bytes = 0
        self._lock_fd: int | None = None

    # -- state --------------------------------------------------------------------------------

    def open(self) -> list[SpoolEntry]:
        """Create and lock the directory, remove half-written files, index what a previous run left.

        Raises SpoolInUseError when another process holds the directory."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_dir()
        try:
            return self._index()
        except BaseException:
            self.close()
            raise

    def _lock_dir(self) -> None:
        if self._lock_fd is not None:
            return
        fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 32).decode("ascii", "replace").strip()
            except OSError:
                holder = ""
            os.close(fd)
            raise SpoolInUseError(self.dir, holder) from None
        except BaseException:
            os.close(fd)
            raise
        with contextlib.suppress(OSError):  # the pid is for the other daemon's error message only
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        """Release the directory (the files stay for the next run)."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock

    def _index(self) -> list[SpoolEntry]:
        found: list[SpoolEntry] = []
        for p in self.dir.iterdir():
            if p.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    p.unlink()
                continue
            m = _NAME.match(p.name)
            if not m:
                continue
            try:
                size = p.stat().st_size
            except OSError:
                continue
            found.append(SpoolEntry(int(m.group(1)), int(m.group(2)), int(m.group(3)), size))
        found.sort(key=lambda e: e.seq)
        with self._lock:
            self._entries = found
            self._seqs = [e.seq for e in found]
            self._bytes = sum(e.size for e in found)
        return list(found)

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def files(self) -> int:
        return len(self._entries)

    def last_seq(self) -> int:
        return self._entries[-1].seq if self._entries else 0

    def head(self) -> SpoolEntry | None:
        with self._lock:
            return self._entries[0] if self._entries else None

    def has(self, seq: int) -> bool:
        with self._lock:
            i = bisect.bisect_left(self._seqs, seq)
            return i < len(self._seqs) and self._seqs[i] == seq

    # -- I/O ------------------------------------------------------------------------------------

    def put(self, seq: int, points: int, raw_bytes: int, body: bytes) -> list[SpoolEntry]:
        """Store one batch durably; returns the batches evicted (oldest first) to stay under max_bytes."""
        entry = SpoolEntry(seq, points, raw_bytes, len(body))
        final = self.dir / entry.name
        tmp = self.dir / (entry.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(body)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        self._fsync_dir()
        evicted: list[SpoolEntry] = []
        with self._lock:
            i = bisect.bisect_left(self._seqs, seq)
            if i < len(self._seqs) and self._seqs[i] == seq:  # rewritten: replace the old entry
                self._bytes -= self._entries[i].size
                del self._entries[i], self._seqs[i]
            self._entries.insert(i, entry)
            self._seqs.insert(i, seq)
            self._bytes += entry.size
            while self._bytes > self.max_bytes and self._entries:
                old = self._entries.pop(0)
                self._seqs.pop(0)
                self._bytes -= old.size
                evicted.append(old)
        for old in evicted:
            with contextlib.suppress(FileNotFoundError):
                (self.dir / old.name).unlink()
        return evicted

    def read(self, entry: SpoolEntry) -> bytes:
        return (self.dir / entry.name).read_bytes()

    def remove(self, seq: int) -> SpoolEntry | None:
        with self._lock:
            i = bisect.bisect_left(self._seqs, seq)
            if i >= len(self._seqs) or self._seqs[i] != seq:
                return None
            entry = self._entries.pop(i)
            self._seqs.pop(i)
            self._bytes -= entry.size
        with contextlib.suppress(FileNotFoundError):
            (self.dir / entry.name).unlink()
        return entry

    def _fsync_dir(self) -> None:
        with contextlib.suppress(OSError):
            fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
