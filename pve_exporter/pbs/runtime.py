"""The backup servers of a daemon: build, run, stop and forget them like clusters, and reload them
as part of the daemon's one reload transaction (build aside → swap → stop what was replaced).

It also holds each server's latest snapshot: what `/metrics` shows of them (pre-rendered per
snapshot, grouped by family) and the join input (newest backup per guest of a linked cluster).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import structlog

from pve_exporter.collect.base import Family, FamilyBuilder
from pve_exporter.export.gzipjoin import Part, combine
from pve_exporter.export.prometheus import render
from pve_exporter.pbs.client import PbsClient
from pve_exporter.pbs.collectors import build_pbs_collectors
from pve_exporter.pbs.guest_backups import PbsSource
from pve_exporter.pbs.poller import PbsPoller, PbsSnapshot, PbsTiming
from pve_exporter.pbs.render import join, join_gz
from pve_exporter.settings import BackupServerSettings, CollectSettings, Settings
from pve_exporter.snapshot import GuestRef

log = structlog.get_logger("pve_exporter.pbs")


class _Observer:
    """PveClient's RequestObserver for one server: request counts and endpoint health."""

    def __init__(self, owner: BackupServers, server: str) -> None:
        self._owner, self._server = owner, server

    def api_request(self, endpoint: str, method: str, path: str, outcome: str, seconds: float) -> None:
        key = (self._server, endpoint, method, path, outcome)
        self._owner.api_requests[key] = self._owner.api_requests.get(key, 0) + 1

    def endpoint_health(self, endpoint: str, up: bool) -> None:
        self._owner.endpoint_up[(self._server, endpoint)] = up


@dataclass
class BackupServerRuntime:
    cfg: BackupServerSettings
    client: PbsClient
    poller: PbsPoller
    collect: CollectSettings  # the tier knobs it was built with: a reload that changes them rebuilds it
    task: asyncio.Task[None] | None = None


@dataclass
class Prepared:
    """A reload's backup-server part: built aside, applied by `swap`, finished by `finish`."""

    fresh: dict[str, BackupServerSettings]
    owns: Callable[[str], bool]  # the new config's shard
    built: dict[str, BackupServerRuntime] = field(default_factory=dict)
    replaced: list[BackupServerRuntime] = field(default_factory=list)
    removed: list[BackupServerRuntime] = field(default_factory=list)


