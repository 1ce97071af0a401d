#!/usr/bin/env python3
"""Generate the Grafana dashboards of pve_exporter (dashboards/*.json) from plain Python.

    python dashboards/generate.py            # (re)write every dashboards/*.json
    python dashboards/generate.py --check    # exit 1 if a committed file differs from what this makes

Dashboards (stable uids, so links and bookmarks survive regeneration):

    pve-overview.json         Proxmox VE overview (Prometheus): clusters → nodes → guests, storage, exporter health
    pve-node.json             Proxmox VE node (Prometheus)
    pve-guest.json            Proxmox VE guest (Prometheus)
    pve-operations.json       Proxmox VE power operations (Prometheus, control API self-metrics)
    pve-influxdb.json         Proxmox VE overview (InfluxDB, InfluxQL over PVE's External Metric Server schema)

Conventions (checked by tests/test_dashboards.py): a `datasource` variable and every panel and
query on `${datasource}`; `cluster`/`node`/`guest` query variables, multi-value, refresh on time
range change (2); no `__inputs`; a unit and a description on every panel; `$__rate_interval` in
every rate(); rate()/increase() only on counters; pve_cpu_usage_ratio used as it is (already 0..1);
a shared storage counted once, not once per node; names joined from the `*_info` series. Joins go
through `max by (...)` on the info side, so two scrapes of the same data cannot break them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEMA_VERSION = 39  # Grafana 10.3 / 11.x
TAGS = ["proxmox", "pve_exporter"]

PROM = {"type": "prometheus", "uid": "${datasource}"}
INFLUX = {"type": "influxdb", "uid": "${datasource}"}

# -- PromQL building blocks ---------------------------------------------------------------------

C = 'cluster=~"$cluster"'
NODE_INFO = f'max by (cluster, id, name) (pve_node_info{{{C}, name=~"$node"}})'
GUEST_INFO_SEL = f'pve_guest_info{{{C}, node=~"$node", name=~"$guest"}}'
GUEST_LABELS = "name, node, type"
GUEST_INFO = f"max by (cluster, id, {GUEST_LABELS}) ({GUEST_INFO_SEL})"
NODE_IDS = 'id=~"node/.+"'
GUEST_IDS = 'id=~"(qemu|lxc)/.+"'
STORAGE_IDS = 'id=~"storage/.+"'
# 0 for every selected cluster: keeps a count panel at 0 instead of "No data" when nothing is wrong.
ZERO_PER_CLUSTER = f"0 * max by (cluster) (pve_exporter_cluster_up{{{C}}})"
NODE_DOWN_BY_NODE = f'label_replace(pve_up{{{C}, {NODE_IDS}}} == 0, "node", "$1", "id", "node/(.+)")'
# The age of a guest's newest backup at which PveGuestBackupTooOld fires (alerts/generate.py THRESHOLDS
# "backup_max_age_seconds"; tests/test_dashboards.py keeps the two equal).
BACKUP_MAX_AGE_SECONDS = 36 * 3600
BACKUP_AGE = f"time() - pve_guest_last_backup_timestamp_seconds{{{C}, {GUEST_IDS}}}"
# Where the hardware alerts fire (alerts/generate.py THRESHOLDS ssd_wearout_ratio, certificate_days,
# memory_overcommit_ratio; tests/test_coverage_monitoring.py keeps them equal).
SSD_WEAROUT_RATIO = 0.1
CERTIFICATE_DAYS = 14
MEMORY_OVERCOMMIT_RATIO = 1.0
NODE_NAME = f'{C}, node=~"$node"'  # series labelled with the node's name (ZFS, disks, certificates)


def node_join(expr: str) -> str:
    """A per-node series (id="node/…") with the node's `name`, limited to the selected nodes."""
    return f"({expr}) * on (cluster, id) group_left (name) {NODE_INFO}"


def guest_join(expr: str) -> str:
    """A per-guest series with `name`, `node`, `type`, limited to the selected nodes and guests."""
    return f"({expr}) * on (cluster, id) group_left ({GUEST_LABELS}) {GUEST_INFO}"


def guest_row(expr: str) -> str:
    """guest_join reduced to exactly (cluster, id, name, node, type): the row key of guest tables."""
    return f"max by (cluster, id, {GUEST_LABELS}) ({guest_join(expr)})"


def node_row(expr: str) -> str:
    return f"max by (cluster, name) ({node_join(expr)})"


def count_or_zero(expr: str) -> str:
    return f"count by (cluster) ({expr}) or on (cluster) {ZERO_PER_CLUSTER}"


def storage_dedup(per_id: str) -> str:
    """Per storage and node → shared storages once (node="shared"), local storages per node.

    PVE lists a shared storage (NFS, Ceph, PBS, ...) under every node with the same numbers, so
    summing or listing per node would count it N times.
    """
    info = f'pve_storage_info{{{C}, node=~"$node"}}'
    return (
        f"label_replace(max by (cluster, storage, plugintype) ("
        f"({per_id}) * on (cluster, id) group_left (storage, plugintype) "
        f"max by (cluster, id, storage, plugintype) ({info}) and on (cluster, id) (pve_storage_shared == 1)"
        f'), "node", "shared", "", "")'
        f" or max by (cluster, storage, plugintype, node) ("
        f"({per_id}) * on (cluster, id) group_left (storage, plugintype, node) "
        f"max by (cluster, id, storage, plugintype, node) ({info}) and on (cluster, id) (pve_storage_shared == 0))"
    )


GUEST_SHOULD_RUN_DOWN = (
    f"((pve_up{{{C}, {GUEST_IDS}}} == 0) and on (cluster, id) "
    f'(pve_onboot_status == 1 or on (cluster, id) pve_ha_state{{state="started"}} == 1)) '
    f"* on (cluster, id) group_left ({GUEST_LABELS}) "
    f'max by (cluster, id, {GUEST_LABELS}) (pve_guest_info{{{C}, node=~"$node", name=~"$guest", template="0"}}) '
    f"unless on (cluster, node) {NODE_DOWN_BY_NODE}"
)


NOT_2XX = f'{C}, status!~"2.."'
FAILED = 'result=~"failed|timed_out"'


REPLICATION_LABELS = "guest, source, target"


def replication_row(expr: str, *, from_node: bool = False) -> str:
    """A per-job series with guest/source/target, limited to jobs from the selected nodes or of the guests."""
    if from_node:
        info = f'pve_replication_info{{{C}, source=~"node/$node"}}'
        limit = ""
    else:
        info = f"pve_replication_info{{{C}}}"
        limit = f' and on (cluster, guest) label_replace({GUEST_INFO}, "guest", "$1", "id", "(.+)")'
    return (f"max by (cluster, id, {REPLICATION_LABELS}) ({expr} * on (cluster, id) group_left ({REPLICATION_LABELS}) "
            f"max by (cluster, id, {REPLICATION_LABELS}) ({info}){limit})")


def rate(metric: str, selector: str = C) -> str:
    sel = f"{{{selector}}}" if selector else ""
    return f"rate({metric}{sel}[$__rate_interval])"


# -- panel builders -----------------------------------------------------------------------------


def prom(expr: str, legend: str = "", *, instant: bool = False, table: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": PROM, "editorMode": "code", "expr": expr, "legendFormat": legend or "__auto"}
    if table:
        t.update(format="table", instant=True, range=False)
    else:
        t.update(instant=instant, range=not instant)
    return t


def influxql(query: str, alias: str = "", *, table: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": INFLUX, "query": query, "rawQuery": True,
                         "resultFormat": "table" if table else "time_series"}
    if alias:
        t["alias"] = alias
    return t


def thresholds(*steps: tuple[float | None, str]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


GREEN = thresholds((None, "green"))
RATIO_STEPS = thresholds((None, "green"), (0.8, "orange"), (0.9, "red"))
BAD_IF_ANY = thresholds((None, "green"), (1, "red"))
BACKUP_AGE_STEPS = thresholds((None, "green"), (BACKUP_MAX_AGE_SECONDS, "orange"))
UP_MAPPING = [{"type": "value", "options": {
    "0": {"text": "down", "color": "red", "index": 0},
    "1": {"text": "up", "color": "green", "index": 1},
}}]


def mapping(values: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
    return [{"type": "value", "options": {
        k: {"text": text, "color": color, "index": i} for i, (k, (text, color)) in enumerate(values.items())
    }}]


def panel(
    kind: str,
    title: str,
    description: str,
    unit: str,
    targets: list[dict[str, Any]],
    *,
    w: int = 12,
    h: int = 8,
    ds: dict[str, str] = PROM,
    min: float | None = None,
    max: float | None = None,
    steps: dict[str, Any] | None = None,
    mappings: list[dict[str, Any]] | None = None,
    overrides: list[dict[str, Any]] | None = None,
    options: dict[str, Any] | None = None,
    custom: dict[str, Any] | None = None,
    transformations: list[dict[str, Any]] | None = None,
    no_value: str | None = None,
    decimals: int | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit, "thresholds": steps or GREEN, "mappings": mappings or []}
    if min is not None:
        defaults["min"] = min
    if max is not None:
        defaults["max"] = max
    if no_value is not None:
        defaults["noValue"] = no_value
    if decimals is not None:
        defaults["decimals"] = decimals
    if kind == "timeseries":
        defaults["color"] = {"mode": "palette-classic"}
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                              "spanNulls": False, "axisSoftMin": 0 if min is None else None,
                              **(custom or {})}
        defaults["custom"] = {k: v for k, v in defaults["custom"].items() if v is not None}
    elif kind == "stat":
        defaults["color"] = {"mode": "thresholds"}
    elif kind == "table":
        defaults["custom"] = {"align": "auto", "cellOptions": {"type": "auto"}, **(custom or {})}
    elif kind == "bargauge":
        defaults["color"] = {"mode": "thresholds"}
    base_options = {
        "timeseries": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                       "tooltip": {"mode": "multi", "sort": "desc"}},
        "stat": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                 "colorMode": "background", "graphMode": "none", "justifyMode": "auto", "orientation": "auto",
                 "textMode": "auto"},
        "table": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"]}},
        "bargauge": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                     "displayMode": "gradient", "orientation": "horizontal", "showUnfilled": True},
    }[kind]
    p: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": ds,
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {**base_options, **(options or {})},
        "targets": [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
    }
    if transformations:
        p["transformations"] = transformations
    return p


