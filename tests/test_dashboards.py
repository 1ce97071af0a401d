"""The Grafana dashboards in dashboards/: generated from code, linted, and queried against real data.

Lint rules mirror grafana/dashboard-linter (datasource variable, templated datasources, refresh on
time change, units, titles and descriptions, $__rate_interval, counters only in rate()) plus the
project's own (cluster/node/guest variables, no CPU ratio divided again, shared storage counted
once, names joined from *_info). Every PromQL query is parsed by promtool and its metric names are
taken from the daemon's real /metrics; every InfluxQL query is checked against the measurements,
tags and fields of the line protocol the daemon's InfluxDB output produces — and run against a
real InfluxDB 1.x (Debian `influxdb`) holding those lines.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.monitoring import (
    ROOT,
    clauses,
    cluster_problems,
    counter_problems,
    exposed,
    influx_lines,
    load_module,
    metric_names,
)
from tests.servers import require_binary

DASHBOARDS = ROOT / "dashboards"
gen = load_module(DASHBOARDS / "generate.py")

EXPECTED = {  # file → (uid, datasource type, query variables that must exist)
    "pve-overview.json": ("pve-overview", "prometheus", {"cluster", "node", "guest"}),
    "pve-node.json": ("pve-node", "prometheus", {"cluster", "node", "guest"}),
    "pve-guest.json": ("pve-guest", "prometheus", {"cluster", "node", "guest"}),
    "pve-operations.json": ("pve-operations", "prometheus", {"cluster"}),
    "pve-backups.json": ("pve-backups", "prometheus", {"cluster", "node", "guest", "server"}),
    "pve-influxdb.json": ("pve-influxdb", "influxdb", {"cluster", "node", "guest"}),
}
UNITS = {"percentunit", "percent", "bytes", "decbytes", "Bps", "binBps", "bps", "s", "ms", "dtdurations", "none",
         "short", "reqps", "ops", "dateTimeAsIso", "dateTimeAsIsoNoDateIfToday"}
# Substitutions that make a panel's query a plain PromQL / InfluxQL expression (Grafana's All = .*).
PROM_VARS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$cluster": ".*", "$node": ".*",
             "$guest": ".*", "$action": ".*", "$server": ".*"}


def load(name: str) -> dict[str, Any]:
    return json.loads((DASHBOARDS / name).read_text())


def panels(d: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def prom_targets(d: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(p, t) for p in panels(d) for t in p.get("targets", []) if "expr" in t]


def influx_targets(d: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(p, t) for p in panels(d) for t in p.get("targets", []) if "query" in t]


def substitute(expr: str, values: dict[str, str] = PROM_VARS) -> str:
    for k in sorted(values, key=len, reverse=True):
        expr = expr.replace(k, values[k])
    return expr


def variable_exprs(d: dict[str, Any]) -> list[str]:
    """PromQL inside label_values(<expr>, label) of query variables."""
    out = []
    for v in d["templating"]["list"]:
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", v.get("query", "")) if v["type"] == "query" else None
        if m and v["datasource"]["type"] == "prometheus":
            out.append(m.group(1))
    return out


ALL = {name: load(name) for name in EXPECTED}
PROM_DASHBOARDS = [n for n, (_, kind, _) in EXPECTED.items() if kind == "prometheus"]


# -- generated, committed ----------------------------------------------------------------------


def test_committed_json_equals_generator_output():
    built = gen.build_all()
    assert set(built) == set(EXPECTED) == {p.name for p in DASHBOARDS.glob("*.json")}
    for name, d in built.items():
        assert (DASHBOARDS / name).read_text() == gen.render(d), f"{name} is stale: run python dashboards/generate.py"


def test_generator_check_mode(tmp_path):
    assert gen.main(["--output-dir", str(tmp_path)]) == 0
    assert gen.main(["--check", "--output-dir", str(tmp_path)]) == 0
    (tmp_path / "pve-node.json").write_text("{}")
    assert gen.main(["--check", "--output-dir", str(tmp_path)]) == 1


# -- dashboard-level conventions ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dashboard_conventions(name):
    d = ALL[name]
    uid, kind, needed = EXPECTED[name]
    assert d["uid"] == uid and len(uid) <= 40
    assert d["id"] is None
    assert "__inputs" not in d and "__requires" not in d
    assert d["title"] and d["description"]
    assert "${DS_" not in json.dumps(d)
    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == kind and ds["label"] == "Data source"
    assert [v["name"] for v in d["templating"]["list"] if v["type"] == "datasource"] == ["datasource"]
    assert needed <= set(variables)
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"] == {"type": kind, "uid": "${datasource}"}, v["name"]
            assert v["refresh"] == 2 and v["multi"] is True and v["includeAll"] is True, v["name"]
            assert v["query"] and v["definition"] == v["query"], v["name"]


def test_uids_are_unique_and_links_point_at_them():
    uids = {d["uid"] for d in ALL.values()}
    assert len(uids) == len(ALL)
    text = "".join(json.dumps(d) for d in ALL.values())
    linked = set(re.findall(r"/d/([\w-]+)/", text))
    assert linked and linked <= uids, linked - uids
    # The overview links to the node and guest dashboards (table data links).
    overview = json.dumps(ALL["pve-overview.json"])
    assert "/d/pve-node/" in overview and "/d/pve-guest/" in overview


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_panel_conventions(name):
    d = ALL[name]
    kind = EXPECTED[name][1]
    ds = {"type": kind, "uid": "${datasource}"}
    problems = []
    cells: dict[tuple[int, int], int] = {}
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    problems.append(f"{p['title']!r} overlaps panel {cells[(x, y)]}")
                cells[(x, y)] = p["id"]
        if p["type"] == "row":
            continue
        title = p["title"]
        if not p.get("description"):
            problems.append(f"{title}: no description")
        unit = p["fieldConfig"]["defaults"].get("unit")
        if unit not in UNITS:
            problems.append(f"{title}: unit {unit!r}")
        for o in p["fieldConfig"].get("overrides", []):
            for prop in o["properties"]:
                if prop["id"] == "unit" and prop["value"] not in UNITS:
                    problems.append(f"{title}: override unit {prop['value']!r}")
        if p.get("datasource") != ds:
            problems.append(f"{title}: panel datasource {p.get('datasource')}")
        targets = p.get("targets", [])
        if not targets:
            problems.append(f"{title}: no targets")
        if len({t["refId"] for t in targets}) != len(targets):
            problems.append(f"{title}: duplicate refIds")
        for t in targets:
            if t.get("datasource") != ds:
                problems.append(f"{title}: target datasource {t.get('datasource')}")
    assert not problems, "\n".join(problems)


# -- PromQL ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROM_DASHBOARDS)
def test_promql_conventions(name):
    d = ALL[name]
    families = exposed()
    problems = []
    for p, t in prom_targets(d):
        expr, where = t["expr"], f"{p['title']} / {t['refId']}"
        for func, window in re.findall(r"\b(rate|irate|increase)\s*\([^\[]*\[([^\]]*)\]", expr):
            allowed = {"$__rate_interval"} if func in ("rate", "irate") else {"$__rate_interval", "$__range"}
            if window not in allowed:
                problems.append(f"{where}: {func}() over [{window}]")
        problems += [f"{where}: {x}" for x in counter_problems(expr, families)]
        problems += [f"{where}: {x}" for x in cluster_problems(expr, families)]
        names = metric_names(expr)
        if any("cluster" in families[n].labels for n in names if n in families) and 'cluster=~"$cluster"' not in expr:
            problems.append(f"{where}: not filtered by $cluster")
        if re.search(r"pve_cpu_usage_ratio[^/]*/\s*pve_cpu_usage_limit", expr):
            problems.append(f"{where}: CPU ratio divided by the CPU count (it is already 0..1)")
        if 'id=~"storage/' in expr and "pve_disk_" in expr and "pve_storage_shared" not in expr:
            problems.append(f"{where}: storage usage without the shared-storage de-duplication")
        per_cluster = all(kw != "by" or labels == ["cluster"] for kw, labels in clauses(expr)) and "by (" in expr
        if 'id=~"(qemu|lxc)/' in expr and "pve_guest_info" not in expr and not per_cluster:
            problems.append(f"{where}: guest series without the pve_guest_info join (names, node filter)")
        if 'id=~"node/' in expr and "pve_node_info" not in expr and "label_replace" not in expr and not per_cluster:
            problems.append(f"{where}: node series without the pve_node_info join (names, node filter)")
        if "$node" in expr and "$cluster" not in expr:
            problems.append(f"{where}: $node without $cluster")
    assert not problems, "\n".join(problems)


def test_every_promql_query_parses(tmp_path):
    promtool = require_binary("promtool", "prometheus")
    rules = []
    for d in ALL.values():
        if d["templating"]["list"][0]["query"] != "prometheus":
            continue
        prefix = "dashboard:" + d["uid"].replace("-", "_")
        exprs = [t["expr"] for _, t in prom_targets(d)] + variable_exprs(d)
        rules += [{"record": f"{prefix}:{i}", "expr": substitute(e)} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    r = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rules)} rules found" in r.stdout


def test_every_promql_metric_exists_in_the_daemons_metrics():
    families = exposed()
    missing = {}
    for name in PROM_DASHBOARDS:
        d = ALL[name]
        exprs = [(f"{p['title']}/{t['refId']}", t["expr"]) for p, t in prom_targets(d)]
        exprs += [(f"variable {e}", e) for e in variable_exprs(d)]
        for where, expr in exprs:
            names = metric_names(expr)
            assert names, where
            gone = sorted(n for n in names if n not in families)
            if gone:
                missing[f"{name}: {where}"] = gone
    assert not missing, missing


# -- InfluxQL --------------------------------------------------------------------------------


def _split(text: str, sep: str) -> list[str]:
    """Split line-protocol text on `sep` outside quotes and escapes."""
    parts, cur, quoted, escaped = [], [], False, False
    for ch in text:
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\":
            cur.append(ch)
            escaped = True
        elif ch == '"':
            quoted = not quoted
            cur.append(ch)
        elif ch == sep and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


def influx_schema(lines: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """{(measurement, object tag): {"tags": {...}, "numeric": {...}, "string": {...}}} of the written lines."""
    schema: dict[tuple[str, str], dict[str, Any]] = {}
    for line in lines:
        key, fields, _ts = _split(line, " ")
        measurement, *tags = _split(key, ",")
        tag_map = dict(_unescape(t).split("=", 1) for t in tags)
        entry = schema.setdefault((_unescape(measurement), tag_map.get("object", "")),
                                  {"tags": set(), "numeric": set(), "string": set()})
        entry["tags"] |= set(tag_map)
        for f in _split(fields, ","):
            k, v = f.split("=", 1)
            entry["string" if v.startswith('"') else "numeric"].add(_unescape(k))
    return schema


def influxql_refs(q: str) -> dict[str, Any]:
    show = re.fullmatch(r'SHOW TAG VALUES FROM "(\w+)" WITH KEY = "(\w+)"(?: WHERE (.*))?', q)
    if show:
        return {"measurement": show.group(1), "objects": _objects(show.group(3) or ""), "aggregated": set(),
                "fields": set(), "tags": {show.group(2)} | _where_tags(show.group(3) or ""), "numeric_where": set()}
    m = re.fullmatch(r"SELECT (.+) FROM \"([\w-]+)\" WHERE (.+?)(?: GROUP BY (.+))?", q)
    assert m, f"unexpected InfluxQL shape: {q}"
    select, measurement, where, group = m.groups()
    select = re.sub(r' AS "\w+"', "", select)
    return {
        "measurement": measurement,
        "objects": _objects(where),
        "fields": set(re.findall(r'"(\w+)"', select)),
        "aggregated": set(re.findall(r'(?:mean|max|min|sum|non_negative_derivative\(mean)\("(\w+)"\)', select)),
        "tags": _where_tags(where) | set(re.findall(r'"(\w+)"', group or "")),
        "numeric_where": set(re.findall(r'"(\w+)" [=<>]+ -?\d', where)),
    }


def _where_tags(where: str) -> set[str]:
    return set(re.findall(r'"(\w+)" (?:=~|!~|=|!=) (?:/|\')', where))


def _objects(where: str) -> list[str] | None:
    m = re.search(r"\"object\" = '(\w+)'", where)
    if m:
        return [m.group(1)]
    m = re.search(r'"object" =~ /\^\(([\w|]+)\)\$/', where)
    return m.group(1).split("|") if m else None


def influx_queries() -> list[tuple[str, str]]:
    d = ALL["pve-influxdb.json"]
    out = [(f"{p['title']}/{t['refId']}", t["query"]) for p, t in influx_targets(d)]
    out += [(f"variable {v['name']}", v["query"]) for v in d["templating"]["list"] if v["type"] == "query"]
    return out


def test_influxql_queries_match_what_the_daemon_writes():
    schema = influx_schema(influx_lines())
    assert ("cpustat", "nodes") in schema and ("system", "storages") in schema and ("system", "qemu") in schema
    problems = []
    for where, q in influx_queries():
        refs = influxql_refs(q)
        objects = refs["objects"] or sorted({o for (m, o) in schema if m == refs["measurement"]})
        if not objects:
            problems.append(f"{where}: measurement {refs['measurement']!r} is never written")
        for obj in objects:
            entry = schema.get((refs["measurement"], obj))
            if entry is None:
                problems.append(f"{where}: no {refs['measurement']} points with object={obj}")
                continue
            fields = entry["numeric"] | entry["string"]
            for f in sorted(refs["fields"] - fields):
                problems.append(f"{where}: field {f!r} not written for {refs['measurement']}/{obj}")
            for f in sorted(refs["aggregated"] & entry["string"]):
                problems.append(f"{where}: aggregates string field {f!r}")
            for f in sorted(refs["numeric_where"] - entry["numeric"]):
                problems.append(f"{where}: compares {f!r}, not a numeric field of {refs['measurement']}/{obj}")
            for tag in sorted(refs["tags"] - entry["tags"]):
                problems.append(f"{where}: tag {tag!r} not written for {refs['measurement']}/{obj}")
    for p, t in influx_targets(ALL["pve-influxdb.json"]):
        group_by = t["query"].split("GROUP BY", 1)[1] if "GROUP BY" in t["query"] else ""
        grouped = set(re.findall(r'"(\w+)"', group_by))
        for tag in re.findall(r"\$tag_(\w+)", t.get("alias", "")):
            if tag not in grouped:
                problems.append(f"{p['title']}: alias $tag_{tag} but no GROUP BY {tag}")
    assert not problems, "\n".join(problems)


def test_influxql_rates_and_shared_storage():
    for p, t in influx_targets(ALL["pve-influxdb.json"]):
        q = t["query"]
        for field in ("netin", "netout", "diskread", "diskwrite"):
            if f'"{field}"' in q:
                assert "non_negative_derivative" in q, (p["title"], q)  # cumulative counters: rate, never raw
        if "'storages'" in q and "SELECT" in q:
            assert '"shared" = 1' in q or '"shared" = 0' in q, (p["title"], q)
            if '"shared" = 1' in q:
                assert '"nodename"' not in q, "a shared storage must not be split by node"


@pytest.mark.e2e
def test_influxql_queries_return_data_from_a_real_influxdb(tmp_path):
    from tests.servers import InfluxDB1

    lines = influx_lines()
    stamps = sorted({int(line.rsplit(" ", 1)[1]) for line in lines})
    influx = InfluxDB1(tmp_path / "influx")
    try:
        influx.query("CREATE DATABASE pve")
        body = "\n".join(lines).encode()
        import urllib.request

        req = urllib.request.Request(f"{influx.url}/write?db=pve&precision=s", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 204
        values = {"$timeFilter": f"time >= {stamps[0] - 60}s AND time <= {stamps[-1] + 60}s",
                  "$__interval": "15s", "$cluster": ".*", "$node": ".*", "$guest": ".*"}
        empty = []
        for where, q in influx_queries():
            result = influx.query(substitute(q, values), db="pve")["results"][0]
            series = result.get("series", [])
            if not series or not any(any(v is not None for v in row[1:]) for s in series for row in s["values"]):
                empty.append(f"{where}: {q}")
        assert not empty, "queries without data:\n" + "\n".join(empty)
    finally:
        influx.stop()


def test_dashboard_thresholds_match_the_alert_rules():
    """Panels colour a value where its alert fires: the same number on both sides."""
    alerts_gen = load_module(ROOT / "alerts" / "generate.py")
    assert alerts_gen.THRESHOLDS["backup_max_age_seconds"] == gen.BACKUP_MAX_AGE_SECONDS
    backup_panels = [p for d in ALL.values() for p in panels(d)
                     if "pve_guest_last_backup_timestamp_seconds" in json.dumps(p.get("targets", []))]
    assert len(backup_panels) >= 3  # guest tables of overview and node, guest detail, Problems row
    for p in backup_panels:
        assert str(gen.BACKUP_MAX_AGE_SECONDS) in json.dumps(p), p["title"]


def test_docs_describe_every_dashboard():
    doc = (ROOT / "docs" / "dashboards-alerts.md").read_text()
    for name, d in ALL.items():
        assert name in doc and d["title"] in doc, name
        for p in d["panels"]:
            if p["type"] == "row":
                assert p["title"] in doc, f"row {p['title']!r} of {name} is not described"

