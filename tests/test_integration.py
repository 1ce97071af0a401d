"""The daemon against the built-in simulator on 127.0.0.1, with faults: each changes only what it should."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pve_exporter.app import build_app
from pve_exporter.simulator import DEFAULT_TOKEN_SECRET
from tests.servers import free_port
from tests.simharness import cycle, ids, series, sim_daemon

GOLDEN = Path(__file__).parent / "golden" / "metrics.prom"


def own(daemon, name, **labels):
    """Value of a self-metric sample (None when absent)."""
    text = daemon.metrics_body(sorted(daemon.clusters), False).decode()
    for (n, lbls), v in series(text).items():
        if n == name and all(dict(lbls).get(k) == str(val) for k, val in labels.items()):
            return v
    return None


PROCESS_LINE = re.compile(r"^(# (HELP|TYPE) )?(process|python)_")


def without_process(text: str) -> str:
    """The page without the process_*/python_* families, whose values move between two scrapes."""
    return "".join(line for line in text.splitlines(keepends=True) if not PROCESS_LINE.match(line))


def body(daemon, *clusters) -> str:
    return daemon.exposition.body(list(clusters or sorted(daemon.clusters))).decode()


async def test_golden_exposition():
    """Data families for a fixed simulator state and clock must equal the golden file byte for byte."""
    async with sim_daemon(clusters=(("lab", 3, 4),)) as (daemon, _sim, _):
        await cycle(daemon)
        text = body(daemon)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "exposition changed: review, then rerun with UPDATE_GOLDEN=1"


async def test_every_ppe_metric_has_a_cluster_label():
    ppe = {
        "pve_up", "pve_version_info", "pve_node_info", "pve_cluster_info", "pve_qdevice_up", "pve_qdevice_info",
        "pve_disk_size_bytes", "pve_disk_usage_bytes", "pve_memory_size_bytes", "pve_memory_usage_bytes",
        "pve_network_transmit_bytes", "pve_network_receive_bytes", "pve_disk_write_bytes", "pve_disk_read_bytes",
        "pve_cpu_usage_ratio", "pve_cpu_usage_limit", "pve_uptime_seconds", "pve_storage_shared",
        "pve_network_transmit_bytes_total", "pve_network_receive_bytes_total", "pve_disk_written_bytes_total",
        "pve_disk_read_bytes_total", "pve_ha_state", "pve_lock_state", "pve_guest_info", "pve_storage_info",
        "pve_not_backed_up_total", "pve_not_backed_up_info", "pve_onboot_status", "pve_replication_info",
        "pve_replication_duration_seconds", "pve_replication_last_sync_timestamp_seconds",
        "pve_replication_last_try_timestamp_seconds", "pve_replication_next_sync_timestamp_seconds",
        "pve_replication_failed_syncs", "pve_subscription_info", "pve_subscription_status",
        "pve_subscription_next_due_timestamp_seconds",
    }  # fmt: skip
    async with sim_daemon(clusters=(("lab", 3, 6), ("prod", 4, 6))) as (daemon, _, _):
        await cycle(daemon, "lab")
        await cycle(daemon, "prod")
        s = series(body(daemon))
    names = {n.removesuffix("_total") if n.endswith("_total") and n[:-6] + "_total" in ppe else n for n, _ in s}
    seen = {n for n, _ in s}
    missing = {m for m in ppe if m not in seen and m not in names}
    assert not missing
    assert all(dict(lbls).get("cluster") in ("lab", "prod") for _, lbls in s)


async def test_node_down_costs_only_its_series():
    async with sim_daemon(clusters=(("lab", 3, 4),)) as (daemon, sim, _server):
        await cycle(daemon)
        before = body(daemon)
        lab = sim.cluster("lab")
        on_pve2 = {f"{g.type}/{g.vmid}" for g in lab.guests.values() if g.node == "pve2"}
        lab.add_fault("node_down", node="pve2")
        snap = await cycle(daemon)
        after = body(daemon)
    s = series(after)
    assert s[("pve_up", frozenset({("cluster", "lab"), ("id", "node/pve2")}))] == 0.0
    assert s[("pve_up", frozenset({("cluster", "lab"), ("id", "node/pve1")}))] == 1.0
    assert "node/pve2" not in ids(after, "pve_node_load1") and "node/pve1" in ids(after, "pve_node_load1")
    # The dead node's guests keep pve_guest_info (joins and guest-down alerts need it: issue 17).
    assert on_pve2 and on_pve2 <= ids(after, "pve_guest_info")
    assert not (on_pve2 & ids(after, "pve_cpu_usage_ratio"))
    assert ids(before, "pve_guest_info") == ids(after, "pve_guest_info")
    assert all(r.ok for r in snap.results.values()), {k: r.error for k, r in snap.results.items() if not r.ok}


async def test_596_on_one_node_endpoint():
    async with sim_daemon() as (daemon, sim, _):
        await cycle(daemon)
        lab = sim.cluster("lab")
        lab.add_fault("http_error", path="/nodes/pve3/status", status=596, message="Connection timed out")
        snap = await cycle(daemon)
        text = body(daemon)
    r = snap.results["node_status"]
    assert not r.ok and r.error_kind == "unreachable" and r.stale  # pve3 served from the last good payload
    assert {"node/pve1", "node/pve2", "node/pve3"} <= ids(text, "pve_node_load1")
    assert snap.results["resources"].ok and snap.results["guests"].ok


async def test_500_on_resources_keeps_last_good_then_drops(monkeypatch):
    async with sim_daemon(cluster_kw={"interval_seconds": 15, "stale_after_seconds": 30}) as (daemon, sim, _):
        clock = daemon.clock
        await cycle(daemon)
        sim.cluster("lab").add_fault("http_error", path="/cluster/resources", status=500, message="boom")
        clock.t += 15
        snap = await cycle(daemon)
        assert not snap.reachable and snap.results["resources"].stale
        assert ids(body(daemon), "pve_guest_info")
        assert own(daemon, "pve_exporter_cluster_up", cluster="lab") == 0.0
        assert own(daemon, "pve_exporter_collector_stale", cluster="lab", collector="resources") == 1.0
        clock.t += 31
        snap = await cycle(daemon)
        assert not ids(body(daemon), "pve_guest_info")
        assert "node/pve1" in ids(body(daemon), "pve_node_load1")  # other collectors unaffected
        sim.cluster("lab").clear_faults()
        clock.t += 15
        snap = await cycle(daemon)
        assert snap.reachable and ids(body(daemon), "pve_guest_info")
        assert own(daemon, "pve_exporter_collector_success", cluster="lab", collector="resources") == 1.0


async def test_endpoint_failover_and_health():
    dead = f"http://127.0.0.1:{free_port()}"
    async with sim_daemon(extra_endpoints={"lab": [dead]}) as (daemon, _sim, server):
        snap = await cycle(daemon)
        assert snap.reachable and all(r.ok for r in snap.results.values())
        assert own(daemon, "pve_exporter_endpoint_up", cluster="lab", endpoint=dead) == 0.0
        assert own(daemon, "pve_exporter_endpoint_up", cluster="lab", endpoint=server.urls["lab"]) == 1.0
        # The healthy endpoint is remembered: the dead one is not tried again on the next cycle.
        n_dead = own(daemon, "pve_exporter_api_requests_total", endpoint=dead)
        await cycle(daemon)
        assert own(daemon, "pve_exporter_api_requests_total", endpoint=dead) == n_dead


async def test_timeout_costs_only_its_collector():
    async with sim_daemon(cluster_kw={"timeout_seconds": 0.3, "interval_seconds": 2}) as (daemon, sim, _):
        sim.cluster("lab").add_fault("timeout", path="/version")
        snap = await cycle(daemon)
    assert snap.results["version"].error_kind == "timeout"
    assert snap.results["resources"].ok and snap.results["node_status"].ok


async def test_slow_api_hits_the_cycle_deadline_not_forever():
    async with sim_daemon(cluster_kw={"timeout_seconds": 5, "interval_seconds": 1}) as (daemon, sim, _):
        sim.cluster("lab").add_fault("slow", path="/nodes/pve1/status", latency_ms=3000)
        snap = await cycle(daemon)
    assert snap.results["node_status"].error_kind == "timeout"
    assert snap.results["resources"].ok


async def test_401_everywhere_no_secret_leaks(log_buffer):
    async with sim_daemon() as (daemon, sim, _):
        sim.cluster("lab").add_fault("auth_fail")
        snap = await cycle(daemon)
        text = daemon.metrics_body(["lab"], False).decode()
        async with TestClient(TestServer(build_app(daemon))) as client:
            bad = await client.get("/metrics?cluster=nope")
            bad_body = await bad.text()
            page = await (await client.get("/")).text()
        assert own(daemon, "pve_exporter_collector_error_info", cluster="lab", collector="resources", kind="auth") == 1
    assert not snap.reachable
    assert {r.error_kind for r in snap.results.values() if not r.ok} == {"auth"}
    logs = log_buffer.getvalue()
    assert "collector failing" in logs and "Authentication failed" in logs
    for where in (logs, text, bad_body, page):
        assert DEFAULT_TOKEN_SECRET not in where


async def test_403_on_cluster_status_only_costs_status():
    async with sim_daemon() as (daemon, sim, _):
        sim.cluster("lab").add_fault("forbidden", path="/cluster/status")
        snap = await cycle(daemon)
        text = body(daemon)
    assert snap.results["status"].error_kind == "permission"
    assert snap.results["resources"].ok
    assert "pve_node_info" not in text and ids(text, "pve_guest_info")
    # Without /cluster/status the node list comes from /cluster/resources: per-node calls continue.
    assert snap.results["node_status"].ok and ids(text, "pve_node_load1")


async def test_http_routes_and_targets():
    async with sim_daemon(clusters=(("lab", 2, 2), ("prod", 2, 2))) as (daemon, _sim, _server):
        await cycle(daemon, "lab")
        await cycle(daemon, "prod")
        async with TestClient(TestServer(build_app(daemon))) as client:
            r = await client.get("/metrics")
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await r.text()
            assert 'cluster="lab"' in text and 'cluster="prod"' in text
            r = await client.get("/metrics?cluster=prod")
            t = await r.text()
            assert 'cluster="prod"' in t and 'cluster="lab"' not in t
            r = await client.get("/metrics", headers={"Accept-Encoding": "gzip"})
            assert r.headers.get("Content-Encoding") == "gzip"
            assert without_process(await r.text()) == without_process(text)
            r = await client.get("/metrics?cluster=nope")
            doc = await r.json()
            assert r.status == 400 and doc["error_code"] == "UNKNOWN_CLUSTER" and doc["success"] is False
            assert set(doc) >= {"error", "details", "recovery_suggestions", "request_id", "timestamp"}
            lab_hostport = daemon.clusters["lab"].cfg.endpoints[0].split("//", 1)[1]
            for target in ("lab", "127.0.0.1", lab_hostport):
                r = await client.get(f"/pve?target={target}&cluster=1&node=1")
                assert r.status == 200, target
            r = await client.get("/pve?target=evil.example.com")
            assert r.status == 400
            assert (await client.get("/-/healthy")).status == 200
            assert (await client.get("/-/ready")).status == 200
            page = await (await client.get("/")).text()
            assert "lab" in page and "prod" in page


async def test_ready_only_after_first_cycle():
    async with sim_daemon() as (daemon, _, _), TestClient(TestServer(build_app(daemon))) as client:
        assert (await client.get("/-/ready")).status == 503
        await cycle(daemon)
        assert (await client.get("/-/ready")).status == 200


@pytest.mark.parametrize("version", [7, 8, 9])
async def test_every_pve_flavour_collects_cleanly(version):
    async with sim_daemon(sim_kw={"pve_version": version}) as (daemon, _, _):
        snap = await cycle(daemon)
    assert all(r.ok for r in snap.results.values()), {k: r.error for k, r in snap.results.items() if not r.ok}
    assert len(snap.guests) == 12


async def test_api_calls_per_cycle_match_the_formula():
    """First cycle: 2 + 6 + 9·N + B + G; later fast cycles: 2 + 4 per node of the cycle's node slice
    (each node once per node interval) + the slow tier's share (each node once per slow interval), + QDevice
    and tasks once per node interval (documented in the README).

    B = backup storage listings: `local` on each node plus the shared `nfs-backup` once. The slow tier
    (and so the first cycle) also asks /pools and the HA status once, and ZFS, disks and certificates
    per node (issue 13).
    """
    async with sim_daemon(clusters=(("lab", 4, 5),)) as (daemon, sim, _):
        lab = sim.cluster("lab")
        await cycle(daemon)
        first = lab.stats.total
        daemon.clock.t += 15
        await cycle(daemon)
        second = lab.stats.total - first
    n, g = 4, 20
    qdevice = 1  # 4 nodes: the simulator configures a QDevice
    backup_listings = n + 1
    assert first == 2 + 3 + 2 + qdevice + 9 * n + backup_listings + g
    # cycle 2 is slice 2 of the node tier (60 s / 15 s = 4 slices) and of the slow tier (300 s / 15 s = 20):
    # pve3's status, rrddata, qemu, lxc and its replication, subscription, ZFS, disks, certificates and
    # `local` backup listing
    assert second == 2 + 4 + 6


async def test_per_node_calls_go_to_the_node_address_with_fallback():
    """Node n's own address (127.0.0.n from /cluster/status) is used; pve3's does not answer → proxied."""
    async with sim_daemon(clusters=(("lab", 3, 2),), sim_kw={"node_ip": "127.0.0.{n}"}) as (daemon, _sim, server):
        port = server.ports["lab"]
        runner = server._runners["lab"]
        site = web.TCPSite(runner, "127.0.0.2", port)  # pve2 answers on its own address; pve3's is dead
        await site.start()
        snap = await cycle(daemon)
        text = daemon.metrics_body(["lab"], False).decode()
        await site.stop()
    assert all(r.ok for r in snap.results.values()), {k: r.error for k, r in snap.results.items() if not r.ok}
    per_endpoint: dict[str, float] = {}
    for (n, lbls), v in series(text).items():
        d = dict(lbls)
        if n == "pve_exporter_api_requests_total" and d["path"] == "/nodes/{node}/status":
            per_endpoint[f"{d['endpoint']} {d['status']}"] = v
    assert per_endpoint[f"http://127.0.0.1:{port} 200"] == 2  # pve1 directly, pve3 via the endpoint
    assert per_endpoint[f"http://127.0.0.2:{port} 200"] == 1
    assert per_endpoint[f"http://127.0.0.3:{port} unreachable"] == 1
    assert {"node/pve1", "node/pve2", "node/pve3"} <= ids(text, "pve_node_load1")


async def test_direct_node_calls_can_be_turned_off():
    async with sim_daemon(sim_kw={"node_ip": "127.0.0.{n}"}, cluster_kw={"direct_node_calls": False}) as (d, _, _s):
        snap = await cycle(d)
        text = d.metrics_body(["lab"], False).decode()
    assert snap.results["node_status"].ok
    assert "127.0.0.2" not in text and "127.0.0.3" not in text


async def test_ceph_health_and_backup_age_from_the_simulator():
    async with sim_daemon(clusters=(("lab", 3, 3),), sim_kw={"ceph": True}) as (daemon, sim, _):
        await cycle(daemon)
        ok = series(body(daemon))
        sim.cluster("lab").add_fault("node_down", node="pve3")
        daemon.clock.t += 60  # Ceph status is read once per node interval
        await cycle(daemon)
        warn = series(body(daemon))
    key = ("pve_ceph_health_status", frozenset({("cluster", "lab"), ("id", "cluster/lab")}))
    assert ok[key] == 0.0 and warn[key] == 1.0
    backups = {dict(lbls)["id"]: v for (n, lbls), v in ok.items() if n == "pve_guest_last_backup_timestamp_seconds"}
    assert backups and all(daemon.clock.t - 9 * 86400 < t <= daemon.clock.t for t in backups.values())


async def test_guest_agent_filesystems_opt_in():
    from pve_exporter.settings import Settings

    async with sim_daemon(clusters=(("lab", 2, 4),)) as (daemon, sim, _):
        # The opt-in collector reads agent settings from the config collector's cache: 2nd cycle asks.
        daemon.settings = Settings(**{**daemon.settings.model_dump(), "collect": {"guest_agent_filesystems": True}})
        rt = daemon.clusters["lab"]
        rt.poller.collectors = daemon._collectors()
        await cycle(daemon)
        daemon.clock.t += 15
        snap = await cycle(daemon)
        text = body(daemon)
    lab = sim.cluster("lab")
    with_agent = {f"qemu/{g.vmid}" for g in lab.guests.values() if g.type == "qemu" and g.agent and g.running}
    assert with_agent and with_agent == ids(text, "pve_guest_filesystem_size_bytes")
    assert snap.results["agent"].ok


async def test_failed_endpoint_is_probed_and_recovers():
    """An endpoint that failed gets a /version probe a minute later, so its health can come back."""
    port = free_port()
    standby = f"http://127.0.0.1:{port}"
    async with sim_daemon(extra_endpoints={"lab": [standby]}) as (daemon, _sim, server):
        await cycle(daemon)
        assert own(daemon, "pve_exporter_endpoint_up", cluster="lab", endpoint=standby) == 0.0
        # The standby comes up (the simulator's app on a second port), and a minute passes.
        site = web.TCPSite(server._runners["lab"], "127.0.0.1", port)
        await site.start()
        daemon.clock.t += 61
        await cycle(daemon)
        up = own(daemon, "pve_exporter_endpoint_up", cluster="lab", endpoint=standby)
        await site.stop()
    assert up == 1.0