def unit_override(column: str, unit: str) -> dict[str, Any]:
    return {"matcher": {"id": "byName", "options": column}, "properties": [{"id": "unit", "value": unit}]}


def ts(title: str, description: str, unit: str, targets: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return panel("timeseries", title, description, unit, targets, **kw)


def stat(title: str, description: str, unit: str, targets: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    kw.setdefault("w", 4)
    kw.setdefault("h", 4)
    return panel("stat", title, description, unit, targets, **kw)


def bargauge(title: str, description: str, unit: str, targets: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return panel("bargauge", title, description, unit, targets, **kw)


def table(
    title: str,
    description: str,
    columns: list[tuple[str, str, dict[str, Any]]],
    *,
    unit: str = "none",
    keys: list[str],
    links: dict[str, tuple[str, str]] | None = None,
    hidden: list[str] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """A table of instant queries merged on their label columns.

    `columns` = (header, query, field properties); `keys` = the label columns shown first;
    `links` = {column: (title, url)} data links.
    """
    targets = []
    overrides = []
    rename = {}
    order = {k: i for i, k in enumerate(keys)}
    for i, (header, target, props) in enumerate(columns):
        t = dict(target)
        if "expr" in t:
            t.update(format="table", instant=True, range=False)
        targets.append(t)
        value_col = f"Value #{chr(ord('A') + i)}" if "expr" in t else header
        rename[value_col] = header
        order[value_col] = len(keys) + i
        properties = [{"id": k, "value": v} for k, v in props.items()]
        if properties:
            overrides.append({"matcher": {"id": "byName", "options": header}, "properties": properties})
    for column, (link_title, url) in (links or {}).items():
        overrides.append({"matcher": {"id": "byName", "options": column},
                          "properties": [{"id": "links", "value": [{"title": link_title, "url": url}]}]})
    exclude = {"Time": True, **{c: True for c in hidden or []}}
    transformations = [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {"excludeByName": exclude, "indexByName": order, "renameByName": rename}},
    ]
    kw.setdefault("w", 24)
    kw.setdefault("h", 9)
    return panel("table", title, description, unit, targets, overrides=overrides, transformations=transformations,
                 **kw)


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0},
            "panels": []}


def layout(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Place panels left to right, wrapping at 24 columns; a row starts a new line. Assign ids."""
    x = y = line_h = 0
    out = []
    for i, p in enumerate(items, start=1):
        p = {**p, "id": i}
        g = dict(p["gridPos"])
        if p["type"] == "row":
            y += line_h
            g.update(x=0, y=y)
            y += 1
            x = line_h = 0
        else:
            if x + g["w"] > 24:
                y += line_h
                x = line_h = 0
            g.update(x=x, y=y)
            x += g["w"]
            line_h = max(line_h, g["h"])
        p["gridPos"] = g
        out.append(p)
    return out


# -- variables and dashboards ------------------------------------------------------------------

ALL = {"selected": True, "text": ["All"], "value": ["$__all"]}


def datasource_var(kind: str) -> dict[str, Any]:
    return {"type": "datasource", "name": "datasource", "label": "Data source", "query": kind, "current": {},
            "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1, "regex": ""}


def query_var(name: str, label: str, query: str, ds: dict[str, str]) -> dict[str, Any]:
    return {"type": "query", "name": name, "label": label, "datasource": ds, "query": query, "definition": query,
            "current": ALL, "hide": 0, "includeAll": True, "allValue": ".*", "multi": True, "options": [],
            "refresh": 2, "regex": "", "sort": 1, "skipUrlSync": False}


PROM_VARS = {
    "cluster": query_var("cluster", "Cluster", "label_values(pve_exporter_cluster_up, cluster)", PROM),
    "node": query_var("node", "Node", 'label_values(pve_node_info{cluster=~"$cluster"}, name)', PROM),
    "guest": query_var("guest", "Guest",
                       'label_values(pve_guest_info{cluster=~"$cluster", node=~"$node"}, name)', PROM),
}

NODE_URL = ("/d/pve-node/proxmox-ve-node?${__url_time_range}&${datasource:queryparam}"
            "&var-cluster=${__data.fields.cluster:percentencode}&var-node=${__data.fields.name:percentencode}")
GUEST_URL = ("/d/pve-guest/proxmox-ve-guest?${__url_time_range}&${datasource:queryparam}"
             "&var-cluster=${__data.fields.cluster:percentencode}&var-node=${__data.fields.node:percentencode}"
             "&var-guest=${__data.fields.name:percentencode}")


def dashboard(uid: str, title: str, description: str, kind: str, variables: list[dict[str, Any]],
              panels: list[dict[str, Any]]) -> dict[str, Any]:
    links = [{"type": "dashboards", "title": "pve_exporter", "tags": ["pve_exporter", kind], "asDropdown": True,
              "includeVars": True, "keepTime": True, "icon": "external link", "targetBlank": False}]
    return {
        "id": None,
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [*TAGS, kind],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "timezone": "browser",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": links,
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}]},
        "templating": {"list": [datasource_var(kind), *variables]},
        "panels": layout(panels),
    }


# -- Proxmox VE overview (Prometheus) ------------------------------------------------------------


def guest_table(title: str, description: str) -> dict[str, Any]:
    g = f"{C}, {GUEST_IDS}"
    return table(
        title, description,
        [
            ("status", prom(guest_row(f"pve_up{{{g}}}")),
             {"mappings": UP_MAPPING, "custom.cellOptions": {"type": "color-text"}}),
            ("CPU", prom(guest_row(f"pve_cpu_usage_ratio{{{g}}}")),
             {"unit": "percentunit", "min": 0, "max": 1, "custom.cellOptions": {"type": "gauge", "mode": "basic"}}),
            ("CPUs", prom(guest_row(f"pve_cpu_usage_limit{{{g}}}")), {"unit": "none"}),
            ("memory used", prom(guest_row(f"pve_memory_usage_bytes{{{g}}}")), {"unit": "bytes"}),
            ("memory", prom(guest_row(f"pve_memory_size_bytes{{{g}}}")), {"unit": "bytes"}),
            ("uptime", prom(guest_row(f"pve_uptime_seconds{{{g}}}")), {"unit": "dtdurations"}),
            ("start at boot", prom(guest_row(f"pve_onboot_status{{{C}}}")),
             {"mappings": mapping({"0": ("no", "text"), "1": ("yes", "text")})}),
            ("last backup", prom(guest_row(BACKUP_AGE)),
             {"unit": "s", "thresholds": BACKUP_AGE_STEPS, "custom.cellOptions": {"type": "color-text"}}),
        ],
        keys=["cluster", "node", "id", "name", "type"],
        links={"name": ("Guest detail", GUEST_URL)},
    )


def node_table(title: str, description: str) -> dict[str, Any]:
    n = f"{C}, {NODE_IDS}"
    return table(
        title, description,
        [
            ("status", prom(node_row(f"pve_up{{{n}}}")),
             {"mappings": mapping({"0": ("offline", "red"), "1": ("online", "green")}),
              "custom.cellOptions": {"type": "color-text"}}),
            ("CPU", prom(node_row(f"pve_cpu_usage_ratio{{{n}}}")),
             {"unit": "percentunit", "min": 0, "max": 1, "thresholds": RATIO_STEPS,
              "custom.cellOptions": {"type": "gauge", "mode": "basic"}}),
            ("memory", prom(node_row(f"pve_memory_usage_bytes{{{n}}} / pve_memory_size_bytes{{{n}}}")),
             {"unit": "percentunit", "min": 0, "max": 1, "thresholds": RATIO_STEPS,
              "custom.cellOptions": {"type": "gauge", "mode": "basic"}}),
            ("load 1m", prom(node_row(f"pve_node_load1{{{n}}}")), {"unit": "none", "decimals": 2}),
            ("CPUs", prom(node_row(f"pve_cpu_usage_limit{{{n}}}")), {"unit": "none"}),
            ("RAM", prom(node_row(f"pve_memory_size_bytes{{{n}}}")), {"unit": "bytes"}),
            ("uptime", prom(node_row(f"pve_uptime_seconds{{{n}}}")), {"unit": "dtdurations"}),
            ("guests running", prom(
                f'max by (cluster, name) (label_replace(count by (cluster, node) '
                f'({guest_join(f"pve_up{{{C}, {GUEST_IDS}}} == 1")}), "name", "$1", "node", "(.*)"))'),
             {"unit": "none"}),
        ],
        keys=["cluster", "name"],
        links={"name": ("Node detail", NODE_URL)},
        h=8,
    )


def storage_panels(scope: str) -> list[dict[str, Any]]:
    ratio = f"pve_disk_usage_bytes{{{C}, {STORAGE_IDS}}} / (pve_disk_size_bytes{{{C}, {STORAGE_IDS}}} > 0)"
    used = f"pve_disk_usage_bytes{{{C}, {STORAGE_IDS}}}"
    size = f"pve_disk_size_bytes{{{C}, {STORAGE_IDS}}}"
    dedup_note = ("A shared storage (NFS, Ceph, PBS, ...) is listed once with node `shared`, not once per node; "
                  "local storages once per node.")
    return [
        bargauge(
            "Storage usage",
            f"Used share of each active storage {scope}. {dedup_note} Inactive storages have no usage.",
            "percentunit",
            [prom(storage_dedup(ratio), "{{cluster}} · {{storage}} · {{node}}", instant=True)],
            min=0, max=1, steps=RATIO_STEPS, w=12, h=10,
        ),
        table(
            "Storages",
            f"Size and usage of every storage {scope}. {dedup_note}",
            [
                ("used", prom(storage_dedup(ratio)),
                 {"unit": "percentunit", "min": 0, "max": 1, "thresholds": RATIO_STEPS,
                  "custom.cellOptions": {"type": "gauge", "mode": "basic"}}),
                ("used bytes", prom(storage_dedup(used)), {"unit": "bytes"}),
                ("size", prom(storage_dedup(size)), {"unit": "bytes"}),
            ],
            keys=["cluster", "storage", "node", "plugintype"],
            w=12, h=10,
        ),
        ts(
            "Storage used over time",
            f"Bytes used per storage {scope}. {dedup_note} A steady climb is what PveStorageFillingUp "
            "extrapolates.",
            "bytes",
            [prom(storage_dedup(used), "{{cluster}} · {{storage}} · {{node}}")],
            w=24,
        ),
    ]


def overview() -> dict[str, Any]:
    g = f"{C}, {GUEST_IDS}"
    panels: list[dict[str, Any]] = [
        row("Clusters"),
        stat("Quorum", "Whether each cluster is quorate (pve_up of cluster/<name>). Without quorum /etc/pve is "
             "read-only and guests cannot be started or changed. Standalone nodes have no quorum entry.", "none",
             [prom(f'max by (cluster) (pve_up{{{C}, id=~"cluster/.+"}})', "{{cluster}}", instant=True)],
             mappings=mapping({"0": ("no quorum", "red"), "1": ("quorate", "green")})),
        stat("Nodes online", "Nodes each cluster sees online (corosync membership).", "none",
             [prom(f"sum by (cluster) (pve_up{{{C}, {NODE_IDS}}})", "{{cluster}}", instant=True)]),
        stat("Nodes offline", "Nodes each cluster sees offline. PveNodeDown alerts after 2 minutes.", "none",
             [prom(count_or_zero(f"pve_up{{{C}, {NODE_IDS}}} == 0"), "{{cluster}}", instant=True)],
             steps=BAD_IF_ANY),
        stat("Guests running", "Running VMs and containers per cluster.", "none",
             [prom(count_or_zero(f"pve_up{{{g}}} == 1"), "{{cluster}}", instant=True)]),
        stat("Guests down that should run",
             "Guests that are not running although they start at boot or are HA-managed with requested state "
             "`started` (templates and guests of offline nodes excluded): what PveGuestDown alerts on. "
             "Intentionally stopped guests do not count.", "none",
             [prom(count_or_zero(GUEST_SHOULD_RUN_DOWN), "{{cluster}}", instant=True)], steps=BAD_IF_ANY),
        stat("Data age", "Seconds since the exporter last collected each cluster successfully. Collection is "
             "polled on the exporter's interval, never per scrape; PveDataStale fires above 5 minutes.", "s",
             [prom(f"time() - max by (cluster) (pve_exporter_last_success_timestamp_seconds{{{C}}})",
                   "{{cluster}}", instant=True)],
             steps=thresholds((None, "green"), (60, "orange"), (300, "red"))),
        table(
            "Clusters",
            "One row per cluster: quorum, nodes, guests and the PVE version the API reports. Click a cluster "
            "to narrow this dashboard to it.",
            [
                ("quorate", prom(f'max by (cluster) (pve_up{{{C}, id=~"cluster/.+"}})'),
                 {"mappings": mapping({"0": ("no", "red"), "1": ("yes", "green")}),
                  "custom.cellOptions": {"type": "color-text"}}),
                ("nodes online", prom(f"sum by (cluster) (pve_up{{{C}, {NODE_IDS}}})"), {}),
                ("nodes", prom(f"count by (cluster) (pve_up{{{C}, {NODE_IDS}}})"), {}),
                ("guests running", prom(count_or_zero(f"pve_up{{{g}}} == 1")), {}),
                ("guests", prom(f"count by (cluster) (pve_up{{{g}}})"), {}),
                ("templates", prom(count_or_zero(f'pve_guest_info{{{C}, template="1"}}')), {}),
                ("exporter reaches API", prom(f"max by (cluster) (pve_exporter_cluster_up{{{C}}})"),
                 {"mappings": mapping({"0": ("no", "red"), "1": ("yes", "green")}),
                  "custom.cellOptions": {"type": "color-text"}}),
                ("PVE version", prom(f"max by (cluster, version) (pve_version_info{{{C}}})"), {}),
            ],
            keys=["cluster", "version"],
            hidden=["PVE version"],
            links={"cluster": ("Only this cluster",
                               "/d/pve-overview/proxmox-ve-overview?${__url_time_range}&${datasource:queryparam}"
                               "&var-cluster=${__data.fields.cluster:percentencode}")},
            h=6,
        ),
        row("Nodes"),
        node_table("Nodes", "Every node of the selected clusters: status, CPU and memory usage, load, size and "
                            "uptime. CPU is pve_cpu_usage_ratio as it is (0–1 of the node's CPUs). Click a node for "
                            "its detail dashboard."),
        ts("Node CPU usage", "CPU usage of each node, 0–100 % of all its CPUs (pve_cpu_usage_ratio is already "
           "normalised; it is not divided by the CPU count again).", "percentunit",
           [prom(node_join(f"pve_cpu_usage_ratio{{{C}, {NODE_IDS}}}"), "{{cluster}} · {{name}}")], min=0, max=1),
        ts("Node memory usage", "Used share of each node's RAM (used = total − available, as PVE counts it).",
           "percentunit",
           [prom(node_join(f"pve_memory_usage_bytes{{{C}, {NODE_IDS}}} / pve_memory_size_bytes{{{C}, {NODE_IDS}}}"),
                 "{{cluster}} · {{name}}")], min=0, max=1),
        ts("Node load per CPU", "1-minute load average divided by the node's CPU count; above 1 means runnable "
           "tasks wait for a CPU.", "none",
           [prom(node_join(f"pve_node_load1{{{C}, {NODE_IDS}}} / pve_cpu_usage_limit{{{C}, {NODE_IDS}}}"),
                 "{{cluster}} · {{name}}")]),
        ts("Node I/O wait", "Share of CPU time the node spent waiting for I/O (from /nodes/<node>/status).",
           "percentunit",
           [prom(node_join(f"pve_node_iowait_ratio{{{C}, {NODE_IDS}}}"), "{{cluster}} · {{name}}")], min=0),
        row("Guests"),
        guest_table("Guests", "Every VM and container of the selected clusters, nodes and guests. CPU is the share "
                               "of the guest's own CPUs. Click a name for the guest's detail dashboard."),
        ts("Top guests by CPU", "The 10 busiest guests per cluster, by share of their own CPUs.", "percentunit",
           [prom(f"topk by (cluster) (10, {guest_join(f'pve_cpu_usage_ratio{{{g}}}')})",
                 "{{cluster}} · {{name}} ({{id}})")], min=0, max=1),
        ts("Top guests by memory", "The 10 guests per cluster using the most memory (guest view for VMs with a "
           "balloon driver, cgroup usage otherwise).", "bytes",
           [prom(f"topk by (cluster) (10, {guest_join(f'pve_memory_usage_bytes{{{g}}}')})",
                 "{{cluster}} · {{name}} ({{id}})")]),
        ts("Guest network traffic per node", "Bytes per second all guests of a node receive (up) and send "
           "(down), from the guests' cumulative counters.", "Bps",
           [prom(f"sum by (cluster, node) ({guest_join(rate('pve_network_receive_bytes_total', g))})",
                 "{{cluster}} · {{node}} received"),
            prom(f"-sum by (cluster, node) ({guest_join(rate('pve_network_transmit_bytes_total', g))})",
                 "{{cluster}} · {{node}} sent")]),
        ts("Guest disk I/O per node", "Bytes per second all guests of a node read (up) and write (down).", "Bps",
           [prom(f"sum by (cluster, node) ({guest_join(rate('pve_disk_read_bytes_total', g))})",
                 "{{cluster}} · {{node}} read"),
            prom(f"-sum by (cluster, node) ({guest_join(rate('pve_disk_written_bytes_total', g))})",
                 "{{cluster}} · {{node}} written")]),
        row("Storage"),
        *storage_panels("of the selected clusters and nodes"),
        row("Problems"),
        stat("Storages unavailable", "Storages that are enabled but not active on a node that is up "
             "(PveStorageUnavailable).", "none",
             [prom(count_or_zero(f"(pve_up{{{C}, {STORAGE_IDS}}} == 0) * on (cluster, id) group_left (node) "
                                 f'max by (cluster, id, node) (pve_storage_info{{{C}, node=~"$node"}}) '
                                 f"unless on (cluster, node) {NODE_DOWN_BY_NODE}"), "{{cluster}}", instant=True)],
             steps=BAD_IF_ANY, w=4),
        stat("HA errors", "HA resources in state `error` or `fence` (PveHaError).", "none",
             [prom(count_or_zero(f'pve_ha_state{{{C}, state=~"error|fence"}} == 1'), "{{cluster}}", instant=True)],
             steps=BAD_IF_ANY, w=3),
        stat("Replication jobs failing", "Storage replication jobs with failed syncs (PveReplicationFailed).",
             "none", [prom(count_or_zero(f"pve_replication_failed_syncs{{{C}}} > 0"), "{{cluster}}", instant=True)],
             steps=BAD_IF_ANY, w=4),
        stat("Guests not backed up", "Guests (not templates) that no backup job covers (PveGuestNotBackedUp).",
             "none",
             [prom(count_or_zero(f"pve_not_backed_up_info{{{C}}} == 1 and on (cluster, id) "
                                 f'pve_guest_info{{template="0"}}'), "{{cluster}}", instant=True)],
             steps=thresholds((None, "green"), (1, "orange")), w=3),
        stat("Backups too old", f"Guests (not templates) whose newest backup on the backup storages is older "
             f"than {BACKUP_MAX_AGE_SECONDS // 3600} hours (PveGuestBackupTooOld). Guests without any backup "
             "are counted under *Guests not backed up* instead.", "none",
             [prom(count_or_zero(f"({BACKUP_AGE}) > {BACKUP_MAX_AGE_SECONDS} and on (cluster, id) "
                                 f'pve_guest_info{{template="0"}}'), "{{cluster}}", instant=True)],
             steps=thresholds((None, "green"), (1, "orange")), w=3),
        stat("Guests locked", "Guests carrying a config lock (backup, migrate, snapshot, ...) right now; "
             "PveGuestLockStuck fires when one is held for hours. `suspended` (hibernated) is not counted.", "none",
             [prom(count_or_zero(f'pve_lock_state{{{C}, state!="suspended"}} == 1'), "{{cluster}}", instant=True)],
             steps=thresholds((None, "green"), (1, "orange")), w=3),
        stat("Subscriptions not active", "Nodes whose subscription is expired, invalid or suspended "
             "(nodes without one are not counted).", "none",
             [prom(count_or_zero(f'pve_subscription_status{{{C}, status=~"expired|invalid|suspended"}} == 1'),
                   "{{cluster}}", instant=True)], steps=BAD_IF_ANY, w=4),
        row("Exporter health"),
        stat("Cluster API reachable", "1 when the exporter's last cycle got an answer from the cluster's API "
             "(PveClusterUnreachable fires when it stays 0).", "none",
             [prom(f"max by (cluster) (pve_exporter_cluster_up{{{C}}})", "{{cluster}}", instant=True)],
             mappings=mapping({"0": ("unreachable", "red"), "1": ("reachable", "green")}), w=6),
        stat("Failed collectors", "Collectors whose last run did not fetch everything (PveCollectorFailing); "
             "their data is stale or missing.", "none",
             [prom(count_or_zero(f"pve_exporter_collector_success{{{C}}} == 0"), "{{cluster}}", instant=True)],
             steps=BAD_IF_ANY, w=6),
        stat("API error ratio", "Share of the exporter's PVE API requests that did not get a 2xx answer, over the "
             "dashboard's time range.", "percentunit",
             [prom(f'(sum by (cluster) (increase(pve_exporter_api_requests_total{{{C}, status!~"2.."}}[$__range])) '
                   f"or 0 * sum by (cluster) (increase(pve_exporter_api_requests_total{{{C}}}[$__range]))) "
                   f"/ sum by (cluster) (increase(pve_exporter_api_requests_total{{{C}}}[$__range]))",
                   "{{cluster}}", instant=True)],
             steps=thresholds((None, "green"), (0.01, "orange"), (0.1, "red")), w=6),
        stat("Cycle overruns", "Collection slots skipped in the time range because the previous cycle was still "
             "running (PveCollectionOverrunning).", "none",
             [prom(f"sum by (cluster) (increase(pve_exporter_cycle_overruns_total{{{C}}}[$__range]))",
                   "{{cluster}}", instant=True)], steps=thresholds((None, "green"), (1, "orange")), w=6,
             decimals=0),
        ts("Data age", "Seconds since each cluster was last collected successfully; a sawtooth up to the "
           "collection interval is normal.", "s",
           [prom(f"time() - pve_exporter_last_success_timestamp_seconds{{{C}}}", "{{cluster}}")], w=8),
        ts("Collection cycle duration", "Wall time of each cluster's last collection cycle; close to the interval "
           "means overruns are near.", "s",
           [prom(f"pve_exporter_cycle_duration_seconds{{{C}}}", "{{cluster}}")], w=8),
        ts("Collector duration", "Wall time of each collector's last run.", "s",
           [prom(f"pve_exporter_collector_duration_seconds{{{C}}}", "{{cluster}} · {{collector}}")], w=8),
        ts("API requests by status", "PVE API requests per second by HTTP status (or timeout / unreachable).",
           "reqps",
           [prom(f"sum by (cluster, status) ({rate('pve_exporter_api_requests_total')})",
                 "{{cluster}} · {{status}}")], w=8),
        ts("API errors", "Share of PVE API requests without a 2xx answer.", "percentunit",
           [prom(f"(sum by (cluster) ({rate('pve_exporter_api_requests_total', NOT_2XX)}) "
                 f"or 0 * sum by (cluster) ({rate('pve_exporter_api_requests_total')})) "
                 f"/ sum by (cluster) ({rate('pve_exporter_api_requests_total')})", "{{cluster}}")], w=8, min=0),
        ts("Mean API latency by path", "Seconds per PVE API request, by templated path.", "s",
           [prom(f"sum by (cluster, path) ({rate('pve_exporter_api_request_duration_seconds_total')}) "
                 f"/ sum by (cluster, path) ({rate('pve_exporter_api_requests_total')})",
                 "{{cluster}} · {{path}}")], w=8),
        table(
            "Collectors",
            "Each collector's last run per cluster: success, whether it serves stale data, its duration, the age "
            "of its last full success and, while failing, the kind of error.",
            [
                ("ok", prom(f"max by (cluster, collector) (pve_exporter_collector_success{{{C}}})"),
                 {"mappings": mapping({"0": ("failing", "red"), "1": ("ok", "green")}),
                  "custom.cellOptions": {"type": "color-text"}}),
                ("stale", prom(f"max by (cluster, collector) (pve_exporter_collector_stale{{{C}}})"),
                 {"mappings": mapping({"0": ("fresh", "green"), "1": ("stale", "orange")})}),
                ("duration", prom(f"max by (cluster, collector) (pve_exporter_collector_duration_seconds{{{C}}})"),
                 {"unit": "s"}),
                ("last success", prom(f"time() - max by (cluster, collector) "
                                      f"(pve_exporter_collector_last_success_timestamp_seconds{{{C}}})"),
                 {"unit": "s"}),
                ("error", prom(f"max by (cluster, collector, kind) (pve_exporter_collector_error_info{{{C}}})"),
                 {}),
            ],
            keys=["cluster", "collector", "kind"],
            hidden=["error"],
            w=12, h=10,
        ),
        table(
            "API endpoints",
            "Whether the last request the exporter sent to each API endpoint (and each node address) got an "
            "answer. A failed endpoint is not retried while another one works, so it can read 0 until failover "
            "needs it again.",
            [("answering", prom(f"max by (cluster, endpoint) (pve_exporter_endpoint_up{{{C}}})"),
              {"mappings": mapping({"0": ("no", "red"), "1": ("yes", "green")}),
               "custom.cellOptions": {"type": "color-text"}})],
            keys=["cluster", "endpoint"],
            w=12, h=10,
        ),
        row("InfluxDB output"),
        ts("Points written", "Points per second InfluxDB accepted, per output (`<api>:<url>`).", "short",
           [prom(f"sum by (output) ({rate('pve_exporter_influx_points_written_total', '')})", "{{output}}")],
           w=8),
        ts("Write failures and dropped points", "Failed write requests by reason (retried) and points dropped "
           "for good, by reason (PveInfluxWriteFailing, PveInfluxDroppingPoints).", "short",
           [prom(f"sum by (output, reason) ({rate('pve_exporter_influx_failures_total', '')})",
                 "{{output}} failures: {{reason}}"),
            prom(f"sum by (output, reason) ({rate('pve_exporter_influx_points_dropped_total', '')})",
                 "{{output}} dropped: {{reason}}")], w=8),
        ts("Backlog", "Bytes waiting in memory and in the on-disk spool (PveInfluxSpoolBacklog).", "bytes",
           [prom("pve_exporter_influx_queue_bytes", "{{output}} memory"),
            prom("pve_exporter_influx_spool_bytes", "{{output}} spool")], w=8),
    ]
    return dashboard(
        "pve-overview", "Proxmox VE overview",
        "Clusters, nodes, guests and storage watched by pve_exporter, with the exporter's own health. "
        "Prometheus data source; metric names of prometheus-pve-exporter plus a `cluster` label.",
        "prometheus", [PROM_VARS["cluster"], PROM_VARS["node"], PROM_VARS["guest"]], panels,
    )


# -- Proxmox VE node (Prometheus) ----------------------------------------------------------------


def hardware_panels(n: str, legend: str) -> list[dict[str, Any]]:
    """ZFS pools, physical disks, certificates (slow tier) and what the guests were given (allocation)."""
    zfs = "cluster, node, pool"
    disk = "cluster, node, device"
    cert = "cluster, node, filename"
    return [
        row("Hardware and allocation"),
        table(
            "ZFS pools",
            "Each ZFS pool of the selected nodes: state (PveZfsPoolDegraded fires when not ONLINE), size, used "
            "share, free-space fragmentation and dedup factor. Read on the slow tier.",
            [
                ("state", prom(f"max by ({zfs}, health) (pve_zfs_pool_info{{{NODE_NAME}}})"), {}),
                ("healthy", prom(f"max by ({zfs}) (pve_zfs_pool_healthy{{{NODE_NAME}}})"),
                 {"mappings": mapping({"0": ("not ONLINE", "red"), "1": ("ONLINE", "green")}),
                  "custom.cellOptions": {"type": "color-background"}}),
                ("size", prom(f"max by ({zfs}) (pve_zfs_pool_size_bytes{{{NODE_NAME}}})"), {"unit": "bytes"}),
                ("used", prom(f"max by ({zfs}) (pve_zfs_pool_allocated_bytes{{{NODE_NAME}}} "
                              f"/ pve_zfs_pool_size_bytes{{{NODE_NAME}}})"),
                 {"unit": "percentunit", "thresholds": RATIO_STEPS, "custom.cellOptions": {"type": "color-text"}}),
                ("fragmentation", prom(f"max by ({zfs}) (pve_zfs_pool_fragmentation_ratio{{{NODE_NAME}}})"),
                 {"unit": "percentunit"}),
                ("dedup", prom(f"max by ({zfs}) (pve_zfs_pool_dedup_ratio{{{NODE_NAME}}})"), {"unit": "none"}),
            ],
            keys=["cluster", "node", "pool", "health"],
            hidden=["state"],
            h=6,
        ),
        table(
            "Physical disks",
            "Disks of the selected nodes as PVE lists them (Node → Disks): SMART verdict (PveDiskSmartFailed; "
            "empty when SMART gives none), remaining life of SSDs (PveSsdWearoutHigh below "
            f"{SSD_WEAROUT_RATIO:.0%}), size, model and what uses the disk. Read on the slow tier.",
            [
                ("disk", prom(f"max by ({disk}, type, model, serial, used) "
                              f"(pve_physical_disk_info{{{NODE_NAME}}})"), {}),
                ("SMART", prom(f"max by ({disk}) (pve_physical_disk_healthy{{{NODE_NAME}}})"),
                 {"mappings": mapping({"0": ("FAILED", "red"), "1": ("PASSED", "green")}),
                  "custom.cellOptions": {"type": "color-background"}}),
                ("life left", prom(f"max by ({disk}) (pve_physical_disk_wearout_ratio{{{NODE_NAME}}})"),
                 {"unit": "percentunit", "custom.cellOptions": {"type": "color-text"},
                  "thresholds": thresholds((None, "red"), (SSD_WEAROUT_RATIO, "green"))}),
                ("size", prom(f"max by ({disk}) (pve_physical_disk_size_bytes{{{NODE_NAME}}})"), {"unit": "bytes"}),
            ],
            keys=["cluster", "node", "device", "type", "model", "serial", "used"],
            hidden=["disk"],
            h=8,
        ),
        table(
            "Certificates",
            f"The selected nodes' certificates and the time left until they expire (PveCertificateExpiring "
            f"warns {CERTIFICATE_DAYS} days ahead, PveCertificateExpired once past). Read on the slow tier.",
            [
                ("certificate", prom(f"max by ({cert}, subject, issuer) "
                                     f"(pve_node_certificate_info{{{NODE_NAME}}})"), {}),
                ("expires in", prom(f"max by ({cert}) "
                                    f"(pve_node_certificate_expiry_timestamp_seconds{{{NODE_NAME}}} - time())"),
                 {"unit": "s", "custom.cellOptions": {"type": "color-text"},
                  "thresholds": thresholds((None, "red"), (0, "orange"), (CERTIFICATE_DAYS * 86400, "green"))}),
            ],
            keys=["cluster", "node", "filename", "subject", "issuer"],
            hidden=["certificate"],
            h=6,
        ),
        ts("Allocated memory", "Memory configured for the node's running guests and for all its guests "
           "(templates excluded), as a share of the node's memory. Above "
           f"{MEMORY_OVERCOMMIT_RATIO:.0%} for running guests: PveNodeMemoryOvercommitted.", "percentunit",
           [prom(node_join(f'pve_node_allocated_memory_bytes{{{n}, state="running"}} / on (cluster, id) '
                           f"pve_memory_size_bytes{{{n}}}"), legend + " running"),
            prom(node_join(f'pve_node_allocated_memory_bytes{{{n}, state="all"}} / on (cluster, id) '
                           f"pve_memory_size_bytes{{{n}}}"), legend + " all")], min=0,
           steps=thresholds((None, "green"), (MEMORY_OVERCOMMIT_RATIO, "red")),
           custom={"thresholdsStyle": {"mode": "line"}}),
        ts("Allocated CPUs", "vCPUs of the node's running guests and of all its guests (templates excluded) "
           "beside the node's logical CPUs.", "none",
           [prom(node_join(f'pve_node_allocated_cpus{{{n}, state="running"}}'), legend + " running"),
            prom(node_join(f'pve_node_allocated_cpus{{{n}, state="all"}}'), legend + " all"),
            prom(node_join(f"pve_cpu_usage_limit{{{n}}}"), legend + " node CPUs")]),
        ts("ZFS ARC", "Size of the node's ZFS ARC, from the node RRD (PVE 9 and later; counted as used memory "
           "by the kernel, given back under pressure).", "bytes",
           [prom(node_join(f"pve_node_zfs_arc_size_bytes{{{n}}}"), legend + " ARC"),
            prom(node_join(f"pve_memory_size_bytes{{{n}}}"), legend + " RAM")]),
    ]


def node_detail() -> dict[str, Any]:
    n = f"{C}, {NODE_IDS}"
    legend = "{{cluster}} · {{name}}"
    panels: list[dict[str, Any]] = [
        row("Status"),
        stat("Status", "Online or offline in the cluster's corosync view.", "none",
             [prom(node_join(f"pve_up{{{n}}}"), legend, instant=True)],
             mappings=mapping({"0": ("offline", "red"), "1": ("online", "green")})),
        stat("Uptime", "Time since the node booted.", "dtdurations",
             [prom(node_join(f"pve_uptime_seconds{{{n}}}"), legend, instant=True)]),
        stat("CPUs", "Logical CPUs of the node.", "none",
             [prom(node_join(f"pve_cpu_usage_limit{{{n}}}"), legend, instant=True)]),
        stat("RAM", "Physical memory of the node.", "bytes",
             [prom(node_join(f"pve_memory_size_bytes{{{n}}}"), legend, instant=True)]),
        stat("Guests running", "VMs and containers running on the node.", "none",
             [prom(f"count by (cluster, node) ({guest_join(f'pve_up{{{C}, {GUEST_IDS}}} == 1')})",
                   "{{cluster}} · {{node}}", instant=True)]),
        stat("Subscription due", "Next due date of the node's subscription (nodes without one show nothing; "
             "PveSubscriptionExpiring warns 14 days ahead).", "dateTimeAsIsoNoDateIfToday",
             [prom(node_join(f"pve_subscription_next_due_timestamp_seconds{{{n}}} * 1000"), legend, instant=True)],
             no_value="no subscription"),
        table(
            "Node",
            "Version, kernel, CPU model and subscription of each selected node.",
            [
                ("PVE", prom(f"max by (cluster, name, pveversion, kernel) "
                             f"({node_join(f'pve_node_kernel_info{{{n}}}')})"), {}),
                ("CPU", prom(f"max by (cluster, name, model, sockets, cores) "
                             f"({node_join(f'pve_node_cpu_info{{{n}}}')})"), {}),
                ("subscription", prom(f"max by (cluster, name, status) "
                                      f"({node_join(f'pve_subscription_status{{{n}}} == 1')})"), {}),
            ],
            keys=["cluster", "name", "pveversion", "kernel", "model", "sockets", "cores", "status"],
            hidden=["PVE", "CPU", "subscription"],
            h=5,
        ),
        row("CPU and memory"),
        ts("CPU usage", "Share of all the node's CPUs in use (pve_cpu_usage_ratio, already 0–1) and the share "
           "spent waiting for I/O.", "percentunit",
           [prom(node_join(f"pve_cpu_usage_ratio{{{n}}}"), legend + " CPU"),
            prom(node_join(f"pve_node_iowait_ratio{{{n}}}"), legend + " I/O wait")], min=0, max=1),
        ts("Load average", "1, 5 and 15 minute load averages.", "none",
           [prom(node_join(f"pve_node_load1{{{n}}}"), legend + " 1m"),
            prom(node_join(f"pve_node_load5{{{n}}}"), legend + " 5m"),
            prom(node_join(f"pve_node_load15{{{n}}}"), legend + " 15m")]),
        ts("Memory", "RAM in use (total − available), available and total; KSM-shared pages.", "bytes",
           [prom(node_join(f"pve_memory_usage_bytes{{{n}}}"), legend + " used"),
            prom(node_join(f"pve_node_memory_available_bytes{{{n}}}"), legend + " available"),
            prom(node_join(f"pve_memory_size_bytes{{{n}}}"), legend + " total"),
            prom(node_join(f"pve_node_ksm_shared_bytes{{{n}}}"), legend + " KSM shared")]),
        ts("Swap", "Swap in use and swap size.", "bytes",
           [prom(node_join(f"pve_node_swap_usage_bytes{{{n}}}"), legend + " used"),
            prom(node_join(f"pve_node_swap_size_bytes{{{n}}}"), legend + " size")]),
        ts("Root filesystem", "Used share of the node's root filesystem (where PVE keeps logs, ISO images and "
           "local backups by default).", "percentunit",
           [prom(node_join(f"pve_node_rootfs_usage_bytes{{{n}}} / pve_node_rootfs_size_bytes{{{n}}}"), legend)],
           min=0, max=1),
        stat("HA state", "The node's state in the HA manager (nodes of clusters without HA resources show "
             "nothing).", "none",
             [prom(f"max by (cluster, name, state) ({node_join(f'pve_ha_state{{{n}}} == 1')})",
                   "{{cluster}} · {{name}}: {{state}}", instant=True)],
             options={"textMode": "name"}, no_value="no HA", w=12, h=8),
        row("Guests on the node"),
        guest_table("Guests", "VMs and containers on the selected nodes (and guests). Click a name for its "
                               "detail dashboard."),
        ts("Guest CPU usage", "Each guest's CPU usage as a share of its own CPUs.", "percentunit",
           [prom(guest_join(f"pve_cpu_usage_ratio{{{C}, {GUEST_IDS}}}"), "{{name}} ({{id}})")], min=0, max=1),
        ts("Guest memory", "Memory each guest uses.", "bytes",
           [prom(guest_join(f"pve_memory_usage_bytes{{{C}, {GUEST_IDS}}}"), "{{name}} ({{id}})")]),
        ts("Guest network traffic", "Bytes per second each guest receives (up) and sends (down).", "Bps",
           [prom(guest_join(rate("pve_network_receive_bytes_total", f"{C}, {GUEST_IDS}")), "{{name}} in"),
            prom("-" + guest_join(rate("pve_network_transmit_bytes_total", f"{C}, {GUEST_IDS}")), "{{name}} out")]),
        ts("Guest disk I/O", "Bytes per second each guest reads (up) and writes (down).", "Bps",
           [prom(guest_join(rate("pve_disk_read_bytes_total", f"{C}, {GUEST_IDS}")), "{{name}} read"),
            prom("-" + guest_join(rate("pve_disk_written_bytes_total", f"{C}, {GUEST_IDS}")), "{{name}} write")]),
        row("Storage on the node"),
        *storage_panels("visible on the selected nodes"),
        *hardware_panels(n, legend),
        row("Replication"),
        table(
            "Replication jobs from the node",
            "Storage replication jobs whose source is a selected node: failed syncs in a row, age of the last "
            "successful sync, time to the next one.",
            [
                ("failed syncs", prom(replication_row(f"pve_replication_failed_syncs{{{C}}}", from_node=True)),
                 {"thresholds": BAD_IF_ANY, "custom.cellOptions": {"type": "color-text"}}),
                ("last sync", prom(replication_row(
                    f"(time() - pve_replication_last_sync_timestamp_seconds{{{C}}})", from_node=True)),
                 {"unit": "s"}),
                ("next sync in", prom(replication_row(
                    f"(pve_replication_next_sync_timestamp_seconds{{{C}}} - time())", from_node=True)),
                 {"unit": "s"}),
            ],
            keys=["cluster", "id", "guest", "source", "target"],
            h=7,
        ),
    ]
    return dashboard(
        "pve-node", "Proxmox VE node",
        "One or more Proxmox VE nodes in detail: status, CPU, memory, root filesystem, the guests and storages "
        "on them, replication. Opened from the overview's node table.",
        "prometheus", [PROM_VARS["cluster"], PROM_VARS["node"], PROM_VARS["guest"]], panels,
    )


# -- Proxmox VE guest (Prometheus) ---------------------------------------------------------------


def guest_detail() -> dict[str, Any]:
    g = f"{C}, {GUEST_IDS}"
    legend = "{{name}} ({{id}})"

    def j(metric: str) -> str:
        return guest_join(f"{metric}{{{g}}}")

    panels: list[dict[str, Any]] = [
        row("Status"),
        stat("Status", "Running or not.", "none", [prom(j("pve_up"), legend, instant=True)],
             mappings=mapping({"0": ("stopped", "orange"), "1": ("running", "green")})),
        stat("Uptime", "Time since the guest started.", "dtdurations",
             [prom(j("pve_uptime_seconds"), legend, instant=True)]),
        stat("CPUs", "CPUs assigned to the guest (cores × sockets, or the CPU limit of a container).", "none",
             [prom(j("pve_cpu_usage_limit"), legend, instant=True)]),
        stat("Memory", "Memory assigned to the guest.", "bytes",
             [prom(j("pve_memory_size_bytes"), legend, instant=True)]),
        stat("Start at boot", "The guest's `onboot` setting. With it (or HA state `started`) a stopped guest "
             "raises PveGuestDown; without it, stopping is treated as intentional.", "none",
             [prom(guest_join(f"pve_onboot_status{{{C}}}"), legend, instant=True)],
             mappings=mapping({"0": ("no", "text"), "1": ("yes", "blue")})),
        stat("Backup", "Whether a backup job covers the guest (PveGuestNotBackedUp fires when none does).",
             "none",
             [prom(guest_join(f"(pve_not_backed_up_info{{{C}}} or on (cluster, id) 0 * pve_up{{{g}}})"),
                   legend, instant=True)],
             mappings=mapping({"0": ("covered", "green"), "1": ("not backed up", "orange")})),
        table(
            "Guest",
            "Identity of each selected guest: id, type, node, tags, template flag; HA state and config lock "
            "when it has one.",
            [
                ("info", prom(f"max by (cluster, id, name, node, type, tags, template) ({GUEST_INFO_SEL})"), {}),
                ("HA", prom(f"max by (cluster, id, name, node, type, state) ({j('pve_ha_state')} == 1)"), {}),
            ],
            keys=["cluster", "id", "name", "node", "type", "tags", "template", "state"],
            hidden=["info", "HA"],
            h=5, w=12,
        ),
        stat("Config lock", "The config lock the guest carries right now (backup, migrate, snapshot, ...); "
             "PveGuestLockStuck fires when one is held for hours.", "none",
             [prom(f"max by (cluster, id, name, state) ({j('pve_lock_state')} == 1)", "{{name}}: {{state}}",
                   instant=True)],
             options={"textMode": "name"}, no_value="no lock", w=6, h=5),
        stat("Last backup age", f"Time since the guest's newest backup on any backup storage was made; orange "
             f"above {BACKUP_MAX_AGE_SECONDS // 3600} hours, where PveGuestBackupTooOld fires. Guests without "
             "any backup show nothing (see *Backup* for job coverage).", "s",
             [prom(guest_join(BACKUP_AGE), legend, instant=True)],
             steps=BACKUP_AGE_STEPS, no_value="no backup", w=6, h=5),
        row("CPU and memory"),
        ts("CPU usage", "Share of the guest's own CPUs in use (pve_cpu_usage_ratio, already 0–1).", "percentunit",
           [prom(j("pve_cpu_usage_ratio"), legend)], min=0, max=1),
        ts("Memory", "Memory used (guest view for VMs with a balloon driver), host view (cgroup), balloon target "
           "and assigned size.", "bytes",
           [prom(j("pve_memory_usage_bytes"), legend + " used"),
            prom(j("pve_guest_memory_host_bytes"), legend + " host view"),
            prom(j("pve_guest_balloon_actual_bytes"), legend + " balloon"),
            prom(j("pve_memory_size_bytes"), legend + " size")]),
        ts("Pressure stall", "Share of time some (or all) tasks of the guest stalled on CPU, I/O or memory (PSI "
           "avg10 of the guest's cgroup). Sustained values mean the guest is starved.", "percentunit",
           [prom(j("pve_guest_pressure_cpu_some_ratio"), legend + " cpu some"),
            prom(j("pve_guest_pressure_io_some_ratio"), legend + " io some"),
            prom(j("pve_guest_pressure_io_full_ratio"), legend + " io full"),
            prom(j("pve_guest_pressure_memory_some_ratio"), legend + " memory some"),
            prom(j("pve_guest_pressure_memory_full_ratio"), legend + " memory full")], min=0),
        ts("Swap (containers)", "Swap a container uses and may use.", "bytes",
           [prom(j("pve_guest_swap_usage_bytes"), legend + " used"),
            prom(j("pve_guest_swap_size_bytes"), legend + " size")]),
        row("Disk and network"),
        ts("Network traffic", "Bytes per second the guest receives (up) and sends (down).", "Bps",
           [prom(guest_join(rate("pve_network_receive_bytes_total", g)), legend + " in"),
            prom("-" + guest_join(rate("pve_network_transmit_bytes_total", g)), legend + " out")]),
        ts("Disk I/O", "Bytes per second the guest reads (up) and writes (down) on its block devices.", "Bps",
           [prom(guest_join(rate("pve_disk_read_bytes_total", g)), legend + " read"),
            prom("-" + guest_join(rate("pve_disk_written_bytes_total", g)), legend + " write")]),
        ts("Root disk usage (containers)", "Used share of a container's root disk. PVE reports no usage for VM "
           "disks (always 0), so VMs show nothing here.", "percentunit",
           [prom(guest_join(f"pve_disk_usage_bytes{{{g}}} / (pve_disk_size_bytes{{{g}}} > 0)"), legend)],
           min=0, max=1),
        ts("Disk size", "Size of the guest's root disk.", "bytes", [prom(j("pve_disk_size_bytes"), legend)]),
        row("Replication"),
        table(
            "Replication jobs of the guest",
            "Storage replication jobs of the selected guests: failed syncs in a row and the age of the last "
            "successful sync.",
            [
                ("failed syncs", prom(replication_row(f"pve_replication_failed_syncs{{{C}}}")),
                 {"thresholds": BAD_IF_ANY, "custom.cellOptions": {"type": "color-text"}}),
                ("last sync", prom(replication_row(f"(time() - pve_replication_last_sync_timestamp_seconds{{{C}}})")),
                 {"unit": "s"}),
            ],
            keys=["cluster", "id", "guest", "source", "target"],
            h=6,
        ),
    ]
    return dashboard(
        "pve-guest", "Proxmox VE guest",
        "One or more VMs or containers in detail: status, CPU, memory, pressure, disk and network I/O, backup "
        "coverage, locks and replication. Opened from the guest tables of the overview and node dashboards.",
        "prometheus", [PROM_VARS["cluster"], PROM_VARS["node"], PROM_VARS["guest"]], panels,
    )


# -- Power operations (Prometheus, control API) -------------------------------------------------


def operations() -> dict[str, Any]:
    sel = f'{C}, action=~"$action"'
    ops = "pve_exporter_operations_total"
    panels: list[dict[str, Any]] = [
        row("In the time range"),
        stat("Operations finished", "Power operations (start / stop / restart) that finished in the time range, "
             "whatever their result.", "none",
             [prom(f"sum by (cluster) (increase({ops}{{{sel}}}[$__range]))", "{{cluster}}", instant=True)],
             decimals=0, w=6),
        stat("Failed or timed out", "Operations PVE refused or that did not finish in time "
             "(PvePowerActionsFailing fires on repeated failures).", "none",
             [prom(f"sum by (cluster) (increase({ops}{{{sel}, {FAILED}}}[$__range])) "
                   f"or on (cluster) 0 * sum by (cluster) (increase({ops}{{{sel}}}[$__range]))", "{{cluster}}",
                   instant=True)],
             steps=BAD_IF_ANY, decimals=0, w=6),
        stat("Success ratio", "Share of finished operations that succeeded.", "percentunit",
             [prom(f'(sum by (cluster) (increase({ops}{{{sel}, result="succeeded"}}[$__range])) '
                   f"or on (cluster) 0 * sum by (cluster) (increase({ops}{{{sel}}}[$__range]))) "
                   f"/ sum by (cluster) (increase({ops}{{{sel}}}[$__range]))", "{{cluster}}", instant=True)],
             steps=thresholds((None, "red"), (0.9, "orange"), (0.99, "green")), w=6),
        stat("In progress", "Operations queued or running right now.", "none",
             [prom(f"sum by (cluster) (pve_exporter_operations_in_progress{{{C}}})", "{{cluster}}", instant=True)],
             w=6),
        table(
            "Results by action",
            "Finished operations in the time range by cluster, action and result (succeeded, failed, timed_out, "
            "cancelled, interrupted by a restart).",
            [("operations", prom(f"sum by (cluster, action, result) (increase({ops}{{{sel}}}[$__range]))"),
              {"decimals": 0})],
            keys=["cluster", "action", "result"],
            h=7,
        ),
        row("Over time"),
        ts("Operations by result", "Finished power operations per second by action and result.", "ops",
           [prom(f"sum by (cluster, action, result) ({rate(ops, sel)})", "{{cluster}} · {{action}} {{result}}")]),
        ts("Failures", "Failed and timed-out operations per second by action.", "ops",
           [prom(f"sum by (cluster, action, result) ({rate(ops, f'{sel}, {FAILED}')}) "
                 f"or on (cluster, action) 0 * sum by (cluster, action) ({rate(ops, sel)})",
                 "{{cluster}} · {{action}} {{result}}")]),
        ts("Mean duration", "Average time from request to PVE task end, by action.", "s",
           [prom(f"sum by (cluster, action) ({rate('pve_exporter_operation_duration_seconds_total', sel)}) "
                 f"/ sum by (cluster, action) ({rate(ops, sel)})", "{{cluster}} · {{action}}")]),
        ts("Last duration", "Duration of the last finished operation, by action.", "s",
           [prom(f"pve_exporter_operation_last_duration_seconds{{{sel}}}", "{{cluster}} · {{action}}")]),
        row("Control API access"),
        ts("Refused requests", "Control API requests refused for authentication or scope, by reason (all "
           "clusters: authentication happens before a cluster is chosen).", "reqps",
           [prom(f"sum by (reason) ({rate('pve_exporter_control_auth_failures_total', '')})", "{{reason}}")]),
        ts("Rate-limited requests", "Control API requests answered 429, by limit (authentication failures or "
           "power requests per client address).", "reqps",
           [prom(f"sum by (limit) ({rate('pve_exporter_control_rate_limited_total', '')})", "{{limit}}")]),
    ]
    action_var = query_var("action", "Action", f'label_values({ops}{{cluster=~"$cluster"}}, action)', PROM)
    return dashboard(
        "pve-operations", "Proxmox VE power operations",
        "Start / stop / restart operations run through pve_exporter's control API: volume, results, failures, "
        "durations, refused and rate-limited requests. The operation history itself is GET /api/v1/operations.",
        "prometheus", [PROM_VARS["cluster"], action_var], panels,
    )


# -- Backups: Proxmox Backup Servers and every guest's last backup (Prometheus) ----------------

S = 'server=~"$server"'


def backups() -> dict[str, Any]:
    ds_key = ["server", "datastore"]
    job_key = ["server", "job_type", "job_id", "datastore"]
    group_key = ["server", "datastore", "namespace", "backup_type", "backup_id", "id"]
    verified = f"pbs_backup_group_last_verified_ok{{{S}}}"
    panels: list[dict[str, Any]] = [
        row("Backup servers"),
        stat("Backup servers up", "Whether each Proxmox Backup Server's API answered in the exporter's last cycle "
             "(PbsDown fires after 5 minutes down).", "none",
             [prom(f"pbs_up{{{S}}}", "{{server}}", instant=True)], mappings=UP_MAPPING,
             steps=thresholds((None, "red"), (1, "green")), w=8),
        stat("Failed verifications", "Backup groups whose newest verified snapshot failed verification "
             "(PbsBackupVerificationFailed).", "none",
             [prom(f"count by (server) ({verified} == 0) or on (server) 0 * pbs_up{{{S}}}", "{{server}}",
                   instant=True)], steps=BAD_IF_ANY, decimals=0, w=8),
        stat("Failed jobs", "Verify, prune and sync jobs whose last run failed (PbsJobFailed), plus garbage "
             "collections that failed (PbsGarbageCollectionFailed).", "none",
             [prom(f"count by (server) (pbs_job_last_run_success{{{S}}} == 0 or pbs_gc_last_run_success{{{S}}} == 0) "
                   f"or on (server) 0 * pbs_up{{{S}}}", "{{server}}", instant=True)],
             steps=BAD_IF_ANY, decimals=0, w=8),
        row("Datastore usage and forecast"),
        table("Datastores", "Size and use of each datastore, and when PBS expects it to be full (its linear "
              "regression over the last month; empty while usage is not growing). PbsDatastoreAlmostFull fires above "
              "85 %, PbsDatastoreFullSoon within 7 days.",
              [("used", prom(f"pbs_datastore_used_bytes{{{S}}} / (pbs_datastore_size_bytes{{{S}}} > 0)"),
                {"unit": "percentunit", "thresholds": RATIO_STEPS}),
               ("size", prom(f"pbs_datastore_size_bytes{{{S}}}"), {"unit": "bytes"}),
               ("available", prom(f"pbs_datastore_available_bytes{{{S}}}"), {"unit": "bytes"}),
               ("full in", prom(f"pbs_datastore_estimated_full_timestamp_seconds{{{S}}} - time()"),
                {"unit": "dtdurations"})],
              keys=ds_key, h=7),
        ts("Datastore usage", "Used share of each datastore over time.", "percentunit",
           [prom(f"pbs_datastore_used_bytes{{{S}}} / (pbs_datastore_size_bytes{{{S}}} > 0)",
                 "{{server}} · {{datastore}}")], min=0, max=1),
        ts("Time until full (PBS estimate)", "PBS's own estimate of the time left until each growing datastore is "
           "full.", "s",
           [prom(f"pbs_datastore_estimated_full_timestamp_seconds{{{S}}} - time()", "{{server}} · {{datastore}}")]),
        row("Jobs and garbage collection"),
        table("Jobs", "Verify, prune and sync jobs: whether the last run succeeded, when it ended and when the job "
              "runs next.",
              [("last run ok", prom(f"pbs_job_last_run_success{{{S}}}"),
                {"mappings": mapping({"0": ("failed", "red"), "1": ("ok", "green")})}),
               ("last run", prom(f"pbs_job_last_run_timestamp_seconds{{{S}}} * 1000"), {"unit": "dateTimeAsIso"}),
               ("next run", prom(f"pbs_job_next_run_timestamp_seconds{{{S}}} * 1000"), {"unit": "dateTimeAsIso"})],
              keys=job_key, h=7),
        table("Garbage collection", "The last garbage collection of each datastore: success, end time, bytes it "
              "removed and bytes it kept for safety (freed by the next run).",
              [("last run ok", prom(f"pbs_gc_last_run_success{{{S}}}"),
                {"mappings": mapping({"0": ("failed", "red"), "1": ("ok", "green")})}),
               ("last run", prom(f"pbs_gc_last_run_timestamp_seconds{{{S}}} * 1000"), {"unit": "dateTimeAsIso"}),
               ("removed", prom(f"pbs_gc_removed_bytes{{{S}}}"), {"unit": "bytes"}),
               ("pending", prom(f"pbs_gc_pending_bytes{{{S}}}"), {"unit": "bytes"})],
              keys=ds_key, h=7),
        row("Guests' last backup, every source"),
        table("Last backup per guest", "Age of each guest's newest backup from every source: the cluster's backup "
              f"storages and the backup servers linked to it. Orange above {BACKUP_MAX_AGE_SECONDS // 3600} hours, "
              "where PveGuestBackupTooOld fires; guests (not templates) with no backup on any source show "
              "*never*.",
              [("last backup age", prom(guest_row(BACKUP_AGE)),
                {"unit": "s", "thresholds": BACKUP_AGE_STEPS, "custom.cellOptions": {"type": "color-text"}}),
               ("never backed up", prom(f'max by (cluster, id, {GUEST_LABELS}) (pve_guest_info{{{C}, node=~"$node", '
                                        f'name=~"$guest", template="0"}}) unless on (cluster, id) '
                                        f"pve_guest_last_backup_timestamp_seconds{{{C}}}"),
                {"mappings": mapping({"1": ("never", "red")})})],
              keys=["cluster", "name", "id", "node", "type"], links={"name": ("Guest", GUEST_URL)}),
        row("Backup groups and verification"),
        table("Backup groups", "Every backup group on the selected servers: snapshots, the newest one's age and "
              "size, and whether the newest verified snapshot passed (empty: never verified).",
              [("snapshots", prom(f"pbs_backup_group_snapshots{{{S}}}"), {"decimals": 0}),
               ("last backup age", prom(f"time() - pbs_backup_group_last_backup_timestamp_seconds{{{S}}}"),
                {"unit": "s", "thresholds": BACKUP_AGE_STEPS}),
               ("last size", prom(f"pbs_backup_group_last_size_bytes{{{S}}}"), {"unit": "bytes"}),
               ("verified", prom(verified), {"mappings": mapping({"0": ("failed", "red"), "1": ("ok", "green")})})],
              keys=group_key, h=10),
    ]
    server_var = query_var("server", "Backup server", "label_values(pbs_up, server)", PROM)
    return dashboard(
        "pve-backups", "Proxmox VE backups",
        "Proxmox Backup Servers (datastores and their forecast, jobs, garbage collection, verification) and the "
        "newest backup of every guest across its cluster's backup storages and linked backup servers.",
        "prometheus", [PROM_VARS["cluster"], PROM_VARS["node"], PROM_VARS["guest"], server_var], panels,
    )


# -- Proxmox VE overview (InfluxDB, InfluxQL over PVE's schema) --------------------------------

IC = '"cluster" =~ /^$cluster$/'
INODE = '"host" =~ /^$node$/'
IGUEST = '"object" =~ /^(qemu|lxc)$/ AND "nodename" =~ /^$node$/ AND "host" =~ /^$guest$/'
TF = "$timeFilter"
BY_TIME = "GROUP BY time($__interval)"


def influx_var(name: str, label: str, query: str) -> dict[str, Any]:
    return query_var(name, label, query, INFLUX)


def influx_overview() -> dict[str, Any]:
    node_where = f"\"object\" = 'nodes' AND {IC} AND {INODE} AND {TF}"
    guest_where = f"{IGUEST} AND {IC} AND {TF}"
    nalias = "$tag_cluster · $tag_host"
    galias = "$tag_cluster · $tag_host ($tag_vmid)"
    node_by = f'{BY_TIME}, "cluster", "host" fill(null)'
    guest_by = f'{BY_TIME}, "cluster", "host", "vmid" fill(null)'
    shared_where = f"\"object\" = 'storages' AND \"shared\" = 1 AND {IC} AND {TF}"
    local_where = f"\"object\" = 'storages' AND \"shared\" = 0 AND {IC} AND \"nodename\" =~ /^$node$/ AND {TF}"
    dedup_note = ("Shared storages are read from any node once (grouped by storage), local storages per "
                  "node, so a shared NFS/Ceph storage is not counted once per node.")
    panels: list[dict[str, Any]] = [
        row("Nodes"),
        ts("Node CPU usage", "cpustat.cpu: share of all the node's CPUs in use (0–1).", "percentunit",
           [influxql(f'SELECT mean("cpu") FROM "cpustat" WHERE {node_where} {node_by}', nalias)],
           ds=INFLUX, min=0, max=1),
        ts("Node I/O wait", "cpustat.wait: share of CPU time spent waiting for I/O.", "percentunit",
           [influxql(f'SELECT mean("wait") FROM "cpustat" WHERE {node_where} {node_by}', nalias)],
           ds=INFLUX, min=0),
        ts("Node load average", "cpustat.avg1: 1-minute load average.", "none",
           [influxql(f'SELECT mean("avg1") FROM "cpustat" WHERE {node_where} {node_by}', nalias)], ds=INFLUX),
        ts("Node memory usage", "memory.memused / memory.memtotal (used = total − available).", "percentunit",
           [influxql(f'SELECT mean("memused") / mean("memtotal") FROM "memory" WHERE {node_where} {node_by}',
                     nalias)], ds=INFLUX, min=0, max=1),
        ts("Node swap used", "memory.swapused.", "bytes",
           [influxql(f'SELECT mean("swapused") FROM "memory" WHERE {node_where} {node_by}', nalias)], ds=INFLUX),
        ts("Node root filesystem usage", "blockstat.used / blockstat.blocks of the node's root filesystem.",
           "percentunit",
           [influxql(f'SELECT mean("used") / mean("blocks") FROM "blockstat" WHERE {node_where} {node_by}',
                     nalias)], ds=INFLUX, min=0, max=1),
        bargauge("Node uptime", "system.uptime of each node (object=nodes).", "dtdurations",
                 [influxql(f'SELECT last("uptime") FROM "system" WHERE {node_where} GROUP BY "cluster", "host"',
                           nalias)], ds=INFLUX, w=24, h=6),
        row("Guests"),
        panel(
            "table", "Guests",
            "Last values of every VM (object=qemu) and container (object=lxc) in the time range: status, uptime, "
            "CPU share of its own CPUs, memory used and assigned.",
            "none",
            [influxql(f'SELECT last("status") AS "status", last("uptime") AS "uptime", last("cpu") AS "cpu", '
                      f'last("mem") AS "mem", last("maxmem") AS "maxmem" FROM "system" WHERE {guest_where} '
                      f'GROUP BY "cluster", "nodename", "object", "vmid", "host"', table=True)],
            ds=INFLUX, w=24, h=9,
            overrides=[unit_override("uptime", "dtdurations"), unit_override("cpu", "percentunit"),
                       unit_override("mem", "bytes"), unit_override("maxmem", "bytes")],
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True}}}],
        ),
        ts("Guest CPU usage", "system.cpu of each guest: share of its own CPUs.", "percentunit",
           [influxql(f'SELECT mean("cpu") FROM "system" WHERE {guest_where} {guest_by}', galias)],
           ds=INFLUX, min=0, max=1),
        ts("Guest memory used", "system.mem of each guest.", "bytes",
           [influxql(f'SELECT mean("mem") FROM "system" WHERE {guest_where} {guest_by}', galias)], ds=INFLUX),
        ts("Guest network traffic", "Rate of system.netin (to the guest, up) and system.netout (from the guest, "
           "down); negative steps after a guest restart are dropped.", "Bps",
           [influxql(f'SELECT non_negative_derivative(mean("netin"), 1s) FROM "system" WHERE {guest_where} '
                     f"{guest_by}", galias + " in"),
            influxql(f'SELECT -1 * non_negative_derivative(mean("netout"), 1s) FROM "system" WHERE {guest_where} '
                     f"{guest_by}", galias + " out")], ds=INFLUX),
        ts("Guest disk I/O", "Rate of system.diskread (up) and system.diskwrite (down).", "Bps",
           [influxql(f'SELECT non_negative_derivative(mean("diskread"), 1s) FROM "system" WHERE {guest_where} '
                     f"{guest_by}", galias + " read"),
            influxql(f'SELECT -1 * non_negative_derivative(mean("diskwrite"), 1s) FROM "system" WHERE '
                     f"{guest_where} {guest_by}", galias + " write")], ds=INFLUX),
        row("Storage"),
        bargauge("Storage usage", f"system.used / system.total of each storage (object=storages). {dedup_note}",
                 "percentunit",
                 [influxql(f'SELECT last("used") / last("total") FROM "system" WHERE {shared_where} '
                           f'GROUP BY "cluster", "host"', "$tag_cluster · $tag_host (shared)"),
                  influxql(f'SELECT last("used") / last("total") FROM "system" WHERE {local_where} '
                           f'GROUP BY "cluster", "nodename", "host"', "$tag_cluster · $tag_host · $tag_nodename")],
                 ds=INFLUX, min=0, max=1, steps=RATIO_STEPS, h=10),
        ts("Storage used", f"system.used of each storage over time. {dedup_note}", "bytes",
           [influxql(f'SELECT max("used") FROM "system" WHERE {shared_where} {BY_TIME}, "cluster", "host" '
                     "fill(null)", "$tag_cluster · $tag_host (shared)"),
            influxql(f'SELECT mean("used") FROM "system" WHERE {local_where} {BY_TIME}, "cluster", "nodename", '
                     '"host" fill(null)', "$tag_cluster · $tag_host · $tag_nodename")], ds=INFLUX, h=10),
    ]
    variables = [
        influx_var("cluster", "Cluster", 'SHOW TAG VALUES FROM "system" WITH KEY = "cluster"'),
        influx_var("node", "Node", 'SHOW TAG VALUES FROM "cpustat" WITH KEY = "host" WHERE "cluster" =~ /^$cluster$/'),
        influx_var("guest", "Guest", 'SHOW TAG VALUES FROM "system" WITH KEY = "host" WHERE "object" =~ '
                                     '/^(qemu|lxc)$/ AND "cluster" =~ /^$cluster$/ AND "nodename" =~ /^$node$/'),
    ]
    return dashboard(
        "pve-influxdb", "Proxmox VE overview (InfluxDB)",
        "Nodes, guests and storage from InfluxDB in PVE's own External Metric Server schema (measurements "
        "system, cpustat, memory, blockstat; tags object, host, nodename, vmid + cluster), as pve_exporter writes "
        "it. InfluxQL; works for data pushed by PVE itself too, except the `cluster` variable (PVE writes no "
        "cluster tag).",
        "influxdb", variables, panels,
    )


DASHBOARDS = {
    "pve-overview.json": overview,
    "pve-node.json": node_detail,
    "pve-guest.json": guest_detail,
    "pve-operations.json": operations,
    "pve-backups.json": backups,
    "pve-influxdb.json": influx_overview,
}


def build_all() -> dict[str, dict[str, Any]]:
    return {name: make() for name, make in DASHBOARDS.items()}


def render(d: dict[str, Any]) -> str:
    return json.dumps(d, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if a committed dashboard is not up to date")
    p.add_argument("--output-dir", type=Path, default=HERE, help="where the JSON files go (default: %(default)s)")
    args = p.parse_args(argv)
    stale = []
    for name, d in build_all().items():
        path = args.output_dir / name
        text = render(d)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}: run `python dashboards/generate.py`", file=sys.stderr)
        return 1
    if args.check:
        print("dashboards are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
