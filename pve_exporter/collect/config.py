"""Guest config (`GET /nodes/{node}/{type}/{vmid}/config`) → pve_onboot_status.

    pvesh get /nodes/pve1/qemu/100/config
    # HELP pve_onboot_status Proxmox vm config onboot value
    pve_onboot_status{cluster="prod",id="qemu/100",node="pve1",type="qemu"} 1

This is the one per-guest call. It never runs per scrape and never all at once: a config is
fetched when a guest is new, moved (the path names its node) or restarted since the config was
read (its uptime is shorter than the cached copy's age), or when the cached copy is older than
`refresh_seconds`; at most `max_per_cycle` configs per cycle, new ones first, then the oldest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pve_exporter.collect.base import CacheView, Collector, Family, FamilyBuilder, Request, Shared, build_all, pick_due
from pve_exporter.pve.values import flag, num, text


def config_path(row: Mapping[str, Any]) -> str | None:
    kind, node, vmid = row.get("type"), text(row.get("node")), text(row.get("vmid"))
    if kind not in ("qemu", "lxc") or not node or not vmid:
        return None
    return f"/nodes/{node}/{kind}/{vmid}/config"


def plan_configs(shared: Shared, cache: CacheView, *, max_per_cycle: int, refresh_seconds: float) -> list[Request]:
    online = set(shared.online_nodes())
    paths: list[str] = []
    restarted: list[str] = []
    for row in shared.resources or []:
        path = config_path(row)
        if path is None or row.get("node") not in online:
            continue
        age = cache.age(path)
        uptime = num(row.get("uptime"))
        if age is not None and age < refresh_seconds and row.get("status") == "running" and uptime and uptime < age:
            restarted.append(path)  # (re)started since we read its config: pending changes may now apply
        else:
            paths.append(path)
    return pick_due(cache, paths, refresh_seconds=refresh_seconds, max_per_cycle=max_per_cycle, urgent=restarted)


def parse_onboot(resources: Any, payloads: Mapping[str, Any]) -> list[Family]:
    onboot = FamilyBuilder("pve_onboot_status", "gauge", "Proxmox vm config onboot value", ("id", "node", "type"))
    for row in resources or []:
        path = config_path(row)
        if path is None or path not in payloads:
            continue
        cfg = payloads[path]
        if not isinstance(cfg, Mapping):
            continue
        # A key left at its default is absent from the config: no `onboot` means 0, a known value.
        value = flag(cfg.get("onboot"))
        onboot.add((str(row["id"]), str(row["node"]), str(row["type"])), 1.0 if value else 0.0)
    return build_all((onboot,))


CONFIG_KEYS = ("onboot", "agent", "startup")


def slim_config(cfg: Any) -> Any:
    """A guest config has dozens of keys; the collectors (onboot, guest agent) read these few."""
    if not isinstance(cfg, Mapping):
        return cfg
    return {k: cfg[k] for k in CONFIG_KEYS if k in cfg}


def make_collector(max_per_cycle: int = 50, refresh_seconds: float = 3600.0) -> Collector:
    def plan(shared: Shared, cache: CacheView) -> list[Request]:
        return plan_configs(shared, cache, max_per_cycle=max_per_cycle, refresh_seconds=refresh_seconds)

    def parse(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
        return parse_onboot(shared.resources, payloads)

    return Collector(
        "config", "fast", plan, parse, needs_resources=True, max_age=refresh_seconds * 3, keep_unplanned=True,
        slim=slim_config,
    )  # fmt: skip
