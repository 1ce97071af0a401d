"""Counters exist at 0 from start (issue 11, item 19), as README's "Counters from the start" says.

`increase()` and `rate()` need a sample before the first event: a counter that appears only with
its first failure makes `increase(x[5m]) > 0` miss that failure and dashboards show "No data".
The README lists which counters start at 0 (and for which label values) and which can only grow new
label values; these tests hold the daemon to that list in both directions.
"""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from pve_exporter.app import Daemon, build_app
from pve_exporter.control.metrics import AUTH_FAILURE_REASONS, RATE_LIMITS, RESULTS
from pve_exporter.control.operations import ACTIONS, TERMINAL
from pve_exporter.poller import RESOURCES, STATUS
from pve_exporter.selfmetrics import SHARED_PATHS
from pve_exporter.settings import Settings
from tests.controlharness import control_cfg
from tests.monitoring import exposition
from tests.servers import free_port
from tests.simharness import FixedClock, cluster_cfg, series

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
CLUSTERS = ("lab", "prod")


def _section(title: str) -> str:
    body = README.split(f"### {title}\n", 1)[1]
    return body.split("\n#", 1)[0]


def counter_rows() -> dict[str, tuple[str, str]]:
    """README table: counter → (label values at 0 from start, label values that appear later)."""
    rows = re.findall(r"^\| `(pve_exporter_[a-z0-9_]+)` \| (.*?) \| (.*?) \|$", _section("Counters from the start"),
                      flags=re.M)
    return {name: (at0, later) for name, at0, later in rows}


def documented_zero() -> set[str]:
    return {name for name, (at0, _) in counter_rows().items() if at0 != "–"}


def expected_zero_series() -> dict[str, set[frozenset[tuple[str, str]]]]:
    """Every (family → label sets) that a fresh daemon with CLUSTERS and the control API must show at 0
    (the InfluxDB output's rows: any series with `output`, see below)."""

    def per_cluster(**fixed: tuple[str, ...]) -> set[frozenset[tuple[str, str]]]:
        out: set[frozenset[tuple[str, str]]] = {frozenset({("cluster", c)}) for c in CLUSTERS}
        for key, values in fixed.items():
            out = {labels | {(key, v)} for labels in out for v in values}
        return out

    return {
        "pve_exporter_cycles_total": per_cluster(),
        "pve_exporter_cycle_overruns_total": per_cluster(),
        "pve_exporter_collection_requests_total": per_cluster(tier=("fast", "node", "slow")),
        "pve_exporter_api_request_duration_seconds_total": per_cluster(method=("GET",), path=SHARED_PATHS),
        "pve_exporter_operations_total": per_cluster(action=ACTIONS, result=RESULTS),
        "pve_exporter_operation_duration_seconds_total": per_cluster(action=ACTIONS),
        "pve_exporter_control_auth_failures_total": {frozenset({("reason", r)}) for r in AUTH_FAILURE_REASONS},
        "pve_exporter_control_rate_limited_total": {frozenset({("limit", lim)}) for lim in RATE_LIMITS},
        "pve_exporter_pbs_cycles_total": {frozenset({("server", "backup1")})},
        "pve_exporter_pbs_cycle_overruns_total": {frozenset({("server", "backup1")})},
    }


async def _fresh_metrics(tmp_path: Path, query: str = "") -> str:
    clock = FixedClock()
    settings = Settings(
        listen="127.0.0.1:0",
        clusters=[cluster_cfg(name, [f"http://127.0.0.1:{free_port()}"]) for name in CLUSTERS],
        control=control_cfg(tmp_path / "operations.sqlite"),
        influxdb={"api": "v1", "url": f"http://127.0.0.1:{free_port()}", "database": "pve",
                  "spool_dir": str(tmp_path / "spool")},
        backup_servers=[{"name": "backup1", "endpoints": [f"http://127.0.0.1:{free_port()}"],
                         "token_id": "monitor@pbs!exporter", "token_secret": "s", "clusters": [CLUSTERS[0]]}],
    )
    daemon = Daemon(settings, autostart=False, clock=clock, monotonic=clock.monotonic)  # no cycle ever runs
    async with TestClient(TestServer(build_app(daemon))) as client:
        r = await client.get("/metrics" + query)
        assert r.status == 200
        return await r.text()


def test_the_readme_lists_exactly_the_zero_families():
    """The InfluxDB output's label values are its own tests' business: its rows are checked above."""
    documented = {n for n in documented_zero() if not n.startswith("pve_exporter_influx_")}
    assert documented == set(expected_zero_series())


def test_results_are_the_terminal_states():
    assert set(RESULTS) == set(TERMINAL)


def test_shared_paths_are_what_every_cycle_requests():
    assert {STATUS.path, RESOURCES.path} == set(SHARED_PATHS)


