"""Pressure panels show PSI as what it is (issue 11, item 20).

`pve_*_pressure_*_ratio` are 0–1 ratios (PVE's avg10 percentages divided by 100 at the parser), so
a Prometheus panel shows them with Grafana's `percentunit` and never rescales them; PVE's own
`pressure*` fields in InfluxDB stay percentages and would take `percent`.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.monitoring import ROOT

DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
RATIO = re.compile(r"pve_(guest|node)_pressure_\w+_ratio")
INFLUX_FIELD = re.compile(r'"?pressure(cpu|io|memory)(some|full)"?')


def _panels(d: dict) -> list[dict]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def _queries(p: dict) -> list[str]:
    return [t.get("expr") or t.get("query") or "" for t in p.get("targets", [])]


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_pressure_panels_use_the_unit_of_their_data(path):
    problems = []
    for p in _panels(json.loads(path.read_text())):
        queries = _queries(p)
        defaults = p.get("fieldConfig", {}).get("defaults", {})
        if any(RATIO.search(q) for q in queries):
            if defaults.get("unit") != "percentunit":
                problems.append(f"{p['title']}: unit {defaults.get('unit')!r}, want percentunit (0-1 ratio)")
            if defaults.get("max") not in (None, 1):
                problems.append(f"{p['title']}: max {defaults['max']} on a 0-1 ratio")
            if any(re.search(r"[*/]\s*100\b", q) for q in queries):
                problems.append(f"{p['title']}: a 0-1 ratio rescaled by 100")
        elif any(INFLUX_FIELD.search(q) for q in queries) and defaults.get("unit") != "percent":
            problems.append(f"{p['title']}: InfluxDB pressure fields are percentages, unit {defaults.get('unit')!r}")
    assert not problems


def test_some_dashboard_shows_pressure():
    """The check above must have something to check."""
    assert any(RATIO.search(q) for d in DASHBOARDS for p in _panels(json.loads(d.read_text())) for q in _queries(p))
