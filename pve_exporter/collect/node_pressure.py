"""Node PSI pressure from `GET /nodes/{node}/rrddata?timeframe=hour` (PVE 9), at most once a minute.

    pvesh get /nodes/pve1/rrddata --timeframe hour
    # HELP pve_node_pressure_cpu_some_ratio Share of time (0-1) some tasks of the node stalled on cpu (...)
    pve_node_pressure_cpu_some_ratio{cluster="prod",id="node/pve1"} 0.0012

PVE keeps node PSI only in its RRD files (not in /nodes/{n}/status), in 60 s buckets, so asking
more often than once a minute would return the same value. The newest bucket that has the data
source is used; PVE 7/8 have no such data sources and then nothing is published. pvestatd stores the
kernel's avg10 of /proc/pressure/* there, a percentage: published divided by 100 as a 0-1 ratio.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pve_exporter.collect.base import CacheView, Collector, Family, FamilyBuilder, Request, Shared, build_all
from pve_exporter.collect.node_status import node_payloads
from pve_exporter.pve.values import percent_ratio

SOURCES = (
    ("pressurecpusome", "cpu_some"), ("pressureiosome", "io_some"), ("pressureiofull", "io_full"),
    ("pressurememorysome", "memory_some"), ("pressurememoryfull", "memory_full"),
)  # fmt: skip


def _help(name: str) -> str:
    resource, kind = name.split("_")
    who = "some tasks" if kind == "some" else "all non-idle tasks"
    return f"Share of time (0-1) {who} of the node stalled on {resource} (PSI {kind} avg10, newest RRD minute; PVE 9+)"


def parse_node_pressure(per_node: list[tuple[str, Any]]) -> list[Family]:
    b = {
        field: FamilyBuilder(
            f"pve_node_pressure_{name}_ratio", "gauge", _help(name), ("id",))
        for field, name in SOURCES
    }  # fmt: skip
    for node, rows in per_node:
        if not isinstance(rows, list):
            continue
        for field, _ in SOURCES:
            raw = next((r[field] for r in reversed(rows) if isinstance(r, Mapping) and field in r), None)
            b[field].add((f"node/{node}",), percent_ratio(raw))
    return build_all(b.values())


def slim_rrd(rows: Any) -> Any:
    """Keep one synthetic bucket: the newest value of each PSI source (an hour of rows is ~60)."""
    if not isinstance(rows, list):
        return rows
    newest: dict[str, Any] = {}
    for r in rows:
        if isinstance(r, Mapping):
            newest.update({f: r[f] for f, _ in SOURCES if f in r})
    return [newest]


def _plan(shared: Shared, cache: CacheView) -> list[Request]:
    return [
        Request(f"/nodes/{n}/rrddata", (("timeframe", "hour"), ("cf", "AVERAGE")), node=n)
        for n in shared.online_nodes()
    ]


def _parse(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
    return parse_node_pressure(node_payloads(payloads, "rrddata"))


COLLECTOR = Collector("node_pressure", "fast", _plan, _parse, min_interval=60.0, slim=slim_rrd)
