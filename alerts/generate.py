#!/usr/bin/env python3
"""Generate `alerts/pve-exporter.rules.yml`, the Prometheus alert rules for pve_exporter.

    python alerts/generate.py            # (re)write alerts/pve-exporter.rules.yml
    python alerts/generate.py --check    # exit 1 if the committed file differs from what this makes

Every threshold, window and `for:` duration lives in THRESHOLDS below (the one place to tune
them); SELECTORS holds the label selectors that depend on your Prometheus setup. Expressions use
prometheus-pve-exporter's metric names plus the daemon's `cluster` label and `pve_exporter_*`
self-metrics. Conventions the tests enforce (tests/test_alerts.py):

- `cluster` is kept in every aggregation and every vector-matching clause;
- `*_info` joins go through `max by (...)` so a duplicated scrape (two Prometheus servers or two
  daemons, told apart by `instance`) cannot make a join fail with "many-to-many matching";
- every rule has `severity`, `summary`, `description` and a `runbook_url` whose anchor is a
  heading of docs/dashboards-alerts.md;
- no recording rules: every alert is cheap as written (the storage de-duplication runs over a
  handful of series per cluster), and the dashboards must work without any rules loaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "pve-exporter.rules.yml"
# Where the runbook lives. Alertmanager shows the URL as it is, so point it at your rendering of
# docs/dashboards-alerts.md (e.g. your Git server's web view) with --runbook-base-url.
RUNBOOK_BASE_URL = "docs/dashboards-alerts.md"

SELECTORS = {
    # Prometheus' own `up` series of the job that scrapes pve_exporter.
    "exporter": 'job="pve"',
}

THRESHOLDS: dict[str, Any] = {
    # exporter health
    "exporter_down_for": "5m",
    "cluster_unreachable_for": "2m",
    "data_stale_seconds": 300,  # no successful cycle for this long while the cluster counts as reachable
    "data_stale_for": "1m",
    "collector_failing_for": "10m",
    "overrun_window": "15m",
    "overrun_ratio": 0.25,  # share of cycle slots skipped because the previous cycle still ran
    "overrun_for": "15m",
    # cluster and nodes
    "node_down_for": "2m",
    "not_quorate_for": "1m",
    "node_cpu_ratio": 0.9,  # pve_cpu_usage_ratio is already 0..1 of the node's CPUs
    "node_cpu_for": "15m",
    "node_memory_ratio": 0.9,
    "node_memory_for": "15m",
    "ha_error_for": "1m",
    "subscription_days": 14,
    "subscription_for": "1h",
    # guests
    "guest_down_for": "5m",
    "not_backed_up_for": "1h",
    "backup_max_age_seconds": 36 * 3600,  # newest backup older than this: a daily job missed a run
    "backup_too_old_for": "1h",
    "lock_stuck_for": "6h",
    # storage
    "storage_unavailable_for": "5m",
    "storage_almost_full_ratio": 0.85,
    "storage_almost_full_for": "15m",
    "storage_full_ratio": 0.95,
    "storage_full_for": "5m",
    "storage_fill_window": "6h",  # predict_linear lookback
    "storage_fill_horizon_seconds": 24 * 3600,  # alert when full within this time
    "storage_fill_min_ratio": 0.5,  # ignore near-empty storages (a backup run is not a trend)
    "storage_fill_for": "1h",
    # hardware and capacity (slow tier: ZFS, disks and certificates are read every slow interval)
    "zfs_degraded_for": "1m",
    "disk_failed_for": "1m",
    "ssd_wearout_ratio": 0.1,  # remaining life below this (0-1)
    "ssd_wearout_for": "1h",
    "certificate_days": 14,  # expiring within this many days
    "certificate_for": "1h",
    "certificate_expired_for": "1m",
    "memory_overcommit_ratio": 1.0,  # running guests' configured memory / node memory
    "memory_overcommit_for": "15m",
    # replication
    "replication_failed_for": "5m",
    "replication_late_seconds": 1800,  # next_sync this far in the past
    "replication_late_for": "15m",
    # Proxmox Backup Server (label `server` instead of `cluster`)
    "pbs_down_for": "5m",
    "pbs_datastore_almost_full_ratio": 0.85,
    "pbs_datastore_almost_full_for": "15m",
    "pbs_datastore_full_horizon_seconds": 7 * 86400,  # PBS's own estimate of the date it is full
    "pbs_datastore_full_soon_for": "1h",
    "pbs_gc_failed_for": "5m",
    "pbs_job_failed_for": "5m",
    "pbs_verify_failed_for": "5m",
    # InfluxDB output (self-metrics per `output`, no cluster label)
    "influx_window": "10m",
    "influx_failing_for": "10m",
    "influx_dropping_for": "0m",
    "influx_spool_for": "30m",  # spool not drained for this long
    # control API power operations
    "operations_window": "15m",
    "operations_failed_min": 3,  # failed or timed-out operations per cluster and action in the window
    "operations_failing_for": "0m",
}

# A variant for the end-to-end test (tests/test_e2e_alerts.py): the same expressions with short
# `for:` and windows, so a real Prometheus shows every transition within seconds.
E2E_OVERRIDES: dict[str, Any] = {
    **{k: "1s" for k, v in THRESHOLDS.items() if k.endswith("_for")},
    "overrun_window": "30s",
    "storage_fill_window": "20s",
    "influx_window": "10s",
    "operations_window": "15s",
}

NODE_DOWN_BY_NODE = 'label_replace(pve_up{id=~"node/.+"} == 0, "node", "$1", "id", "node/(.+)")'


def info(metric: str, labels: str, selector: str = "") -> str:
    """An `*_info` series reduced to one per (cluster, id): safe on the right of group_left."""
    return f"max by (cluster, id, {labels}) ({metric}{selector})"


def join(expr: str, metric: str, labels: str, selector: str = "") -> str:
    return f"{expr}\n* on (cluster, id) group_left ({labels}) {info(metric, labels, selector)}"


def storage_dedup(per_id: str) -> str:
    """Per-storage-per-node values → one series per shared storage, one per node for local ones.

    PVE lists a shared storage (NFS, Ceph RBD, PBS, ...) under every node with the same numbers;
    alerting per node would page N times for one full NFS export.
    """
    return (
        f"max by (cluster, storage) (\n  ({per_id})\n"
        f"  * on (cluster, id) group_left (storage) {info('pve_storage_info', 'storage')}\n"
        f"  and on (cluster, id) (pve_storage_shared == 1)\n)\n"
        f"or\n(\n  ({per_id})\n"
        f"  * on (cluster, id) group_left (node, storage) {info('pve_storage_info', 'node, storage')}\n"
        f"  and on (cluster, id) (pve_storage_shared == 0)\n)"
    )


STORAGE_RATIO = 'pve_disk_usage_bytes{id=~"storage/.+"} / (pve_disk_size_bytes{id=~"storage/.+"} > 0)'
STORAGE_WHERE = (
    "{{ if $labels.node }}on node {{ $labels.node }}{{ else }}(shared by the cluster's nodes){{ end }}"
)

# (group, [rule definitions]). `expr` and the annotations are %-formatted with THRESHOLDS and
# SELECTORS (so a literal % is written %%); Go templates ({{ ... }}) pass through untouched.
RULES: list[tuple[str, list[dict[str, Any]]]] = [
    ("pve-exporter.health", [
        {
            "alert": "PveExporterDown",
            "expr": "up{%(exporter)s} == 0",
            "for": "exporter_down_for",
            "severity": "critical",
            "summary": "pve_exporter {{ $labels.instance }} cannot be scraped",
            "description": "Prometheus has failed to scrape pve_exporter at {{ $labels.instance }} (job "
                           "{{ $labels.job }}) for %(exporter_down_for)s. Every Proxmox VE cluster it watches "
                           "is unmonitored until it is back.",
        },
        {
            "alert": "PveClusterUnreachable",
            "expr": "pve_exporter_cluster_up == 0",
            "for": "cluster_unreachable_for",
            "severity": "critical",
            "summary": "pve_exporter cannot reach the API of cluster {{ $labels.cluster }}",
            "description": "No API endpoint of Proxmox VE cluster {{ $labels.cluster }} has answered "
                           "/cluster/resources for %(cluster_unreachable_for)s. The exporter serves the last good "
                           "data for a bounded time, then drops it; alerts on that data go quiet.",
        },
        {
            "alert": "PveDataStale",
            "expr": "time() - pve_exporter_last_success_timestamp_seconds > %(data_stale_seconds)s\n"
                    "and on (cluster) pve_exporter_cluster_up == 1",
            "for": "data_stale_for",
            "severity": "warning",
            "summary": "Data of cluster {{ $labels.cluster }} is {{ $value | humanizeDuration }} old",
            "description": "pve_exporter's last successful collection cycle for cluster {{ $labels.cluster }} "
                           "finished {{ $value | humanizeDuration }} ago although the cluster counts as "
                           "reachable: collection is stuck or far slower than its interval.",
        },
        {
            "alert": "PveCollectorFailing",
            "expr": "(\n"
                    "  (pve_exporter_collector_success == 0)\n"
                    "  * on (cluster, collector) group_left (kind)\n"
                    "    max by (cluster, collector, kind) (pve_exporter_collector_error_info)\n"
                    "  or on (cluster, collector)\n"
                    "  (pve_exporter_collector_success == 0)\n"
                    ")\n"
                    "unless on (cluster) pve_exporter_cluster_up == 0",
            "for": "collector_failing_for",
            "severity": "warning",
            "summary": "Collector {{ $labels.collector }} of cluster {{ $labels.cluster }} is failing",
            "description": "The {{ $labels.collector }} collector of cluster {{ $labels.cluster }} has not fetched "
                           "everything it needs for %(collector_failing_for)s{{ if $labels.kind }} (last error: "
                           "{{ $labels.kind }}){{ end }}. Its series are stale or missing.",
        },
        {
            "alert": "PveCollectionOverrunning",
            "expr": "increase(pve_exporter_cycle_overruns_total[%(overrun_window)s])\n"
                    "/ (increase(pve_exporter_cycles_total[%(overrun_window)s]) "
                    "+ increase(pve_exporter_cycle_overruns_total[%(overrun_window)s]))\n"
                    "> %(overrun_ratio)s",
            "for": "overrun_for",
            "severity": "warning",
            "summary": "Collection of cluster {{ $labels.cluster }} takes longer than its interval",
            "description": "More than %(overrun_pct)s of the collection slots of cluster "
                           "{{ $labels.cluster }} were skipped in the last %(overrun_window)s because the "
                           "previous cycle was still running. Data is older than the configured interval.",
        },
    ]),
    ("pve.cluster", [
        {
            "alert": "PveNodeDown",
            "expr": join('(pve_up{id=~"node/.+"} == 0)', "pve_node_info", "name"),
            "for": "node_down_for",
            "severity": "critical",
            "summary": "Node {{ $labels.name }} of cluster {{ $labels.cluster }} is down",
            "description": "Proxmox VE node {{ $labels.name }} ({{ $labels.id }}) has been offline in the "
                           "corosync view of cluster {{ $labels.cluster }} for %(node_down_for)s.",
        },
        {
            "alert": "PveClusterNotQuorate",
            "expr": 'pve_up{id=~"cluster/.+"} == 0',
            "for": "not_quorate_for",
            "severity": "critical",
            "summary": "Cluster {{ $labels.cluster }} has lost quorum",
            "description": "Proxmox VE cluster {{ $labels.cluster }} ({{ $labels.id }}) is not quorate: "
                           "/etc/pve is read-only, guests cannot be started, changed or migrated, and HA "
                           "may fence nodes.",
        },
        {
            "alert": "PveNodeCpuHigh",
            "expr": join('pve_cpu_usage_ratio{id=~"node/.+"}', "pve_node_info", "name")
                    + "\n> %(node_cpu_ratio)s",
            "for": "node_cpu_for",
            "severity": "warning",
            "summary": "Node {{ $labels.name }} of cluster {{ $labels.cluster }} uses "
                       "{{ $value | humanizePercentage }} CPU",
            "description": "CPU usage of node {{ $labels.name }} in cluster {{ $labels.cluster }} has been "
                           "above %(node_cpu_pct)s for %(node_cpu_for)s (now {{ $value | humanizePercentage }}).",
        },
        {
            "alert": "PveNodeMemoryHigh",
            "expr": join('pve_memory_usage_bytes{id=~"node/.+"} / pve_memory_size_bytes{id=~"node/.+"}',
                         "pve_node_info", "name") + "\n> %(node_memory_ratio)s",
            "for": "node_memory_for",
            "severity": "warning",
            "summary": "Node {{ $labels.name }} of cluster {{ $labels.cluster }} uses "
                       "{{ $value | humanizePercentage }} of its memory",
            "description": "Memory usage of node {{ $labels.name }} in cluster {{ $labels.cluster }} has been "
                           "above %(node_memory_pct)s for %(node_memory_for)s (now "
                           "{{ $value | humanizePercentage }}).",
        },
        {
            "alert": "PveHaError",
            "expr": 'pve_ha_state{state=~"error|fence"} == 1',
            "for": "ha_error_for",
            "severity": "critical",
            "summary": "HA resource {{ $labels.id }} of cluster {{ $labels.cluster }} is in state "
                       "{{ $labels.state }}",
            "description": "The HA manager of cluster {{ $labels.cluster }} reports {{ $labels.id }} in state "
                           "{{ $labels.state }}: `error` needs a manual fix, `fence` means a node is being "
                           "fenced and its HA guests recovered elsewhere.",
        },
        {
            "alert": "PveSubscriptionExpiring",
            "expr": join("(pve_subscription_next_due_timestamp_seconds - time())", "pve_node_info", "name")
                    + "\n< %(subscription_days)s * 86400",
            "for": "subscription_for",
            "severity": "warning",
            "summary": "Subscription of node {{ $labels.name }} in cluster {{ $labels.cluster }} is due",
            "description": "The Proxmox VE subscription of node {{ $labels.name }} in cluster "
                           "{{ $labels.cluster }} is due in {{ $value | humanizeDuration }} (less than "
                           "%(subscription_days)s days; a negative value means overdue).",
        },
        {
            "alert": "PveSubscriptionNotActive",
            "expr": join('(pve_subscription_status{status=~"expired|invalid|suspended"} == 1)',
                         "pve_node_info", "name"),
            "for": "subscription_for",
            "severity": "warning",
            "summary": "Subscription of node {{ $labels.name }} in cluster {{ $labels.cluster }} is "
                       "{{ $labels.status }}",
            "description": "The Proxmox VE subscription of node {{ $labels.name }} in cluster "
                           "{{ $labels.cluster }} is {{ $labels.status }}. Nodes without any subscription "
                           "(`notfound`) do not alert.",
        },
    ]),
    ("pve.guests", [
        {
            "alert": "PveGuestDown",
            "expr": "(\n  (pve_up{id=~\"(qemu|lxc)/.+\"} == 0)\n"
                    "  and on (cluster, id)\n"
                    "  (pve_onboot_status == 1 or on (cluster, id) pve_ha_state{state=\"started\"} == 1)\n)\n"
                    "* on (cluster, id) group_left (name, node, type)\n"
                    "  " + info("pve_guest_info", "name, node, type", '{template="0"}') + "\n"
                    "unless on (cluster, node) " + NODE_DOWN_BY_NODE,
            "for": "guest_down_for",
            "severity": "warning",
            "summary": "Guest {{ $labels.name }} ({{ $labels.id }}) in cluster {{ $labels.cluster }} is down",
            "description": "{{ $labels.type }} guest {{ $labels.name }} ({{ $labels.id }}) on node "
                           "{{ $labels.node }} of cluster {{ $labels.cluster }} should be running (start at "
                           "boot, or HA requested state `started`) but has not been running for "
                           "%(guest_down_for)s. Stopped guests without onboot/HA, templates and guests on a "
                           "node that is down (see PveNodeDown) do not alert.",
        },
        {
            "alert": "PveGuestNotBackedUp",
            "expr": join("(pve_not_backed_up_info == 1)", "pve_guest_info", "name, node, type", '{template="0"}'),
            "for": "not_backed_up_for",
            "severity": "warning",
            "summary": "Guest {{ $labels.name }} ({{ $labels.id }}) in cluster {{ $labels.cluster }} "
                       "is not backed up",
            "description": "{{ $labels.type }} guest {{ $labels.name }} ({{ $labels.id }}) on node "
                           "{{ $labels.node }} of cluster {{ $labels.cluster }} is not covered by any backup "
                           "job (Datacenter → Backup → Guests not covered).",
        },
        {
            "alert": "PveGuestBackupTooOld",
            "expr": join("(time() - pve_guest_last_backup_timestamp_seconds > %(backup_max_age_seconds)s)",
                         "pve_guest_info", "name, node, type", '{template="0"}'),
            "for": "backup_too_old_for",
            "severity": "warning",
            "summary": "Last backup of guest {{ $labels.name }} ({{ $labels.id }}) in cluster {{ $labels.cluster }} "
                       "is {{ $value | humanizeDuration }} old",
            "description": "{{ $labels.type }} guest {{ $labels.name }} ({{ $labels.id }}) on node "
                           "{{ $labels.node }} of cluster {{ $labels.cluster }} was last backed up "
                           "{{ $value | humanizeDuration }} ago (its newest backup on any backup storage or linked "
                           "Proxmox Backup Server; more than "
                           "%(backup_max_age)s): its backup job fails, is disabled or no longer includes it. "
                           "Guests without any backup are PveGuestNotBackedUp's concern; templates do not alert.",
        },
        {
            "alert": "PveGuestLockStuck",
            "expr": join('(pve_lock_state{state!="suspended"} == 1)', "pve_guest_info", "name, node, type"),
            "for": "lock_stuck_for",
            "severity": "warning",
            "summary": "Guest {{ $labels.name }} ({{ $labels.id }}) in cluster {{ $labels.cluster }} has "
                       "been locked ({{ $labels.state }}) for long",
            "description": "{{ $labels.type }} guest {{ $labels.name }} ({{ $labels.id }}) on node "
                           "{{ $labels.node }} of cluster {{ $labels.cluster }} has carried the config lock "
                           "`{{ $labels.state }}` for %(lock_stuck_for)s. A lock left behind by a crashed "
                           "backup, migration or snapshot blocks every later action on the guest.",
        },
    ]),
    ("pve.storage", [
        {
            "alert": "PveStorageUnavailable",
            "expr": join('(pve_up{id=~"storage/.+"} == 0)', "pve_storage_info", "node, storage, plugintype")
                    + "\nunless on (cluster, node) " + NODE_DOWN_BY_NODE,
            "for": "storage_unavailable_for",
            "severity": "warning",
            "summary": "Storage {{ $labels.storage }} is unavailable on node {{ $labels.node }} "
                       "(cluster {{ $labels.cluster }})",
            "description": "{{ $labels.plugintype }} storage {{ $labels.storage }} has not been available on "
                           "node {{ $labels.node }} of cluster {{ $labels.cluster }} for "
                           "%(storage_unavailable_for)s (PVE status `unknown`: not mounted, not reachable or "
                           "not activated). Storages of a node that is down do not alert.",
        },
        {
            "alert": "PveStorageAlmostFull",
            "expr": "(\n" + storage_dedup(STORAGE_RATIO) + "\n) > %(storage_almost_full_ratio)s",
            "for": "storage_almost_full_for",
            "severity": "warning",
            "summary": "Storage {{ $labels.storage }} in cluster {{ $labels.cluster }} is "
                       "{{ $value | humanizePercentage }} full",
            "description": "Storage {{ $labels.storage }} " + STORAGE_WHERE + " in cluster "
                           "{{ $labels.cluster }} has been more than %(storage_almost_full_pct)s full for "
                           "%(storage_almost_full_for)s (now {{ $value | humanizePercentage }}).",
        },
        {
            "alert": "PveStorageFull",
            "expr": "(\n" + storage_dedup(STORAGE_RATIO) + "\n) > %(storage_full_ratio)s",
            "for": "storage_full_for",
            "severity": "critical",
            "summary": "Storage {{ $labels.storage }} in cluster {{ $labels.cluster }} is "
                       "{{ $value | humanizePercentage }} full",
            "description": "Storage {{ $labels.storage }} " + STORAGE_WHERE + " in cluster "
                           "{{ $labels.cluster }} is more than %(storage_full_pct)s full (now "
                           "{{ $value | humanizePercentage }}). Writes, backups and thin-provisioned guest "
                           "disks fail when it runs out.",
        },
        {
            "alert": "PveStorageFillingUp",
            "expr": storage_dedup(
                'predict_linear(pve_disk_usage_bytes{id=~"storage/.+"}[%(storage_fill_window)s], '
                '%(storage_fill_horizon_seconds)s)\n    > pve_disk_size_bytes{id=~"storage/.+"}\n'
                "  and " + STORAGE_RATIO + " > %(storage_fill_min_ratio)s"
            ),
            "for": "storage_fill_for",
            "severity": "warning",
            "summary": "Storage {{ $labels.storage }} in cluster {{ $labels.cluster }} is filling up",
            "description": "At the rate of the last %(storage_fill_window)s, storage {{ $labels.storage }} "
                           + STORAGE_WHERE + " in cluster {{ $labels.cluster }} (already more than "
                           "%(storage_fill_min_pct)s used) will be full within %(storage_fill_horizon)s.",
        },
    ]),
    ("pve.hardware", [
        {
            "alert": "PveZfsPoolDegraded",
            "expr": "(pve_zfs_pool_healthy == 0)\n"
                    "* on (cluster, node, pool) group_left (health)\n"
                    "  max by (cluster, node, pool, health) (pve_zfs_pool_info)",
            "for": "zfs_degraded_for",
            "severity": "critical",
            "summary": "ZFS pool {{ $labels.pool }} on node {{ $labels.node }} (cluster {{ $labels.cluster }}) "
                       "is {{ $labels.health }}",
            "description": "ZFS pool {{ $labels.pool }} on node {{ $labels.node }} of cluster {{ $labels.cluster }} "
                           "has been {{ $labels.health }} (not ONLINE) for %(zfs_degraded_for)s: a device failed "
                           "or is missing and the pool runs without (full) redundancy. `zpool status -x` on the "
                           "node names the device.",
        },
        {
            "alert": "PveDiskSmartFailed",
            "expr": "(pve_physical_disk_healthy == 0)\n"
                    "* on (cluster, node, device) group_left (model, serial, type)\n"
                    "  max by (cluster, node, device, model, serial, type) (pve_physical_disk_info)",
            "for": "disk_failed_for",
            "severity": "critical",
            "summary": "Disk {{ $labels.device }} of node {{ $labels.node }} (cluster {{ $labels.cluster }}) "
                       "fails its SMART health check",
            "description": "SMART reports a failure for {{ $labels.type }} disk {{ $labels.device }} "
                           "({{ $labels.model }}, serial {{ $labels.serial }}) on node {{ $labels.node }} of "
                           "cluster {{ $labels.cluster }}: replace it before it takes data with it.",
        },
        {
            "alert": "PveSsdWearoutHigh",
            "expr": "(pve_physical_disk_wearout_ratio < %(ssd_wearout_ratio)s)\n"
                    "* on (cluster, node, device) group_left (model, serial, type)\n"
                    "  max by (cluster, node, device, model, serial, type) (pve_physical_disk_info)",
            "for": "ssd_wearout_for",
            "severity": "warning",
            "summary": "SSD {{ $labels.device }} of node {{ $labels.node }} (cluster {{ $labels.cluster }}) has "
                       "{{ $value | humanizePercentage }} of its life left",
            "description": "{{ $labels.type }} disk {{ $labels.device }} ({{ $labels.model }}, serial "
                           "{{ $labels.serial }}) on node {{ $labels.node }} of cluster {{ $labels.cluster }} "
                           "has {{ $value | humanizePercentage }} of its rated write endurance left (less than "
                           "%(ssd_wearout_pct)s): plan its replacement.",
        },
        {
            "alert": "PveCertificateExpiring",
            "expr": "(pve_node_certificate_expiry_timestamp_seconds - time() < %(certificate_days)s * 86400 > 0)\n"
                    "* on (cluster, node, filename) group_left (subject)\n"
                    "  max by (cluster, node, filename, subject) (pve_node_certificate_info)",
            "for": "certificate_for",
            "severity": "warning",
            "summary": "Certificate {{ $labels.filename }} of node {{ $labels.node }} (cluster {{ $labels.cluster }}) "
                       "expires in {{ $value | humanizeDuration }}",
            "description": "Certificate {{ $labels.filename }} ({{ $labels.subject }}) of node {{ $labels.node }} "
                           "in cluster {{ $labels.cluster }} expires in {{ $value | humanizeDuration }} (less "
                           "than %(certificate_days)s days). ACME certificates renew on their own 30 days ahead: "
                           "one this close has failed to renew.",
        },
        {
            "alert": "PveCertificateExpired",
            "expr": "(time() - pve_node_certificate_expiry_timestamp_seconds >= 0)\n"
                    "* on (cluster, node, filename) group_left (subject)\n"
                    "  max by (cluster, node, filename, subject) (pve_node_certificate_info)",
            "for": "certificate_expired_for",
            "severity": "critical",
            "summary": "Certificate {{ $labels.filename }} of node {{ $labels.node }} (cluster {{ $labels.cluster }}) "
                       "has expired",
            "description": "Certificate {{ $labels.filename }} ({{ $labels.subject }}) of node {{ $labels.node }} "
                           "in cluster {{ $labels.cluster }} expired {{ $value | humanizeDuration }} ago: clients "
                           "that verify it (browsers, API scripts, the cluster's own proxying) refuse the node.",
        },
        {
            "alert": "PveNodeMemoryOvercommitted",
            "expr": join('(\n  pve_node_allocated_memory_bytes{state="running"}\n'
                         '  / on (cluster, id) pve_memory_size_bytes{id=~"node/.+"}\n)',
                         "pve_node_info", "name") + "\n> %(memory_overcommit_ratio)s",
            "for": "memory_overcommit_for",
            "severity": "warning",
            "summary": "Running guests on node {{ $labels.name }} (cluster {{ $labels.cluster }}) are given "
                       "{{ $value | humanizePercentage }} of its memory",
            "description": "The memory configured for the running guests of node {{ $labels.name }} in cluster "
                           "{{ $labels.cluster }} adds up to {{ $value | humanizePercentage }} of the node's "
                           "memory (more than %(memory_overcommit_pct)s) for %(memory_overcommit_for)s: if the "
                           "guests use what they were given, ballooning, KSM and swap run out and the OOM killer "
                           "stops a guest. Templates and stopped guests do not count.",
        },
    ]),
    ("pve.replication", [
        {
            "alert": "PveReplicationFailed",
            "expr": join("(pve_replication_failed_syncs > 0)", "pve_replication_info", "guest, source, target"),
            "for": "replication_failed_for",
            "severity": "warning",
            "summary": "Replication job {{ $labels.id }} in cluster {{ $labels.cluster }} is failing",
            "description": "Storage replication job {{ $labels.id }} of {{ $labels.guest }} from "
                           "{{ $labels.source }} to {{ $labels.target }} in cluster {{ $labels.cluster }} "
                           "has failed {{ $value }} time(s) in a row; the replica is getting older.",
        },
        {
            "alert": "PveReplicationLate",
            "expr": join("(time() - pve_replication_next_sync_timestamp_seconds > %(replication_late_seconds)s)",
                         "pve_replication_info", "guest, source, target"),
            "for": "replication_late_for",
            "severity": "warning",
            "summary": "Replication job {{ $labels.id }} in cluster {{ $labels.cluster }} is late",
            "description": "Storage replication job {{ $labels.id }} of {{ $labels.guest }} from "
                           "{{ $labels.source }} to {{ $labels.target }} in cluster {{ $labels.cluster }} "
                           "should have run {{ $value | humanizeDuration }} ago (more than "
                           "%(replication_late_seconds)s s): pvescheduler is not running it.",
        },
    ]),
    ("pve-exporter.pbs", [
        {
            "alert": "PbsDown",
            "expr": "pbs_up == 0",
            "for": "pbs_down_for",
            "severity": "critical",
            "summary": "pve_exporter cannot reach Proxmox Backup Server {{ $labels.server }}",
            "description": "No endpoint of Proxmox Backup Server {{ $labels.server }} has answered /version for "
                           "%(pbs_down_for)s (down, a wrong token, or a certificate that is not the pinned one: "
                           "pve_exporter_pbs_collector_error_info names the kind). Its last good data is served for "
                           "a bounded time, then dropped.",
        },
        {
            "alert": "PbsDatastoreAlmostFull",
            "expr": "pbs_datastore_used_bytes / (pbs_datastore_size_bytes > 0) > %(pbs_datastore_almost_full_ratio)s",
            "for": "pbs_datastore_almost_full_for",
            "severity": "warning",
            "summary": "Datastore {{ $labels.datastore }} of backup server {{ $labels.server }} is "
                       "{{ $value | humanizePercentage }} full",
            "description": "Datastore {{ $labels.datastore }} on Proxmox Backup Server {{ $labels.server }} is more "
                           "than %(pbs_datastore_almost_full_pct)s full. When it is full, backups fail.",
        },
        {
            "alert": "PbsDatastoreFullSoon",
            "expr": "pbs_datastore_estimated_full_timestamp_seconds - time() < %(pbs_datastore_full_horizon_seconds)s",
            "for": "pbs_datastore_full_soon_for",
            "severity": "warning",
            "summary": "Datastore {{ $labels.datastore }} of backup server {{ $labels.server }} is full in "
                       "{{ $value | humanizeDuration }}",
            "description": "Proxmox Backup Server {{ $labels.server }} estimates from a month of usage that datastore "
                           "{{ $labels.datastore }} is full in {{ $value | humanizeDuration }} (within "
                           "%(pbs_datastore_full_horizon)s).",
        },
        {
            "alert": "PbsGarbageCollectionFailed",
            "expr": "pbs_gc_last_run_success == 0",
            "for": "pbs_gc_failed_for",
            "severity": "warning",
            "summary": "Garbage collection of datastore {{ $labels.datastore }} on {{ $labels.server }} failed",
            "description": "The last garbage collection of datastore {{ $labels.datastore }} on Proxmox Backup "
                           "Server {{ $labels.server }} failed: pruned backups do not free space.",
        },
        {
            "alert": "PbsJobFailed",
            "expr": "pbs_job_last_run_success == 0",
            "for": "pbs_job_failed_for",
            "severity": "warning",
            "summary": "{{ $labels.job_type }} job {{ $labels.job_id }} on {{ $labels.server }} failed",
            "description": "The last run of {{ $labels.job_type }} job {{ $labels.job_id }} (datastore "
                           "{{ $labels.datastore }}) on Proxmox Backup Server {{ $labels.server }} failed.",
        },
        {
            "alert": "PbsBackupVerificationFailed",
            "expr": "pbs_backup_group_last_verified_ok == 0",
            "for": "pbs_verify_failed_for",
            "severity": "critical",
            "summary": "The last verified backup of {{ $labels.backup_type }}/{{ $labels.backup_id }} on "
                       "{{ $labels.server }} is corrupt",
            "description": "The newest verified snapshot of backup group {{ $labels.backup_type }}/"
                           "{{ $labels.backup_id }} (namespace '{{ $labels.namespace }}', datastore "
                           "{{ $labels.datastore }}) on Proxmox Backup Server {{ $labels.server }} failed "
                           "verification: a restore from it may fail.",
        },
    ]),
    ("pve-exporter.influxdb", [
        {
            "alert": "PveInfluxWriteFailing",
            "expr": "sum by (output) (increase(pve_exporter_influx_failures_total[%(influx_window)s])) > 0\n"
                    "unless on (output)\n"
                    "sum by (output) (increase(pve_exporter_influx_points_written_total[%(influx_window)s])) > 0",
            "for": "influx_failing_for",
            "severity": "warning",
            "summary": "pve_exporter cannot write to InfluxDB output {{ $labels.output }}",
            "description": "Every write to InfluxDB output {{ $labels.output }} has failed for "
                           "%(influx_failing_for)s (see pve_exporter_influx_failures_total by reason). Points "
                           "wait in memory and in the on-disk spool; once the spool is full the oldest are "
                           "dropped (PveInfluxDroppingPoints).",
        },
        {
            "alert": "PveInfluxDroppingPoints",
            "expr": "sum by (output, reason) (increase(pve_exporter_influx_points_dropped_total"
                    "[%(influx_window)s])) > 0\n"
                    "or\n"
                    "label_replace(\n"
                    "  sum by (output) (increase(pve_exporter_influx_snapshots_dropped_total"
                    "[%(influx_window)s])) > 0,\n"
                    "  \"reason\", \"snapshots_not_encoded\", \"\", \"\"\n"
                    ")",
            "for": "influx_dropping_for",
            "severity": "warning",
            "summary": "pve_exporter is dropping data for InfluxDB output {{ $labels.output }} ({{ $labels.reason }})",
            "description": "pve_exporter dropped data meant for InfluxDB output {{ $labels.output }} in the last "
                           "%(influx_window)s, reason {{ $labels.reason }}: spool_full (outage longer than the "
                           "spool holds), rejected (InfluxDB refused the points: 400/413/422), queue_full or "
                           "shutdown (no spool configured), snapshots_not_encoded (the encoder fell behind). "
                           "That data is lost.",
        },
        {
            "alert": "PveInfluxSpoolBacklog",
            "expr": "pve_exporter_influx_spool_bytes > 0",
            "for": "influx_spool_for",
            "severity": "warning",
            "summary": "InfluxDB output {{ $labels.output }} has a backlog of {{ $value | humanize1024 }}B on disk",
            "description": "The on-disk spool of InfluxDB output {{ $labels.output }} has not been empty for "
                           "%(influx_spool_for)s (now {{ $value | humanize1024 }}B): InfluxDB is down or accepts "
                           "writes slower than pve_exporter produces them.",
        },
    ]),
    ("pve-exporter.operations", [
        {
            "alert": "PvePowerActionsFailing",
            "expr": "sum by (cluster, action) (\n"
                    "  increase(pve_exporter_operations_total{result=~\"failed|timed_out\"}[%(operations_window)s])\n"
                    ") >= %(operations_failed_min)s",
            "for": "operations_failing_for",
            "severity": "warning",
            "summary": "Power action {{ $labels.action }} keeps failing in cluster {{ $labels.cluster }}",
            "description": "At least %(operations_failed_min)s `{{ $labels.action }}` operations of the control "
                           "API failed or timed out in cluster {{ $labels.cluster }} in the last "
                           "%(operations_window)s. The operation history (GET /api/v1/operations?status=failed) "
                           "has PVE's error for each.",
        },
    ]),
]


def _pct(ratio: float) -> str:
    return f"{ratio * 100:g}%"


def _duration_words(seconds: int) -> str:
    return f"{seconds // 3600}h" if seconds % 3600 == 0 else f"{seconds}s"


def template_values(thresholds: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {**SELECTORS, **thresholds}
    for key in ("node_cpu", "node_memory", "storage_almost_full", "storage_full", "overrun", "ssd_wearout",
                "memory_overcommit"):
        values[f"{key}_pct"] = _pct(thresholds[f"{key}_ratio"])
    values["storage_fill_min_pct"] = _pct(thresholds["storage_fill_min_ratio"])
    values["storage_fill_horizon"] = _duration_words(int(thresholds["storage_fill_horizon_seconds"]))
    values["backup_max_age"] = _duration_words(int(thresholds["backup_max_age_seconds"]))
    values["pbs_datastore_almost_full_pct"] = _pct(thresholds["pbs_datastore_almost_full_ratio"])
    values["pbs_datastore_full_horizon"] = f"{thresholds['pbs_datastore_full_horizon_seconds'] / 86400:g} days"
    return values


def anchor(alert: str) -> str:
    """The docs heading of an alert is its name; GitHub's anchor is the lower-cased heading."""
    return alert.lower()


