"""The daemon on a bad day: reloads that fail half-way, clock steps, cancelled cycles, a cluster never reached.

Each test reproduces one failure seen on main before the fix (issue 11, items 1–5 and 18).
"""

from __future__ import annotations

import asyncio
import gc

import pytest

from pve_exporter.app import Daemon
from pve_exporter.clock import ManualClock
from pve_exporter.collect import build_collectors
from pve_exporter.poller import Poller, PollerConfig, PollerTiming
from pve_exporter.pve.client import PveClient
from pve_exporter.pve.errors import PveClientClosedError, PveUnreachableError
from pve_exporter.selfmetrics import SelfStats
from pve_exporter.settings import load_settings
from pve_exporter.simulator import SimulatorServer, build_simulator
from pve_exporter.snapshot import SnapshotStore
from tests.simharness import FixedClock, config_yaml, series
from tests.test_poller import FakeClient


def config_text(urls: dict[str, str], *, interval: int = 15, top: str = "", **per: str) -> str:
    return config_yaml(urls, interval=interval, top=top, per=per)


def own(daemon: Daemon, name: str, **labels: str) -> float | None:
    text = daemon.metrics_body(sorted(daemon.clusters), False).decode()
    for (n, lab), v in series(text).items():
        if n == name and all((k, val) in lab for k, val in labels.items()):
            return v
    return None


@pytest.fixture
async def two_clusters(tmp_path):
    clock = FixedClock()
    sim = build_simulator([("a", 2, 2), ("b", 2, 2)], seed=3, auth_delay=0.0, clock=clock)
    async with SimulatorServer(sim) as server:
        cfg = tmp_path / "config.yaml"
        cfg.write_text(config_text(server.urls))
        daemon = Daemon(load_settings(cfg), config_path=str(cfg), autostart=False, clock=clock,
                        monotonic=clock.monotonic)  # fmt: skip
        await daemon.start()
        try:
            for name in ("a", "b"):
                await daemon.clusters[name].poller.run_once()
            yield daemon, cfg, server.urls, clock
        finally:
            await daemon.stop()


# -- item 1: reload is one transaction ----------------------------------------------------------


async def test_reload_with_a_bad_ca_file_keeps_the_running_cluster(two_clusters, tmp_path):
    daemon, cfg, urls, _ = two_clusters
    rt_a = daemon.clusters["a"]
    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_text("this exists but is not PEM\n")
    cfg.write_text(config_text(urls, a=f"ca_file: {bad_ca}\n"))  # a changes, and cannot be built

    assert not await daemon.reload()

    assert daemon.clusters["a"] is rt_a and not rt_a.client.closed  # still the running one, untouched
    assert sorted(daemon.clusters) == ["a", "b"]
    await rt_a.poller.run_once()  # and it still collects
    assert daemon.store.get("a").reachable
    assert own(daemon, "pve_exporter_config_last_reload_successful") == 0.0
    assert daemon.settings.clusters[0].ca_file is None  # the running config is the old one


async def test_failed_reload_changes_nothing_else_either(two_clusters, tmp_path):
    """Removing b and breaking a in one file: b must not be removed by a reload that fails."""
    daemon, cfg, urls, _ = two_clusters
    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    cfg.write_text(config_text({"a": urls["a"]}, a=f"ca_file: {bad_ca}\n"))
    assert not await daemon.reload()
    assert sorted(daemon.clusters) == ["a", "b"]
    assert 'cluster="b"' in daemon.exposition.body(["b"]).decode()
    # the next good reload applies and the metric says so
    cfg.write_text(config_text({"a": urls["a"]}))
    assert await daemon.reload()
    assert sorted(daemon.clusters) == ["a"]
    assert own(daemon, "pve_exporter_config_last_reload_successful") == 1.0


async def test_concurrent_reloads_are_serialised(two_clusters):
    daemon, cfg, urls, _ = two_clusters
    cfg.write_text(config_text(urls, interval=30))
    results = await asyncio.gather(*(daemon.reload() for _ in range(5)))
    assert all(results)
    assert sorted(daemon.clusters) == ["a", "b"]
    assert all(rt.poller.timing.interval == 30 for rt in daemon.clusters.values())
    # every replaced runtime was stopped: exactly the two live clients are open
    assert all(not rt.client.closed for rt in daemon.clusters.values())


# -- item 3: keys that reload cannot apply are reported, others applied ---------------------------


