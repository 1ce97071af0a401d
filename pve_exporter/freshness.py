"""When a cluster has no fresh data: the `/pve?target=` contract of prometheus-pve-exporter.

prometheus-pve-exporter collects per scrape, so an unreachable API fails the scrape and Prometheus
records `up` 0 for the target; alert rules such as `up{job="pve"} == 0` rely on that. This daemon
serves polled snapshots, so on `/pve` it answers 503 while the target's snapshot is not fresh;
`/metrics` keeps serving what it has (with `pve_exporter_cluster_up`). The decision reads only
what the poller concluded with its own (monotonic) clock: no wall-clock arithmetic here.
"""

from __future__ import annotations

from collections.abc import Collection

from pve_exporter.snapshot import Snapshot


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def no_fresh_data(cluster: str, snap: Snapshot | None, fast_collectors: Collection[str]) -> str | None:
    """The reason `cluster` has no fresh data, or None when it has.

    No fresh data: no cycle has finished yet; or the last cycle did not reach the cluster's API
    (`/cluster/resources`, the same test as `pve_exporter_cluster_up`); or every fast-tier collector
    is failing with nothing left to serve (its last good data older than `stale_after_seconds`).
    """
    if snap is None:
        return f"cluster {cluster!r} has no data yet: its first collection cycle has not finished"
    if not snap.reachable:
        err = next((r for r in snap.results.values() if r.error), None)
        why = f" ({err.error_kind}: {_one_line(err.error or '')})" if err is not None else ""
        return f"cluster {cluster!r} has no fresh data: its API was not reached in the last cycle{why}"
    fast = [r for name, r in snap.results.items() if name in fast_collectors]
    if fast and all(not r.ok and not r.stale for r in fast):
        kinds = sorted({r.error_kind or "error" for r in fast})
        return (
            f"cluster {cluster!r} has no fresh data: every fast collector is failing beyond stale_after_seconds "
            f"({', '.join(kinds)})"
        )
    return None
