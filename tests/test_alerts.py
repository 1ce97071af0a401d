"""The Prometheus alert rules in alerts/: generated, valid, unit-tested, and about metrics that exist.

promtool (Debian `prometheus`) checks and unit-tests the rule file; vmalert (Debian
`victoria-metrics`) gives a second opinion. The metric names and label sets come from the daemon's
real /metrics (tests/monitoring.py), never from a list written by hand.
"""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from tests.monitoring import (
    PROMETHEUS_SERIES,
    ROOT,
    TARGET_LABELS,
    cluster_problems,
    counter_problems,
    exposed,
    load_module,
    metric_names,
)
from tests.servers import require_binary

ALERTS = ROOT / "alerts"
RULES = ALERTS / "pve-exporter.rules.yml"
TESTS = sorted((ALERTS / "tests").glob("*.yml"))
DOCS = ROOT / "docs" / "dashboards-alerts.md"

gen = load_module(ALERTS / "generate.py")


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def alert_names() -> list[str]:
    return [r["alert"] for r in rules() if "alert" in r]


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub (and most renderers) give headings: lower case, punctuation dropped, spaces to -."""
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*$", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            out.add(text.replace(" ", "-"))
    return out


def test_committed_rules_equal_generator_output():
    assert RULES.read_text() == gen.render(), "alerts/pve-exporter.rules.yml is stale: run python alerts/generate.py"


def test_generator_check_mode(tmp_path):
    out = tmp_path / "rules.yml"
    assert gen.main(["--output", str(out)]) == 0
    assert gen.main(["--check", "--output", str(out)]) == 0
    out.write_text(out.read_text().replace("for: 2m", "for: 3m", 1))
    assert gen.main(["--check", "--output", str(out)]) == 1


def test_promtool_check_rules(tmp_path):
    promtool = require_binary("promtool", "prometheus")
    e2e = tmp_path / "e2e.rules.yml"
    e2e.write_text(gen.render(gen.E2E_OVERRIDES))
    for path in (RULES, e2e):
        r = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"SUCCESS: {len(rules())} rules found" in r.stdout


def test_promtool_unit_tests():
    promtool = require_binary("promtool", "prometheus")
    assert TESTS, "no promtool tests in alerts/tests"
    r = subprocess.run([promtool, "test", "rules", *map(str, TESTS)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_vmalert_accepts_the_rules():
    vmalert = require_binary("vmalert", "victoria-metrics")
    r = subprocess.run([vmalert, "-dryRun", f"-rule={RULES}"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_has_a_firing_and_a_silent_case():
    fires: dict[str, int] = defaultdict(int)
    silent: dict[str, int] = defaultdict(int)
    for path in TESTS:
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == ["../pve-exporter.rules.yml"], path
        for test in doc["tests"]:
            for case in test.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else silent)[case["alertname"]] += 1
    names = alert_names()
    assert not [n for n in names if not fires[n]], "alerts without a test where they fire"
    assert not [n for n in names if not silent[n]], "alerts without a test where they must stay silent"
    assert not (set(fires) | set(silent)) - set(names), "tests name alerts that do not exist"


def test_rule_metrics_exist_in_the_daemons_metrics():
    families = exposed()
    missing = {}
    for rule in rules():
        assert metric_names(rule["expr"]), rule["alert"]
        names = metric_names(rule["expr"]) - PROMETHEUS_SERIES
        gone = sorted(n for n in names if n not in families)
        if gone:
            missing[rule["alert"]] = gone
    assert not missing, f"rules use metrics the daemon does not expose: {missing}"


def test_test_inputs_use_label_sets_as_exposed():
    """Every input series of alerts/tests names an exposed metric with exactly an exposed label set."""
    families = exposed()
    wrong = []
    for path in TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for s in test.get("input_series", []):
                m = re.match(r"^([a-zA-Z_:][\w:]*)\{(.*)\}$", s["series"])
                assert m, s["series"]
                name = m.group(1)
                labels = frozenset(re.findall(r'([a-zA-Z_]\w*)="(?:[^"\\]|\\.)*"', m.group(2))) - TARGET_LABELS
                if name in PROMETHEUS_SERIES:
                    continue
                fam = families.get(name)
                if fam is None:
                    wrong.append(f"{path.name}: {name} is not exposed")
                elif labels not in fam.label_sets:
                    wrong.append(f"{path.name}: {name}{{{','.join(sorted(labels))}}} not among "
                                 f"{[sorted(x) for x in fam.label_sets]}")
    assert not wrong, "\n".join(wrong)


def test_rule_conventions():
    families = exposed()
    anchors = github_anchors(DOCS.read_text())
    problems = []
    for rule in rules():
        name = rule.get("alert")
        if name is None:
            problems.append(f"recording rule {rule.get('record')}: none expected (see alerts/generate.py)")
            continue
        ann = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not ann.get(key):
                problems.append(f"{name}: no {key}")
        if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
            problems.append(f"{name}: severity")
        if "for" not in rule:
            problems.append(f"{name}: no for")
        url = ann.get("runbook_url", "")
        if not url.endswith(f"dashboards-alerts.md#{name.lower()}") or name.lower() not in anchors:
            problems.append(f"{name}: runbook_url {url!r} has no matching heading in {DOCS.name}")
        problems += [f"{name}: {p}" for p in cluster_problems(rule["expr"], families)]
        problems += [f"{name}: {p}" for p in counter_problems(rule["expr"], families)]
        raw_value = re.search(r"\$value\b(?!\s*\|)", ann.get("summary", "") + ann.get("description", ""))
        if raw_value and name != "PveReplicationFailed":  # a count of failures, shown as it is
            problems.append(f"{name}: $value shown without a humanize function")
    assert not problems, "\n".join(problems)


def test_alert_names_are_unique_and_documented():
    names = alert_names()
    assert len(names) == len(set(names))
    doc = DOCS.read_text()
    for n in names:
        assert doc.count(f"`{n}`") >= 1, f"{n} is not described in the alert list of {DOCS.name}"


@pytest.mark.parametrize("key", sorted(gen.THRESHOLDS))
def test_every_threshold_is_used(key):
    """THRESHOLDS is the one place: each entry changes the generated rules."""
    value = gen.THRESHOLDS[key]
    changed = value * 2 if isinstance(value, int | float) else ("7m" if value != "7m" else "8m")
    assert gen.render({key: changed}) != gen.render(), f"THRESHOLDS[{key!r}] is not used"


def test_e2e_variant_only_shortens_durations():
    normal, short = gen.build(), gen.build(gen.E2E_OVERRIDES)
    for g1, g2 in zip(normal["groups"], short["groups"], strict=True):
        for r1, r2 in zip(g1["rules"], g2["rules"], strict=True):
            assert r1["alert"] == r2["alert"] and r1["labels"] == r2["labels"]
            assert r2["for"] == "1s"
            assert metric_names(r1["expr"]) == metric_names(r2["expr"])


def test_rule_file_is_plain_yaml_for_2_42():
    """Only fields promtool 2.42 knows (no group-level query_offset, limit, ...)."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        assert set(group) == {"name", "rules"}
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}


def test_docs_list_every_threshold():
    """The docs point at the one place thresholds live and list each key."""
    doc = DOCS.read_text()
    assert "alerts/generate.py" in doc and Path(gen.OUTPUT) == RULES
    assert not [k for k in gen.THRESHOLDS if f"`{k}`" not in doc]
