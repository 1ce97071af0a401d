"""Routes for pools, ZFS pools, physical disks and certificates (hardware.py holds the state).

`GET /pools` follows pve-manager `PVE/API2/Pool.pm`: the index lists `poolid` and `comment`; the
members come only with `?poolid=X` (8.1 and later; a one-element list) or `/pools/{poolid}`.
"""

from __future__ import annotations

from typing import Any

from pve_exporter.simulator import hardware
from pve_exporter.simulator.errors import ApiError, param_error
from pve_exporter.simulator.model import SimCluster, SimNode
from pve_exporter.simulator.routing import Ctx, api

POOL_COMMENTS = {"prod": "production guests"}


def _pool_entry(c: SimCluster, pool: str, with_members: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"poolid": pool}
    if pool in POOL_COMMENTS:
        entry["comment"] = POOL_COMMENTS[pool]
    if with_members:
        entry["members"] = [
            {"id": f"{g.type}/{g.vmid}", "type": g.type, "vmid": g.vmid, "node": g.node,
             "status": "running" if g.running else "stopped", "name": g.display_name}
            for g in sorted(c.guests.values(), key=lambda g: g.vmid) if g.pool == pool
        ]  # fmt: skip
    return entry


@api("GET", "/pools", params={"poolid": "str", "type": ("qemu", "lxc", "storage")})
def _pools(ctx: Ctx) -> Any:
    c = ctx.cluster
    if not ctx.caller.has("Pool.Audit"):
        return []
    poolid = ctx.params.get("poolid")
    if poolid is not None:
        if c.version.major < 8:
            raise param_error({"poolid": "property is not defined in schema and the schema does not allow "
                                         "additional properties"})  # fmt: skip
        if poolid not in c.pools:
            raise ApiError(500, f"pool '{poolid}' does not exist")
        return [_pool_entry(c, poolid, True)]
    return [_pool_entry(c, p, False) for p in sorted(c.pools)]


@api("GET", "/pools/{poolid}", perm=("/pool/{poolid}", "Pool.Audit"))
def _pool(ctx: Ctx) -> Any:
    pool = ctx.args["poolid"]
    if pool not in ctx.cluster.pools:
        raise ApiError(500, f"pool '{pool}' does not exist")
    entry = _pool_entry(ctx.cluster, pool, True)
    entry.pop("poolid")
    return entry


def _hw(ctx: Ctx) -> hardware.NodeHardware:
    node: SimNode | None = ctx.node
    assert node is not None  # proxied routes resolve their node first
    return node.hardware


@api("GET", "/nodes/{node}/disks/zfs", proxied=True, perm=("/", "Sys.Audit"))
def _zfs(ctx: Ctx) -> Any:
    hw = _hw(ctx)
    if not hw.zpools:
        raise ApiError(500, "zfsutils-linux not installed")
    return hardware.zfs_list(hw)


@api(
    "GET",
    "/nodes/{node}/disks/list",
    proxied=True,
    perm=("/nodes/{node}", "Sys.Audit"),
    params={"include-partitions": "bool", "skipsmart": "bool", "type": ("unused", "journal_disks")},
)
def _disks(ctx: Ctx) -> Any:
    rows = hardware.disks_list(_hw(ctx))
    if ctx.params.get("skipsmart"):
        for r in rows:
            r["health"], r["wearout"] = "UNKNOWN", "N/A"
    if ctx.params.get("type") == "unused":
        rows = [r for r in rows if not r.get("used")]
    return rows


@api("GET", "/nodes/{node}/certificates/info", proxied=True)
def _certificates(ctx: Ctx) -> Any:
    return hardware.certificates_info(_hw(ctx))
