"""`GET /cluster/status` → pve_up for nodes and quorum, pve_node_info, pve_cluster_info.

pvesh get /cluster/status
# HELP pve_node_info Node info
# TYPE pve_node_info gauge
pve_node_info{cluster="prod",id="node/pve1",level="c",name="pve1",nodeid="1"} 1
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from pve_exporter.collect.base import CacheView, Collector, Family, FamilyBuilder, NodeRef, Request, Shared, build_all
from pve_exporter.collect.known import KnownGuest, remember_guests
from pve_exporter.pve.values import flag, integer, text

UP_HELP = "Node/VM/CT-Status is online/running"


def make_shared(
    cluster: str,
    status: Sequence[Mapping[str, Any]] | None,
    resources: Sequence[Mapping[str, Any]] | None,
    known_guests: Mapping[str, KnownGuest] | None = None,
) -> Shared:
    """Node list from /cluster/status (has ip and online); falls back to resources' node entries.

    `known_guests` is the previous cycle's guest memory; the result carries it updated with these
    resources (the caller keeps `shared.known_guests` for the next cycle).
    """
    nodes: list[NodeRef] = []
    pve_name = None
    if status:
        for row in status:
            kind = row.get("type")
            if kind == "cluster":
                pve_name = text(row.get("name"))
            elif kind == "node" and row.get("name"):
                nodes.append(
                    NodeRef(
                        name=str(row["name"]),
                        online=bool(flag(row.get("online"))),
                        ip=text(row.get("ip")),
                        nodeid=integer(row.get("nodeid")),
                        local=bool(flag(row.get("local"))),
                    )
                )
    elif resources:
        for row in resources:
            if row.get("type") == "node" and row.get("node"):
                nodes.append(NodeRef(str(row["node"]), row.get("status") == "online", None, None, False))
    nodes.sort(key=lambda n: n.name)
    known = remember_guests(known_guests or {}, resources)
    if not isinstance(known, MappingProxyType):
        known = MappingProxyType(dict(known))
    return Shared(cluster, status, resources, tuple(nodes), pve_name, known)


def parse_cluster_status(status: Sequence[Mapping[str, Any]]) -> list[Family]:
    up = FamilyBuilder("pve_up", "gauge", UP_HELP, ("id",))
    node_info = FamilyBuilder("pve_node_info", "gauge", "Node info", ("id", "level", "name", "nodeid"))
    # A fixed label set, unlike PPE's "every key of the entry" (dynamic label sets break joins).
    cluster_info = FamilyBuilder("pve_cluster_info", "gauge", "Cluster info", ("id", "nodes", "quorate", "version"))
    for row in status:
        kind = row.get("type")
        name = text(row.get("name"))
        if not name:
            continue
        if kind == "node":
            nid = f"node/{name}"
            up.add((nid,), 1.0 if flag(row.get("online")) else 0.0)
            node_info.add((nid, text(row.get("level")) or "", name, text(row.get("nodeid")) or "0"), 1.0)
        elif kind == "cluster":
            cid = f"cluster/{name}"
            up.add((cid,), 1.0 if flag(row.get("quorate")) else 0.0)
            cluster_info.add(
                (cid, text(row.get("nodes")) or "", text(row.get("quorate")) or "", text(row.get("version")) or ""),
                1.0,
            )
    return build_all((up, node_info, cluster_info))


def _plan_nothing(shared: Shared, cache: CacheView) -> list[Request]:
    return []


def _parse(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
    return parse_cluster_status(shared.status or [])


COLLECTOR = Collector("status", "fast", _plan_nothing, _parse, needs_status=True)