async def test_fresh_daemon_exports_every_documented_counter_at_zero(tmp_path):
    s = series(await _fresh_metrics(tmp_path))
    problems = []
    for family in documented_zero():
        have = {labels: v for (name, labels), v in s.items() if name == family}
        want = expected_zero_series().get(family, set())
        missing = want - set(have)
        if missing:
            problems.append(f"{family}: missing {sorted(sorted(x) for x in missing)[:3]} (+{len(missing)})")
        if family.startswith("pve_exporter_influx_") and not any(dict(labels).get("output") for labels in have):
            problems.append(f"{family}: no series for the configured output")
        if any(v != 0 for v in have.values()):
            problems.append(f"{family}: non-zero before any event")
    for family in set(counter_rows()) - documented_zero():  # README says "–": is that still true?
        if any(name == family for name, _ in s):
            problems.append(f"{family}: exported at start, but README says it only grows (update the row)")
    assert not problems, problems


async def test_zero_series_follow_the_cluster_selection(tmp_path):
    s = series(await _fresh_metrics(tmp_path, "?cluster=prod"))
    clusters = {dict(labels).get("cluster") for (name, labels) in s if name == "pve_exporter_operations_total"}
    assert clusters == {"prod"}
    assert ("pve_exporter_cycles_total", frozenset({("cluster", "prod")})) in s
    assert ("pve_exporter_cycles_total", frozenset({("cluster", "lab")})) not in s


def test_every_counter_is_documented_one_way_or_the_other():
    """Every `pve_exporter_*_total` of a busy daemon (InfluxDB output, control API, a failing
    collector) is either in the zero-from-start table or in the list that only grows labels."""
    names = {name for name, _ in series(exposition()) if name.startswith("pve_exporter_") and name.endswith("_total")}
    undocumented = sorted(names - set(counter_rows()))
    assert not undocumented, f"document in README 'Counters from the start': {undocumented}"
    stale = sorted(set(counter_rows()) - names)
    assert not stale, f"README documents counters the daemon does not have: {stale}"


def test_fixed_label_sets_cover_what_the_control_plane_counts():
    """A reason or limit counted in the code but missing from the fixed sets would only appear with
    its first event: the control package's literals must all be in AUTH_FAILURE_REASONS / RATE_LIMITS."""
    control = Path(__file__).resolve().parent.parent / "pve_exporter" / "control"
    src = "".join(p.read_text() for p in control.glob("*.py"))
    limits = set(re.findall(r'rate_limited\["(\w+)"\]', src))
    reasons = set(re.findall(r'auth_failures\["(\w+)"\]', src)) | set(re.findall(r'AuthResult\(None, "(\w+)"', src))
    reasons |= set(re.findall(r'None if found else "(\w+)"', src))
    assert limits and reasons
    assert limits <= set(RATE_LIMITS), limits - set(RATE_LIMITS)
    assert reasons <= set(AUTH_FAILURE_REASONS), reasons - set(AUTH_FAILURE_REASONS)


def _config(path: Path, clusters: dict[str, str], db: Path, **extra: str) -> None:
    lines = ["control:", "  enabled: true", f"  history_db: '{db}'", "  tokens:",
             f"    - {{name: ops, sha256: '{'0' * 64}', scopes: [read]}}", "clusters:"]
    for name, url in clusters.items():
        lines += [f"  - name: {name}", f"    endpoints: ['{url}']", "    token_id: 'monitor@pve!exporter'",
                  "    token_secret: 'x'"]
        lines += [f"    {k}: {v}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n")


async def test_reload_gives_an_added_cluster_its_zero_series_and_no_ghosts(tmp_path):
    from pve_exporter.settings import load_settings

    url = f"http://127.0.0.1:{free_port()}"
    cfg, db = tmp_path / "config.yaml", tmp_path / "ops.sqlite"
    _config(cfg, {"lab": url}, db)
    clock = FixedClock()
    daemon = Daemon(load_settings(cfg), config_path=str(cfg), autostart=False, clock=clock, monotonic=clock.monotonic)
    await daemon.start()
    try:

        def clusters_of(family: str) -> set[str]:
            text = daemon.metrics_body(sorted(daemon.clusters), False).decode()
            return {dict(lbls)["cluster"] for (n, lbls), v in series(text).items() if n == family and v == 0}

        _config(cfg, {"prod": url}, db)
        assert await daemon.reload()
        for family in ("pve_exporter_cycles_total", "pve_exporter_operations_total"):
            assert clusters_of(family) == {"prod"}, family  # added: at 0 at once; removed: gone
        _config(cfg, {"prod": url, "edge": url}, db, ca_file=f"'{tmp_path / 'missing.pem'}'")
        assert not await daemon.reload()  # rejected: nothing of "edge" may appear
        assert clusters_of("pve_exporter_cycles_total") == {"prod"}
    finally:
        await daemon.stop()
