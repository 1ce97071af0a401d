"""Per-node allocation, computed from `/cluster/resources` (no extra call): what the guests were given.

    # HELP pve_node_allocated_memory_bytes Sum of maxmem of the node's guests (templates excluded)
    pve_node_allocated_memory_bytes{cluster="prod",id="node/pve1",state="running"} 6442450944
    pve_node_allocated_memory_bytes{cluster="prod",id="node/pve1",state="all"} 8589934592

Beside `pve_memory_size_bytes` / `pve_cpu_usage_limit` of the node, overcommit is one division:
`pve_node_allocated_memory_bytes{state="running"} / on(cluster,id) pve_memory_size_bytes`.
Offline nodes are left out: their guests' sizes are unknown (pve-api.md §7.3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pve_exporter.collect.base import CacheView, Collector, Family, FamilyBuilder, Request, Shared, build_all
from pve_exporter.pve.values import flag, num, text

STATES = ("running", "all")


def parse_allocation(rows: Sequence[Mapping[str, Any]]) -> list[Family]:
    cpus = FamilyBuilder(
        "pve_node_allocated_cpus", "gauge",
        "Sum of the vCPUs (maxcpu) of the node's guests, running ones or all; templates excluded", ("id", "state"),
    )  # fmt: skip
    mem = FamilyBuilder(
        "pve_node_allocated_memory_bytes", "gauge",
        "Sum of the memory (maxmem) of the node's guests, running ones or all; templates excluded", ("id", "state"),
    )  # fmt: skip
    totals: dict[str, list[float]] = {}  # node -> [cpu running, cpu all, mem running, mem all]
    for row in rows:
        if row.get("type") == "node" and row.get("status") == "online" and row.get("node"):
            totals.setdefault(str(row["node"]), [0.0, 0.0, 0.0, 0.0])
    for row in rows:
        if row.get("type") not in ("qemu", "lxc") or flag(row.get("template")):
            continue
        t = totals.get(text(row.get("node")) or "")
        if t is None:
            continue
        running = row.get("status") == "running"
        for i, field in ((0, "maxcpu"), (2, "maxmem")):
            v = num(row.get(field))
            if v is None:
                continue
            t[i + 1] += v
            if running:
                t[i] += v
    for node in sorted(totals):
        t = totals[node]
        nid = f"node/{node}"
        cpus.add((nid, "running"), t[0])
        cpus.add((nid, "all"), t[1])
        mem.add((nid, "running"), t[2])
        mem.add((nid, "all"), t[3])
    return build_all((cpus, mem))


def _plan(shared: Shared, cache: CacheView) -> list[Request]:
    return []


def _parse(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
    return parse_allocation(shared.resources or [])


COLLECTOR = Collector("allocation", "fast", _plan, _parse, needs_resources=True)
