"""The daemon: one poller per cluster (and backup server) feeding one snapshot store, the InfluxDB
output, the control plane and the coordinator; reload as one transaction; what the control plane sees."""

from __future__ import annotations

import asyncio
import contextvars
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog

from pve_exporter import logs
from pve_exporter.collect import build_collectors
from pve_exporter.collect.base import Collector, Family, FamilyBuilder
from pve_exporter.control.host import ClusterView, FamilySource
from pve_exporter.control.plane import ControlPlane
from pve_exporter.coord.acting import ActingClusters
from pve_exporter.coord.coordinator import Coordinator, coordinator_for
from pve_exporter.coord.history import history_for
from pve_exporter.export.gzipjoin import Part, combine
from pve_exporter.export.influx_writer import InfluxWriter
from pve_exporter.export.prometheus import Exposition, render
from pve_exporter.pbs.guest_backups import read_guest_backups
from pve_exporter.pbs.poller import PbsSnapshot
from pve_exporter.pbs.runtime import BackupServers, Prepared
from pve_exporter.poller import NodeRouting, Poller, PollerConfig, PollerTiming
from pve_exporter.pve.client import PveClient
from pve_exporter.selfmetrics import SelfStats
from pve_exporter.settings import (
    ClusterSettings,
    ConfigError,
    InfluxSettings,
    Settings,
    load_settings,
    permission_warnings,
)
from pve_exporter.snapshot import GuestRef, Snapshot, SnapshotStore

log = structlog.get_logger("pve_exporter.app")


# Keys a reload cannot apply to a running daemon: reported (log + metric), never dropped silently.
RESTART_KEYS = (
    "listen",
    "web_config_file",
    "logging.level",
    "logging.format",
    "collect.max_concurrency_total",
    "control.enabled",
    "coordination",
    "control.history_db",
    "control.max_body_bytes",
    "web.header_timeout_seconds",
    "web.idle_timeout_seconds",
    "web.max_connections",
    "web.request_timeout_seconds",
)


def _setting(settings: Settings, key: str) -> object:
    value: object = settings
    for part in key.split("."):
        value = getattr(value, part)
    return value


def restart_required(running: Settings, configured: Settings) -> tuple[str, ...]:
    """The RESTART_KEYS whose configured value differs from the one the daemon started with."""
    return tuple(k for k in RESTART_KEYS if _setting(running, k) != _setting(configured, k))


SELF_METRICS_MAX_AGE = 1.0  # s: how long a scrape may reuse the rendered self-metrics of an unchanged selection


@dataclass(frozen=True, slots=True)
class OwnMetrics:
    """The self-metrics as rendered for one selection: text for plain scrapes, a part for gzip ones."""

    version: tuple[int, ...]
    made: float  # monotonic
    text: bytes
    part: Part


class ClusterRuntime:
    """A running cluster: its settings, client, poller and poll task."""

    def __init__(self, cfg: ClusterSettings, client: PveClient, poller: Poller) -> None:
        self.cfg = cfg
        self.client = client
        self.poller = poller
        self.task: asyncio.Task[None] | None = None


