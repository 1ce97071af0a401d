"""Planning and reading per-node endpoints whose suffix has slashes (`disks/zfs`, `certificates/info`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pve_exporter.collect.base import Request, Shared


def plan_online(shared: Shared, suffix: str) -> list[Request]:
    """One call per online node: an offline node cannot answer (PVE would give 595 after a wait)."""
    return [Request(f"/nodes/{n}/{suffix}", node=n) for n in shared.online_nodes()]


def payloads_by_node(payloads: Mapping[str, Any], suffix: str) -> list[tuple[str, Any]]:
    """`/nodes/<name>/<suffix>` payloads as (name, data), sorted by node name."""
    tail = "/" + suffix
    out = []
    for key, data in payloads.items():
        path = key.split("?", 1)[0]
        if path.startswith("/nodes/") and path.endswith(tail):
            node = path[len("/nodes/") : -len(tail)]
            if node and "/" not in node:
                out.append((node, data))
    return sorted(out, key=lambda x: x[0])
