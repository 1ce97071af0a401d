"""Guest-agent filesystems (`GET /nodes/{node}/qemu/{vmid}/agent/get-fsinfo`), opt-in, slow tier.

    pvesh get /nodes/pve1/qemu/100/agent/get-fsinfo
    # HELP pve_guest_filesystem_used_bytes Used bytes of a filesystem inside the VM (QEMU guest agent)
    pve_guest_filesystem_used_bytes{cluster="prod",id="qemu/100",mountpoint="/",fstype="ext4"} 9.6e+09

PVE reports QEMU disk usage as 0 (the hypervisor cannot see inside); the guest agent can. Asked
only for running VMs whose config enables the agent (`agent: 1` or `agent: enabled=1,…`, read
from the config collector's cache), at most `max_per_cycle` per cycle, each again after
`refresh_seconds`. An agent that does not answer is data (`pve_guest_agent_up 0`), not a failure.
Needs VM.Monitor (PVE 8) or VM.GuestAgent.Audit (PVE 9) besides PVEAuditor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pve_exporter.collect.base import (
    ApiFailure,
    CacheView,
    Collector,
    Family,
    FamilyBuilder,
    Request,
    Shared,
    build_all,
    pick_due,
)
from pve_exporter.collect.config import config_path
from pve_exporter.pve.values import flag, num, text

_SKIP_FSTYPES = frozenset({"tmpfs", "devtmpfs", "squashfs", "overlay", "proc", "sysfs", "iso9660", "udf"})


def agent_enabled(config: Any) -> bool:
    """`agent` is a property string: `1`, `0`, `enabled=1,fstrim_cloned_disks=1`, `1,type=virtio`."""
    if not isinstance(config, Mapping):
        return False
    raw = text(config.get("agent"))
    if not raw:
        return False
    for part in raw.split(","):
        key, _, value = part.partition("=")
        if not value and key.strip() in ("0", "1"):
            return key.strip() == "1"
        if key.strip() == "enabled":
            return bool(flag(value))
    return False


def fsinfo_path(node: str, vmid: str) -> str:
    return f"/nodes/{node}/qemu/{vmid}/agent/get-fsinfo"


def plan_agent(shared: Shared, cache: CacheView, *, max_per_cycle: int, refresh_seconds: float) -> list[Request]:
    online = set(shared.online_nodes())
    paths = []
    for row in shared.resources or []:
        if row.get("type") != "qemu" or row.get("status") != "running" or row.get("node") not in online:
            continue
        cfg = config_path(row)
        if cfg is not None and agent_enabled(cache.cluster_payloads.get(cfg)):
            paths.append(fsinfo_path(str(row["node"]), str(row["vmid"])))
    return pick_due(cache, paths, refresh_seconds=refresh_seconds, max_per_cycle=max_per_cycle)


def parse_agent(resources: Any, payloads: Mapping[str, Any]) -> list[Family]:
    g = "gauge"
    up = FamilyBuilder("pve_guest_agent_up", g, "1 if the VM's QEMU guest agent answered its last query", ("id",))
    size = FamilyBuilder(
        "pve_guest_filesystem_size_bytes", g, "Size of a filesystem inside the VM (QEMU guest agent)",
        ("id", "mountpoint", "fstype"),
    )  # fmt: skip
    used = FamilyBuilder(
        "pve_guest_filesystem_used_bytes", g, "Used bytes of a filesystem inside the VM (QEMU guest agent)",
        ("id", "mountpoint", "fstype"),
    )  # fmt: skip
    for row in resources or []:
        if row.get("type") != "qemu" or not row.get("node"):
            continue
        data = payloads.get(fsinfo_path(str(row["node"]), str(row.get("vmid"))))
        if data is None:
            continue
        rid = f"qemu/{row.get('vmid')}"
        if isinstance(data, ApiFailure):
            up.add((rid,), 0.0)
            continue
        up.add((rid,), 1.0)
        result = data.get("result") if isinstance(data, Mapping) else None
        seen: set[str] = set()
        for fs in result if isinstance(result, list) else []:
            mount, fstype = text(fs.get("mountpoint")), text(fs.get("type")) or ""
            total = num(fs.get("total-bytes"))
            if not mount or total is None or fstype in _SKIP_FSTYPES or mount in seen:
                continue
            seen.add(mount)  # bind mounts repeat a filesystem
            size.add((rid, mount, fstype), total)
            used.add((rid, mount, fstype), num(fs.get("used-bytes")))
    return build_all((up, size, used))


def make_collector(max_per_cycle: int = 20, refresh_seconds: float = 300.0) -> Collector:
    def plan(shared: Shared, cache: CacheView) -> list[Request]:
        return plan_agent(shared, cache, max_per_cycle=max_per_cycle, refresh_seconds=refresh_seconds)

    def parse(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
        return parse_agent(shared.resources, payloads)

    return Collector(
        "agent", "fast", plan, parse, needs_resources=True, max_age=refresh_seconds * 3,
        keep_unplanned=True, api_errors_are_data=True,
    )  # fmt: skip
