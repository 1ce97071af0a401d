"""One poller per Proxmox Backup Server, on the cluster pollers' machinery (poller.py).

Each cycle fetches the due collectors' paths stage by stage under one deadline, with every task
owned by the cycle (`_CycleTasks`: cancelling the cycle cancels and awaits them). A failed fetch
keeps the last good payload for its collector's max age (marked stale), then drops it. Schedules
and ages follow the monotonic clock; the wall clock only stamps exposed timestamps. Parsing and
rendering run in a worker thread, never two at once for one server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import structlog

from pve_exporter.collect.base import Family, FamilyBuilder, Request
from pve_exporter.pbs.collectors import VERSION, PbsCollector, PbsView, guest_backups, listings
from pve_exporter.pbs.render import Rendered, render_server
from pve_exporter.poller import _CycleTasks, merge_families
from pve_exporter.pve.client import PveClient
from pve_exporter.pve.errors import PveError, PveNotFoundError, PveTimeoutError
from pve_exporter.schedule import Schedule
from pve_exporter.snapshot import CollectorResult, Payload


@dataclass(frozen=True, slots=True)
class PbsTiming:
    interval: float
    stale_after: float
    slow_interval: float = 300.0

    @property
    def deadline(self) -> float:
        """A cycle must end before the next one is due."""
        return max(0.5, self.interval * 0.9)


@dataclass(frozen=True, slots=True)
class PbsSnapshot:
    """One server's finished cycle: families (no `server` label), the rendered page part, the join input."""

    server: str
    seq: int
    started_at: float
    finished_at: float
    reachable: bool  # /version answered this cycle
    last_success: float | None  # wall time of the last cycle that reached the server
    reached_mono: float | None
    families: tuple[Family, ...]
    results: Mapping[str, CollectorResult]
    rendered: Rendered  # per family: exposition text with `server` as the first label
    guest_backups: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: MappingProxyType({}))
    # Node status and datastore usage as fetched in this very cycle (the InfluxDB output's points).
    fresh: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(slots=True)
class _Outcome:
    data: object = None
    error: PveError | None = None
    ended: float = 0.0


@dataclass(slots=True)
class PbsCycleStats:
    """Counters of one server, exported by pbs.selfmetrics."""

    cycles: int = 0
    overruns: int = 0
    cycle_seconds: float | None = None


