"""End to end: a real Prometheus scrapes the daemon on the simulator with the shipped alert rules loaded.

The simulator, the daemon (with its /metrics app) and their clocks run in one background event
loop of this process, so the test can change the simulated clusters directly (a storage filling
up, a guest stopping) besides the simulator's own fault API (POST /_sim/faults). A real InfluxDB
1.x receives the daemon's InfluxDB output, and power actions go through the daemon's control
API. Prometheus (Debian `prometheus`) evaluates the rule file generated with short `for:` and
windows (alerts/generate.py E2E_OVERRIDES); the test watches
/api/v1/alerts for each injected fault's alert to fire, runs every dashboard query against the same
Prometheus (and the InfluxDB dashboard's queries against the InfluxDB), then clears the faults and
waits for the alerts to resolve. Every wait is bounded; nothing sleeps for time to pass.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pve_exporter.app import Daemon, build_app
from pve_exporter.settings import Settings
from pve_exporter.simulator import SimulatorServer, build_simulator
from tests.controlharness import TOKENS, control_cfg
from tests.monitoring import ROOT, load_module
from tests.servers import InfluxDB1, Prometheus, free_port, http_get, require_binary
from tests.simharness import cluster_cfg

pytestmark = pytest.mark.e2e

alerts_gen = load_module(ROOT / "alerts" / "generate.py")
dash_gen = load_module(ROOT / "dashboards" / "generate.py")

# Dashboard queries that legitimately return nothing from this stack, and why (every fault, the
# control API and the InfluxDB output are driven below; backup servers have their own e2e test).
NO_DATA_EXPECTED: dict[str, str] = {
    "pve-backups.json": "no backup server in this stack; tests/test_e2e_pbs.py runs its queries with one",
}
PROM_VALUES = {"$__rate_interval": "10s", "$__interval": "2s", "$__range": "1m", "$cluster": ".*", "$node": ".*",
               "$guest": ".*", "$action": ".*"}


def substitute(expr: str, values: dict[str, str]) -> str:
    for k in sorted(values, key=len, reverse=True):
        expr = expr.replace(k, values[k])
    return expr


class Stack:
    """Simulator (lab, prod, edge) + daemon + /metrics on 127.0.0.1, in a background event loop."""

    def __init__(self, tmp: Path, influx_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="e2e-stack", daemon=True)
        self.thread.start()
        self.port = free_port()
        self.dead_port = free_port()  # an API endpoint nobody answers on
        self.fillers: list[asyncio.Task[None]] = []
        self.call(self._start(tmp, influx_url))

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def do(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` in the loop's thread (the simulator's state is only touched there)."""

        async def run() -> Any:
            return fn()

        return self.call(run())

    async def _start(self, tmp: Path, influx_url: str) -> None:
        self.sim = build_simulator([("lab", 3, 4), ("prod", 2, 3), ("edge", 3, 1)], seed=7, auth_delay=0.0)
        a_year_ahead = (dt.date.today() + dt.timedelta(days=365)).isoformat()
        for cluster in self.sim.clusters.values():  # subscriptions far from due, whatever today's date
            for node in cluster.nodes.values():
                if node.subscription_level:
                    node.subscription_nextdue = a_year_ahead
        self.server = SimulatorServer(self.sim)
        await self.server.start()
        urls = self.server.urls
        settings = Settings(
            listen=f"127.0.0.1:{self.port}",
            clusters=[
                cluster_cfg("lab", [urls["lab"]], interval_seconds=1, timeout_seconds=2),
                # prod's first endpoint is dead: failover, endpoint_up 0 and API errors are on the dashboards
                cluster_cfg("prod", [f"http://127.0.0.1:{self.dead_port}", urls["prod"]], interval_seconds=1,
                            timeout_seconds=2, direct_node_calls=False),
                cluster_cfg("edge", [urls["edge"]], interval_seconds=1, timeout_seconds=2),
            ],
            collect={"slow_interval_factor": 2, "slow_min_interval_seconds": 0, "node_interval_seconds": 2},
            influxdb={"api": "v1", "url": influx_url, "database": "pve", "spool_dir": str(tmp / "spool"),
                      "timeout_seconds": 1, "flush_interval_seconds": 0.2, "retry_initial_seconds": 0.2,
                      "retry_max_seconds": 1},
            # the control API; a tiny auth-failure budget (refilled in 0.1 s) so a 429 is easy to provoke
            control=control_cfg(tmp / "operations.sqlite", task_poll_seconds=0.1,
                                auth_failure_limit={"burst": 2, "per_minute": 600}),
        )
        self.daemon = Daemon(settings)
        self.runner = web.AppRunner(build_app(self.daemon), access_log=None, handle_signals=False)
        await self.runner.setup()  # starts the daemon (the app's cleanup context)
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        for t in self.fillers:
            t.cancel()
        await asyncio.gather(*self.fillers, return_exceptions=True)
        await self.runner.cleanup()
        await self.server.stop()

    def close(self) -> None:
        try:
            self.call(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()

    # -- control API ------------------------------------------------------------------------------

    def api(self, method: str, path: str, *, token: str = "ops", body: Any = None) -> tuple[int, Any]:
        secret = TOKENS[token][0] if token in TOKENS else token
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {secret}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def operation(self, cluster: str, vmid: int, action: str, **body: Any) -> dict[str, Any]:
        """Run one power action through the control API and wait (bounded) for its final status."""
        deadline = time.monotonic() + 20
        while True:  # a 429 from the auth limiter clears within 0.1 s
            status, op = self.api("POST", f"/api/v1/clusters/{cluster}/guests/{vmid}/{action}", body=body or None)
            if status != 429 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status == 202, (status, op)
        while time.monotonic() < deadline:
            status, doc = self.api("GET", f"/api/v1/operations/{op['id']}")
            assert status == 200, doc
            if doc["status"] in ("succeeded", "failed", "timed_out", "cancelled", "interrupted"):
                return doc
            time.sleep(0.1)
        raise AssertionError(f"operation {op['id']} not finished: {doc}")

    # -- faults -----------------------------------------------------------------------------------

    def sim_api(self, cluster: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.server.urls[cluster]}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def start_filling(self, cluster: str, node: str, storage: str, start_ratio: float, per_second: float) -> None:
        def setup() -> None:
            st = self.storage(cluster, node, storage)
            st.used = max(st.used, int(st.total * start_ratio))  # never a drop: that would be a falling trend

            async def fill() -> None:
                while True:
                    await asyncio.sleep(0.25)
                    st.used += int(st.total * per_second / 4)

            self.fillers.append(self.loop.create_task(fill()))

        self.do(setup)

    def stop_filling(self) -> None:
        def stop() -> None:
            for t in self.fillers:
                t.cancel()
            self.fillers.clear()

        self.do(stop)

    def storage(self, cluster: str, node: str, storage: str) -> Any:
        return next(s for s in self.sim.cluster(cluster).nodes[node].storages if s.storage == storage)


class Alerts:
    def __init__(self, prom: Prometheus) -> None:
        self.prom = prom

    def active(self) -> list[dict[str, Any]]:
        return self.prom.api("/api/v1/alerts")["alerts"]

    @staticmethod
    def match(alerts: list[dict[str, Any]], name: str, labels: dict[str, str | None], state: str | None = None):
        """Alerts named `name` whose labels equal `labels` (None: the label must be absent)."""
        out = []
        for a in alerts:
            lab = a["labels"]
            if lab["alertname"] != name or (state and a["state"] != state):
                continue
            if all(lab.get(k) == v for k, v in labels.items()):
                out.append(a)
        return out


def wait_for(check: Callable[[], list[str]], *, timeout: float, what: str) -> None:
    """Poll `check` (a list of what is still wrong) until it is empty, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    problems: list[str] = ["not checked yet"]
    while time.monotonic() < deadline:
        try:
            problems = check()
        except (OSError, ValueError) as exc:  # a server not answering yet
            problems = [repr(exc)]
        if not problems:
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}:\n" + "\n".join(problems))


@pytest.fixture
def stack(tmp_path):
    require_binary("prometheus", "prometheus")
    influx = InfluxDB1(tmp_path / "influx")
    influx.query("CREATE DATABASE pve")
    s = Stack(tmp_path, influx.url)
    rules = tmp_path / "pve-exporter.e2e.rules.yml"
    rules.write_text(alerts_gen.render(alerts_gen.E2E_OVERRIDES))
    # A second, dead target: PveExporterDown has something to fire on.
    prom = Prometheus(tmp_path / "prom", [f"127.0.0.1:{s.port}", f"127.0.0.1:{free_port()}"],
                      rule_files=[str(rules)])
    try:
        yield s, prom, influx
    finally:
        prom.stop()
        s.close()
        influx.stop()


def _query_ok(prom: Prometheus, expr: str) -> bool:
    return bool(prom.query(expr))


def _influx_has_data(influx: InfluxDB1, q: str) -> bool:
    result = influx.query(q, db="pve")["results"][0]
    return any(any(v is not None for v in row[1:]) for s in result.get("series", []) for row in s["values"])


def test_faults_fire_their_alerts_dashboards_have_data_and_alerts_resolve(stack):
    s, prom, influx = stack
    alerts = Alerts(prom)

    # -- data arrives: every cluster, with enough samples for rate() -----------------------------------
    def data_ready() -> list[str]:
        clusters = {r["metric"]["cluster"] for r in prom.query('pve_up{id=~"node/.+"}')}
        missing = [f"no pve_up of {c}" for c in ("lab", "prod", "edge") if c not in clusters]
        if not prom.query("rate(pve_exporter_cycles_total[10s]) > 0"):
            missing.append("no rate of pve_exporter_cycles_total yet")
        if not prom.query("pve_exporter_influx_points_written_total > 0"):
            missing.append("nothing written to InfluxDB yet")
        return missing

    wait_for(data_ready, timeout=60, what="scraped data")

    # -- baseline: what the simulator has by design fires; nothing of the faults below does -------------
    baseline = {
        ("PveExporterDown", ()): "the second, dead scrape target",
        ("PveStorageUnavailable", (("cluster", "lab"), ("id", "storage/pve3/nfs-backup"))): "inactive by design",
        ("PveReplicationFailed", (("cluster", "lab"), ("id", "108-0"))): "job 108-0 fails by design",
        ("PveGuestNotBackedUp", (("cluster", "lab"), ("id", "qemu/102"))): "not in any backup job",
        ("PveGuestLockStuck", (("cluster", "lab"), ("id", "qemu/101"), ("state", "backup"))): "backup lock",
    }

    def baseline_firing() -> list[str]:
        active = alerts.active()
        return [f"{n} {dict(labels)} ({why})" for (n, labels), why in baseline.items()
                if not alerts.match(active, n, dict(labels), "firing")]

    wait_for(baseline_firing, timeout=30, what="the simulator's built-in problems to fire")
    quiet = ["PveNodeDown", "PveGuestDown", "PveClusterNotQuorate", "PveStorageFull", "PveStorageFillingUp",
             "PveClusterUnreachable", "PveHaError", "PveNodeCpuHigh", "PveNodeMemoryHigh", "PveCollectorFailing",
             "PveSubscriptionExpiring", "PveInfluxWriteFailing", "PveInfluxSpoolBacklog", "PveDataStale",
             "PvePowerActionsFailing",
             # the simulator's only week-old backups are of templates (qemu/104 in lab and prod): no alert
             "PveGuestBackupTooOld"]
    active = alerts.active()
    assert not [a["labels"] for a in active if a["labels"]["alertname"] in quiet], "alerts before any fault"
    # stopped guests without onboot/HA (qemu/101, lxc/107) and the template (qemu/104) never count as down
    assert not alerts.match(active, "PveGuestDown", {})

    # -- the InfluxDB dashboard's queries over what the daemon really wrote ---------------------------
    influx_empty = []
    values = {"$timeFilter": "time > now() - 10m", "$__interval": "2s", "$cluster": ".*", "$node": ".*",
              "$guest": ".*"}
    d = dash_gen.influx_overview()
    queries = [(p["title"], t["query"]) for p in d["panels"] for t in p.get("targets", [])]
    queries += [(f"variable {v['name']}", v["query"]) for v in d["templating"]["list"] if v["type"] == "query"]
    for title, q in queries:
        if not _influx_has_data(influx, substitute(q, values)):
            influx_empty.append(f"{title}: {q}")
    assert not influx_empty, "InfluxQL queries without data:\n" + "\n".join(influx_empty)

    # -- the control API: refused and rate-limited requests, one operation that succeeds, five PVE refuses ------
    statuses = []
    for _ in range(20):
        statuses.append(s.api("GET", "/api/v1/operations", token="not-a-token")[0])
        if statuses[-1] == 429:
            break
    assert statuses[0] == 401 and statuses[-1] == 429, statuses
    assert s.operation("lab", 109, "stop", force=True)["status"] == "succeeded"  # a stopped VM: PVE's no-op
    first = s.operation("lab", 104, "start")  # a template: PVE refuses
    assert (first["status"], first["error_message"]) == ("failed", "you can't start a vm if it's a template")
    # The first failure creates the counter series, which increase() cannot count: let Prometheus see it.
    wait_for(lambda: [] if prom.query('pve_exporter_operations_total{result="failed"}') else ["no failed series"],
             timeout=15, what="the failed-operations counter in Prometheus")
    for _ in range(4):
        assert s.operation("lab", 104, "start")["status"] == "failed"
    power_alert = ("PvePowerActionsFailing", {"cluster": "lab", "action": "start"})
    wait_for(lambda: [] if alerts.match(alerts.active(), *power_alert, "firing") else [str(power_alert)],
             timeout=20, what="PvePowerActionsFailing to fire")  # its window is short: checked on its own

    # -- a week-old backup: lab's template qemu/104 made a regular VM (stopped, no onboot) -------------
    # On its own, not with the faults below: those take lab's pve2, 104's node, down, and a guest of a
    # node that is down has no pve_guest_info to join.
    assert prom.query('time() - pve_guest_last_backup_timestamp_seconds{cluster="lab", id="qemu/104"} > 7 * 86400'), \
        "the simulator gives qemu/104 (vmid % 13 == 0) a week-old newest backup"
    s.do(lambda: setattr(s.sim.cluster("lab").guest(104), "template", False))
    backup_alert = ("PveGuestBackupTooOld", {"cluster": "lab", "id": "qemu/104", "name": "tmpl-debian12",
                                             "node": "pve2", "type": "qemu"})
    wait_for(lambda: [] if alerts.match(alerts.active(), *backup_alert, "firing") else [str(backup_alert)],
             timeout=30, what="PveGuestBackupTooOld to fire")
    # prod's qemu/104 has the same week-old backup but is still a template; fresh backups never alert
    firing = alerts.match(alerts.active(), backup_alert[0], {})
    assert [(a["labels"]["cluster"], a["labels"]["id"]) for a in firing] == [("lab", "qemu/104")]
    s.do(lambda: setattr(s.sim.cluster("lab").guest(104), "template", True))
    wait_for(lambda: [f"{backup_alert} still active"] if alerts.match(alerts.active(), *backup_alert) else [],
             timeout=30, what="PveGuestBackupTooOld to resolve once qemu/104 is a template again")

    # -- inject the faults --------------------------------------------------------------------------
    lab = s.sim.cluster("lab")
    saved: dict[str, Any] = {}

    def inject() -> None:
        g100, g103 = lab.guest(100), lab.guest(103)
        saved.update(g100_pid=g100.pid, g103_ha=g103.ha, cpu=lab.nodes["pve3"].cpu_base,
                     mem=lab.nodes["pve1"].mem_frac, due=lab.nodes["pve1"].subscription_nextdue,
                     nfs=[(st, st.used) for n in lab.nodes.values() for st in n.storages if st.storage == "nfs-backup"],
                     )
        g100.stop()  # web-01: onboot=1 -> PveGuestDown
        g103.ha = "error"  # dns-01: HA error
        lab.nodes["pve3"].cpu_base = 5.0  # CPU ratio pinned at 1.0
        lab.nodes["pve1"].mem_frac = 0.97
        lab.nodes["pve1"].subscription_nextdue = (dt.date.today() + dt.timedelta(days=5)).isoformat()
        for st, _ in saved["nfs"]:  # shared: the same numbers under every node
            st.used = int(st.total * 0.97)
        s.storage("lab", "pve1", "local").active = False

    s.do(inject)
    s.start_filling("lab", "pve3", "local-lvm", start_ratio=0.6, per_second=0.002)
    s.sim_api("lab", "POST", "/_sim/faults", {"kind": "node_down", "node": "pve2"})
    s.sim_api("lab", "POST", "/_sim/faults", {"kind": "http_error", "path": "/cluster/config/qdevice",
                                              "status": 500})  # fmt: skip
    s.sim_api("edge", "POST", "/_sim/faults", {"kind": "node_down", "node": "pve2"})
    s.sim_api("edge", "POST", "/_sim/faults", {"kind": "node_down", "node": "pve3"})
    s.sim_api("prod", "POST", "/_sim/faults", {"kind": "http_error", "path": "/cluster/resources", "status": 500})
    influx.stop()

    expected: list[tuple[str, dict[str, str | None]]] = [
        ("PveNodeDown", {"cluster": "lab", "name": "pve2"}),
        ("PveNodeDown", {"cluster": "edge", "name": "pve3"}),
        ("PveClusterNotQuorate", {"cluster": "edge"}),
        ("PveGuestDown", {"cluster": "lab", "id": "qemu/100", "name": "web-01", "node": "pve1"}),
        ("PveHaError", {"cluster": "lab", "id": "lxc/103", "state": "error"}),
        ("PveStorageFull", {"cluster": "lab", "storage": "nfs-backup", "node": None}),
        ("PveStorageAlmostFull", {"cluster": "lab", "storage": "nfs-backup", "node": None}),
        ("PveStorageUnavailable", {"cluster": "lab", "id": "storage/pve1/local", "node": "pve1"}),
        ("PveStorageFillingUp", {"cluster": "lab", "storage": "local-lvm", "node": "pve3"}),
        ("PveNodeCpuHigh", {"cluster": "lab", "name": "pve3"}),
        ("PveNodeMemoryHigh", {"cluster": "lab", "name": "pve1"}),
        ("PveSubscriptionExpiring", {"cluster": "lab", "name": "pve1"}),
        ("PveCollectorFailing", {"cluster": "lab", "collector": "qdevice", "kind": "api"}),
        ("PveClusterUnreachable", {"cluster": "prod"}),
        ("PveInfluxWriteFailing", {}),
        ("PveInfluxSpoolBacklog", {}),
    ]

    def all_firing() -> list[str]:
        active = alerts.active()
        return [f"{n} {labels}" for n, labels in expected if not alerts.match(active, n, labels, "firing")]

    wait_for(all_firing, timeout=60, what="every injected fault's alert to fire")

    active = alerts.active()
    # one alert for the shared storage, not one per node
    assert len(alerts.match(active, "PveStorageFull", {"cluster": "lab", "storage": "nfs-backup"})) == 1
    # the down node's guests and storages are PveNodeDown's business
    assert not [a for a in alerts.match(active, "PveStorageUnavailable", {"cluster": "lab"})
                if a["labels"]["node"] == "pve2"]
    assert not [a for a in alerts.match(active, "PveGuestDown", {"cluster": "lab"}) if a["labels"]["node"] == "pve2"]
    assert [a["labels"]["id"] for a in alerts.match(active, "PveGuestDown", {})] == ["qemu/100"]
    assert not alerts.match(active, "PveNodeDown", {"cluster": "prod"})
    assert "cluster" in alerts.match(active, "PveNodeDown", {"cluster": "lab"})[0]["labels"]

    # -- every dashboard query returns data from this Prometheus ------------------------------------
    empty = []
    checked = 0
    for name, make in dash_gen.DASHBOARDS.items():
        d = make()
        if d["templating"]["list"][0]["query"] != "prometheus" or name in NO_DATA_EXPECTED:
            continue
        exprs = [(f"{p['title']}/{t['refId']}", t["expr"]) for p in d["panels"] for t in p.get("targets", [])]
        for v in d["templating"]["list"]:
            if v["type"] == "query" and v["query"].startswith("label_values("):
                inner = v["query"][len("label_values("):].rsplit(",", 1)[0]
                exprs.append((f"variable {v['name']}", inner))
        for where, expr in exprs:
            checked += 1
            if not _query_ok(prom, substitute(expr, PROM_VALUES)):
                empty.append(f"{name} {where}: {expr}")
    assert checked > 100
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

    # -- clear every fault: the alerts resolve ---------------------------------------------------------
    s.stop_filling()

    def restore() -> None:
        g100 = lab.guest(100)
        g100.start(time.time(), saved["g100_pid"])
        lab.guest(103).ha = saved["g103_ha"]
        lab.nodes["pve3"].cpu_base = saved["cpu"]
        lab.nodes["pve1"].mem_frac = saved["mem"]
        lab.nodes["pve1"].subscription_nextdue = saved["due"]
        for st, used in saved["nfs"]:
            st.used = used
        s.storage("lab", "pve1", "local").active = True
        # the filled storage is cleaned up (below the 50 % a trend needs to count)
        lvm = s.storage("lab", "pve3", "local-lvm")
        lvm.used = int(lvm.total * 0.3)

    s.do(restore)
    for cluster in ("lab", "prod", "edge"):
        s.sim_api(cluster, "DELETE", "/_sim/faults")
    influx.start()

    def all_resolved() -> list[str]:
        active = alerts.active()
        return [f"{n} {labels} still {[a['state'] for a in alerts.match(active, n, labels)]}"
                for n, labels in [*expected, power_alert] if alerts.match(active, n, labels)]

    wait_for(all_resolved, timeout=60, what="the alerts to resolve after the faults were cleared")
    assert alerts.match(alerts.active(), "PveExporterDown", {}, "firing"), "the dead target still fires"
    assert http_get(f"http://127.0.0.1:{s.port}/-/ready")
