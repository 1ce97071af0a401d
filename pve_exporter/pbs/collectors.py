"""What a backup server poller asks for and how each answer becomes families: plan + parse, no I/O.

A collector's `plan` sees every cached payload (a later stage plans from what an earlier stage
fetched in the same cycle: datastores → namespaces → groups/snapshots), so a daemon has every
series after its first cycle. `parse` gets its own payloads, all payloads and the wall clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pve_exporter.collect.base import Family, Request
from pve_exporter.pbs import parse as p

VERSION = Request("/version")
NODE_STATUS = Request("/nodes/localhost/status")
USAGE = Request("/status/datastore-usage")
DATASTORES = Request("/admin/datastore")
GC = Request("/admin/gc")
JOBS = {t: Request(f"/admin/{t}") for t in p.JOB_TYPES}
FAILED_TASKS = Request("/nodes/localhost/tasks", (("errors", "1"), ("limit", "500")))
MINUTE = 60.0


@dataclass(frozen=True, slots=True)
class PbsView:
    """The read-only input of `parse`: the collector's own payloads, everyone's, and wall time."""

    own: Mapping[str, Any]
    everything: Mapping[str, Any]
    now: float


PlanFn = Callable[[Mapping[str, Any]], Sequence[Request]]
ParseFn = Callable[[PbsView], list[Family]]


@dataclass(frozen=True, slots=True)
class PbsCollector:
    name: str
    tier: Literal["fast", "slow"]  # slow: every slow interval (snapshot listings are big)
    plan: PlanFn
    parse: ParseFn
    stage: int = 0  # planned after every lower stage's answers of this cycle are in
    min_interval: float = 0.0  # at most this often (job states change a few times a day)
    optional: bool = False  # 404/501 (an older PBS without this path) is "nothing", not a failure
    slim: Callable[[Any], Any] | None = None


def _fixed(*reqs: Request) -> PlanFn:
    return lambda _payloads: list(reqs)


def stores(payloads: Mapping[str, Any]) -> list[str]:
    return p.datastore_names(payloads.get(DATASTORES.key), payloads.get(USAGE.key))


def namespaces(payloads: Mapping[str, Any], store: str) -> list[str]:
    """Root first, then what `GET /admin/datastore/{store}/namespace` listed (NamespaceListItem: ns)."""
    rows = payloads.get(namespace_request(store).key)
    found = {str(r.get("ns") or "") for r in rows if isinstance(r, Mapping)} if isinstance(rows, list) else set()
    return ["", *sorted(found - {""})]


def namespace_request(store: str) -> Request:
    return Request(f"/admin/datastore/{store}/namespace")


def listing_request(store: str, ns: str, what: str) -> Request:
    """`/admin/datastore/{store}/groups|snapshots`, with `ns` only below the root (PBS < 2.2 has none)."""
    return Request(f"/admin/datastore/{store}/{what}", (("ns", ns),) if ns else ())


def listings(own: Mapping[str, Any], what: str) -> list[tuple[str, str, Any]]:
    """(datastore, namespace, rows) of every cached `groups`/`snapshots` listing."""
    out = []
    for key, rows in sorted(own.items()):
        path, _, query = key.partition("?")
        parts = path.split("/")
        if len(parts) == 5 and parts[1:3] == ["admin", "datastore"] and parts[4] == what:
            ns = query.removeprefix("ns=") if query.startswith("ns=") else ""
            out.append((parts[3], ns, rows))
    return out


def _plan_per_ns(what: str) -> PlanFn:
    def plan(payloads: Mapping[str, Any]) -> list[Request]:
        return [listing_request(s, ns, what) for s in stores(payloads) for ns in namespaces(payloads, s)]

    return plan


def build_pbs_collectors(every: float = MINUTE) -> tuple[PbsCollector, ...]:
    """`every`: how often GC, jobs, failed tasks, namespaces and groups are read (collect.node_interval_seconds)."""
    return (
        PbsCollector("version", "fast", _fixed(VERSION), lambda v: p.parse_version(v.own.get(VERSION.key))),
        PbsCollector("node", "fast", _fixed(NODE_STATUS), lambda v: p.parse_node_status(v.own.get(NODE_STATUS.key))),
        PbsCollector(
            "datastores", "fast", _fixed(USAGE, DATASTORES),
            lambda v: p.parse_datastores(v.own.get(USAGE.key), v.own.get(DATASTORES.key), v.now),
        ),
        PbsCollector(
            "gc", "fast", _fixed(GC), lambda v: p.parse_gc(v.own.get(GC.key), v.everything.get(USAGE.key)),
            min_interval=every, optional=True,
        ),
        PbsCollector(
            "jobs", "fast", _fixed(*JOBS.values()),
            lambda v: p.parse_jobs({t: v.own.get(r.key) for t, r in JOBS.items()}),
            min_interval=every, optional=True,
        ),
        PbsCollector(
            "tasks", "fast", _fixed(FAILED_TASKS), lambda v: p.parse_failed_tasks(v.own.get(FAILED_TASKS.key), v.now),
            min_interval=every,
        ),
        PbsCollector(
            "namespaces", "fast", lambda ps: [namespace_request(s) for s in stores(ps)], lambda v: [],
            stage=1, min_interval=every, optional=True,
        ),
        PbsCollector(
            "groups", "fast", _plan_per_ns("groups"), lambda v: p.parse_groups(listings(v.own, "groups")),
            stage=2, min_interval=every,
        ),
        PbsCollector(
            "snapshots", "slow", _plan_per_ns("snapshots"),
            lambda v: p.parse_snapshots(listings(v.own, "snapshots")), stage=2, slim=p.slim_snapshots,
        ),
    )  # fmt: skip


def guest_backups(everything: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """The join's input: namespace → newest backup per guest id, over every group listing in the cache."""
    return p.newest_guest_backups(listings(everything, "groups"))
