"""`GET /nodes/{node}/qemu/{vmid}/agent/get-fsinfo`: the QEMU guest agent's filesystem view.

Real PVE answers `{"result": [...]}` for a running VM whose agent is enabled and answering,
`500 QEMU guest agent is not running` when the agent is enabled but silent (here: stopped VMs),
and `500 No QEMU guest agent configured` when the config has no agent (qemu-server Agent.pm).
"""

from __future__ import annotations

from typing import Any

from pve_exporter.simulator.errors import ApiError
from pve_exporter.simulator.routing import Ctx, api


@api("GET", "/nodes/{node}/qemu/{vmid}/agent/get-fsinfo", proxied=True, perm=("/vms/{vmid}", "VM.Audit"))
def _get_fsinfo(ctx: Ctx) -> Any:
    assert ctx.node is not None
    vmid = int(ctx.args["vmid"])
    g = ctx.cluster.guest_on(ctx.node.name, vmid, "qemu")
    if g is None:
        raise ApiError(500, f"Configuration file 'nodes/{ctx.node.name}/qemu-server/{vmid}.conf' does not exist")
    if not g.agent:
        raise ApiError(500, "No QEMU guest agent configured")
    if not g.running:
        raise ApiError(500, f"VM {vmid} is not running")
    root_total = g.maxdisk - 512 * 1024 * 1024
    root_used = int(root_total * g.disk_frac)
    return {
        "result": [
            {"name": "sda1", "mountpoint": "/", "type": "ext4", "total-bytes": root_total, "used-bytes": root_used,
             "disk": [{"bus-type": "scsi", "bus": 0, "target": 0, "unit": 0, "dev": "/dev/sda1", "serial": "0"}]},
            {"name": "sda15", "mountpoint": "/boot/efi", "type": "vfat", "total-bytes": 129_718_272,
             "used-bytes": 6_268_416, "disk": []},
            {"name": "tmpfs", "mountpoint": "/run", "type": "tmpfs", "disk": []},  # no sizes: skipped
        ]
    }  # fmt: skip
