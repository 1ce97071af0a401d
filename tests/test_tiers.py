"""Collection tiers (issue 12): the fast tier is O(1) requests per cluster, per-node detail is spread over
the fast cycles (each node once per node interval), a failing node-tier call leaves the fast tier alone.

Cycles are driven with a manual clock against the in-memory fake client of test_poller, so every count
is exact.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest

from pve_exporter.clock import ManualClock
from pve_exporter.collect import build_collectors
from pve_exporter.poller import Poller, PollerTiming
from pve_exporter.pve.errors import PveApiError
from pve_exporter.selfmetrics import SelfStats
from pve_exporter.settings import ConfigError, load_settings
from pve_exporter.snapshot import SnapshotStore
from tests.test_poller import FakeClient

NODE_TIER_PATHS = ("/status", "/rrddata", "/qemu", "/lxc")


def make(n_nodes: int, interval: float = 5.0, node_interval: float = 60.0, guests_per_node: int = 2):
    clock = ManualClock()
    client = FakeClient(n_nodes=n_nodes, guests_per_node=guests_per_node)
    timing = PollerTiming(interval=interval, timeout=5, stale_after=3 * interval, node_interval=node_interval,
                          slow_min=300.0)  # fmt: skip
    poller = Poller("lab", client, build_collectors(node_interval=node_interval), SnapshotStore(), SelfStats(),
                    timing, clock=clock, monotonic=clock.monotonic)  # fmt: skip
    return poller, client, clock


def node_of(path: str) -> str | None:
    return path.split("/")[2] if path.startswith("/nodes/") else None


def node_tier_calls(calls: list[str]) -> Counter[str]:
    """Node-tier requests per node (status, rrddata, qemu, lxc lists) in a list of requested paths."""
    out: Counter[str] = Counter()
    for p in calls:
        node = node_of(p)
        if node and any(p == f"/nodes/{node}{suffix}" for suffix in NODE_TIER_PATHS):
            out[node] += 1
    return out


@pytest.mark.parametrize(("n_nodes", "interval"), [(1, 5.0), (3, 15.0), (10, 5.0), (25, 5.0)])
async def test_each_node_once_per_node_interval_spread_over_the_cycles(n_nodes, interval):
    poller, client, clock = make(n_nodes, interval=interval)
    await poller.run_once()  # start-up: every node, every tier
    assert node_tier_calls(client.calls) == {f"pve{i}": 4 for i in range(1, n_nodes + 1)}
    slices = round(60 / interval)
    share = math.ceil(n_nodes / slices)
    total: Counter[str] = Counter()
    for _ in range(slices):
        client.calls.clear()
        clock.t += interval
        await poller.run_once()
        this = node_tier_calls(client.calls)
        assert len(this) <= share, f"a cycle carried {len(this)} nodes, its share is {share}"
        total.update(this)
        shared = [p for p in client.calls if not p.startswith("/nodes/")]
        cluster_wide = [p for p in shared if p not in ("/cluster/status", "/cluster/resources")]
        assert shared.count("/cluster/status") == 1 and shared.count("/cluster/resources") == 1
        assert len(cluster_wide) <= 2, cluster_wide  # QDevice and tasks, once per node interval
    # over one node interval, every node exactly once: 4 requests (≤ 6 per node per minute)
    assert total == {f"pve{i}": 4 for i in range(1, n_nodes + 1)}


async def test_request_budget_ten_nodes_five_second_interval():
    """10 nodes, 5 s interval, defaults: ≤ 12 requests per interval at steady state (configs excluded here:
    the fake has 2 guests per node; their hourly refresh adds G·interval/3600 per interval)."""
    poller, client, clock = make(10, interval=5.0)
    await poller.run_once()
    client.calls.clear()
    cycles = 60  # one slow interval (300 s): every tier's share is in the window once
    for _ in range(cycles):
        clock.t += 5
        await poller.run_once()
    non_config = [p for p in client.calls if not p.endswith("/config")]
    per_interval = len(non_config) / cycles
    assert per_interval <= 12, per_interval
    cluster_wide = [p for p in non_config if not p.startswith("/nodes/")]
    assert len(cluster_wide) / cycles <= 2 + 0.5  # the two shared ones + a few cluster-wide extras a minute
    per_node_per_minute = Counter(node_of(p) for p in non_config if node_of(p))
    assert max(per_node_per_minute.values()) / (cycles * 5 / 60) <= 6, per_node_per_minute


async def test_failed_node_tier_call_leaves_the_fast_tier_alone_and_does_not_flap():
    poller, client, clock = make(4, interval=15.0)
    await poller.run_once()
    client.answers["/nodes/pve2/status"] = PveApiError("boom", status=500, path="/nodes/pve2/status")
    seen = []
    for _ in range(8):
        clock.t += 15
        snap = await poller.run_once()
        assert snap.results["resources"].ok and snap.results["status"].ok  # the fast tier is untouched
        seen.append(snap.results["node_status"].ok)
    # pve2's turn comes once per node interval; from then on the collector stays failing, never flapping
    first_fail = seen.index(False)
    assert all(not ok for ok in seen[first_fail:]), seen
    load1 = next(f for f in snap.families if f.name == "pve_node_load1")
    ids = {labels[0] for labels, _ in load1.samples}
    assert {"node/pve1", "node/pve3", "node/pve4"} <= ids  # the other nodes' series stay
    client.answers["/nodes/pve2/status"] = {"loadavg": ["0.1", "0.2", "0.3"], "wait": 0.01}
    for _ in range(4):
        clock.t += 15
        snap = await poller.run_once()
    assert snap.results["node_status"].ok  # back after pve2's next turn


async def test_node_tier_values_are_at_most_one_node_interval_old():
    poller, _client, clock = make(4, interval=15.0)
    await poller.run_once()
    for _ in range(10):
        clock.t += 15
        await poller.run_once()
        now = clock.monotonic()
        for key, payload in poller._cache["node_status"].items():
            assert now - payload.fetched_at <= 60, (key, now - payload.fetched_at)


def test_node_interval_shorter_than_a_cluster_interval_is_a_config_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "clusters:\n  - name: a\n    endpoints: [pve1]\n    token_id: 'u@pam!t'\n    token_secret: s\n"
        "    interval_seconds: 120\ncollect:\n  node_interval_seconds: 60\n"
    )
    with pytest.raises(ConfigError) as e:
        load_settings(cfg)
    assert "collect.node_interval_seconds" in str(e.value)


SLOW_NODE_PATHS = ("/replication", "/subscription", "/disks/zfs", "/disks/list", "/certificates/info")


async def test_the_slow_tier_is_dealt_over_the_cycles_too():
    """200 nodes' slow requests (1 300) in one cycle would overrun it: each node once per slow
    interval, one share a cycle, the cluster-wide ones once."""
    n = 25
    poller, client, clock = make(n, interval=15.0)  # slow interval 300 s → 20 slices
    await poller.run_once()
    per_node: Counter[str] = Counter()
    cluster_wide: Counter[str] = Counter()
    for _ in range(20):
        client.calls.clear()
        clock.t += 15
        await poller.run_once()
        slow = [p for p in client.calls if node_of(p) and any(p.endswith(x) for x in SLOW_NODE_PATHS)]
        nodes_now = {node_of(p) for p in slow}
        assert len(nodes_now) <= math.ceil(n / 20), nodes_now
        per_node.update(node_of(p) for p in slow)
        cluster_wide.update(p for p in client.calls if p in ("/version", "/pools", "/cluster/ha/status/current"))
    assert per_node == {f"pve{i}": len(SLOW_NODE_PATHS) for i in range(1, n + 1)}
    assert set(cluster_wide.values()) == {1}, cluster_wide
