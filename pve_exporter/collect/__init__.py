"""The explicit collector registry: a literal list, no import side effects."""

from __future__ import annotations

import dataclasses

from pve_exporter.collect import (
    agent,
    allocation,
    backups,
    ceph,
    certificates,
    cluster_extra,
    config,
    disks,
    guests,
    ha,
    node_extra,
    node_pressure,
    node_status,
    pools,
    resources,
    status,
    tasks,
    zfs,
)
from pve_exporter.collect import storage as node_storage
from pve_exporter.collect.base import Collector
from pve_exporter.collect.guest_devices import with_devices
from pve_exporter.collect.name_label import with_name_label
from pve_exporter.collect.zfs_arc import with_arc


def build_collectors(
    *,
    all_enum_states: bool = False,
    config_max_per_cycle: int = 50,
    config_refresh_seconds: float = 3600.0,
    node_storage_details: bool = False,  # /nodes/{n}/storage: on when the InfluxDB output is configured
    qemu_full_status: bool = False,  # full-mode QEMU lists: balloon metrics, and what InfluxDB writes
    guest_agent: bool = False,
    guest_agent_max_per_cycle: int = 20,
    guest_agent_refresh_seconds: float = 300.0,
    guest_devices: bool = False,  # per-NIC/per-disk guest I/O (needs full-mode QEMU lists)
    guest_name_label: bool = False,  # `name` on guest usage series
    node_interval: float = 60.0,  # cluster-wide extras (tasks, QDevice, Ceph) run this often
    node_detail_every_cycle: bool = False,  # the InfluxDB output writes node and guest points every cycle
) -> tuple[Collector, ...]:
    """Every collector with its tier: the fast tier costs O(1) requests per cluster (the shared
    /cluster/status and /cluster/resources, which carry every fast value); per-node detail is on the
    node tier (each node once per `node_interval`, spread over the cycles) unless the InfluxDB output
    needs it every cycle; replication, versions, backups, disks, ZFS and certificates on the slow tier."""
    node_tier = "fast" if node_detail_every_cycle else "node"

    def tier(c: Collector, name: str) -> Collector:
        return dataclasses.replace(c, tier=name, min_interval=0.0)

    def every(c: Collector, seconds: float) -> Collector:
        return dataclasses.replace(c, min_interval=seconds)

    optional: tuple[Collector, ...] = ()
    if node_storage_details:
        optional += (tier(node_storage.COLLECTOR, node_tier),)
    if guest_agent:
        optional += (agent.make_collector(guest_agent_max_per_cycle, guest_agent_refresh_seconds),)
    res = resources.make_collector(all_enum_states)
    guest_lists = guests.make_collector(full=qemu_full_status or guest_devices)
    if guest_devices:
        guest_lists = with_devices(guest_lists)
    if guest_name_label:
        res, guest_lists = with_name_label(res), with_name_label(guest_lists)
    guest_lists = tier(guest_lists, node_tier)
    return (
        status.COLLECTOR,
        res,
        cluster_extra.VERSION_COLLECTOR,
        cluster_extra.BACKUP_COLLECTOR,
        every(cluster_extra.QDEVICE_COLLECTOR, node_interval),
        tier(node_status.COLLECTOR, node_tier),
        tier(with_arc(node_pressure.COLLECTOR), "node"),  # PVE's RRD has one row a minute
        guest_lists,
        tier(node_extra.REPLICATION_COLLECTOR, "slow"),  # jobs run every 15 minutes by default
        node_extra.SUBSCRIPTION_COLLECTOR,
        every(tasks.COLLECTOR, node_interval),
        every(ceph.COLLECTOR, node_interval),
        backups.COLLECTOR,
        config.make_collector(config_max_per_cycle, config_refresh_seconds),
        pools.COLLECTOR,
        zfs.COLLECTOR,
        disks.COLLECTOR,
        certificates.COLLECTOR,
        ha.COLLECTOR,
        allocation.COLLECTOR,
        *optional,
    )
