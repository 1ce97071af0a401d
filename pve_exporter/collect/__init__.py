"""The explicit collector registry: a literal list, no import side effects."""

from __future__ import annotations

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
) -> tuple[Collector, ...]:
    optional: tuple[Collector, ...] = ()
    if node_storage_details:
        optional += (node_storage.COLLECTOR,)
    if guest_agent:
        optional += (agent.make_collector(guest_agent_max_per_cycle, guest_agent_refresh_seconds),)
    res = resources.make_collector(all_enum_states)
    guest_lists = guests.make_collector(full=qemu_full_status or guest_devices)
    if guest_devices:
        guest_lists = with_devices(guest_lists)
    if guest_name_label:
        res, guest_lists = with_name_label(res), with_name_label(guest_lists)
    return (
        status.COLLECTOR,
        res,
        cluster_extra.VERSION_COLLECTOR,
        cluster_extra.BACKUP_COLLECTOR,
        cluster_extra.QDEVICE_COLLECTOR,
        node_status.COLLECTOR,
        with_arc(node_pressure.COLLECTOR),
        guest_lists,
        node_extra.REPLICATION_COLLECTOR,
        node_extra.SUBSCRIPTION_COLLECTOR,
        tasks.COLLECTOR,
        ceph.COLLECTOR,
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
