"""`GET /nodes/{node}/storage/{storage}/content`: backup volumes, so backup age can be exported.

Every guest that is covered by a backup job (`backed_up`) has a few backups on the shared
`nfs-backup` storage, the newest within the last day; guests on the not-backed-up list have none,
and one guest's newest backup is a week old. Other content types are listed empty.
"""

from __future__ import annotations

from typing import Any

from pve_exporter.simulator.errors import ApiError
from pve_exporter.simulator.routing import Ctx, api

DAY = 86400


def backup_volumes(ctx: Ctx, storage: str) -> list[dict[str, Any]]:
    c = ctx.cluster
    now = int(ctx.now)
    out = []
    for g in sorted(c.guests.values(), key=lambda g: g.vmid):
        if not g.backed_up or storage != "nfs-backup":
            continue
        newest = now - (g.vmid % 20) * 3600 - (7 * DAY if g.vmid % 13 == 0 else 0)
        for k in range(3):
            ctime = newest - k * DAY
            kind = "vzdump-qemu" if g.type == "qemu" else "vzdump-lxc"
            ext = "vma.zst" if g.type == "qemu" else "tar.zst"
            stamp = _stamp(ctime)
            out.append({
                "volid": f"{storage}:backup/{kind}-{g.vmid}-{stamp}.{ext}",
                "content": "backup", "ctime": ctime, "format": ext, "size": 1_073_741_824 + g.vmid,
                "subtype": g.type, "vmid": g.vmid, "notes": g.display_name,
            })  # fmt: skip
    return out


def _stamp(t: int) -> str:
    import time

    return time.strftime("%Y_%m_%d-%H_%M_%S", time.gmtime(t))


@api("GET", "/nodes/{node}/storage/{storage}/content", proxied=True,
     params={"content": "str", "vmid": "int"})  # fmt: skip
def _storage_content(ctx: Ctx) -> Any:
    assert ctx.node is not None
    sid = ctx.args["storage"]
    if not any(s.storage == sid for s in ctx.node.storages):
        raise ApiError(500, f"storage '{sid}' does not exist")
    content = ctx.params.get("content")
    vols = backup_volumes(ctx, sid) if content in (None, "backup") else []
    vmid = ctx.params.get("vmid")
    if vmid is not None:
        vols = [v for v in vols if v["vmid"] == int(vmid)]
    return vols