class PbsPoller:
    def __init__(
        self,
        server: str,
        client: PveClient,
        collectors: Sequence[PbsCollector],
        timing: PbsTiming,
        publish: Callable[[PbsSnapshot], None],
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.server = server
        self.client = client
        self.collectors = tuple(collectors)
        self.timing = timing
        self.stats = PbsCycleStats()
        self._publish = publish
        self._clock = clock
        self._mono = monotonic
        self._lock = asyncio.Lock()
        self._cache: dict[str, dict[str, Payload]] = {c.name: {} for c in self.collectors}
        self._last_run: dict[str, float] = {}
        self._results: dict[str, CollectorResult] = {}
        self._last_reach: float | None = None
        self._last_reach_mono: float | None = None
        self._seq = 0
        self._log = structlog.get_logger("pve_exporter.pbs").bind(server=server)
        self._schedule = Schedule(
            lambda: self.run_once(),  # late-bound: a test may wrap run_once
            interval=lambda: self.timing.interval, monotonic=monotonic, log=self._log, sleep=sleep,
            on_overrun=self._overran,
        )  # fmt: skip

    def _overran(self, missed: int) -> None:
        self.stats.overruns += missed

    def trigger(self) -> None:
        self._schedule.trigger()

    def group_locations(self, backup_type: str, backup_id: str) -> list[tuple[str, str]]:
        """(datastore, namespace) of every cached group listing that holds this group (no I/O)."""
        own = {k: pl.data for k, pl in self._cache.get("groups", {}).items()}
        return [
            (store, ns) for store, ns, rows in listings(own, "groups")
            if any(isinstance(r, Mapping) and r.get("backup-type") == backup_type
                   and str(r.get("backup-id")) == backup_id for r in rows or [])
        ]  # fmt: skip

    async def run_forever(self, phase: float = 0.0) -> None:
        """Like the cluster poller (schedule.py): the first cycle at once, later ones every interval."""
        await self._schedule.run_forever(phase)

    async def run_once(self) -> PbsSnapshot:
        async with self._lock, _CycleTasks() as tasks:
            return await self._cycle(tasks)

    # -- one cycle --------------------------------------------------------------------------

    async def _fetch(self, req: Request) -> _Outcome:
        out = _Outcome()
        try:
            out.data = await self.client.get(req.path, dict(req.params) or None)
        except PveError as exc:
            out.error = exc
        out.ended = time.monotonic()
        return out

    async def _fetch_all(self, owner: _CycleTasks, reqs: Sequence[Request], budget: float) -> list[_Outcome]:
        if not reqs:
            return []
        tasks = [owner.spawn(self._fetch(r)) for r in reqs]
        done, pending = await asyncio.wait(tasks, timeout=max(budget, 0.001))
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        now = time.monotonic()
        return [
            t.result() if t in done and not t.cancelled()
            else _Outcome(error=PveTimeoutError("cycle deadline reached before the answer", path=r.path), ended=now)
            for t, r in zip(tasks, reqs, strict=True)
        ]  # fmt: skip

    def _max_age(self, c: PbsCollector) -> float:
        every = self.timing.slow_interval if c.tier == "slow" else max(c.min_interval, self.timing.interval)
        return max(self.timing.stale_after, 3 * every) if every > self.timing.interval else self.timing.stale_after

    def _due(self, c: PbsCollector, now: float) -> bool:
        last = self._last_run.get(c.name)
        if last is None:
            return True
        every = self.timing.slow_interval if c.tier == "slow" else c.min_interval
        return now - last >= every - 1e-6

    def _everything(self) -> dict[str, object]:
        return {k: pl.data for cache in self._cache.values() for k, pl in cache.items()}

    async def _cycle(self, tasks: _CycleTasks) -> PbsSnapshot:
        started = self._clock()
        t0 = time.monotonic()
        now = self._mono()
        collectors = self.collectors
        probe = tasks.spawn(self.client.probe_down_endpoints(retry_after=60.0))
        due = [c for c in collectors if self._due(c, now)]
        errors: dict[str, list[PveError]] = {}
        stale: dict[str, bool] = {}
        reached: bool | None = None
        for stage in sorted({c.stage for c in due}):
            everything = self._everything()
            planned = [(c, list(c.plan(everything))) for c in due if c.stage == stage]
            flat = [r for _, reqs in planned for r in reqs]
            outs = iter(await self._fetch_all(tasks, flat, self.timing.deadline - (time.monotonic() - t0)))
            for c, reqs in planned:
                got = [(r, next(outs)) for r in reqs]
                errors[c.name], stale[c.name] = self._store(c, got, now)
                self._last_run[c.name] = now
                for r, out in got:
                    if r == VERSION:
                        reached = out.error is None
        if reached:
            self._last_reach, self._last_reach_mono = self._clock(), now
        ran = {c.name for c in due}
        snap = await _in_thread(lambda: self._build(collectors, ran, errors, stale, started, bool(reached), now))
        if not probe.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(probe, timeout=max(0.001, self.timing.deadline - (time.monotonic() - t0)))
        self.stats.cycles += 1
        self.stats.cycle_seconds = time.monotonic() - t0
        self._publish(snap)
        return snap

    def _store(self, c: PbsCollector, got: list[tuple[Request, _Outcome]], now: float) -> tuple[list[PveError], bool]:
        """Put a due collector's answers in its cache (paths not planned any more are forgotten);
        returns its errors and whether stale data is served."""
        cache = self._cache.setdefault(c.name, {})
        planned = {r.key for r, _ in got}
        for k in [k for k in cache if k not in planned]:
            del cache[k]
        errs: list[PveError] = []
        stale = False
        for r, out in got:
            if out.error is not None and c.optional and isinstance(out.error, PveNotFoundError):
                out = _Outcome(data=None, ended=out.ended)  # this PBS has no such path: nothing to report
            if out.error is None:
                data = c.slim(out.data) if c.slim is not None else out.data
                cache[r.key] = Payload(data, now)
                continue
            errs.append(out.error)
            prev = cache.get(r.key)
            if prev is not None and now - prev.fetched_at <= self._max_age(c):
                stale = True
            else:
                cache.pop(r.key, None)
        return errs, stale

    def _build(
        self,
        collectors: tuple[PbsCollector, ...],
        ran: set[str],
        errors: Mapping[str, list[PveError]],
        stale: Mapping[str, bool],
        started: float,
        reachable: bool,
        now: float,
    ) -> PbsSnapshot:
        """Parse every collector (a collector not due keeps its last result), render (worker thread)."""
        wall = self._clock()
        for c in collectors:  # payloads past their collector's max age go, even when it is not due
            cache = self._cache.setdefault(c.name, {})
            for k in [k for k, pl in cache.items() if now - pl.fetched_at > self._max_age(c)]:
                del cache[k]
        everything = self._everything()
        families: list[Family] = []
        up = FamilyBuilder("pbs_up", "gauge", "1 if the backup server's API answered in the last cycle", ())
        up.add((), 1.0 if reachable else 0.0)
        families.append(up.build())
        for c in collectors:
            own = {k: pl.data for k, pl in self._cache.get(c.name, {}).items()}
            t_parse = time.monotonic()
            parse_error = None
            try:
                families.extend(c.parse(PbsView(own, everything, wall)))
            except Exception as exc:  # a parser bug costs only this collector
                self._log.exception("parser failed", collector=c.name)
                parse_error = f"{type(exc).__name__}: {exc}"
            prev = self._results.get(c.name)
            if c.name not in ran and prev is not None:
                self._results[c.name] = dataclasses.replace(prev, ran=False)
                continue
            errs = errors.get(c.name, [])
            ok = not errs and parse_error is None
            result = CollectorResult(
                name=c.name, ok=ok, stale=stale.get(c.name, False) and not ok, duration=time.monotonic() - t_parse,
                error_kind=errs[0].kind if errs else ("parse" if parse_error else None),
                error=str(errs[0]) if errs else parse_error,
                last_success=wall if ok else (prev.last_success if prev else None),
            )  # fmt: skip
            if not ok and (prev is None or prev.ok):
                self._log.warning("collector failing", collector=c.name, kind=result.error_kind, error=result.error)
            elif ok and prev is not None and not prev.ok:
                self._log.info("collector recovered", collector=c.name)
            self._results[c.name] = result
        self._seq += 1
        merged = merge_families(families)
        return PbsSnapshot(
            server=self.server, seq=self._seq, started_at=started, finished_at=self._clock(), reachable=reachable,
            last_success=self._last_reach, reached_mono=self._last_reach_mono, families=merged,
            results=MappingProxyType(dict(self._results)),
            rendered=MappingProxyType(render_server(merged, self.server)),
            guest_backups=MappingProxyType(guest_backups(everything)),
            fresh=MappingProxyType({k: pl.data for c in collectors if c.name in ("node", "datastores")
                                    for k, pl in self._cache.get(c.name, {}).items() if pl.fetched_at == now}),
        )  # fmt: skip


async def _in_thread(build: Callable[[], PbsSnapshot]) -> PbsSnapshot:
    """Run `build` in a worker thread; if the cycle is cancelled meanwhile, wait for the thread to
    end before letting the cancellation through, so two builds never touch the caches at once."""
    fut = asyncio.ensure_future(asyncio.to_thread(build))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        while not fut.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(fut)
        if not fut.cancelled():
            fut.exception()
        raise
