"""Self-metrics of the control API, exposed through `SelfStats.extra` on /metrics.

- `pve_exporter_operations_total{cluster,action,result}`: finished operations by outcome.
- `pve_exporter_operation_duration_seconds_total{cluster,action}`: their summed duration (average =
  rate of this / rate of operations_total), plus `..._last` as a gauge.
- `pve_exporter_operations_in_progress{cluster}`: actions running or queued now.
- `pve_exporter_control_auth_failures_total{reason}`: missing / malformed / invalid token, or scope.
- `pve_exporter_control_rate_limited_total{limit}`: requests answered 429 (auth or power bucket).

The counters start at 0 for every label value known at start (README: "Counters from the start"):
each configured cluster × action × result, and the fixed reasons and limits below.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

from pve_exporter.collect.base import Family, FamilyBuilder
from pve_exporter.control.operations import ACTIONS, STATUSES, TERMINAL

RESULTS = tuple(s for s in STATUSES if s in TERMINAL)  # how an operation can end
AUTH_FAILURE_REASONS = ("missing", "malformed", "invalid", "scope")
RATE_LIMITS = ("auth", "power")


class ControlMetrics:
    """`known_clusters` gives the configured clusters as of the latest reload (for the zero series)."""

    def __init__(self, known_clusters: Callable[[], Iterable[str]] = tuple) -> None:
        self.known_clusters = known_clusters
        self.finished: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.duration_sum: defaultdict[tuple[str, str], float] = defaultdict(float)
        self.duration_last: dict[tuple[str, str], float] = {}
        self.in_progress: defaultdict[str, int] = defaultdict(int)
        self.auth_failures: defaultdict[str, int] = defaultdict(int, dict.fromkeys(AUTH_FAILURE_REASONS, 0))
        self.rate_limited: defaultdict[str, int] = defaultdict(int, dict.fromkeys(RATE_LIMITS, 0))

    def operation_finished(self, cluster: str, action: str, result: str, seconds: float | None) -> None:
        self.finished[(cluster, action, result)] += 1
        if seconds is not None:
            self.duration_sum[(cluster, action)] += seconds
            self.duration_last[(cluster, action)] = seconds

    def families(self, clusters: set[str] | None) -> list[Family]:
        def want(c: str) -> bool:
            return clusters is None or c in clusters

        ops = FamilyBuilder(
            "pve_exporter_operations_total", "counter",
            "Control API power operations that finished, by cluster, action and result",
            ("cluster", "action", "result"),
        )  # fmt: skip
        dur = FamilyBuilder(
            "pve_exporter_operation_duration_seconds_total", "counter",
            "Summed duration of finished power operations (divide by pve_exporter_operations_total for the mean)",
            ("cluster", "action"),
        )  # fmt: skip
        last = FamilyBuilder(
            "pve_exporter_operation_last_duration_seconds", "gauge",
            "Duration of the last finished power operation", ("cluster", "action"),
        )  # fmt: skip
        busy = FamilyBuilder(
            "pve_exporter_operations_in_progress", "gauge", "Power operations queued or running now", ("cluster",)
        )
        auth = FamilyBuilder(
            "pve_exporter_control_auth_failures_total", "counter",
            "Control API requests refused for authentication (missing, malformed, invalid) or scope", ("reason",),
        )  # fmt: skip
        limited = FamilyBuilder(
            "pve_exporter_control_rate_limited_total", "counter",
            "Control API requests answered 429, by limit (auth failures or power requests per address)", ("limit",),
        )  # fmt: skip
        finished, duration_sum, in_progress = dict(self.finished), dict(self.duration_sum), dict(self.in_progress)
        for cluster in self.known_clusters():
            in_progress.setdefault(cluster, 0)
            for action in ACTIONS:
                duration_sum.setdefault((cluster, action), 0.0)
                for result in RESULTS:
                    finished.setdefault((cluster, action, result), 0)
        for (cluster, action, result), n in sorted(finished.items()):
            if want(cluster):
                ops.add((cluster, action, result), float(n))
        for (cluster, action), secs in sorted(duration_sum.items()):
            if want(cluster):
                dur.add((cluster, action), secs)
                last.add((cluster, action), self.duration_last.get((cluster, action)))  # absent until one ends
        for cluster, n in sorted(in_progress.items()):
            if want(cluster):
                busy.add((cluster,), float(n))
        for reason, n in sorted(self.auth_failures.items()):
            auth.add((reason,), float(n))
        for limit, n in sorted(self.rate_limited.items()):
            limited.add((limit,), float(n))
        return [b.build() for b in (ops, dur, last, busy, auth, limited) if b.samples]
