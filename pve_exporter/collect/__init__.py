"""The explicit collector registry: a literal list, no import side effects."""

from __future__ import annotations

from pve_exporter.collect import (
    agent,
    backups,
    ceph,
    cluster_extra,
    config,
    guests,
    node_extra,
    node_pressure,
    node_status,
    resources,
    status,
    tasks,
)
from pve_exporter.collect import storage as node_storage
from pve_exporter.collect.base import Collector


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
) -> tuple[Collector, ...]:
    optional: tuple[Collector, ...] = ()
    if node_storage_details:
        optional += (node_storage.COLLECTOR,)
    if guest_agent:
        optional += (agent.make_collector(guest_agent_max_per_cycle, guest_agent_refresh_seconds),)
    return (
        status.COLLECTOR,
        resources.make_collector(all_enum_states),
        cluster_extra.VERSION_COLLECTOR,
        cluster_extra.BACKUP_COLLECTOR,
        cluster_extra.QDEVICE_COLLECTOR,
        node_status.COLLECTOR,
        node_pressure.COLLECTOR,
        guests.make_collector(full=qemu_full_status),
        node_extra.REPLICATION_COLLECTOR,
        node_extra.SUBSCRIPTION_COLLECTOR,
        tasks.COLLECTOR,
        ceph.COLLECTOR,
        backups.COLLECTOR,
        config.make_collector(config_max_per_cycle, config_refresh_seconds),
        *optional,
    )
