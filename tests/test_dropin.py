"""A drop-in for prometheus-pve-exporter users (issue 17): dead nodes' guests stay joinable, /pve tells
the truth about an unreachable cluster, and the migration check names what a dashboard or rule file
uses that this daemon does not expose."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pve_exporter import cli
from pve_exporter.app import build_app
from pve_exporter.collect.known import KnownGuest, guest_identity, remember_guests
from pve_exporter.collect.resources import parse_resources
from pve_exporter.collect.status import make_shared
from pve_exporter.freshness import no_fresh_data
from pve_exporter.migrate import GONE, NOTES, OPTIONS, check, exposed, render
from pve_exporter.promrefs import expr_refs, read_dashboard, read_rules
from pve_exporter.settings import CollectSettings
from pve_exporter.snapshot import CollectorResult, Snapshot
from tests.simharness import cycle, series, sim_daemon

ALIVE = {"id": "qemu/100", "type": "qemu", "vmid": 100, "node": "pve3", "status": "running", "name": "db-01",
         "template": 0, "tags": "prod;db", "uptime": 5, "cpu": 0.1, "maxcpu": 2, "mem": 1, "maxmem": 2}  # fmt: skip
# The same guest once pmxcfs dropped pve3's status data (pve-api.md §7.3): config-derived keys only.
DEAD = {"id": "qemu/100", "type": "qemu", "vmid": 100, "node": "pve3", "status": "unknown", "tags": "prod;db",
        "hastate": "fence"}  # fmt: skip


def guest_info(families) -> dict[str, dict[str, str]]:
    out = {}
    for f in families:
        if f.name == "pve_guest_info":
            for values, _ in f.samples:
                labels = dict(zip(f.labels, values, strict=True))
                out[labels["id"]] = labels
    return out


def value(families, name: str, rid: str) -> float | None:
    for f in families:
        if f.name == name:
            for values, v in f.samples:
                if values[0] == rid:
                    return v
    return None


# -- the guest memory ----------------------------------------------------------------------------


def test_status_less_row_gets_last_known_name_template_and_tags() -> None:
    known = remember_guests({}, [ALIVE])
    dead = {k: v for k, v in DEAD.items() if k != "tags"}  # even tags missing: last known ones
    info = guest_info(parse_resources([dead], known=remember_guests(known, [dead])))
    assert info["qemu/100"] == {"id": "qemu/100", "node": "pve3", "name": "db-01", "type": "qemu", "template": "0",
                                "tags": "db;prod"}  # fmt: skip
    assert value(parse_resources([dead], known=known), "pve_up", "qemu/100") == 0.0


def test_rows_with_status_data_always_win() -> None:
    known = remember_guests({}, [ALIVE])
    renamed = dict(ALIVE, name="db-02", tags="", template=1)
    known = remember_guests(known, [renamed])
    assert known["qemu/100"] == KnownGuest("db-02", "1", "")
    assert guest_info(parse_resources([renamed], known=known))["qemu/100"]["name"] == "db-02"


def test_never_seen_guest_on_dead_node_has_empty_name_and_template() -> None:
    info = guest_info(parse_resources([DEAD]))
    assert info["qemu/100"] == {"id": "qemu/100", "node": "pve3", "name": "", "type": "qemu", "template": "",
                                "tags": "db;prod"}  # fmt: skip


def test_deleted_guests_are_forgotten_and_no_rows_keep_the_memory() -> None:
    known = remember_guests({}, [ALIVE])
    assert remember_guests(known, None) is known  # API unreachable, cached answer expired: keep
    assert dict(remember_guests(known, [])) == {}  # listed no more: deleted


def test_unchanged_guest_keeps_its_memory_object() -> None:
    known = remember_guests({}, [ALIVE])
    assert remember_guests(known, [ALIVE])["qemu/100"] is known["qemu/100"]
    assert guest_identity(DEAD, known["qemu/100"]) is known["qemu/100"]


def test_make_shared_carries_the_memory_forward() -> None:
    first = make_shared("prod", None, [ALIVE])
    assert isinstance(first.known_guests, MappingProxyType)
    second = make_shared("prod", None, [DEAD], first.known_guests)
    assert second.known_guests["qemu/100"].name == "db-01"
    assert make_shared("prod", None, None, second.known_guests).known_guests == second.known_guests


# -- through the poller, against the simulator ---------------------------------------------------


async def test_node_down_keeps_guest_info_with_names_and_the_guest_down_join_finds_them() -> None:
    async with sim_daemon(clusters=(("lab", 3, 4),)) as (daemon, sim, _server):
        await cycle(daemon)
        lab = sim.cluster("lab")
        names = {f"{g.type}/{g.vmid}": g.display_name for g in lab.guests.values() if g.node == "pve2"}
        lab.add_fault("node_down", node="pve2")
        await cycle(daemon)
        await cycle(daemon)  # the memory lasts, not just one cycle
        text = daemon.exposition.body(["lab"]).decode()
    s = series(text)
    info = {dict(lbls)["id"]: dict(lbls) for (n, lbls) in s if n == "pve_guest_info"}
    up = {dict(lbls)["id"]: v for (n, lbls), v in s.items() if n == "pve_up"}
    assert names
    for rid, name in names.items():
        assert info[rid]["name"] == name and info[rid]["node"] == "pve2", info[rid]
        assert up[rid] == 0.0
    # (pve_guest_info * on(id) group_left(name) pve_up) == 0: every guest of the dead node is in it.
    down = {rid for rid in info if up.get(rid) == 0.0}
    assert set(names) <= down
    # The other series a join reads by id stay too: onboot (config kept), not the usage numbers.
    onboot = {dict(lbls)["id"]: dict(lbls) for (n, lbls) in s if n == "pve_onboot_status"}
    assert all(onboot[rid]["node"] == "pve2" for rid in names)
    assert not {dict(lbls)["id"] for (n, lbls) in s if n == "pve_cpu_usage_ratio"} & set(names)


async def test_dead_node_guests_keep_their_names_in_the_control_inventory() -> None:
    async with sim_daemon(clusters=(("lab", 3, 4),)) as (daemon, sim, _server):
        await cycle(daemon)
        lab = sim.cluster("lab")
        names = {g.vmid: g.display_name for g in lab.guests.values() if g.node == "pve2"}
        lab.add_fault("node_down", node="pve2")
        await cycle(daemon)
        guests = daemon.store.get("lab").guests
    assert names
    for vmid, name in names.items():
        assert guests[vmid].name == name and guests[vmid].node == "pve2"


# -- /pve?target= answers 503 while the cluster has no fresh data ---------------------------------


def snapshot(reachable: bool, *results: CollectorResult) -> Snapshot:
    return Snapshot("lab", 1, 0.0, 0.0, reachable, None, (), MappingProxyType({r.name: r for r in results}))


def failing(name: str, *, stale: bool = False) -> CollectorResult:
    return CollectorResult(name, False, stale, 0.1, "http_error", "HTTP 500:\nboom")


OK = CollectorResult("status", True, False, 0.1)
OK_SLOW = CollectorResult("subscription", True, False, 0.1)
FAST = {"status", "resources", "guests"}


def test_fresh_when_reached_and_some_fast_collector_has_data() -> None:
    assert no_fresh_data("lab", snapshot(True, OK, failing("resources")), FAST) is None
    assert no_fresh_data("lab", snapshot(True, failing("status", stale=True), failing("resources")), FAST) is None
    # a failing slow collector never makes the cluster stale
    assert no_fresh_data("lab", snapshot(True, OK, failing("subscription")), FAST) is None


def test_no_fresh_data_reasons_are_one_line() -> None:
    reasons = [
        no_fresh_data("lab", None, FAST),
        no_fresh_data("lab", snapshot(False, failing("resources", stale=True), OK), FAST),
        no_fresh_data("lab", snapshot(True, failing("status"), failing("resources"), OK_SLOW), FAST),
    ]
    assert all(r is not None and "\n" not in r and "'lab'" in r for r in reasons), reasons
    assert "first collection cycle" in str(reasons[0])
    assert "not reached" in str(reasons[1]) and "http_error: HTTP 500: boom" in str(reasons[1])
    assert "every fast collector" in str(reasons[2])


async def test_pve_target_503_while_the_api_is_down_and_metrics_keeps_serving() -> None:
    async with (
        sim_daemon(clusters=(("lab", 2, 2), ("prod", 2, 2))) as (daemon, sim, _server),
        TestClient(TestServer(build_app(daemon))) as client,
    ):
        r = await client.get("/pve?target=lab&cluster=1&node=1")
        assert r.status == 503 and r.content_type == "text/plain"
        assert "first collection cycle" in await r.text()
        await cycle(daemon, "lab")
        await cycle(daemon, "prod")
        r = await client.get("/pve?target=lab&cluster=1&node=1")
        assert r.status == 200 and 'pve_up{cluster="lab",id="node/pve1"} 1' in await r.text()

        sim.cluster("lab").add_fault("http_error", path="/cluster/resources", status=500, message="boom")
        await cycle(daemon, "lab")
        await cycle(daemon, "prod")
        r = await client.get("/pve?target=lab&cluster=1&node=1")
        text = await r.text()
        assert r.status == 503 and text.count("\n") == 1 and "not reached" in text, text
        assert (await client.get("/pve?target=prod")).status == 200  # the other cluster is unaffected
        r = await client.get("/metrics?cluster=lab")  # partial data, and the self-metric says so
        body = await r.text()
        assert r.status == 200 and 'pve_guest_info{cluster="lab"' in body
        assert 'pve_exporter_cluster_up{cluster="lab"} 0' in body

        sim.cluster("lab").clear_faults()
        await cycle(daemon, "lab")
        assert (await client.get("/pve?target=lab")).status == 200


# -- the migration check ---------------------------------------------------------------------------

FIXTURES = Path(__file__).parent / "fixtures" / "dropin"


def test_expr_refs_reads_selectors_groupings_and_made_labels() -> None:
    r = expr_refs('sum by (node) (rate(pve_cpu_usage_ratio{id=~"qemu/.*", instance="$instance"}[$__rate_interval]))')
    assert r.metrics == {"pve_cpu_usage_ratio": {"id", "instance"}} and r.labels == {"node"}
    r = expr_refs("(pve_guest_info * on(id, instance) group_left(name) pve_up) == bool 0 offset 5m")
    assert r.metrics == {"pve_guest_info": set(), "pve_up": set()} and r.labels == {"id", "instance", "name"}
    r = expr_refs('label_replace(pve_up{id=~"node/.*"}, "node", "$1", "id", "node/(.*)") unless count_values("v", x)')
    assert r.labels == {"id"} and r.made == {"node", "v"} and set(r.metrics) == {"pve_up", "x"}
    r = expr_refs('{__name__="pve_up", job="pve"} or {__name__=~"pve_disk_.*"} or SUM WITHOUT (id) (pve_up[5m:1m])')
    assert r.metrics == {"pve_up": {"job"}} and r.name_patterns == ["pve_disk_.*"] and r.labels == {"id"}


def test_dashboard_and_rule_readers_find_every_query() -> None:
    uses = read_dashboard((FIXTURES / "ppe-dashboard.json").read_text())
    where = [u.where for u in uses]
    assert "variable $instance" in where and "panel 'Node CPU'" in where  # nested in a collapsed row too
    assert len(uses) == 18
    guests = next(u for u in uses if u.where == "panel 'Guests'")
    assert {"name", "node"} <= guests.refs.labels  # from the legend
    rules = read_rules((FIXTURES / "ppe-rules.yml").read_text())
    down = next(u for u in rules if u.where == "alert 'PveGuestDown'")
    assert {"id", "node", "instance"} <= down.refs.labels  # $labels.x in annotations


def test_check_passes_the_prometheus_pve_exporter_style_files() -> None:
    for path, reader in (("ppe-dashboard.json", read_dashboard), ("ppe-rules.yml", read_rules)):
        uses = reader((FIXTURES / path).read_text())
        findings = check(uses, exposed())
        assert [f for f in findings if f.kind in ("metric", "label")] == [], path
        report, code = render(path, uses, findings)
        assert code == 0 and report.endswith("0 missing\n")
        assert "NOTE\tnote\tpve_disk_usage_bytes\tno QEMU rows" in report or path.endswith(".json")


def test_check_names_what_is_missing_and_why() -> None:
    uses = read_dashboard((FIXTURES / "ppe-missing.json").read_text())
    got = {(f.kind, f.subject): f for f in check(uses, exposed())}
    assert got[("metric", "pve_collection_duration_seconds_sum")].reason.startswith("removed on purpose")
    assert got[("metric", "pve_collection_duration_seconds_count")].where == ["variable $module", "panel 'Scrape time'"]
    assert got[("metric", "pve_scrape_api_errors_total")].reason.startswith("renamed: pve_exporter_api_requests_total")
    balloon = got[("metric", "pve_guest_balloon_actual_bytes")]
    assert balloon.reason == "only with an option: collect.qemu_full_status: true"
    assert got[("label", "pve_cpu_usage_ratio{name}")].reason == "only with an option: collect.guest_name_label: true"
    assert ("label", "hostname") in got
    assert got[("other", "node_cpu_seconds_total")].reason.startswith("not a prometheus-pve-exporter metric")
    assert got[("note", "pve_disk_usage_bytes")].reason.startswith("no QEMU rows")
    assert ("label", "name") not in got  # group_left(name) from pve_guest_info exists
    report, code = render("x.json", uses, got.values())
    assert code == 1 and report.splitlines()[-1] == "x.json: 7 queries checked, 6 missing"
    rules = read_rules((FIXTURES / "ppe-missing-rules.yml").read_text())
    got = {(f.kind, f.subject): f for f in check(rules, exposed())}
    assert got[("metric", "pve_guest_filesystem_used_bytes")].reason.endswith("collect.guest_agent_filesystems: true")
    assert got[("metric", "pve_request_errors_total")].reason.startswith("removed on purpose")
    assert got[("metric", "pve_scrape_api_duration_seconds_bucket")].reason.startswith("renamed")
    assert ("label", "mountpoint") not in got and ("label", "hostname") in got


def test_reasons_and_options_do_not_drift_from_the_code() -> None:
    """The hand-written parts: each GONE name is really absent, each NOTE name really exposed, every
    prometheus-pve-exporter collector metric exposed, and OPTIONS are the opt-in collect settings."""
    exp = exposed()
    every = {n for names in exp.by_option.values() for n in names}
    for gone in GONE:
        assert not [n for n in every if n == gone or n.startswith(gone + "_")], gone
    assert set(NOTES) <= set(exp.default)
    ppe = (Path(__file__).parent / "ppe_metric_names.txt").read_text().split()
    assert [n for n in ppe if n not in exp.default] == []
    opt_ins = {name for name, f in CollectSettings.model_fields.items() if f.annotation is bool and f.default is False}
    assert opt_ins - {"all_enum_states"} == set(OPTIONS)  # all_enum_states adds rows, no names
    assert "pve_guest_balloon_actual_bytes" in exp.by_option["qemu_full_status"]


def test_cli_exit_codes_and_streams(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pve_exporter", *args], capture_output=True, text=True,
                              timeout=60)  # fmt: skip

    ok = run("check-dashboard", str(FIXTURES / "ppe-dashboard.json"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[-1].endswith("18 queries checked, 0 missing")
    assert all(line.split("\t")[0] in ("NOTE", "SKIPPED", "MISSING") for line in ok.stdout.splitlines()[:-1])
    bad = run("check-rules", str(FIXTURES / "ppe-missing-rules.yml"))
    assert bad.returncode == 1 and "MISSING\tmetric\tpve_request_errors_total\t" in bad.stdout
    assert "collector failing" not in bad.stdout  # the simulator run's logs go to stderr
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "norules.yml").write_text("scrape_configs: []\n")
    for cmd, path in (("check-dashboard", tmp_path / "broken.json"), ("check-dashboard", tmp_path / "list.json"),
                      ("check-dashboard", tmp_path / "absent.json"), ("check-rules", tmp_path / "norules.yml"),
                      ("check-rules", FIXTURES / "ppe-dashboard.json")):  # fmt: skip
        assert cli.main([cmd, str(path)]) == 2, (cmd, path)
        out, err = capsys.readouterr()
        assert out == "" and "cannot read" in err and str(path) in err
