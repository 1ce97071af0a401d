"""The data model every collector produces: metric families of plain tuples, and the plan types.

A collector is two pure functions: `plan(shared, cache)` says which API paths it needs this cycle,
and `parse(shared, payloads)` turns their JSON into families. The poller does all the I/O.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from pve_exporter.collect.known import KnownGuest

Kind = Literal["gauge", "counter", "untyped"]
LabelValues = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family. `name` is the exposed name (counters carry `_total`); no cluster label here."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    samples: tuple[tuple[LabelValues, float], ...]


class FamilyBuilder:
    """Collects samples for one family; `add` skips None so absent data never becomes a zero."""

    __slots__ = ("help", "kind", "labels", "name", "samples")

    def __init__(self, name: str, kind: Kind, help: str, labels: Sequence[str]) -> None:
        self.name = name
        self.kind = kind
        self.help = help
        self.labels = tuple(labels)
        self.samples: list[tuple[LabelValues, float]] = []

    def add(self, values: LabelValues, value: float | None) -> None:
        if value is not None:
            self.samples.append((values, float(value)))

    def build(self) -> Family:
        return Family(self.name, self.kind, self.help, self.labels, tuple(self.samples))


def build_all(builders: Iterable[FamilyBuilder]) -> list[Family]:
    """Families with at least one sample (an empty family only adds HELP noise)."""
    return [b.build() for b in builders if b.samples]


@dataclass(frozen=True, slots=True)
class Request:
    """One GET a collector needs. `key` is unique per cluster; `node` routes it to that node."""

    path: str
    params: tuple[tuple[str, str], ...] = ()
    node: str | None = None

    @property
    def key(self) -> str:
        if not self.params:
            return self.path
        return self.path + "?" + "&".join(f"{k}={v}" for k, v in self.params)


@dataclass(frozen=True, slots=True)
class NodeRef:
    name: str
    online: bool
    ip: str | None
    nodeid: int | None
    local: bool


@dataclass(frozen=True, slots=True)
class Shared:
    """What every cycle fetches once and all collectors share: /cluster/status and /cluster/resources."""

    cluster: str  # the configured name: the `cluster` label
    status: Sequence[Mapping[str, Any]] | None
    resources: Sequence[Mapping[str, Any]] | None
    nodes: tuple[NodeRef, ...] = ()
    pve_cluster_name: str | None = None  # the name PVE itself reports (absent on a standalone node)
    # Last known name/template/tags per guest id, kept by the poller across cycles (collect/known.py).
    known_guests: Mapping[str, KnownGuest] = field(default_factory=lambda: MappingProxyType({}))
    # Newest backup per guest id on the Proxmox Backup Servers linked to this cluster (pbs/runtime.py).
    external_backups: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def online_nodes(self) -> list[str]:
        return [n.name for n in self.nodes if n.online]


@dataclass(frozen=True, slots=True)
class CacheView:
    """Read-only view of cached payload ages (own) and data (every collector's), so `plan` stays pure."""

    now: float
    fetched_at: Mapping[str, float] = field(default_factory=dict)
    cluster_payloads: Mapping[str, Any] = field(default_factory=dict)  # e.g. guest configs for the agent
    interval: float = 0.0  # the fast interval: per-guest refreshes are paced over it (0: no pacing)

    def age(self, key: str) -> float | None:
        t = self.fetched_at.get(key)
        return None if t is None else self.now - t


def pick_due(
    cache: CacheView, paths: Sequence[str], *, refresh_seconds: float, max_per_cycle: int, urgent: Sequence[str] = ()
) -> list[Request]:
    """Per-guest paths to fetch this cycle, routed to the node in the path.

    Never-fetched and `urgent` ones first, at most `max_per_cycle` (a burst at start-up or when many
    guests appear). Refreshes are paced: ⌈G·interval/refresh⌉ of the oldest each cycle, dealt across
    nodes, so the load is even and every path is re-read about once per `refresh_seconds` whatever G
    is: when that pace exceeds `max_per_cycle`, the pace wins (the cap bounds bursts; it must not make
    the refresh lag). Paths overdue beyond the pace catch up within the cap.
    """
    missing: list[str] = list(urgent)
    pace = math.ceil(len(paths) * cache.interval / refresh_seconds) if paths and cache.interval else 0
    # Refreshes start early enough that the pace gets round every path within the period, and no
    # earlier: a small cluster is not re-read every few cycles.
    early = max(0.0, refresh_seconds - math.ceil(len(paths) / pace) * cache.interval) if pace else refresh_seconds
    old: list[tuple[float, str]] = []
    for path in paths:
        age = cache.age(path)
        if age is None:
            missing.append(path)
        elif age >= early:
            old.append((-age, path))
    old.sort()
    urgent_set = set(urgent)
    chosen = [*urgent, *_across_nodes([p for p in missing if p not in urgent_set])][:max_per_cycle]
    if pace:
        overdue = sum(1 for a, _ in old if -a >= refresh_seconds)
        n_old = max(pace, min(overdue, max_per_cycle - len(chosen)))
        limit = max(max_per_cycle, pace)
    else:
        n_old, limit = max_per_cycle, max_per_cycle
    chosen += _across_nodes([p for _, p in old])[:n_old]
    return [Request(p, node=p.split("/")[2]) for p in chosen[:limit]]


def _across_nodes(paths: list[str]) -> list[str]:
    """Oldest first, dealt across nodes: guests read together at start-up (one node after the other)
    are refreshed one from each node in turn, so no node gets a cycle's whole share of reads."""
    by_node: dict[str, list[str]] = {}
    for p in paths:
        by_node.setdefault(p.split("/")[2], []).append(p)
    out: list[str] = []
    for turn in itertools.zip_longest(*by_node.values()):
        out.extend(p for p in turn if p is not None)
    return out


PlanFn = Callable[[Shared, CacheView], Sequence[Request]]
ParseFn = Callable[[Shared, Mapping[str, Any]], list[Family]]


@dataclass(frozen=True, slots=True)
class Collector:
    """A named unit of collection with its own success metric and cadence tier."""

    name: str
    # fast: every cycle. node: per-node detail, each node once per node interval, the nodes spread
    # over the fast cycles. slow: every slow interval (data that changes in minutes or hours).
    tier: Literal["fast", "node", "slow"]
    plan: PlanFn
    parse: ParseFn
    needs_resources: bool = False  # fails (and keeps stale data) when /cluster/resources failed
    needs_status: bool = False
    max_age: float | None = None  # how long cached payloads live; None = derived from the tier
    # A path not planned any more (its node went offline, its guest vanished) is forgotten at once,
    # unless the collector plans only what needs refreshing and relies on the cache for the rest.
    keep_unplanned: bool = False
    # PVE answers 500 when a guest agent is not running: for such collectors that answer is data
    # (kept as an ApiFailure payload), not a failure of the collector.
    api_errors_are_data: bool = False
    min_interval: float = 0.0  # run at most this often, e.g. for data PVE itself keeps per minute
    # Cached payloads are trimmed to what `parse` reads (memory: 20 000 guest configs add up),
    # except, with `slim_unless_raw`, when the InfluxDB output needs the raw answers.
    slim: Callable[[Any], Any] | None = None
    slim_unless_raw: bool = False


@dataclass(frozen=True, slots=True)
class ApiFailure:
    """A PVE error answer kept as a payload, for collectors where "PVE said no" is the measurement."""

    status: int | None
    message: str