async def test_restart_only_keys_are_reported_and_slow_factor_is_applied(two_clusters):
    daemon, cfg, urls, _ = two_clusters
    assert own(daemon, "pve_exporter_config_restart_required", key="listen") == 0.0  # exists from start
    cfg.write_text(config_text(urls, top="collect:\n  slow_interval_factor: 7\n  max_concurrency_total: 3\n")
                   .replace("listen: 127.0.0.1:0", "listen: 127.0.0.1:9999"))  # fmt: skip
    assert await daemon.reload()
    assert own(daemon, "pve_exporter_config_restart_required", key="listen") == 1.0
    assert own(daemon, "pve_exporter_config_restart_required", key="collect.max_concurrency_total") == 1.0
    assert own(daemon, "pve_exporter_config_restart_required", key="control.enabled") == 0.0
    assert all(rt.poller.timing.slow_factor == 7 for rt in daemon.clusters.values())


# -- item 2: collectors are swapped between cycles, never during one -----------------------------


async def test_collectors_swapped_mid_cycle_do_not_mix_payloads():
    clock = ManualClock()
    client = FakeClient()
    store, stats = SnapshotStore(), SelfStats()
    timing = PollerTiming(interval=15, timeout=5, stale_after=60)
    poller = Poller("lab", client, build_collectors(), store, stats, timing, clock=clock, monotonic=clock.monotonic)
    gate = asyncio.Event()
    real_get = client.get

    async def slow_version(path, params=None, endpoint=None):
        if path == "/version":
            await gate.wait()
        return await real_get(path, params, endpoint)

    client.get = slow_version
    cycle = asyncio.create_task(poller.run_once())
    while "/version" not in client.calls and len(client.calls) < 2:
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    # a reload drops a collector that sits before `version` in the list, mid-cycle
    fewer = tuple(c for c in build_collectors() if c.name != "status")
    poller.reconfigure(PollerConfig(fewer, timing, keep_raw=False))
    assert any(c.name == "status" for c in poller.collectors)  # not while the cycle runs
    gate.set()
    snap = await cycle
    assert snap.results["version"].ok
    assert set(poller._cache["version"]) == {"/version"}  # its own payload, nobody else's
    assert poller._cache["version"]["/version"].data["version"] == "9.1.4"
    holders = [name for name, cache in poller._cache.items() if "/version" in cache]
    assert holders == ["version"]
    assert not any(c.name == "status" for c in poller.collectors)  # adopted after the cycle
    snap = await poller.run_once()
    assert "status" not in snap.results


# -- item 4: schedules follow the monotonic clock -----------------------------------------------


@pytest.mark.parametrize("step", [-3600.0, 3600.0])
async def test_wall_clock_step_does_not_freeze_or_rush_cycles(step):
    clock = ManualClock()
    client = FakeClient()
    store, stats = SnapshotStore(), SelfStats()
    timing = PollerTiming(interval=10, timeout=5, stale_after=40)
    slept: list[float] = []

    async def fake_sleep(d: float) -> None:
        slept.append(d)
        clock.t += d  # time passes for both clocks
        if len(slept) == 2:
            clock.step_wall(step)  # NTP steps the system clock between two cycles
        if len(slept) == 6:
            raise asyncio.CancelledError

    poller = Poller("lab", client, build_collectors(), store, stats, timing, clock=clock,
                    monotonic=clock.monotonic, sleep=fake_sleep)  # fmt: skip
    with pytest.raises(asyncio.CancelledError):
        await poller.run_forever()
    assert all(abs(d - 10) < 1e-6 for d in slept), slept  # never ~3600 s, never 0
    assert stats.overruns["lab"] == 0
    snap = store.get("lab")
    assert snap is not None and snap.age(clock.monotonic()) <= 10  # fresh: at most one interval old


async def test_staleness_survives_a_wall_clock_step():
    """Cached data is dropped after stale_after seconds of real (monotonic) time, whatever the wall clock does."""
    clock = ManualClock()
    client = FakeClient()
    store, stats = SnapshotStore(), SelfStats()
    timing = PollerTiming(interval=15, timeout=5, stale_after=60)
    poller = Poller("lab", client, build_collectors(), store, stats, timing, clock=clock, monotonic=clock.monotonic)
    await poller.run_once()
    client.answers["/cluster/resources"] = PveUnreachableError("down")
    clock.step_wall(-3600)  # wall goes back an hour: must not make the cached payload "younger"
    clock.t += 30
    snap = await poller.run_once()
    assert snap.results["resources"].stale  # 30 s old: still served
    clock.step_wall(+7200)  # wall jumps forward two hours: must not make it "older"
    clock.t += 20
    snap = await poller.run_once()
    assert snap.results["resources"].stale  # 50 s old: still served
    clock.t += 20
    snap = await poller.run_once()
    assert not snap.results["resources"].stale and "pve_guest_info" not in {f.name for f in snap.families}


# -- item 5: a cancelled cycle leaves nothing running -------------------------------------------


