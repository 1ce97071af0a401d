"""The daemon's own metrics (`pve_exporter_*`): plain counters updated in place, turned into Families.

Kept out of prometheus_client's global registry on purpose: the label sets are small and known,
and exposing them through the same renderer lets `/metrics?cluster=X` filter them too.
"""

from __future__ import annotations

import platform
from collections import defaultdict
from collections.abc import Callable, Iterable

from pve_exporter import __version__
from pve_exporter.collect.base import Family, FamilyBuilder
from pve_exporter.export.process_metrics import StandardMetrics
from pve_exporter.snapshot import Snapshot


class ApiObserver:
    """Per-cluster request counters; the PVE client calls it for every attempt."""

    def __init__(self, stats: SelfStats, cluster: str) -> None:
        self._stats = stats
        self._cluster = cluster

    def api_request(self, endpoint: str, method: str, path: str, outcome: str, seconds: float) -> None:
        key = (self._cluster, endpoint, method, path, outcome)
        self._stats.api_requests[key] += 1
        self._stats.api_seconds[(self._cluster, method, path)] += seconds

    def endpoint_health(self, endpoint: str, up: bool) -> None:
        self._stats.endpoint_up[(self._cluster, endpoint)] = up


# Every cycle requests these two whatever the collectors: their duration counters exist from start.
# (Per-node and per-guest paths, endpoints and HTTP statuses appear with their first request.)
SHARED_PATHS = ("/cluster/resources", "/cluster/status")


