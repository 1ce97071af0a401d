"""The InfluxDB output: snapshots in, gzipped line-protocol batches out, nothing lost on the way.

    store.subscribe(writer.offer)   # the listener only appends to a deque: collection never waits

Two tasks. The *encoder* turns queued snapshots into batches of at most `batch_bytes` of line
protocol (serializing and gzipping in a worker thread) and queues them in memory. The *sender*
delivers one batch at a time, oldest first, with a per-request timeout; it retries 429, 5xx and
network errors with exponential backoff and jitter (at least `Retry-After`), and drops a batch
InfluxDB rejects (400/413/422) after logging the offending line once.

Ordering and the spool: every batch gets a sequence number when it is made. The spool holds only
batches older than any in memory, and the sender always takes the spool's head first. A batch
whose first attempt fails is written to the spool at once, and while the sink is failing (or
memory passes `max_queue_bytes`) new batches go straight to the spool too, so an outage costs
memory only up to that bound. When the spool would pass `max_spool_bytes`, its OLDEST batches are
deleted and counted as dropped. On `stop()` the in-flight request gets `shutdown_timeout_seconds`
to finish; everything not yet delivered is then written to the spool, which the next start
drains first. Line-protocol writes are idempotent (same series and time overwrite), so a request
cut off at shutdown and sent again after the restart cannot double a point.

One spool directory, one writer: the spool is locked while a writer runs (a second daemon fails at
start). In a reload the new writer may start while the one it replaces still holds the directory:
it then queues in memory and takes the directory over (with what the old one flushed into it) when
that one's `stop()` returns. `stop(successor=new)` hands everything not delivered to the new writer
instead when the two do not share a spool, and carries the counters over when the output is the same.

Time comes from injected `clock` / `sleep` / `monotonic` / `rng`, so tests never wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import random
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from pve_exporter.collect.base import Family, FamilyBuilder
from pve_exporter.export.influx import snapshot_to_lines
from pve_exporter.export.influx_sink import Sink, WriteOutcome, make_sink, offending_line, output_label
from pve_exporter.export.influx_spool import Spool, SpoolInUseError
from pve_exporter.pbs.influx import pbs_lines
from pve_exporter.pbs.poller import PbsSnapshot
from pve_exporter.settings import InfluxSettings
from pve_exporter.snapshot import Snapshot

MAX_PENDING_SNAPSHOTS = 64  # the encoder keeps up easily; this only bounds memory (snapshots are big) if stuck
MAX_RETRY_AFTER = 900.0
GZIP_LEVEL = 6
LOG_EVERY = 60.0  # s between repeated warnings of one kind (spool evictions, failing writes)
# Label values exported at 0 from start, so `increase()` sees the first event (others appear when they happen).
FAILURE_REASONS = ("connection", "error", "spool_io", "timeout")
DROP_REASONS = ("queue_full", "rejected", "shutdown", "spool_full", "spool_io", "spool_lost", "writer_restart")

_spool_owners: dict[Path, InfluxWriter] = {}  # spool directory → the writer of this process that has it


@dataclass(slots=True)
class Batch:
    seq: int
    points: int
    raw_bytes: int
    gz: bytes
    spooled: bool = False


def encode_batches(snaps: Iterable[Snapshot | PbsSnapshot], batch_bytes: int) -> list[tuple[int, int, bytes]]:
    """(points, uncompressed bytes, gzip body) per batch, each at most `batch_bytes` (a longer line alone).
    A backup server's snapshot is written in PBS's own metric-server layout (pbs/influx.py)."""
    out: list[tuple[int, int, bytes]] = []
    cur: list[bytes] = []
    size = 0
    for snap in snaps:
        for line in snapshot_to_lines(snap) if isinstance(snap, Snapshot) else pbs_lines(snap):
            b = line.encode()
            n = len(b) + 1
            if cur and size + n > batch_bytes:
                out.append((len(cur), size, gzip.compress(b"\n".join(cur) + b"\n", GZIP_LEVEL)))
                cur, size = [], 0
            cur.append(b)
            size += n
    if cur:
        out.append((len(cur), size, gzip.compress(b"\n".join(cur) + b"\n", GZIP_LEVEL)))
    return out


class InfluxStats:
    """Counters for the self-metrics (`pve_exporter_influx_*`), updated in place."""

    def __init__(self) -> None:
        self.points_written = 0
        self.bytes_written = 0
        self.batches_written = 0
        self.requests: defaultdict[str, int] = defaultdict(int)  # by result: "204", "http_503", "timeout", ...
        self.write_seconds = 0.0
        self.last_write_seconds: float | None = None
        self.retries = 0
        self.failures: defaultdict[str, int] = defaultdict(int)  # by reason
        self.dropped: defaultdict[str, int] = defaultdict(int)  # points, by reason
        self.points_spooled = 0
        self.snapshots_dropped = 0
        self.last_success: float | None = None
        self.up: bool | None = None

    def absorb(self, old: InfluxStats) -> None:
        """Add a replaced writer's counters (same output), so they keep counting up across a reload."""
        self.points_written += old.points_written
        self.bytes_written += old.bytes_written
        self.batches_written += old.batches_written
        self.write_seconds += old.write_seconds
        self.retries += old.retries
        self.points_spooled += old.points_spooled
        self.snapshots_dropped += old.snapshots_dropped
        for mine, theirs in ((self.requests, old.requests), (self.failures, old.failures), (self.dropped, old.dropped)):
            for k, v in theirs.items():
                mine[k] += v
        if self.last_success is None:
            self.last_success = old.last_success
        if self.last_write_seconds is None:
            self.last_write_seconds = old.last_write_seconds
        if self.up is None:
            self.up = old.up