async def test_cancelled_cycle_cancels_its_requests_and_closed_client_refuses():
    clock = ManualClock()
    client = FakeClient()
    client.hang = {"/nodes/pve1/status", "/nodes/pve2/status"}
    store, stats = SnapshotStore(), SelfStats()
    timing = PollerTiming(interval=15, timeout=5, stale_after=60)
    poller = Poller("lab", client, build_collectors(), store, stats, timing, clock=clock, monotonic=clock.monotonic)
    task = asyncio.create_task(poller.run_once())
    while client.in_flight < 2:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert client.in_flight == 0  # every request of the cycle ended with it
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_pve_client_refuses_requests_after_close():
    seen = []

    class Observer:
        def api_request(self, *args):
            seen.append(args)

        def endpoint_health(self, *args):
            seen.append(args)

    client = PveClient(["http://127.0.0.1:9"], "u@pam!t", "s", observer=Observer())
    await client.close()
    with pytest.raises(PveClientClosedError):
        await client.get("/version")
    assert client._session is None  # no session was opened behind the caller's back
    assert seen == []  # and a removed cluster's self-metrics are not brought back
    gc.collect()


async def test_removed_cluster_is_gone_for_good_even_while_its_cycle_hangs(tmp_path):
    clock = FixedClock()
    sim = build_simulator([("a", 2, 2), ("b", 2, 2)], seed=3, auth_delay=0.0, clock=clock)
    async with SimulatorServer(sim) as server:
        cfg = tmp_path / "config.yaml"
        cfg.write_text(config_text(server.urls, interval=2))
        daemon = Daemon(load_settings(cfg), config_path=str(cfg), clock=clock, monotonic=clock.monotonic)
        await daemon.start()
        try:
            sim.cluster("b").faults.add("timeout", path="/nodes")  # b's node requests hang
            daemon.clusters["b"].poller.trigger()
            await asyncio.sleep(0.3)
            cfg.write_text(config_text({"a": server.urls["a"]}, interval=2))
            assert await daemon.reload()
            await asyncio.sleep(0.2)
            text = daemon.metrics_body(sorted(daemon.clusters), False).decode()
            assert 'cluster="b"' not in text
            names = {t.get_name() for t in asyncio.all_tasks()}
            assert "poll-b" not in names
        finally:
            await daemon.stop()


# -- item 18: success means data arrived ---------------------------------------------------------


async def test_never_reached_cluster_reports_no_collector_success():
    clock = ManualClock()
    client = FakeClient()
    for path in list(client.answers):
        client.answers[path] = PveUnreachableError("connection refused", path=path)
    store, stats = SnapshotStore(), SelfStats()
    timing = PollerTiming(interval=15, timeout=5, stale_after=60)
    poller = Poller("lab", client, build_collectors(), store, stats, timing, clock=clock, monotonic=clock.monotonic)
    snap = await poller.run_once()
    assert snap.results, "every collector has a result"
    succeeded = sorted(name for name, r in snap.results.items() if r.ok)
    assert succeeded == [], f"reported success without data: {succeeded}"
    assert all(r.last_success is None for r in snap.results.values())
    assert all(r.error_kind == "unreachable" for r in snap.results.values())


async def test_a_poller_started_by_an_api_reload_does_not_log_with_the_request_id(tmp_path, log_buffer):
    """Found by the chaos soak: every later log line of a cluster added by POST /api/v1/reload carried
    that request's id (the poll task inherited the request's context)."""
    import json

    import structlog

    clock = FixedClock()
    sim = build_simulator([("a", 1, 1), ("b", 1, 1)], seed=3, auth_delay=0.0, clock=clock)
    async with SimulatorServer(sim) as server:
        cfg = tmp_path / "config.yaml"
        cfg.write_text(config_text({"a": server.urls["a"]}))
        daemon = Daemon(load_settings(cfg), config_path=str(cfg), clock=clock, monotonic=clock.monotonic)
        await daemon.start()
        try:
            cfg.write_text(config_text(server.urls))
            with structlog.contextvars.bound_contextvars(request_id="req-123"):
                assert await daemon.reload()
            for _ in range(200):
                lines = [json.loads(x) for x in log_buffer.getvalue().splitlines() if x.startswith("{")]
                reachable = [x for x in lines if x.get("event") == "cluster reachable" and x.get("cluster") == "b"]
                if reachable:
                    break
                await asyncio.sleep(0.01)
            assert reachable and "request_id" not in reachable[0], reachable
            reloaded = next(x for x in lines if x.get("event") == "config reloaded")
            assert reloaded["request_id"] == "req-123"  # the reload itself is the request's
        finally:
            await daemon.stop()
