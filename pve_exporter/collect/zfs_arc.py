"""ZFS ARC size per node from the node RRD (PVE 9 `arcsize`), read from the PSI collector's payload.

    pvesh get /nodes/pve1/rrddata --timeframe hour
    # HELP pve_node_zfs_arc_size_bytes Size of the node's ZFS ARC, newest RRD minute (PVE 9 and later)
    pve_node_zfs_arc_size_bytes{cluster="prod",id="node/pve1"} 8589934592

pvestatd stores `arcsize` in the `pve-node-9.0` RRD (pve-manager `PVE/Service/pvestatd.pm`); PVE 8's
`pve2-node` has no such source, and then nothing is published. No extra request: the node
pressure collector already fetches this RRD once a minute; this keeps the field through its
payload trimming and adds the family.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pve_exporter.collect.base import Collector, Family, FamilyBuilder, Shared, build_all
from pve_exporter.collect.node_status import node_payloads
from pve_exporter.pve.values import num

if TYPE_CHECKING:
    from pve_exporter.snapshot import Snapshot

FIELD = "arcsize"


def newest(rows: Any) -> float | None:
    if not isinstance(rows, list):
        return None
    return next((num(r.get(FIELD)) for r in reversed(rows) if isinstance(r, Mapping) and FIELD in r), None)


def parse_arc(per_node: list[tuple[str, Any]]) -> list[Family]:
    arc = FamilyBuilder(
        "pve_node_zfs_arc_size_bytes", "gauge", "Size of the node's ZFS ARC, newest RRD minute (PVE 9 and later)",
        ("id",),
    )  # fmt: skip
    for node, rows in per_node:
        arc.add((f"node/{node}",), newest(rows))
    return build_all((arc,))


def with_arc(rrd: Collector) -> Collector:
    """The node RRD collector, also publishing ARC size."""
    inner_slim = rrd.slim
    inner_parse = rrd.parse

    def slim(rows: Any) -> Any:
        out = inner_slim(rows) if inner_slim is not None else rows
        value = newest(rows)
        if out is not rows and value is not None and isinstance(out, list) and out and isinstance(out[-1], dict):
            out[-1][FIELD] = value
        return out

    def parse(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
        return [*inner_parse(shared, payloads), *parse_arc(node_payloads(payloads, "rrddata"))]

    return dataclasses.replace(rrd, slim=slim, parse=parse)


def arc_sizes(snap: Snapshot) -> dict[str, float]:
    """Newest ARC size per node among a snapshot's cached RRD payloads (for the InfluxDB `memory` points)."""
    out = {}
    for node, rows in node_payloads({k: p.data for k, p in snap.payloads.items()}, "rrddata"):
        value = newest(rows)
        if value is not None:
            out[node] = value
    return out