class BackupServers:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        autostart: bool = True,
        global_limit: asyncio.Semaphore | None = None,
    ) -> None:
        self.clock, self.monotonic, self.autostart = clock, monotonic, autostart
        self._global_limit = global_limit
        self.servers: dict[str, BackupServerRuntime] = {}
        self.snapshots: dict[str, PbsSnapshot] = {}
        self.listeners: list[Callable[[PbsSnapshot], None]] = []  # told about every snapshot (InfluxDB output)
        self._page_cache: tuple[tuple[PbsSnapshot, ...], bytes, Part] | None = None
        # Every replica polls every backup server (the join needs it on the replica of each linked
        # cluster); only the replica whose static shard owns the server's name exposes its series.
        self.owns: Callable[[str], bool] = lambda _name: True
        self.api_requests: dict[tuple[str, str, str, str, str], int] = {}
        self.endpoint_up: dict[tuple[str, str], bool] = {}

    # -- lifecycle --------------------------------------------------------------------------

    def build(self, cfg: BackupServerSettings, settings: Settings) -> BackupServerRuntime:
        """Make (not start) a server's client and poller; raises on a bad CA file and the like."""
        client = PbsClient(
            cfg.endpoints,
            cfg.token_id,
            cfg.secret(),
            verify_ssl=cfg.verify_ssl,
            ca_file=str(cfg.ca_file) if cfg.ca_file else None,
            fingerprint=cfg.fingerprint_bytes(),
            timeout=cfg.timeout_seconds,
            max_concurrency=cfg.max_concurrency,
            observer=_Observer(self, cfg.name),
            clock=self.clock,
            monotonic=self.monotonic,
            global_limit=self._global_limit,
        )
        timing = PbsTiming(
            interval=cfg.interval_seconds,
            stale_after=cfg.stale_after,
            slow_interval=max(
                cfg.interval_seconds * settings.collect.slow_interval_factor, settings.collect.slow_min_interval_seconds
            ),
        )
        poller = PbsPoller(
            cfg.name,
            client,
            build_pbs_collectors(max(settings.collect.node_interval_seconds, cfg.interval_seconds)),
            timing,
            self._publish,
            clock=self.clock,
            monotonic=self.monotonic,
        )
        return BackupServerRuntime(cfg, client, poller, settings.collect)

    def run(self, rt: BackupServerRuntime) -> None:
        if self.autostart:
            phase = (zlib.crc32(rt.cfg.name.encode()) % 1000) / 1000 * rt.cfg.interval_seconds
            rt.task = asyncio.create_task(rt.poller.run_forever(phase), name=f"pbs-{rt.cfg.name}",
                                          context=contextvars.Context())  # not a reload request's context
        log.info("backup server started", server=rt.cfg.name, endpoints=rt.cfg.endpoints)

    @staticmethod
    async def stop_one(rt: BackupServerRuntime) -> None:
        """Cancel and await the poll loop (its cycle's requests with it), then close the client."""
        if rt.task is not None:
            rt.task.cancel()
            await asyncio.gather(rt.task, return_exceptions=True)
        await rt.client.close()

    def forget(self, name: str) -> None:
        self.snapshots.pop(name, None)
        for d in (self.api_requests, self.endpoint_up):
            for k in [k for k in d if k[0] == name]:
                del d[k]

    def start(self, settings: Settings) -> None:
        self.owns = settings.owns
        for cfg in settings.backup_servers:
            rt = self.build(cfg, settings)
            self.servers[cfg.name] = rt
            self.run(rt)

    async def stop(self) -> None:
        for name in list(self.servers):
            await self.stop_one(self.servers.pop(name))

    # -- reload: the daemon's transaction calls prepare → swap → finish (or discard) ----------

    def prepare(self, new: Settings) -> Prepared:
        prepared = Prepared({b.name: b for b in new.backup_servers}, new.owns)
        for name, cfg in prepared.fresh.items():
            rt = self.servers.get(name)
            if rt is None or rt.cfg != cfg or rt.collect != new.collect:
                try:
                    prepared.built[name] = self.build(cfg, new)
                except Exception as exc:  # the ones built so far never opened a session: nothing to close
                    raise ValueError(f"backup server {name!r}: {exc}") from exc
        return prepared

    async def discard(self, prepared: Prepared) -> None:
        for rt in prepared.built.values():
            await rt.client.close()

    def swap(self, prepared: Prepared) -> None:
        prepared.replaced = [self.servers[n] for n in prepared.built if n in self.servers]
        prepared.removed = [rt for n, rt in self.servers.items() if n not in prepared.fresh]
        kept = {n: rt for n, rt in self.servers.items() if n in prepared.fresh}
        kept.update(prepared.built)
        self.servers = kept
        self.owns = prepared.owns
        for rt in prepared.built.values():
            self.run(rt)

    async def finish(self, prepared: Prepared) -> None:
        for rt in prepared.replaced:
            await self.stop_one(rt)  # its last snapshot serves until the new poller's first cycle
        for rt in prepared.removed:
            await self.stop_one(rt)
            self.forget(rt.cfg.name)
            log.info("backup server removed", server=rt.cfg.name)

    # -- outputs ----------------------------------------------------------------------------

    def _publish(self, snap: PbsSnapshot) -> None:
        if snap.server in self.servers:  # a cycle finishing after its server was removed publishes nothing
            self.snapshots[snap.server] = snap
            for listener in self.listeners:
                listener(snap)

    def guest_backups(self, cluster: str) -> Mapping[str, float]:
        """Newest backup per guest id on every backup server linked to `cluster` (the join): in the
        cluster's namespace (and below) when `cluster_namespaces` names one, else in every namespace."""
        out: dict[str, float] = {}
        for name, rt in self.servers.items():
            snap = self.snapshots.get(name)
            if snap is None or cluster not in rt.cfg.clusters:
                continue
            mine = rt.cfg.cluster_namespaces.get(cluster)
            for ns, groups in snap.guest_backups.items():
                if mine is not None and ns != mine and not ns.startswith(mine + "/"):
                    continue
                for gid, t in groups.items():
                    if t > out.get(gid, 0.0):
                        out[gid] = t
        return out

    def sources(self, cluster: str, guest: GuestRef) -> list[PbsSource]:
        """The linked backup servers that hold the guest's group, where (control API: a guest's backups)."""
        kind = {"qemu": "vm", "lxc": "ct"}.get(guest.type)
        out = []
        for name, rt in sorted(self.servers.items()):
            if kind is None or cluster not in rt.cfg.clusters:
                continue
            mine = rt.cfg.cluster_namespaces.get(cluster)
            where = tuple(
                (store, ns) for store, ns in rt.poller.group_locations(kind, str(guest.vmid))
                if mine is None or ns == mine or ns.startswith(mine + "/")
            )  # fmt: skip
            if where:
                out.append(PbsSource(name, rt.client, where))
        return out

    def page(self, servers: Iterable[str]) -> bytes:
        """Data families of these servers, each family's lines together, then their self-metrics."""
        return self._data(servers)[0] + render(self.self_families(set(servers)))

    def gzip_part(self, servers: Iterable[str]) -> Part:
        """The same as a gzip part: the data compressed at render time, the self-metrics per call."""
        own = Part.of(render(self.self_families(set(servers))))
        data = self._data(servers)[1]
        return own if data is None else combine(data, own)

    def _data(self, servers: Iterable[str]) -> tuple[bytes, Part | None]:
        chosen = tuple(self.snapshots[s] for s in sorted(set(servers)) if s in self.snapshots and self.owns(s))
        if not chosen:
            return b"", None
        hit = self._page_cache
        if hit is None or len(hit[0]) != len(chosen) or any(a is not b for a, b in zip(hit[0], chosen, strict=True)):
            rendered = [s.rendered for s in chosen]
            hit = self._page_cache = (chosen, join(rendered), join_gz(rendered))  # one selection kept: /metrics
        return hit[1], hit[2]

    def self_families(self, servers: set[str]) -> list[Family]:
        g, c = "gauge", "counter"
        cycles = FamilyBuilder("pve_exporter_pbs_cycles_total", c, "Backup server collection cycles run", ("server",))
        overruns = FamilyBuilder(
            "pve_exporter_pbs_cycle_overruns_total",
            c,
            "Backup server cycle starts skipped (previous cycle still running)",
            ("server",),
        )
        dur = FamilyBuilder("pve_exporter_pbs_cycle_duration_seconds", g, "Wall time of the last cycle", ("server",))
        last = FamilyBuilder(
            "pve_exporter_pbs_last_success_timestamp_seconds",
            g,
            "When a cycle last reached the backup server's API (Unix time)",
            ("server",),
        )
        labels = ("server", "collector")
        ok = FamilyBuilder(
            "pve_exporter_pbs_collector_success",
            g,
            "1 if the backup server collector's last run fetched everything it needed",
            labels,
        )
        stale = FamilyBuilder(
            "pve_exporter_pbs_collector_stale", g, "1 if the collector serves data kept from an earlier cycle", labels
        )
        c_last = FamilyBuilder(
            "pve_exporter_pbs_collector_last_success_timestamp_seconds",
            g,
            "When the collector last fetched everything it needed (Unix time)",
            labels,
        )
        err = FamilyBuilder(
            "pve_exporter_pbs_collector_error_info",
            g,
            "Kind of the collector's last error (present while failing)",
            (*labels, "kind"),
        )
        api = FamilyBuilder(
            "pve_exporter_pbs_api_requests_total",
            c,
            "Backup server API requests by endpoint, templated path and HTTP status (or timeout, "
            "unreachable, certificate)",
            ("server", "endpoint", "method", "path", "status"),
        )
        ep = FamilyBuilder(
            "pve_exporter_pbs_endpoint_up",
            g,
            "1 if the last request sent to this endpoint got an answer",
            ("server", "endpoint"),
        )
        for name in sorted(servers & set(self.servers)):
            stats = self.servers[name].poller.stats
            cycles.add((name,), float(stats.cycles))
            overruns.add((name,), float(stats.overruns))
            dur.add((name,), stats.cycle_seconds)
            snap = self.snapshots.get(name)
            if snap is None:
                continue
            last.add((name,), snap.last_success)
            for cname, r in sorted(snap.results.items()):
                ok.add((name, cname), 1.0 if r.ok else 0.0)
                stale.add((name, cname), 1.0 if r.stale else 0.0)
                c_last.add((name, cname), r.last_success)
                if not r.ok and r.error_kind:
                    err.add((name, cname, r.error_kind), 1.0)
        for key, n in sorted(self.api_requests.items()):
            if key[0] in servers:
                api.add(key, float(n))
        for key2, up in sorted(self.endpoint_up.items()):
            if key2[0] in servers:
                ep.add(key2, 1.0 if up else 0.0)
        return [b.build() for b in (cycles, overruns, dur, last, ok, stale, c_last, err, api, ep) if b.samples]
