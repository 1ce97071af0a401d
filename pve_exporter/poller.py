"""One poller per cluster: runs collection cycles on its interval, never overlapping itself.

A cycle fetches /cluster/status and /cluster/resources once, asks every due collector which other
paths it needs (`plan`), fetches those concurrently under the cycle deadline, feeds the payloads to
the pure `parse` functions, and swaps a new Snapshot into the store. A failed fetch keeps the last
good payload for `stale_after` seconds (the collector is then marked stale), then drops it.

Schedules, staleness and deadlines follow the monotonic clock; the wall clock only stamps what is
exposed (snapshot and last-success timestamps). Every task a cycle starts is owned by that cycle:
cancelling the cycle cancels and awaits them, so nothing of a removed cluster runs on.
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

from pve_exporter.collect.base import ApiFailure, CacheView, Collector, Family, NodeRef, Request, Shared
from pve_exporter.collect.known import KnownGuest
from pve_exporter.collect.status import make_shared
from pve_exporter.pve.client import PveClient
from pve_exporter.pve.errors import PveApiError, PveError, PveTimeoutError, PveUnreachableError
from pve_exporter.pve.values import flag, integer, split_tags, text
from pve_exporter.schedule import Schedule
from pve_exporter.selfmetrics import SelfStats
from pve_exporter.snapshot import CollectorResult, GuestRef, Payload, Snapshot, SnapshotStore

STATUS = Request("/cluster/status")
RESOURCES = Request("/cluster/resources")


@dataclass(frozen=True, slots=True)
class PollerTiming:
    interval: float
    timeout: float
    stale_after: float
    slow_factor: int = 20
    node_interval: float = 60.0
    slow_min: float = 0.0

    @property
    def slow_interval(self) -> float:
        return max(self.interval * self.slow_factor, self.slow_min)

    @property
    def node_slices(self) -> int:
        """Node-tier work is split into this many parts, one per fast cycle: each node once per node interval."""
        return max(1, round(self.node_interval / self.interval))

    @property
    def deadline(self) -> float:
        """A cycle must end before the next one is due, whatever the per-request timeout says."""
        return max(0.5, self.interval * 0.9)


@dataclass(frozen=True, slots=True)
class NodeRouting:
    """Where /nodes/<n>/… requests go: the node's own address (from /cluster/status) or an override.

    Asking the owner directly spares the endpoint's pveproxy a proxy hop and keeps one slow node
    from tying up the endpoint. A node whose address does not answer is asked through the
    configured endpoints (proxied) for `retry_after` seconds before its own address is tried again.
    """

    enabled: bool = False
    overrides: Mapping[str, str] = field(default_factory=dict)
    scheme: str = "https"
    port: int = 8006
    retry_after: float = 300.0

    def url(self, node: NodeRef | None, name: str) -> str | None:
        if not self.enabled:
            return None
        if name in self.overrides:
            return self.overrides[name]
        if node is None or not node.ip:
            return None
        host = f"[{node.ip}]" if ":" in node.ip else node.ip
        return f"{self.scheme}://{host}:{self.port}"


class _CycleTasks:
    """The tasks one cycle started: on exit (normal or cancelled) the unfinished ones are cancelled
    and awaited, so no request outlives its cycle (or its cluster's client)."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Future[Any]] = []

    def spawn(self, aw: Awaitable[Any]) -> asyncio.Future[Any]:
        t = asyncio.ensure_future(aw)
        self._tasks.append(t)
        return t

    async def __aenter__(self) -> _CycleTasks:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pending = [t for t in self._tasks if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        for t in self._tasks:  # a failed task's exception is retrieved here, never "never retrieved"
            if t.done() and not t.cancelled():
                t.exception()


@dataclass(frozen=True, slots=True)
class PollerConfig:
    """What a reload may change in a running poller; adopted between cycles, never during one."""

    collectors: tuple[Collector, ...]
    timing: PollerTiming
    keep_raw: bool


@dataclass(slots=True)
class _Outcome:
    data: Any = None
    error: PveError | None = None
    started: float = 0.0
    ended: float = 0.0


@dataclass(frozen=True, slots=True)
class _CycleInput:
    """Everything a cycle fetched, each answer carried with the collector and request it belongs to."""

    started: float  # wall
    started_mono: float
    t0: float  # time.monotonic() at start, for measured durations
    collectors: tuple[Collector, ...]
    shared: Shared
    fetched: list[tuple[Collector, list[tuple[Request, _Outcome]]]]
    status_out: _Outcome
    res_out: _Outcome
    shared_stale: dict[str, bool]


async def _finish_in_thread(
    build: Callable[[_CycleInput, float], Snapshot], cycle: _CycleInput, now: float
) -> Snapshot:
    """Run `build` in a worker thread. If the cycle is cancelled meanwhile, wait for the thread to end
    before letting the cancellation through: the poller's caches are never touched by two cycles."""
    fut = asyncio.ensure_future(asyncio.to_thread(build, cycle, now))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        while not fut.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(fut)
        if not fut.cancelled():
            fut.exception()  # retrieved: the cancellation is what the caller sees
        raise


def merge_families(families: Sequence[Family]) -> tuple[Family, ...]:
    """Several collectors may add to one family (pve_up); the exposition needs each name once."""
    by_name: dict[str, Family] = {}
    for f in families:
        prev = by_name.get(f.name)
        if prev is None:
            by_name[f.name] = f
        elif prev.labels == f.labels:
            by_name[f.name] = Family(prev.name, prev.kind, prev.help, prev.labels, prev.samples + f.samples)
    return tuple(by_name[n] for n in sorted(by_name))


def guest_inventory(resources: Any, known: Mapping[str, KnownGuest] | None = None) -> dict[int, GuestRef]:
    """vmid → where the guest lives and what it is; a guest of a dead node keeps its last known name."""
    out: dict[int, GuestRef] = {}
    for row in resources or []:
        kind = row.get("type")
        vmid = integer(row.get("vmid"))
        if kind not in ("qemu", "lxc") or vmid is None:
            continue
        name = text(row.get("name"))
        template = flag(row.get("template"))
        prev = known.get(f"{kind}/{vmid}") if known else None
        if prev is not None:  # a status-less row (dead node): the last known name and template
            name = name if name is not None else prev.name
            template = template if template is not None else prev.template == "1"
        out[vmid] = GuestRef(
            vmid=vmid,
            node=text(row.get("node")) or "",
            type=kind,
            name=name or "",
            status=text(row.get("status")) or "unknown",
            template=bool(template),
            tags=split_tags(row.get("tags")),
        )
    return out


class Poller:
    def __init__(
        self,
        cluster: str,
        client: PveClient,
        collectors: Sequence[Collector],
        store: SnapshotStore,
        stats: SelfStats,
        timing: PollerTiming,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        routing: NodeRouting | None = None,
        keep_raw: bool = False,
        external_backups: Callable[[], Mapping[str, float]] | None = None,
    ) -> None:
        self.cluster = cluster
        self._external_backups = external_backups  # the PBS join: read (no I/O) once per cycle
        self.keep_raw = keep_raw  # the InfluxDB output reads raw payloads from the snapshot
        self.routing = routing or NodeRouting()
        self._direct_down: dict[str, float] = {}  # node → until when its own address is not tried
        self.client = client
        self.collectors = tuple(collectors)
        self.store = store
        self.stats = stats
        self.timing = timing
        self._clock = clock  # wall: snapshot and last-success timestamps only
        self._mono = monotonic  # schedules, staleness, cache ages
        self._pending: PollerConfig | None = None
        self._log = structlog.get_logger("pve_exporter.poller").bind(cluster=cluster)
        self._lock = asyncio.Lock()
        self._schedule = Schedule(
            lambda: self.run_once(),  # late-bound: a test may wrap run_once
            interval=lambda: self.timing.interval, monotonic=monotonic, log=self._log, sleep=sleep,
            on_overrun=self._overran,
        )  # fmt: skip
        self._shared_cache: dict[str, Payload] = {}
        self._cache: dict[str, dict[str, Payload]] = {c.name: {} for c in self.collectors}
        self._last_run: dict[str, float] = {}
        self._cycle_no = 0
        # Node tier: the keys each collector wants over all slices, and the errors of the last fetch per key.
        self._node_keep: dict[str, set[str]] = {}
        self._node_errors: dict[str, dict[str, PveError]] = {}
        self.requests_by_tier: dict[str, int] = {"fast": 0, "node": 0, "slow": 0}
        self._results: dict[str, CollectorResult] = {}
        self._last_reach: float | None = None
        self._last_reach_mono: float | None = None
        self._known_guests: Mapping[str, KnownGuest] = {}
        self._seq = 0

    # -- scheduling -------------------------------------------------------------------------

    def reconfigure(self, config: PollerConfig) -> None:
        """Take new collectors / timing / raw-payload needs (config reload). A cycle in flight
        finishes with the set it started with; the new one applies from the next cycle on."""
        self._pending = config
        if not self._lock.locked():
            self._adopt()

    def _adopt(self) -> None:
        cfg, self._pending = self._pending, None
        if cfg is None:
            return
        self.collectors = cfg.collectors
        self.timing = cfg.timing
        self.keep_raw = cfg.keep_raw
        names = {c.name for c in cfg.collectors}
        for gone in [n for n in self._cache if n not in names]:  # caches of kept collectors carry over
            del self._cache[gone]
            self._results.pop(gone, None)
            self._last_run.pop(gone, None)

    def _overran(self, missed: int) -> None:
        self.stats.overruns[self.cluster] += missed

    def trigger(self) -> None:
        """Ask for a cycle now (control API `collect`); coalesces with one already asked for."""
        self._schedule.trigger()

    @property
    def triggered(self) -> bool:
        return self._schedule.triggered

    async def run_forever(self, phase: float = 0.0) -> None:
        """Cycle every interval (schedule.py): at once, then shifted by `phase`."""
        await self._schedule.run_forever(phase)

    # -- one cycle --------------------------------------------------------------------------

    async def run_once(self) -> Snapshot:
        async with self._lock:  # single flight: a triggered cycle waits for the running one
            self._adopt()
            try:
                async with _CycleTasks() as tasks:
                    return await self._cycle(tasks)
            finally:
                self._adopt()  # a reload that came during the cycle applies now

    async def _fetch(self, req: Request, shared: Shared | None = None) -> _Outcome:
        out = _Outcome(started=time.monotonic())
        params = dict(req.params) or None
        try:
            direct = self._direct_url(req, shared)
            if direct is not None:
                try:
                    out.data = await self.client.get(req.path, params, endpoint=direct)
                    return out
                except PveError as exc:
                    if exc.status is not None:
                        raise  # the node answered: its answer stands
                    assert req.node is not None
                    self._direct_down[req.node] = self._mono() + self.routing.retry_after
                    self._log.warning(
                        "node address not answering, asking through the endpoints",
                        node=req.node, address=direct, error=str(exc), retry_after=self.routing.retry_after,
                    )  # fmt: skip
            out.data = await self.client.get(req.path, params)
        except PveError as exc:
            out.error = exc
        finally:
            out.ended = time.monotonic()
        return out

    def _direct_url(self, req: Request, shared: Shared | None) -> str | None:
        if req.node is None or shared is None or not self.routing.enabled:
            return None
        until = self._direct_down.get(req.node)
        if until is not None and self._mono() < until:
            return None
        ref = next((n for n in shared.nodes if n.name == req.node), None)
        return self.routing.url(ref, req.node)

    async def _fetch_all(
        self, owner: _CycleTasks, reqs: Sequence[Request], budget: float, shared: Shared | None = None
    ) -> list[_Outcome]:
        if not reqs:
            return []
        tasks = [owner.spawn(self._fetch(r, shared)) for r in reqs]
        done, pending = await asyncio.wait(tasks, timeout=max(budget, 0.001))
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        now = time.monotonic()
        outs = []
        for t, r in zip(tasks, reqs, strict=True):
            if t in done and not t.cancelled():
                outs.append(t.result())
            else:
                err = PveTimeoutError("cycle deadline reached before the answer", path=r.path)
                outs.append(_Outcome(error=err, started=now, ended=now))
        return outs

    def _keep(self, cache: dict[str, Payload], key: str, out: _Outcome, now: float, max_age: float) -> bool:
        """Store a fresh payload, or keep the cached one while it is young enough. True if stale data is served."""
        if out.error is None:
            cache[key] = Payload(out.data, now)
            return False
        prev = cache.get(key)
        if prev is not None and now - prev.fetched_at <= max_age:
            return True
        cache.pop(key, None)
        return False

    def _max_age(self, c: Collector) -> float:
        if c.max_age is not None:
            return c.max_age
        if c.tier == "slow":
            return max(self.timing.stale_after, 3 * self.timing.slow_interval)
        if c.tier == "node":
            return self.timing.node_interval + self.timing.stale_after
        return self.timing.stale_after

    async def _cycle(self, tasks: _CycleTasks) -> Snapshot:
        started = self._clock()
        started_mono = self._mono()
        t0 = time.monotonic()  # real elapsed time: the deadline and the measured durations
        budget = self.timing.deadline
        collectors = self.collectors  # this cycle's set, whatever a reload does meanwhile
        # Endpoints that failed get a cheap probe once a minute, beside the cycle, never blocking it.
        probe = tasks.spawn(self.client.probe_down_endpoints(retry_after=60.0))
        status_out, res_out = await self._fetch_all(tasks, [STATUS, RESOURCES], budget)
        now = self._mono()
        shared, shared_stale = self._absorb_shared(status_out, res_out, now)
        due = self._due(collectors, shared, now)
        flat = [r for _, reqs in due for r in reqs]
        self.requests_by_tier["fast"] += 2  # /cluster/status and /cluster/resources
        for c, reqs in due:
            self.requests_by_tier[c.tier] += len(reqs)
        outs = iter(await self._fetch_all(tasks, flat, budget - (time.monotonic() - t0), shared))
        fetched = [(c, [(r, next(outs)) for r in reqs]) for c, reqs in due]
        cycle = _CycleInput(started, started_mono, t0, collectors, shared, fetched, status_out, res_out, shared_stale)
        # Parsing (and, through the store's preparers, rendering) is CPU work: a worker thread keeps
        # the event loop free to answer scrapes meanwhile (the GIL is handed over every few ms).
        snap = await _finish_in_thread(self._build, cycle, self._mono())
        if not probe.done():
            # On timeout wait_for cancels the probe; the next one is due in a minute.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(probe, timeout=max(0.001, budget - (time.monotonic() - t0)))
        elif not probe.cancelled() and probe.exception() is not None:
            self._log.debug("endpoint probe failed", error=str(probe.exception()))
        self.stats.cycles[self.cluster] += 1
        self.stats.cycle_seconds[self.cluster] = time.monotonic() - t0
        self.stats.snapshots[self.cluster] = snap
        self.store.put(snap)
        return snap

    def _absorb_shared(self, status_out: _Outcome, res_out: _Outcome, now: float) -> tuple[Shared, dict[str, bool]]:
        stale_after = self.timing.stale_after
        stale = {
            STATUS.key: self._keep(self._shared_cache, STATUS.key, status_out, now, stale_after),
            RESOURCES.key: self._keep(self._shared_cache, RESOURCES.key, res_out, now, stale_after),
        }
        status_p = self._shared_cache.get(STATUS.key)
        res_p = self._shared_cache.get(RESOURCES.key)
        shared = make_shared(
            self.cluster, status_p.data if status_p else None, res_p.data if res_p else None, self._known_guests
        )
        self._known_guests = shared.known_guests  # last known guest names/tags, across cycles (issue 17)
        if self._external_backups is not None:
            shared = dataclasses.replace(shared, external_backups=self._external_backups())
        if res_out.error is None:
            self._last_reach = self._clock()
            self._last_reach_mono = now
        self._log_shared(res_out.error)
        return shared, stale

    def _due(
        self, collectors: Sequence[Collector], shared: Shared, now: float
    ) -> list[tuple[Collector, list[Request]]]:
        """The collectors whose cadence is due, each with the paths its `plan` asks for."""
        everything = {k: p.data for cache in self._cache.values() for k, p in cache.items()}
        due: list[tuple[Collector, list[Request]]] = []
        self._cycle_no += 1
        for c in collectors:
            last = self._last_run.get(c.name)
            if c.min_interval and last is not None and now - last < c.min_interval - 1e-6:
                continue
            ages = {k: p.fetched_at for k, p in self._cache.setdefault(c.name, {}).items()}
            reqs = list(c.plan(shared, CacheView(now, ages, everything, self.timing.interval)))
            slices = self._slices(c)
            if slices:
                self._node_keep[c.name] = {r.key for r in reqs}
                if last is not None:  # the first run fetches everything: a full set of series at start-up
                    reqs = self._slice(reqs, shared, slices)
                    if not reqs:
                        continue  # nothing in this cycle's share: the last result stands
            due.append((c, reqs))
            self._last_run[c.name] = now
        return due

    def _slices(self, c: Collector) -> int:
        """Into how many fast cycles a node or slow collector's work is dealt (0: not dealt, fast tier)."""
        if c.tier == "node":
            return self.timing.node_slices
        if c.tier == "slow":
            return max(1, round(self.timing.slow_interval / self.timing.interval))
        return 0

    def _slice(self, reqs: list[Request], shared: Shared, slices: int) -> list[Request]:
        """This cycle's share: per-node requests of every `slices`-th node (nodes in name order, dealt
        round-robin), cluster-wide ones on the first turn only. Each request comes once per round of
        `slices` cycles, and no cycle carries a whole tier (1 300 requests at 200 nodes)."""
        if slices == 1:
            return reqs
        turn = self._cycle_no % slices
        mine = {n.name for i, n in enumerate(shared.nodes) if i % slices == turn}
        return [r for r in reqs if (r.node in mine if r.node is not None else turn == 0)]

    def _build(self, cycle: _CycleInput, now: float) -> Snapshot:
        """Store what was fetched, parse every collector, make the snapshot (runs in a worker thread).

        `now` is monotonic. A collector succeeds only when the data it publishes came from PVE within
        its freshness window: one that planned nothing because the cluster was never reached (no
        node list at all) fails with the shared endpoints' error instead of reporting success.
        """
        phase_start = time.monotonic()
        shared = cycle.shared
        shared_errors = {"resources": cycle.res_out.error, "status": cycle.status_out.error}
        no_inputs = shared.status is None and shared.resources is None
        unreached = cycle.res_out.error or cycle.status_out.error
        due_reqs = {c.name: got for c, got in cycle.fetched}
        all_families: list[Family] = []
        for c in cycle.collectors:
            got = due_reqs.get(c.name)
            cache = self._cache.setdefault(c.name, {})
            errors: list[PveError] = []
            stale = False
            ended = phase_start
            if got is not None:
                stale, errors, ended = self._store_fetched(c, cache, got, now, phase_start)
                for need, key, name in ((c.needs_resources, RESOURCES.key, "resources"),
                                        (c.needs_status, STATUS.key, "status")):  # fmt: skip
                    err = shared_errors[name]
                    if need and err is not None:
                        errors.insert(0, err)
                        stale |= cycle.shared_stale[key]
                if not got and no_inputs and not errors:
                    errors.append(unreached or PveUnreachableError("the cluster was never reached: no node list"))
            max_age = self._max_age(c)
            for k in [k for k, p in cache.items() if now - p.fetched_at > max_age]:
                del cache[k]
            t_parse = time.monotonic()
            families, parse_error = self._parse(c, shared, cache)
            all_families.extend(families)
            prev = self._results.get(c.name)
            if got is None and prev is not None:  # not due: its last result stands
                self._results[c.name] = dataclasses.replace(prev, ran=False)
                continue
            ok = not errors and parse_error is None
            waited = (ended - phase_start if got else 0.0) + (
                phase_start - cycle.t0 if (c.needs_resources or c.needs_status) else 0.0
            )
            result = CollectorResult(
                name=c.name,
                ok=ok,
                stale=stale and not ok,
                duration=waited + time.monotonic() - t_parse,
                error_kind=errors[0].kind if errors else ("parse" if parse_error else None),
                error=str(errors[0]) if errors else parse_error,
                last_success=self._clock() if ok else (prev.last_success if prev else None),
            )
            self._log_transition(prev, result)
            self._results[c.name] = result
        self._seq += 1
        payloads: dict[str, Payload] = dict(self._shared_cache)
        for cache in self._cache.values():
            payloads.update(cache)
        snap = Snapshot(
            cluster=self.cluster,
            seq=self._seq,
            started_at=cycle.started,
            finished_at=self._clock(),
            reachable=cycle.res_out.error is None,
            last_success=self._last_reach,
            families=merge_families(all_families),
            results=MappingProxyType(dict(self._results)),
            payloads=MappingProxyType(payloads),
            shared=shared,
            guests=MappingProxyType(guest_inventory(shared.resources, shared.known_guests)),
            started_mono=cycle.started_mono,
            reached_mono=self._last_reach_mono,
            requests_by_tier=MappingProxyType(dict(self.requests_by_tier)),
        )
        self.store.prepare(snap)
        return snap

    def _store_fetched(
        self, c: Collector, cache: dict[str, Payload], got: list[tuple[Request, _Outcome]], now: float, t: float
    ) -> tuple[bool, list[PveError], float]:
        """Put a due collector's answers in its cache; returns (serving stale data, errors, last answer time)."""
        node_tier = c.tier in ("node", "slow")  # dealt over the cycles
        if node_tier:  # other slices' payloads stay; those of nodes gone (or offline) go
            keep = self._node_keep.get(c.name, set())
            for k in [k for k in cache if k not in keep]:
                del cache[k]
        elif not c.keep_unplanned:
            planned = {r.key for r, _ in got}
            for k in [k for k in cache if k not in planned]:
                del cache[k]
        stale = False
        errors: list[PveError] = []
        ended = t
        for r, out in got:
            ended = max(ended, out.ended)
            if c.api_errors_are_data and isinstance(out.error, PveApiError):
                out = _Outcome(ApiFailure(out.error.status, out.error.message), None, out.started, out.ended)
            elif out.error is None and c.slim is not None and not (c.slim_unless_raw and self.keep_raw):
                out.data = c.slim(out.data)
            stale |= self._keep(cache, r.key, out, now, self._max_age(c))
            if out.error is not None:
                errors.append(out.error)
        if node_tier:
            # A node that failed in its slice keeps the collector failing until its next turn, so
            # the success metric does not flap with the rotation of the slices.
            known = self._node_errors.setdefault(c.name, {})
            for r, out in got:
                if out.error is None:
                    known.pop(r.key, None)
                else:
                    known[r.key] = out.error
            keep = self._node_keep.get(c.name, set())
            for k in [k for k in known if k not in keep]:
                del known[k]
            fetched = {r.key for r, _ in got}
            errors.extend(e for k, e in known.items() if k not in fetched)
            stale |= any(k in cache for k in known)
        return stale, errors, ended

    def _parse(self, c: Collector, shared: Shared, cache: dict[str, Payload]) -> tuple[list[Family], str | None]:
        if (c.needs_resources and shared.resources is None) or (c.needs_status and shared.status is None):
            return [], None
        try:
            return c.parse(shared, {k: p.data for k, p in cache.items()}), None
        except Exception as exc:  # a parser bug costs only this collector
            self._log.exception("parser failed", collector=c.name)
            return [], f"{type(exc).__name__}: {exc}"

    _was_reachable: bool | None = None

    def _log_shared(self, error: PveError | None) -> None:
        reachable = error is None
        if reachable != self._was_reachable:
            if reachable:
                self._log.info("cluster reachable", endpoint=self.client.preferred_endpoint)
            else:
                self._log.warning("cluster unreachable", error=str(error), kind=error.kind if error else None)
        self._was_reachable = reachable

    def _log_transition(self, prev: CollectorResult | None, new: CollectorResult) -> None:
        if not new.ok and (prev is None or prev.ok):
            self._log.warning(
                "collector failing", collector=new.name, kind=new.error_kind, error=new.error, stale=new.stale
            )
        elif new.ok and prev is not None and not prev.ok:
            self._log.info("collector recovered", collector=new.name)