class Daemon:
    """Everything that runs: one poller per cluster feeding one store, rendered for /metrics."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        config_path: str | None = None,
        autostart: bool = True,
    ):
        self.settings = settings
        self.boot_settings = settings  # what the keys that need a restart are running with
        self.autostart = autostart  # False in tests: they drive cycles with poller.run_once()
        self.config_path = config_path
        self.clock = clock  # wall: exposed timestamps, stored history
        self.monotonic = monotonic  # schedules, deadlines, ages
        self.store = SnapshotStore()
        self.stats = SelfStats(known_clusters=lambda: self.clusters)  # their counters exist at 0 from start
        self.exposition = Exposition()
        self.store.add_preparer(self.exposition.prepare)
        self.store.subscribe(self.exposition.update)
        # InfluxDB output (settings.influxdb): created in start(); tests may replace the factory.
        self.influx: InfluxWriter | None = None
        self.influx_factory: Callable[[InfluxSettings], InfluxWriter] = lambda cfg: InfluxWriter(cfg, clock=self.clock)
        self.store.subscribe(self._to_influx)
        self.stats.extra.append(self._influx_families)
        self.clusters: dict[str, ClusterRuntime] = {}
        # The control API (settings.control.enabled): made here so the web app can hold it, started in start().
        history = history_for(settings, clock=clock, owned=lambda: set(self._leased or ()))  # coordination: shared
        self.control: ControlPlane | None = (
            ControlPlane(self, settings.control, store=history) if settings.control.enabled else None
        )
        self.last_reload_ok = True
        self.last_reload_success: float = clock()  # the config read at start counts as the first load
        self.restart_required: tuple[str, ...] = ()
        self._own: dict[tuple[str, ...], OwnMetrics] = {}
        self._draining: dict[str, ClusterRuntime] = {}  # removed clusters whose operations still run
        self._drains: set[asyncio.Task[None]] = set()  # self-metrics per selection, see own_metrics
        self._reload_lock = asyncio.Lock()  # SIGHUP and POST /api/v1/reload: one transaction at a time
        self._leased: set[str] | None = None  # targets this replica holds a lease for (coordination); None: all
        # Replicas (settings.coordination): PostgreSQL leases decide what this daemon polls (pve_exporter/coord/).
        self.coord: Coordinator | None = None
        if settings.coordination is not None:
            self._leased = set()  # nothing is polled before a lease is won
            self.coord = coordinator_for(
                settings.coordination,
                targets=self.targets,
                retarget=self.retarget, monotonic=monotonic,
            )  # fmt: skip
            self.stats.extra.append(self.coord.families)
            if self.control is not None:  # a dead replica's unfinished operations, on the clusters won here
                self.coord.on_gained = self.control.runner.recover
        # Coordination: clients to act on clusters another replica polls (any replica accepts an action).
        self.acting = ActingClusters(lambda: self.settings.clusters, self._build, self._stop)
        self.stats.extra.append(self._reload_families)
        self._started = False
        self._global_limit = asyncio.Semaphore(settings.collect.max_concurrency_total)
        # Proxmox Backup Servers (settings.backup_servers): built, run and reloaded like clusters.
        self.pbs = BackupServers(clock=clock, monotonic=monotonic, autostart=autostart, global_limit=self._global_limit)
        self.pbs.listeners.append(self._to_influx)  # PBS points in PBS's own metric-server layout

    def _collectors(self, settings: Settings | None = None) -> tuple[Collector, ...]:
        settings = settings or self.settings
        c = settings.collect
        return build_collectors(
            all_enum_states=c.all_enum_states,
            config_max_per_cycle=c.config_max_per_cycle,
            config_refresh_seconds=c.config_refresh_seconds,
            guest_agent=c.guest_agent_filesystems,
            guest_agent_max_per_cycle=c.guest_agent_max_per_cycle,
            guest_agent_refresh_seconds=c.guest_agent_refresh_seconds,
            node_storage_details=settings.influxdb is not None,  # feeds the InfluxDB storage points
            qemu_full_status=c.qemu_full_status or settings.influxdb is not None,
            guest_devices=c.guest_devices,
            guest_name_label=c.guest_name_label,
            node_interval=c.node_interval_seconds,
            node_detail_every_cycle=settings.influxdb is not None,
        )

    def _poller_config(self, cfg: ClusterSettings, settings: Settings) -> PollerConfig:
        timing = PollerTiming(
            interval=cfg.interval_seconds,
            timeout=cfg.timeout_seconds,
            stale_after=cfg.stale_after,
            slow_factor=settings.collect.slow_interval_factor,
            node_interval=max(settings.collect.node_interval_seconds, cfg.interval_seconds),
            slow_min=settings.collect.slow_min_interval_seconds,
        )
        return PollerConfig(self._collectors(settings), timing, keep_raw=settings.influxdb is not None)

    def _build(self, cfg: ClusterSettings, settings: Settings | None = None) -> ClusterRuntime:
        """Make (not start) a cluster's client and poller; raises on a bad CA file and the like."""
        settings = settings or self.settings
        client = PveClient(
            cfg.endpoints,
            cfg.token_id,
            cfg.secret(),
            verify_ssl=cfg.verify_ssl,
            ca_file=str(cfg.ca_file) if cfg.ca_file else None,
            timeout=cfg.timeout_seconds,
            max_concurrency=cfg.max_concurrency,
            observer=self.stats.observer(cfg.name),
            clock=self.clock,
            monotonic=self.monotonic,
            global_limit=self._global_limit,
        )
        pc = self._poller_config(cfg, settings)
        first = urlsplit(cfg.endpoints[0])
        routing = NodeRouting(
            enabled=cfg.direct_node_calls,
            overrides=cfg.node_endpoints,
            scheme=first.scheme,
            port=first.port or 8006,
        )
        poller = Poller(
            cfg.name, client, pc.collectors, self.store, self.stats, pc.timing, clock=self.clock,
            monotonic=self.monotonic, routing=routing, keep_raw=pc.keep_raw,
            external_backups=lambda: self.pbs.guest_backups(cfg.name),  # the join (README: Proxmox Backup Server)
        )  # fmt: skip
        return ClusterRuntime(cfg, client, poller)

    def _run(self, rt: ClusterRuntime) -> None:
        """Start a built runtime's poll loop (owned by the runtime; `_stop` cancels and awaits it)."""
        if self.autostart:
            # Spread clusters over the interval (stable per name), so their parsing does not pile up.
            phase = (zlib.crc32(rt.cfg.name.encode()) % 1000) / 1000 * rt.cfg.interval_seconds
            # A fresh context: a poller started by POST /api/v1/reload must not log with that request's id.
            rt.task = asyncio.create_task(rt.poller.run_forever(phase), name=f"poll-{rt.cfg.name}",
                                          context=contextvars.Context())
        log.info("cluster started", cluster=rt.cfg.name, endpoints=rt.cfg.endpoints, interval=rt.cfg.interval_seconds)

    def _start_one(self, cfg: ClusterSettings) -> None:
        rt = self._build(cfg)
        self.clusters[cfg.name] = rt
        self._run(rt)

    @staticmethod
    async def _stop_polling(rt: ClusterRuntime) -> None:
        """Cancel and await the poll loop (its cycle's requests with it)."""
        if rt.task is not None:
            rt.task.cancel()
            await asyncio.gather(rt.task, return_exceptions=True)

    async def _stop(self, rt: ClusterRuntime) -> None:
        """Stop polling, then close the client."""
        await self._stop_polling(rt)
        await rt.client.close()

    async def _retire(self, rt: ClusterRuntime) -> None:
        """A cluster removed from the config: polling stops now; while power operations on it are still
        followed, its client stays with them (no new action is accepted) and closes once they end."""
        name = rt.cfg.name
        if self.control is None or not self.control.runner.holds(name):
            await self._stop(rt)
            return
        await self._stop_polling(rt)
        self._draining[name] = rt
        log.info("cluster removed; its client stays until its running operations end", cluster=name)

        async def drain() -> None:
            try:
                assert self.control is not None
                await self.control.runner.cluster_released(name)
            finally:
                if self._draining.get(name) is rt:
                    del self._draining[name]
                await rt.client.close()

        task = asyncio.create_task(drain(), name=f"drain-{name}", context=contextvars.Context())
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    def _forget(self, name: str) -> None:
        self.store.remove(name)
        self.exposition.remove(name)
        self.stats.forget(name)

    async def _stop_one(self, name: str, *, forget: bool) -> None:
        rt = self.clusters.pop(name)
        await self._stop(rt)
        if forget:
            self._forget(name)

    async def start(self) -> bool:
        """Start every cluster; False (and nothing done) if already started."""
        if self._started:
            return False
        self._started = True
        logs.register_secrets(self.settings.secrets())
        await self._start_influx()
        for cfg in self.settings.clusters:
            if not self.owns(cfg.name):
                continue  # another shard's target (static sharding)
            self._start_one(cfg)
        self.pbs.start(self.settings)
        self.pbs.owns = self.owns  # its shard and, when coordinated, its lease decide who exposes a server
        if self.coord is not None:  # coordination: its leases start the clusters through retarget()
            self.coord.start()
        if self.control is not None:  # after the clusters: recovery reads tasks back through their clients
            await self.control.start()
        return True

    async def stop(self) -> None:
        if self.coord is not None:  # coordination: no retarget() while stopping; leases handed back below
            await self.coord.stop()
        if self.control is not None:  # first: running actions record their state while clients still work
            await self.control.stop()
        for task in list(self._drains):  # removed clusters' clients kept for their operations
            task.cancel()
        await asyncio.gather(*self._drains, return_exceptions=True)
        for name in list(self.clusters):
            await self._stop_one(name, forget=False)
        await self.pbs.stop()
        if self.coord is not None:  # polling has stopped: the others may take over at once
            await self.coord.leave()
            await self.acting.close()
        await self._stop_influx()  # after the pollers: what is still in memory goes to the spool
        self._started = False

    # -- InfluxDB output --------------------------------------------------------------------

    def _to_influx(self, snap: Snapshot | PbsSnapshot) -> None:
        if self.influx is not None:
            self.influx.offer(snap)

    def _reload_families(self, clusters: set[str] | None) -> list[Family]:
        ok = FamilyBuilder(
            "pve_exporter_config_last_reload_successful", "gauge",
            "1 if the last config reload (SIGHUP or POST /api/v1/reload) was applied, 0 if it was rejected", (),
        )  # fmt: skip
        ok.add((), 1.0 if self.last_reload_ok else 0.0)
        ts = FamilyBuilder(
            "pve_exporter_config_last_reload_success_timestamp_seconds", "gauge",
            "When the config was last loaded successfully (Unix time)", (),
        )  # fmt: skip
        ts.add((), self.last_reload_success)
        rr = FamilyBuilder(
            "pve_exporter_config_restart_required", "gauge",
            "1 if this config key changed since start and needs a restart to take effect (its old value runs)",
            ("key",),
        )  # fmt: skip
        for key in RESTART_KEYS:
            rr.add((key,), 1.0 if key in self.restart_required else 0.0)
        owned = FamilyBuilder(
            "pve_exporter_target_owned", "gauge",
            "1 if this replica polls and serves the configured target, 0 if another shard or replica does",
            ("target",),
        )  # fmt: skip
        for name in self.targets():
            owned.add((name,), 1.0 if self.owns(name) else 0.0)
        return [ok.build(), ts.build(), rr.build(), owned.build()]

    def _influx_families(self, clusters: set[str] | None) -> list[Family]:
        return self.influx.families(clusters) if self.influx is not None else []

    async def _start_influx(self) -> None:
        if self.settings.influxdb is not None and self.influx is None:
            self.influx = self.influx_factory(self.settings.influxdb)
            await self.influx.start()

    async def _stop_influx(self) -> None:
        if self.influx is not None:
            writer, self.influx = self.influx, None
            await writer.stop()

    async def reload(self) -> bool:
        """Re-read the config file and apply it as one transaction (SIGHUP and POST /api/v1/reload
        share a lock): build and validate everything new first, then swap, then stop what was
        replaced. Any error keeps the whole running set, is logged, and sets the reload metric to 0."""
        if self.config_path is None:
            return False
        async with self._reload_lock:
            try:
                return await self._reload()
            finally:
                self._own.clear()  # the reload's outcome is on the very next scrape, not a second later

    async def _reload(self) -> bool:
        assert self.config_path is not None
        try:
            new = load_settings(self.config_path)
        except ConfigError as exc:
            return self._reload_failed(str(exc))
        for warning in permission_warnings(self.config_path, new):
            log.warning("secrets readable by others", detail=warning)
        try:
            return await self._apply(new)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # anything unforeseen: the running set stays, loudly
            log.exception("reload failed unexpectedly, keeping the running config")
            return self._reload_failed(f"{type(exc).__name__}: {exc}")

    def _reload_failed(self, reason: str) -> bool:
        self.last_reload_ok = False
        log.error("reload rejected, keeping the running config", error=reason)
        return False

    def targets(self) -> list[str]:
        """Every configured target (clusters, then backup servers): what shards and leases divide."""
        return list(dict.fromkeys([*(c.name for c in self.settings.clusters),
                                   *(b.name for b in self.settings.backup_servers)]))  # fmt: skip

    def owns(self, name: str, settings: Settings | None = None) -> bool:
        """Whether this replica polls the target: its static shard, and its leases when coordinated."""
        settings = settings or self.settings
        return settings.owns(name) and (self._leased is None or name in self._leased)

    async def retarget(self, leased: set[str] | None) -> bool:
        """Poll exactly the leased targets from now on (None: every target of the shard). Same
        transaction as a reload, with the running config: build what is new, swap, stop the rest."""
        async with self._reload_lock:
            self._leased = None if leased is None else set(leased)
            try:
                return await self._apply(self.settings, reload=False)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retarget failed; the running set stays")
                return False

    async def _apply(self, new: Settings, *, reload: bool = True) -> bool:
        old = {n: rt.cfg for n, rt in self.clusters.items()}  # what runs now
        fresh = {c.name: c for c in new.clusters if self.owns(c.name, new)}  # a changed shard moves targets
        changed = [n for n, cfg in fresh.items() if old.get(n) != cfg]
        # 1. Build everything new aside; nothing running is touched yet.
        built: dict[str, ClusterRuntime] = {}
        writer: InfluxWriter | None = None
        pbs: Prepared | None = None
        influx_changed = new.influxdb != self.settings.influxdb and self._started
        try:
            for name in changed:
                built[name] = self._build(fresh[name], new)
            pbs = self.pbs.prepare(new)
            if influx_changed and new.influxdb is not None:
                writer = self.influx_factory(new.influxdb)
                await writer.start()
        except Exception as exc:
            for rt in built.values():
                await rt.client.close()
            if writer is not None:
                await writer.stop()
            if pbs is not None:
                await self.pbs.discard(pbs)
            name = next((n for n in changed if n not in built), None)
            where = f"cluster {name!r}: " if name is not None and writer is None else ""
            if not reload:
                log.error("could not start a newly owned target; the running set stays", error=f"{where}{exc}")
                return False
            return self._reload_failed(f"{where}{type(exc).__name__}: {exc}")
        # 2. Swap: from here on nothing can fail half-way.
        logs.register_secrets(new.secrets())
        self.settings = new
        replaced = [self.clusters[n] for n in changed if n in self.clusters]
        removed = [self.clusters[n] for n in old.keys() - fresh.keys() if n in self.clusters]
        clusters = {n: rt for n, rt in self.clusters.items() if n in fresh}
        clusters.update(built)
        self.clusters = clusters
        for name in changed:
            self._run(built[name])
        self.pbs.swap(pbs)
        self.pbs.owns = self.owns
        for name, rt in clusters.items():
            if name not in built:  # unchanged clusters take new collect knobs between two cycles
                rt.poller.reconfigure(self._poller_config(rt.cfg, new))
        old_writer = None
        if influx_changed:
            old_writer, self.influx = self.influx, writer
        if self.control is not None:
            self.control.reconfigure(new.control)
        # 3. Stop what was replaced (its last snapshot kept serving until the new poller's first cycle).
        for rt in replaced:
            await self._stop(rt)
        for rt in removed:
            await self._retire(rt)
            self._forget(rt.cfg.name)
            log.info("cluster removed", cluster=rt.cfg.name)
        await self.pbs.finish(pbs)
        if old_writer is not None:
            await old_writer.stop(successor=self.influx)  # what it could not deliver goes to the new writer
        if not reload:
            log.info("targets changed", clusters=sorted(fresh), started=sorted(changed),
                     stopped=sorted(rt.cfg.name for rt in removed))  # fmt: skip
            return True
        self.restart_required = restart_required(self.boot_settings, new)
        if self.restart_required:
            log.warning("config keys changed that need a restart; running with the old values",
                        keys=list(self.restart_required))  # fmt: skip
        self.last_reload_ok = True
        self.last_reload_success = self.clock()
        log.info("config reloaded", clusters=sorted(fresh), changed=sorted(changed),
                 removed=sorted(rt.cfg.name for rt in removed))  # fmt: skip
        return True

    # -- what the control plane sees of the daemon (control.host.ControlHost) ------------------

    def cluster_names(self) -> list[str]:
        return sorted(self.clusters)

    def cluster_view(self, name: str) -> ClusterView | None:
        retired = name not in self.clusters and name in self._draining
        rt = (self.clusters.get(name) or self._draining.get(name)
              or (self.acting.runtime(name) if self.coord is not None else None))
        if rt is None:
            return None
        return ClusterView(name, rt.client, rt.cfg.token_id, rt.cfg.interval_seconds, rt.cfg.stale_after,
                           tuple(rt.client.endpoints), retired=retired)  # fmt: skip

    def latest_snapshot(self, name: str) -> Snapshot | None:
        return self.store.get(name)

    async def guest_backups(self, cluster: str, guest: GuestRef) -> dict[str, Any]:
        """A guest's recent backups from its cluster's backup storages and linked backup servers."""
        rt = self.clusters[cluster]
        return await read_guest_backups(rt.client, self.store.get(cluster), guest, self.pbs.sources(cluster, guest))

    def refresh_soon(self, name: str) -> None:
        if (rt := self.clusters.get(name)) is not None:
            rt.poller.trigger()

    async def collect_now(self, name: str) -> None:
        """Wake the poll loop; without one (autostart off: tests) run one cycle here."""
        rt = self.clusters.get(name)
        if rt is None:
            return
        if rt.task is not None and not rt.task.done():
            rt.poller.trigger()
        else:
            await rt.poller.run_once()

    def add_self_metrics(self, source: FamilySource) -> None:
        self.stats.extra.append(source)

    def remove_self_metrics(self, source: FamilySource) -> None:
        if source in self.stats.extra:
            self.stats.extra.remove(source)

    def ready(self) -> bool:
        return all(self.store.get(name) is not None for name in self.clusters)

    def own_metrics(self, selection: Sequence[str]) -> OwnMetrics:
        """The self-metrics part of a scrape: rendered and compressed at most once per
        SELF_METRICS_MAX_AGE seconds per selection (at 20 clusters it is ~2 600 series, ~13 ms of the
        event loop per scrape otherwise), and again at once whenever a selected cluster's snapshot
        changed, so collection self-metrics are never older than the page they describe."""
        key = tuple(sorted(set(selection)))
        version = self.exposition.version(key)
        now = self.monotonic()
        hit = self._own.get(key)
        if hit is not None and hit.version == version and 0 <= now - hit.made < SELF_METRICS_MAX_AGE:
            return hit
        text = render(self.stats.families(list(key)))
        made = OwnMetrics(version, now, text, Part.of(text))
        if len(self._own) >= 16 and key not in self._own:
            self._own.pop(next(iter(self._own)))
        self._own[key] = made
        return made

    def metrics_body(self, selection: list[str], gzipped: bool, servers: Sequence[str] = ()) -> bytes:
        """The whole page as one bytes object (tests, tools); scrapes stream the parts instead."""
        own = render(self.stats.families(selection))
        if gzipped:
            return self.exposition.gzipped(selection, extra=combine(Part.of(own), self.pbs.gzip_part(servers)))
        return self.exposition.body(selection) + own + self.pbs.page(servers)
