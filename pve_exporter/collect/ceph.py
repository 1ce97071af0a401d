"""`GET /cluster/ceph/status` → Ceph health, only for clusters that use Ceph (RBD/CephFS storages).

    pvesh get /cluster/ceph/status
    # HELP pve_ceph_health_status Ceph health: 0 HEALTH_OK, 1 HEALTH_WARN, 2 HEALTH_ERR
    pve_ceph_health_status{cluster="prod",id="cluster/prod"} 0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pve_exporter.collect.base import CacheView, Collector, Family, FamilyBuilder, Request, Shared, build_all
from pve_exporter.collect.cluster_extra import cluster_id
from pve_exporter.pve.values import num, text

CEPH = Request("/cluster/ceph/status")
HEALTH = {"HEALTH_OK": 0.0, "HEALTH_WARN": 1.0, "HEALTH_ERR": 2.0}
CEPH_PLUGINS = ("rbd", "cephfs")


def uses_ceph(shared: Shared) -> bool:
    return any(r.get("type") == "storage" and r.get("plugintype") in CEPH_PLUGINS for r in shared.resources or [])


def parse_ceph(shared: Shared, data: Any) -> list[Family]:
    if not isinstance(data, Mapping):
        return []
    cid = (cluster_id(shared),)
    g = "gauge"
    health = FamilyBuilder(
        "pve_ceph_health_status", g, "Ceph health: 0 HEALTH_OK, 1 HEALTH_WARN, 2 HEALTH_ERR", ("id",)
    )
    checks = FamilyBuilder(
        "pve_ceph_health_check", g, "Active Ceph health checks by name and severity", ("id", "check", "severity")
    )
    osds = FamilyBuilder("pve_ceph_osds", g, "Ceph OSDs by state (total, up, in)", ("id", "state"))
    bytes_ = FamilyBuilder("pve_ceph_bytes", g, "Ceph raw capacity by kind (total, used, avail)", ("id", "kind"))
    h = data.get("health") if isinstance(data.get("health"), Mapping) else {}
    status = text(h.get("status"))
    if status in HEALTH:
        health.add(cid, HEALTH[status])
    for name, check in sorted((h.get("checks") or {}).items()):
        sev = text(check.get("severity")) if isinstance(check, Mapping) else None
        checks.add((cid[0], str(name), sev or ""), 1.0)
    osdmap = data.get("osdmap") if isinstance(data.get("osdmap"), Mapping) else {}
    osdmap = osdmap.get("osdmap", osdmap)  # older Ceph nests it once more
    for state, key in (("total", "num_osds"), ("up", "num_up_osds"), ("in", "num_in_osds")):
        osds.add((cid[0], state), num(osdmap.get(key)))
    pgmap = data.get("pgmap") if isinstance(data.get("pgmap"), Mapping) else {}
    for kind, key in (("total", "bytes_total"), ("used", "bytes_used"), ("avail", "bytes_avail")):
        bytes_.add((cid[0], kind), num(pgmap.get(key)))
    return build_all((health, checks, osds, bytes_))


def _plan(shared: Shared, cache: CacheView) -> list[Request]:
    return [CEPH] if uses_ceph(shared) else []


def _parse(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
    return parse_ceph(shared, payloads.get(CEPH.key))


COLLECTOR = Collector("ceph", "fast", _plan, _parse, needs_resources=True)