class SelfStats:
    """`known_clusters` gives the configured clusters as of the latest reload: their counters are
    exported at 0 before the first cycle, so `increase()` sees the first event (README: "Counters
    from the start")."""

    def __init__(self, known_clusters: Callable[[], Iterable[str]] = tuple) -> None:
        self.known_clusters = known_clusters
        self.api_requests: defaultdict[tuple[str, str, str, str, str], int] = defaultdict(int)
        self.api_seconds: defaultdict[tuple[str, str, str], float] = defaultdict(float)
        self.endpoint_up: dict[tuple[str, str], bool] = {}
        self.cycles: defaultdict[str, int] = defaultdict(int)
        self.overruns: defaultdict[str, int] = defaultdict(int)
        self.cycle_seconds: dict[str, float] = {}
        self.snapshots: dict[str, Snapshot] = {}
        # Other parts (InfluxDB writer, control API) add their own families through these.
        self.extra: list[Callable[[set[str] | None], list[Family]]] = []
        self.extra.append(StandardMetrics().families)  # process_* and python_* (no cluster label)

    def observer(self, cluster: str) -> ApiObserver:
        return ApiObserver(self, cluster)

    def forget(self, cluster: str) -> None:
        """A cluster removed by reload loses its series instead of freezing them."""
        for d in (self.api_requests, self.api_seconds, self.endpoint_up):
            for k in [k for k in d if k[0] == cluster]:
                del d[k]
        for d2 in (self.cycles, self.overruns, self.cycle_seconds, self.snapshots):
            d2.pop(cluster, None)

    def families(self, clusters: Iterable[str] | None = None) -> list[Family]:
        keep = None if clusters is None else set(clusters)

        def want(c: str) -> bool:
            return keep is None or c in keep

        g = "gauge"
        build = FamilyBuilder(
            "pve_exporter_build_info", g, "Build information of the running pve_exporter", ("version", "python_version")
        )
        build.add((__version__, platform.python_version()), 1.0)
        up = FamilyBuilder(
            "pve_exporter_cluster_up", g, "1 if the last cycle reached the cluster's API (/cluster/resources)",
            ("cluster",),
        )  # fmt: skip
        last_ok = FamilyBuilder(
            "pve_exporter_last_success_timestamp_seconds", g,
            "When a cycle last reached the cluster's API (Unix time). Data is polled, not fetched per scrape.",
            ("cluster",),
        )  # fmt: skip
        cyc_dur = FamilyBuilder(
            "pve_exporter_cycle_duration_seconds", g, "Wall time of the last collection cycle", ("cluster",)
        )
        cycles = FamilyBuilder("pve_exporter_cycles_total", "counter", "Collection cycles run", ("cluster",))
        overruns = FamilyBuilder(
            "pve_exporter_cycle_overruns_total", "counter",
            "Cycle starts skipped because the previous cycle was still running past its slot", ("cluster",),
        )  # fmt: skip
        c_ok = FamilyBuilder(
            "pve_exporter_collector_success", g, "1 if the collector's last run fetched everything it needed",
            ("cluster", "collector"),
        )  # fmt: skip
        c_dur = FamilyBuilder(
            "pve_exporter_collector_duration_seconds", g, "Wall time of the collector's last run",
            ("cluster", "collector"),
        )  # fmt: skip
        c_last = FamilyBuilder(
            "pve_exporter_collector_last_success_timestamp_seconds", g,
            "When the collector last fetched everything it needed (Unix time)", ("cluster", "collector"),
        )  # fmt: skip
        c_stale = FamilyBuilder(
            "pve_exporter_collector_stale", g,
            "1 if the collector serves data kept from an earlier cycle because its last fetch failed",
            ("cluster", "collector"),
        )  # fmt: skip
        c_err = FamilyBuilder(
            "pve_exporter_collector_error_info", g, "Kind of the collector's last error (present while failing)",
            ("cluster", "collector", "kind"),
        )  # fmt: skip
        api = FamilyBuilder(
            "pve_exporter_api_requests_total", "counter",
            "PVE API requests by endpoint, templated path and HTTP status (or timeout/unreachable)",
            ("cluster", "endpoint", "method", "path", "status"),
        )  # fmt: skip
        api_s = FamilyBuilder(
            "pve_exporter_api_request_duration_seconds_total", "counter",
            "Total seconds spent waiting for PVE API requests, by templated path", ("cluster", "method", "path"),
        )  # fmt: skip
        tiers = FamilyBuilder(
            "pve_exporter_collection_requests_total", "counter",
            "PVE API requests the poller sent, by collection tier (fast: the two shared endpoints; node: "
            "per-node detail; slow); divide its rate by the interval for requests per cycle", ("cluster", "tier"),
        )  # fmt: skip
        ep = FamilyBuilder(
            "pve_exporter_endpoint_up", g, "1 if the last request sent to this API endpoint got an answer",
            ("cluster", "endpoint"),
        )  # fmt: skip

        api_seconds = dict(self.api_seconds)
        for cluster in sorted({*self.known_clusters(), *self.snapshots}):
            if not want(cluster):
                continue
            cycles.add((cluster,), float(self.cycles.get(cluster, 0)))
            overruns.add((cluster,), float(self.overruns.get(cluster, 0)))
            sent = self.snapshots[cluster].requests_by_tier if cluster in self.snapshots else {}
            for tier in ("fast", "node", "slow"):
                tiers.add((cluster, tier), float(sent.get(tier, 0)))
            for path in SHARED_PATHS:
                api_seconds.setdefault((cluster, "GET", path), 0.0)
            snap = self.snapshots.get(cluster)
            if snap is None:  # gauges stay absent until the first cycle: unknown, not 0
                continue
            up.add((cluster,), 1.0 if snap.reachable else 0.0)
            last_ok.add((cluster,), snap.last_success)
            cyc_dur.add((cluster,), self.cycle_seconds.get(cluster))
            for name, r in sorted(snap.results.items()):
                labels = (cluster, name)
                c_ok.add(labels, 1.0 if r.ok else 0.0)
                c_dur.add(labels, r.duration)
                c_last.add(labels, r.last_success)
                c_stale.add(labels, 1.0 if r.stale else 0.0)
                if not r.ok and r.error_kind:
                    c_err.add((cluster, name, r.error_kind), 1.0)
        for (cluster, endpoint, method, path, status), n in sorted(self.api_requests.items()):
            if want(cluster):
                api.add((cluster, endpoint, method, path, status), float(n))
        for (cluster, method, path), secs in sorted(api_seconds.items()):
            if want(cluster):
                api_s.add((cluster, method, path), secs)
        for (cluster, endpoint), ok in sorted(self.endpoint_up.items()):
            if want(cluster):
                ep.add((cluster, endpoint), 1.0 if ok else 0.0)
        builders = (
            build, up, last_ok, cyc_dur, cycles, overruns, c_ok, c_dur, c_last, c_stale, c_err, api, api_s, tiers, ep
        )
        out = [b.build() for b in builders]
        for extra in self.extra:
            out.extend(extra(keep))
        return [f for f in out if f.samples]
