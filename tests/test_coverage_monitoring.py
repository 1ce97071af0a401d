"""Issue 13's dashboard panels colour values where the hardware alerts fire: one number on both sides."""

from __future__ import annotations

import json

from tests.monitoring import ROOT, load_module

alerts_gen = load_module(ROOT / "alerts" / "generate.py")
dash_gen = load_module(ROOT / "dashboards" / "generate.py")


def test_hardware_thresholds_match_the_alert_rules():
    t = alerts_gen.THRESHOLDS
    assert t["ssd_wearout_ratio"] == dash_gen.SSD_WEAROUT_RATIO
    assert t["certificate_days"] == dash_gen.CERTIFICATE_DAYS
    assert t["memory_overcommit_ratio"] == dash_gen.MEMORY_OVERCOMMIT_RATIO


def test_node_dashboard_has_a_panel_for_each_hardware_alert():
    node = json.dumps(dash_gen.node_detail())
    for metric in ("pve_zfs_pool_healthy", "pve_physical_disk_healthy", "pve_physical_disk_wearout_ratio",
                   "pve_node_certificate_expiry_timestamp_seconds", "pve_node_allocated_memory_bytes",
                   "pve_node_allocated_cpus", "pve_node_zfs_arc_size_bytes"):
        assert metric in node, metric
    rules = alerts_gen.render()
    for alert in ("PveZfsPoolDegraded", "PveDiskSmartFailed", "PveSsdWearoutHigh", "PveCertificateExpiring",
                  "PveCertificateExpired", "PveNodeMemoryOvercommitted"):
        assert f"alert: {alert}" in rules
