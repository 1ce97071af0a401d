"""`GET /nodes/{node}/storage`, one call per online node → per-node storage details.

    pvesh get /nodes/pve1/storage
    # HELP pve_storage_available_bytes Bytes of the storage available for new data on the node
    pve_storage_available_bytes{cluster="prod",id="storage/pve1/local"} 82814287872

/cluster/resources already carries size and usage (pve_disk_*_bytes); this adds what it lacks:
`avail` (not the same as size - used on thin pools and filesystems with reserved blocks) and the
`active` / `enabled` flags, live instead of pmxcfs' ~10 s lag. The InfluxDB output uses these
payloads for PVE's `object=storages` points (pvestatd writes only active storages). O(nodes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pve_exporter.collect.base import CacheView, Collector, Family, FamilyBuilder, Request, Shared, build_all
from pve_exporter.collect.node_status import node_payloads
from pve_exporter.pve.values import flag, num, text


def parse_node_storage(per_node: list[tuple[str, Any]]) -> list[Family]:
    g = "gauge"
    avail = FamilyBuilder(
        "pve_storage_available_bytes", g, "Bytes of the storage available for new data on the node", ("id",)
    )
    active = FamilyBuilder(
        "pve_storage_active", g, "1 if the storage is active (reachable and mounted) on the node", ("id",)
    )
    enabled = FamilyBuilder("pve_storage_enabled", g, "1 if the storage is enabled on the node", ("id",))
    for node, rows in per_node:
        if not isinstance(rows, list):
            continue
        for row in rows:
            if not isinstance(row, Mapping):
                continue
            storage = text(row.get("storage"))
            if not storage:
                continue
            rid = (f"storage/{node}/{storage}",)
            is_active = flag(row.get("active"))
            if is_active:  # PVE reports 0 bytes for inactive storages: unknown, not empty
                avail.add(rid, num(row.get("avail")))
            active.add(rid, None if is_active is None else float(is_active))
            on = flag(row.get("enabled"))
            enabled.add(rid, None if on is None else float(on))
    return build_all((avail, active, enabled))


def _plan(shared: Shared, cache: CacheView) -> list[Request]:
    return [Request(f"/nodes/{n}/storage", node=n) for n in shared.online_nodes()]


def _parse(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
    return parse_node_storage(node_payloads(payloads, "storage"))


COLLECTOR = Collector("storage", "fast", _plan, _parse)