def build(thresholds: dict[str, Any] | None = None, runbook_base_url: str = RUNBOOK_BASE_URL) -> dict[str, Any]:
    t = {**THRESHOLDS, **(thresholds or {})}
    values = template_values(t)
    groups = []
    for name, defs in RULES:
        rules = []
        for d in defs:
            rules.append({
                "alert": d["alert"],
                "expr": d["expr"] % values,
                "for": t[d["for"]],
                "labels": {"severity": d["severity"]},
                "annotations": {
                    "summary": d["summary"] % values,
                    "description": d["description"] % values,
                    "runbook_url": f"{runbook_base_url}#{anchor(d['alert'])}",
                },
            })
        groups.append({"name": name, "rules": rules})
    return {"groups": groups}


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)

HEADER = (
    "# Generated by alerts/generate.py — do not edit; change THRESHOLDS there and run `python alerts/generate.py`.\n"
    "# Runbook: docs/dashboards-alerts.md\n"
)


def render(thresholds: dict[str, Any] | None = None, runbook_base_url: str = RUNBOOK_BASE_URL) -> str:
    body = yaml.dump(build(thresholds, runbook_base_url), Dumper=_Dumper, sort_keys=False, width=120,
                     allow_unicode=True)
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the committed file is not up to date")
    p.add_argument("--e2e", action="store_true", help="write the short-`for:` variant used by the e2e test")
    p.add_argument("--output", type=Path, default=None, help=f"output file (default: {OUTPUT})")
    p.add_argument("--runbook-base-url", default=RUNBOOK_BASE_URL,
                   help="URL of docs/dashboards-alerts.md as your users reach it (default: %(default)s)")
    args = p.parse_args(argv)
    text = render(E2E_OVERRIDES if args.e2e else None, args.runbook_base_url)
    out = args.output or OUTPUT
    if args.check:
        current = out.read_text() if out.exists() else ""
        if current != text:
            print(f"{out} is out of date: run `python alerts/generate.py`", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    out.write_text(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