class InfluxWriter:
    def __init__(
        self,
        cfg: InfluxSettings,
        *,
        sink: Sink | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.cfg = cfg
        self.output = output_label(cfg)
        self.sink = sink if sink is not None else make_sink(cfg)
        self.spool = Spool(cfg.spool_dir, int(cfg.max_spool_bytes)) if cfg.spool_dir is not None else None
        self.stats = InfluxStats()
        self._clock = clock
        self._sleep = sleep
        self._monotonic = monotonic
        self._rng = rng
        self._log = structlog.get_logger("pve_exporter.influx").bind(output=self.output)
        self._pending: deque[Snapshot | PbsSnapshot] = deque()
        self._memory: deque[Batch] = deque()
        self._memory_bytes = 0
        self._inflight: Batch | None = None
        self._unqueued: deque[Batch] = deque()  # made by the encoder, not yet in memory or the spool
        self._encoding = False
        self._seq = 0
        self._down = False
        self._stopping = False
        self._closed = False  # stop() has taken the last pending snapshots
        self._order = asyncio.Lock()  # taking the next batch vs moving memory batches to the spool
        self._snapshots = asyncio.Event()  # something for the encoder
        self._work = asyncio.Event()  # something for the sender
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()  # any progress (wait_idle)
        self._tasks: list[asyncio.Task[None]] = []
        self._last_log: dict[str, float] = {}
        self._adopted: list[tuple[int, int, bytes]] = []  # batches handed over by the writer this one replaced
        self._spool_key: Path | None = None
        self._predecessor: InfluxWriter | None = None  # held our spool directory when we started
        self._spool_ready = asyncio.Event()  # the spool is open (or there is none): batches may be numbered
        self._released = asyncio.Event()  # stop() has finished with the spool directory

    # -- the listener -------------------------------------------------------------------------------

    def offer(self, snap: Snapshot | PbsSnapshot) -> None:
        """SnapshotStore listener: O(1), never blocks, never raises."""
        if self._closed:
            self.stats.snapshots_dropped += 1
            return
        if len(self._pending) >= MAX_PENDING_SNAPSHOTS:
            self._pending.popleft()
            self.stats.snapshots_dropped += 1
            self._warn_sometimes("snapshot_queue", "snapshot queue full: the encoder is not keeping up, dropped one")
        self._pending.append(snap)
        self._snapshots.set()

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open and lock the spool, then run the encoder and sender.

        Raises SpoolInUseError when another process holds the spool directory. When the writer this
        one replaces (a reload) still holds it, this one queues in memory and takes the directory over
        once that writer's `stop()` has flushed into it and released it."""
        if self.spool is not None:
            key = await asyncio.to_thread(self.spool.dir.resolve)
            self._spool_key = key
            prev = _spool_owners.get(key)
            if prev is not None and prev is not self and not prev._released.is_set():
                self._predecessor = prev
                _spool_owners[key] = self
                self._log.info("spool directory in use by the writer this one replaces; taking it over when it stops",
                               spool_dir=str(self.spool.dir))  # fmt: skip
            else:
                await self._open_spool()
        else:
            self._spool_ready.set()
        self._tasks = [
            asyncio.create_task(self._encoder(), name=f"influx-encoder {self.output}"),
            asyncio.create_task(self._sender(), name=f"influx-sender {self.output}"),
        ]
        self._work.set()
        self._log.info(
            "influxdb output started", api=self.cfg.api, spool_dir=str(self.cfg.spool_dir) if self.spool else None,
            batch_bytes=int(self.cfg.batch_bytes),
        )  # fmt: skip

    async def _open_spool(self) -> None:
        """Lock and index the spool (SpoolInUseError if another process has it); OSError: memory only."""
        assert self.spool is not None and self._spool_key is not None
        try:
            entries = await asyncio.to_thread(self.spool.open)
        except OSError as exc:
            self._log.error(
                "cannot use the spool directory; buffering in memory only", spool_dir=str(self.spool.dir),
                error=str(exc),
            )  # fmt: skip
            self.spool = None
        else:
            _spool_owners[self._spool_key] = self
            self._seq = max(self._seq, self.spool.last_seq())
            if entries:
                self._log.info(
                    "draining spooled batches from an earlier run first", batches=len(entries),
                    points=sum(e.points for e in entries), bytes=self.spool.bytes,
                )  # fmt: skip
        self._spool_ready.set()

    async def _take_over_spool(self) -> None:
        """Wait until the replaced writer has released our spool directory, then open it (encoder task)."""
        prev = self._predecessor
        assert prev is not None
        await _first(prev._released, self._stop)
        if self._stopping:
            return  # stop() settles the spool
        try:
            await self._open_spool()
        except SpoolInUseError as exc:  # another process took it in between: keep going without it
            self._log.error("cannot take over the spool directory; buffering in memory only", error=str(exc))
            self._drop_spool()

    def _drop_spool(self) -> None:
        """Go on without the spool; a directory we only waited for goes back to the writer still holding it."""
        key = self._spool_key
        if key is not None and _spool_owners.get(key) is self:
            prev = self._predecessor
            if prev is not None and not prev._released.is_set():
                _spool_owners[key] = prev
            else:
                del _spool_owners[key]
        self.spool = None
        self._spool_ready.set()

    def adopt(self, batches: Sequence[Batch], snaps: Sequence[Snapshot]) -> int:
        """Take what a replaced writer did not deliver (its stop(successor=self)): batches are queued
        before this writer's next ones, snapshots before its pending ones. Returns the points refused
        (this writer is stopped already)."""
        if self._closed:
            return sum(b.points for b in batches)
        self._adopted.extend((b.points, b.raw_bytes, b.gz) for b in batches)
        self._pending.extendleft(reversed(snaps))
        while len(self._pending) > MAX_PENDING_SNAPSHOTS:
            self._pending.popleft()
            self.stats.snapshots_dropped += 1
        self._snapshots.set()
        return 0

    async def stop(self, successor: InfluxWriter | None = None) -> None:
        """Let an in-flight write finish (bounded), then put everything not yet delivered in the spool,
        or hand it to `successor` (the writer replacing this one) when the two do not share a spool."""
        if self._stopping:
            return
        try:
            await self._shutdown(successor)
        finally:
            if self.spool is not None:
                self.spool.close()
            key = self._spool_key
            if key is not None and _spool_owners.get(key) is self:
                del _spool_owners[key]
            self._released.set()

    async def _shutdown(self, successor: InfluxWriter | None) -> None:
        self._stopping = True
        self._stop.set()
        self._work.set()
        self._snapshots.set()
        # Both tasks see the flag: the sender ends after its in-flight request, the encoder after
        # queueing the batches of the round it is in. Past the timeout they are cancelled.
        running = set(self._tasks)
        if running:
            _, late = await asyncio.wait(running, timeout=self.cfg.shutdown_timeout_seconds)
            for task in late:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        if self.spool is not None and not self._spool_ready.is_set():  # still waiting for the directory
            prev = self._predecessor
            if prev is not None and prev._released.is_set():
                try:
                    await self._open_spool()
                except SpoolInUseError:
                    self._drop_spool()
            else:  # a reload rolled back before the old writer let go: the directory stays the old one's
                self._drop_spool()
        rest: list[Batch] = []
        if self._inflight is not None:
            rest.append(self._inflight)
            self._inflight = None
        rest.extend(self._unqueued)
        self._unqueued.clear()
        rest.extend(self._memory)
        self._memory.clear()
        self._memory_bytes = 0
        rest.extend(self._make_batches(self._adopted))
        self._adopted.clear()
        self._closed = True
        snaps = list(self._pending)
        self._pending.clear()
        if successor is not None and successor.output == self.output:
            successor.stats.absorb(self.stats)
        if successor is not None and not (self.spool is not None and successor._spool_key == self._spool_key):
            await self._hand_over(successor, rest, snaps)
            return
        if snaps:
            rest.extend(self._make_batches(await asyncio.to_thread(encode_batches, snaps, int(self.cfg.batch_bytes))))
        kept = lost = 0
        seen: set[int] = set()
        for batch in rest:
            if batch.spooled or batch.seq in seen:  # in the spool already (or dropped from it, and counted then)
                continue
            seen.add(batch.seq)
            if await self._to_spool(batch):
                kept += batch.points
            else:
                lost += batch.points
                self.stats.dropped["shutdown"] += batch.points
        with contextlib.suppress(Exception):
            await self.sink.close()
        self._changed.set()
        self._log.info(
            "influxdb output stopped", points_kept_in_spool=kept, points_lost=lost,
            spool_files=self.spool.files if self.spool else 0,
        )  # fmt: skip

    async def _hand_over(self, successor: InfluxWriter, rest: list[Batch], snaps: list[Snapshot | PbsSnapshot]) -> None:
        """Give the replacing writer what this one did not deliver (spooled batches stay in our spool)."""
        seen: set[int] = set()
        batches = []
        for batch in rest:
            if not batch.spooled and batch.seq not in seen:
                seen.add(batch.seq)
                batches.append(batch)
        refused = successor.adopt(batches, snaps)
        if refused:
            successor.stats.dropped["writer_restart"] += refused
        with contextlib.suppress(Exception):
            await self.sink.close()
        self._changed.set()
        self._log.info(
            "influxdb output stopped; handed over to its replacement", batches=len(batches), snapshots=len(snaps),
            points_refused=refused, spool_files=self.spool.files if self.spool else 0,
        )  # fmt: skip

    async def wait_idle(self, timeout: float) -> None:
        """Until every offered snapshot is delivered (or dropped); TimeoutError after `timeout` (tests)."""
        async with asyncio.timeout(timeout):
            while not self.idle():
                self._changed.clear()
                await self._changed.wait()

    def idle(self) -> bool:
        return (
            not self._pending and not self._encoding and not self._memory and self._inflight is None
            and (self.spool is None or self.spool.files == 0)
        )  # fmt: skip

    # -- encoder -----------------------------------------------------------------------------------

    async def _encoder(self) -> None:
        if not self._spool_ready.is_set():
            await self._take_over_spool()
        while not self._stopping:
            await self._snapshots.wait()
            self._snapshots.clear()
            if self._stopping:
                return
            if self._adopted:  # a replaced writer's batches: older than anything pending here
                adopted, self._adopted = self._adopted, []
                self._unqueued.extend(self._make_batches(adopted))
                while self._unqueued:
                    await self._enqueue(self._unqueued[0])
                    self._unqueued.popleft()
                self._changed.set()
            if self.cfg.flush_interval_seconds > 0 and self._pending:
                with contextlib.suppress(TimeoutError):  # let more clusters' snapshots join these batches
                    await asyncio.wait_for(self._stop.wait(), timeout=self.cfg.flush_interval_seconds)
                if self._stopping:
                    return
            if not self._pending:
                continue
            snaps = list(self._pending)
            self._encoding = True
            try:
                made = await asyncio.to_thread(encode_batches, snaps, int(self.cfg.batch_bytes))
            except Exception:  # a serializer bug must not stop the output
                self._log.exception("encoding snapshots failed; they are dropped")
                self._forget(snaps)
                self.stats.snapshots_dropped += len(snaps)
                self._encoding = False
                self._changed.set()
                continue
            self._forget(snaps)  # only now: a stop() during encoding finds them still pending
            self._unqueued.extend(self._make_batches(made))
            while self._unqueued:  # a stop() that cancels us finds the rest here (same seq: no double)
                await self._enqueue(self._unqueued[0])
                self._unqueued.popleft()
            self._encoding = False
            self._changed.set()

    def _forget(self, snaps: list[Snapshot | PbsSnapshot]) -> None:
        """Remove encoded snapshots from the queue head (skipping any that offer() already dropped)."""
        for snap in snaps:
            if self._pending and self._pending[0] is snap:
                self._pending.popleft()

    def _make_batches(self, made: Sequence[tuple[int, int, bytes]]) -> list[Batch]:
        out = []
        for points, raw, gz in made:
            self._seq += 1
            out.append(Batch(self._seq, points, raw, gz))
        return out

    async def _enqueue(self, batch: Batch) -> None:
        async with self._order:
            if self.spool is not None and self._down:
                # Failing sink: queue behind the spooled batches (memory first, to keep the order).
                await self._spill_memory()
                if await self._to_spool(batch):
                    self._work.set()
                    return
            self._memory.append(batch)
            self._memory_bytes += len(batch.gz)
            while self._memory_bytes > self.cfg.max_queue_bytes and len(self._memory) > 1:
                old = self._memory.popleft()
                self._memory_bytes -= len(old.gz)
                if not await self._to_spool(old):
                    self.stats.dropped["queue_full"] += old.points
                    self._warn_sometimes("queue_full", "memory queue full and no spool: dropped the oldest batch",
                                         points=old.points)  # fmt: skip
        self._work.set()

    async def _spill_memory(self) -> None:
        """Move every memory batch (oldest first) to the spool; caller holds `_order`."""
        while self._memory:
            old = self._memory[0]
            if not await self._to_spool(old):
                return
            self._memory.popleft()
            self._memory_bytes -= len(old.gz)

    async def _to_spool(self, batch: Batch) -> bool:
        if self.spool is None:
            return False
        try:
            evicted = await asyncio.to_thread(self.spool.put, batch.seq, batch.points, batch.raw_bytes, batch.gz)
        except OSError as exc:
            self.stats.failures["spool_io"] += 1
            self._warn_sometimes("spool_io", "cannot write to the spool", error=str(exc))
            return False
        batch.spooled = True
        self.stats.points_spooled += batch.points
        for e in evicted:
            self.stats.dropped["spool_full"] += e.points
            self._warn_sometimes(
                "spool_full", "spool full: dropped the oldest batch", points=e.points,
                max_spool_bytes=int(self.cfg.max_spool_bytes), dropped_total=self.stats.dropped["spool_full"],
            )  # fmt: skip
        self._changed.set()
        return True

    # -- sender ------------------------------------------------------------------------------------

    async def _sender(self) -> None:
        await _first(self._spool_ready, self._stop)
        while not self._stopping:
            batch = await self._take()
            if batch is None:
                return
            self._inflight = batch
            try:
                finished = await self._deliver(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let a bug end the output: keep the batch, back off, try again
                self._log.exception("unexpected error while writing a batch")
                finished = False
                async with self._order:
                    if not batch.spooled and not await self._to_spool(batch):
                        self._memory.appendleft(batch)
                        self._memory_bytes += len(batch.gz)
                    self._inflight = None
                await self._pause(self.cfg.retry_max_seconds)
            if finished:
                self._inflight = None
            self._changed.set()

    async def _take(self) -> Batch | None:
        """The oldest batch: the spool's head, else memory's; waits for one. None when stopping."""
        while not self._stopping:
            broken = False
            async with self._order:
                entry = self.spool.head() if self.spool is not None else None
                if entry is not None:
                    assert self.spool is not None
                    try:
                        gz = await asyncio.to_thread(self.spool.read, entry)
                    except FileNotFoundError:
                        if self.spool.remove(entry.seq) is not None:  # still indexed: deleted behind our back
                            self.stats.dropped["spool_lost"] += entry.points
                            self._warn_sometimes(
                                "spool_lost", "a spooled batch file vanished (deleted outside the exporter?); "
                                "dropped it and went on", points=entry.points, seq=entry.seq,
                                spool_dir=str(self.spool.dir), dropped_total=self.stats.dropped["spool_lost"],
                            )  # fmt: skip
                        continue  # else: dropped from the full spool meanwhile
                    except OSError as exc:
                        broken = True  # unreadable: drop it rather than block the queue for good
                        self.stats.failures["spool_io"] += 1
                        self.stats.dropped["spool_io"] += entry.points
                        self._log.error("cannot read a spooled batch; dropped it", error=str(exc), seq=entry.seq)
                        await asyncio.to_thread(self.spool.remove, entry.seq)
                    else:
                        return Batch(entry.seq, entry.points, entry.raw_bytes, gz, spooled=True)
                elif self._memory:
                    batch = self._memory.popleft()
                    self._memory_bytes -= len(batch.gz)
                    return batch
                else:
                    self._work.clear()
            if broken:
                continue
            self._changed.set()
            await self._work.wait()
        return None

    async def _deliver(self, batch: Batch) -> bool:
        """Send until it is written, rejected or dropped from the spool (True), or we are stopping (False)."""
        attempt = 0
        while True:
            if batch.spooled and self.spool is not None and not self.spool.has(batch.seq):
                return True  # evicted from the full spool while we waited: counted as dropped there
            t0 = self._monotonic()
            try:
                outcome = await self.sink.write(batch.gz)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a sink must not raise, but a library might
                outcome = WriteOutcome(ok=False, reason="error", message=f"{type(exc).__name__}: {exc}"[:500])
            took = self._monotonic() - t0
            st = self.stats
            st.write_seconds += took
            st.last_write_seconds = took
            st.requests[str(outcome.status) if outcome.status else (outcome.reason or "ok")] += 1
            if outcome.ok:
                st.points_written += batch.points
                st.bytes_written += batch.raw_bytes
                st.batches_written += 1
                st.last_success = self._clock()
                st.up = True
                if batch.spooled and self.spool is not None:
                    await asyncio.to_thread(self.spool.remove, batch.seq)
                if self._down:
                    self._down = False
                    self._log.info(
                        "influxdb writes recovered", spool_files=self.spool.files if self.spool else 0,
                        retries=st.retries,
                    )  # fmt: skip
                return True
            st.failures[outcome.reason or "error"] += 1
            if outcome.rejected:
                st.up = True  # the server answered; the data was bad
                st.dropped["rejected"] += batch.points
                line = await asyncio.to_thread(offending_line, outcome.message, batch.gz)
                self._log.error(
                    "influxdb rejected a batch; not retried", status=outcome.status, error=outcome.message,
                    line=line, points=batch.points, seq=batch.seq,
                )  # fmt: skip
                if batch.spooled and self.spool is not None:
                    await asyncio.to_thread(self.spool.remove, batch.seq)
                return True
            st.up = False
            if not self._down:
                self._down = True
                self._log.warning(
                    "influxdb write failed; spooling and retrying", reason=outcome.reason, status=outcome.status,
                    error=outcome.message, spool=self.spool is not None,
                )  # fmt: skip
            else:
                self._log.debug("influxdb write failed again", reason=outcome.reason, status=outcome.status)
            if not batch.spooled and self.spool is not None:
                async with self._order:
                    await self._to_spool(batch)
                    await self._spill_memory()
            attempt += 1
            st.retries += 1
            if await self._pause(self._backoff(attempt, outcome.retry_after)):
                return False

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        base = min(self.cfg.retry_max_seconds, self.cfg.retry_initial_seconds * 2 ** min(attempt - 1, 30))
        delay = base / 2 + self._rng() * base / 2  # "equal jitter": spread out, never shorter than half
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return delay

    async def _pause(self, delay: float) -> bool:
        """Sleep (injected) unless stopping; True if we are stopping."""
        if self._stopping:
            return True
        sleeper = asyncio.ensure_future(self._sleep(delay))
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sleeper, stopper):
                t.cancel()
            await asyncio.gather(sleeper, stopper, return_exceptions=True)
        return self._stopping

    def _warn_sometimes(self, kind: str, event: str, **kw: object) -> None:
        now = self._monotonic()
        last = self._last_log.get(kind)
        if last is None or now - last >= LOG_EVERY:
            self._last_log[kind] = now
            self._log.warning(event, **kw)

    # -- self-metrics ----------------------------------------------------------------------------------

    def families(self, clusters: set[str] | None = None) -> list[Family]:
        """`pve_exporter_influx_*` for this output (not per cluster: shown whatever `?cluster=` asks)."""
        st, o = self.stats, (self.output,)
        g, c = "gauge", "counter"

        def one(name: str, kind: str, help: str, value: float | None) -> FamilyBuilder:
            b = FamilyBuilder(name, kind, help, ("output",))  # type: ignore[arg-type]
            b.add(o, value)
            return b

        by = {
            "requests": FamilyBuilder(
                "pve_exporter_influx_requests_total", c,
                "Write requests by result: HTTP status, or timeout / connection / error", ("output", "result")),
            "failures": FamilyBuilder(
                "pve_exporter_influx_failures_total", c,
                "Failed writes by reason (http_<status>, timeout, connection, spool_io, error)", ("output", "reason")),
            "dropped": FamilyBuilder(
                "pve_exporter_influx_points_dropped_total", c,
                "Points that will never be written, by reason: spool_full (oldest dropped), rejected (400/413/422), "
                "queue_full (no spool), shutdown (no spool), spool_lost (file deleted behind our back), spool_io "
                "(unreadable), writer_restart (not taken by a reload's new writer)", ("output", "reason")),
        }  # fmt: skip
        for result, n in sorted(st.requests.items()):
            by["requests"].add((self.output, result), float(n))
        for reason in sorted({*FAILURE_REASONS, *st.failures}):
            by["failures"].add((self.output, reason), float(st.failures.get(reason, 0)))
        for reason in sorted({*DROP_REASONS, *st.dropped}):
            by["dropped"].add((self.output, reason), float(st.dropped.get(reason, 0)))
        builders = [
            one("pve_exporter_influx_up", g, "1 if the last write attempt got an answer (2xx or a rejection)",
                None if st.up is None else float(st.up)),
            one("pve_exporter_influx_points_written_total", c, "Points accepted by InfluxDB", float(st.points_written)),
            one("pve_exporter_influx_bytes_written_total", c,
                "Line-protocol bytes (before gzip) accepted by InfluxDB", float(st.bytes_written)),
            one("pve_exporter_influx_batches_written_total", c, "Batches accepted by InfluxDB",
                float(st.batches_written)),
            one("pve_exporter_influx_write_duration_seconds_total", c,
                "Seconds spent in write requests (divide by requests_total for the mean)", st.write_seconds),
            one("pve_exporter_influx_last_write_duration_seconds", g, "Duration of the last write request",
                st.last_write_seconds),
            one("pve_exporter_influx_retries_total", c, "Write attempts scheduled again after a failure",
                float(st.retries)),
            one("pve_exporter_influx_points_spooled_total", c, "Points written to the on-disk spool",
                float(st.points_spooled)),
            one("pve_exporter_influx_spool_bytes", g, "Size of the on-disk spool",
                float(self.spool.bytes) if self.spool else 0.0),
            one("pve_exporter_influx_spool_files", g, "Batches waiting in the on-disk spool",
                float(self.spool.files) if self.spool else 0.0),
            one("pve_exporter_influx_queue_bytes", g, "Gzipped batches waiting in memory", float(self._memory_bytes)),
            one("pve_exporter_influx_snapshots_dropped_total", c,
                "Snapshots dropped before encoding because the encoder fell behind", float(st.snapshots_dropped)),
            one("pve_exporter_influx_last_success_timestamp_seconds", g, "When a write last succeeded (Unix time)",
                st.last_success),
            *by.values(),
        ]  # fmt: skip
        return [b.build() for b in builders if b.samples]


async def _first(*events: asyncio.Event) -> None:
    """Wait until any of the events is set (the waiters are cancelled and awaited before returning)."""
    if any(e.is_set() for e in events):
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
