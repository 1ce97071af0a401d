"""Poller with an injected clock and an in-memory client: cadences, caps, staleness, deadline, single flight."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from pve_exporter.collect import build_collectors
from pve_exporter.poller import Poller, PollerTiming
from pve_exporter.pve.errors import PveTimeoutError, PveUnreachableError
from pve_exporter.selfmetrics import SelfStats
from pve_exporter.snapshot import SnapshotStore


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def status(n_nodes=2, offline=()):
    rows = [{"type": "cluster", "id": "cluster", "name": "lab", "nodes": n_nodes, "version": 3, "quorate": 1}]
    for i in range(1, n_nodes + 1):
        name = f"pve{i}"
        rows.append({"type": "node", "id": f"node/{name}", "name": name, "nodeid": i, "ip": f"10.0.0.{i}",
                     "local": int(i == 1), "online": int(name not in offline), "level": ""})  # fmt: skip
    return rows


def resources(n_nodes=2, guests_per_node=3):
    rows = []
    vmid = 100
    for i in range(1, n_nodes + 1):
        rows.append({"id": f"node/pve{i}", "type": "node", "node": f"pve{i}", "status": "online", "cpu": 0.5,
                     "maxcpu": 8, "mem": 1, "maxmem": 2, "uptime": 10, "disk": 1, "maxdisk": 2})  # fmt: skip
        for _ in range(guests_per_node):
            rows.append({"id": f"qemu/{vmid}", "type": "qemu", "vmid": vmid, "node": f"pve{i}", "status": "running",
                         "name": f"vm{vmid}", "template": 0, "cpu": 0.1, "maxcpu": 2, "mem": 1, "maxmem": 2,
                         "disk": 0, "maxdisk": 5, "netin": 1, "netout": 2, "diskread": 3, "diskwrite": 4,
                         "uptime": 100})  # fmt: skip
            vmid += 1
    return rows


class FakeClient:
    """Answers GETs from a dict of path → data or exception; records every call."""

    preferred_endpoint = "http://fake:8006"

    def __init__(self, n_nodes=2, guests_per_node=3) -> None:
        self.answers: dict[str, object] = {
            "/cluster/status": status(n_nodes),
            "/cluster/resources": resources(n_nodes, guests_per_node),
            "/version": {"version": "9.1.4", "release": "9.1", "repoid": "abc"},
            "/cluster/backup-info/not-backed-up": [{"vmid": 100, "name": "vm100", "type": "qemu"}],
            "/cluster/config/qdevice": {},
            "/cluster/tasks": [],
            "/pools": [{"poolid": "prod"}],
            "/cluster/ha/status/current": [{"id": "quorum", "type": "quorum", "quorate": 1}],
        }
        for i in range(1, n_nodes + 1):
            self.answers[f"/nodes/pve{i}/replication"] = []
            self.answers[f"/nodes/pve{i}/subscription"] = {"status": "notfound"}
            self.answers[f"/nodes/pve{i}/status"] = {"loadavg": ["0.10", "0.20", "0.30"], "wait": 0.01}
            self.answers[f"/nodes/pve{i}/qemu"] = []
            self.answers[f"/nodes/pve{i}/lxc"] = []
            self.answers[f"/nodes/pve{i}/rrddata"] = [{"time": 60, "pressurecpusome": 0.25}]
            for suffix in ("disks/zfs", "disks/list", "certificates/info"):  # slow tier (issue 13)
                self.answers[f"/nodes/pve{i}/{suffix}"] = []
        self.calls: list[str] = []
        self.hang: set[str] = set()
        self.in_flight = 0
        self.max_in_flight = 0

    async def probe_down_endpoints(self, retry_after):
        return None

    async def get(self, path, params=None, endpoint=None):
        self.calls.append(path)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)
            if path in self.hang:
                await asyncio.Event().wait()
            if path.endswith("/config"):
                return {"onboot": 1}
            ans = self.answers.get(path, PveUnreachableError("no such fake path", path=path))
            if isinstance(ans, Exception):
                raise ans
            return ans
        finally:
            self.in_flight -= 1


def make(client=None, interval=15.0, stale_after=60.0, slow_factor=4, cap=50, refresh=3600.0):
    clock = Clock()
    client = client or FakeClient()
    store, stats = SnapshotStore(), SelfStats()
    collectors = build_collectors(config_max_per_cycle=cap, config_refresh_seconds=refresh)
    timing = PollerTiming(interval=interval, timeout=5, stale_after=stale_after, slow_factor=slow_factor)
    poller = Poller("lab", client, collectors, store, stats, timing, clock=clock, monotonic=clock)
    return poller, client, clock, stats


def names(snap):
    return {f.name for f in snap.families}


def values(snap, name):
    for f in snap.families:
        if f.name == name:
            return {labels: v for labels, v in f.samples}
    return {}


async def test_first_cycle_runs_every_tier_and_shares_status_and_resources():
    poller, client, _, _ = make()
    snap = await poller.run_once()
    assert client.calls.count("/cluster/status") == 1
    assert client.calls.count("/cluster/resources") == 1
    assert {"pve_up", "pve_node_info", "pve_version_info", "pve_subscription_status", "pve_onboot_status",
            "pve_not_backed_up_total", "pve_guest_info"} <= names(snap)  # fmt: skip
    assert all(r.ok for r in snap.results.values()), snap.results
    assert snap.reachable and len(snap.guests) == 6
    assert values(snap, "pve_up")[("cluster/lab",)] == 1.0


async def test_request_count_formula_per_cycle():
    """First cycle: 2 shared + version + backup-info + qdevice + tasks + pools + HA status + 9 per node
    (status, rrddata, qemu, lxc, replication, subscription, ZFS, disks, certificates) + G configs
    (+ backup listings: none here, the fake has no storages).
    Fast cycles: 2 shared + the node and slow tiers' shares: 4 + 5 per node for the nodes of this cycle's
    slice (60 s / 15 s = 4 slices for both here; 3 nodes → one node a cycle, none in the 4th), the slow
    tier's cluster-wide requests on slice 0, qdevice and tasks once per node interval. Nothing per guest."""
    n, per_node = 3, 4
    poller, client, clock, _ = make(client=FakeClient(n_nodes=n, guests_per_node=per_node))
    await poller.run_once()
    assert len(client.calls) == 2 + 4 + 2 + 9 * n + n * per_node
    per_cycle = []
    for _ in range(4):
        client.calls.clear()
        clock.t += 15
        await poller.run_once()
        per_cycle.append(len(client.calls))
        assert not [c for c in client.calls if c.endswith("/config")]
    # cycles 2-5 are slices 2,3,0,1 of both the node tier (60 s) and the slow tier (4 × 15 s here): pve3, -,
    # pve1, pve2 each get their 4 node-tier and 5 slow requests (replication, subscription, ZFS, disks,
    # certificates); the cluster-wide slow ones (version, backup-info, pools, HA) come on slice 0; qdevice
    # and tasks 60 s after the first cycle. Nothing comes in a burst.
    assert per_cycle == [2 + 4 + 5, 2, 2 + 4 + 5 + 4, 2 + 4 + 5 + 2]


async def test_slow_tier_runs_on_its_cadence():
    poller, client, clock, _ = make(slow_factor=4)
    for _ in range(9):
        await poller.run_once()
        clock.t += 15
    assert client.calls.count("/version") == 3  # cycles 0, 4, 8
    snap = await poller.run_once()
    assert not snap.results["version"].ran
    assert "pve_version_info" in names(snap)  # carried over between its runs


async def test_config_calls_capped_then_refreshed_at_an_even_pace():
    """Warm-up is capped (4 a cycle); then ⌈G·interval/refresh⌉ = ⌈10·15/60⌉ = 3 of the oldest a cycle,
    so every config is re-read within its refresh period and no cycle carries a burst."""
    poller, client, clock, _ = make(client=FakeClient(n_nodes=2, guests_per_node=5), cap=4, refresh=60)
    counts = []
    for i in range(16):
        client.calls.clear()
        snap = await poller.run_once()
        counts.append(len([c for c in client.calls if c.endswith("/config")]))
        if i >= 3:  # after the warm-up every config is younger than its refresh period (+ one interval)
            ages = [clock() - p.fetched_at for p in poller._cache["config"].values()]
            assert len(ages) == 10 and max(ages) <= 60 + 15, ages
        clock.t += 15
    assert counts[:3] == [4, 4, 2] or counts[:3] == [4, 4, 4], counts  # warm-up: capped
    assert max(counts) <= 4 and all(c == 3 for c in counts[6:]), counts  # then the even pace
    assert len(values(snap, "pve_onboot_status")) == 10


def test_config_refresh_keeps_its_promise_at_20000_guests():
    """One cluster, 20 000 guests, 15 s interval, hourly refresh, cap 50: the needed pace (84 a cycle)
    exceeds the cap, and the pace wins; every config is re-read within the hour (+ one interval)."""
    from pve_exporter.collect.base import CacheView, pick_due

    n, interval, refresh = 20_000, 15.0, 3600.0
    paths = [f"/nodes/pve{i % 200}/qemu/{100 + i}/config" for i in range(n)]
    now = 0.0
    fetched: dict[str, float] = {}
    worst = 0.0
    per_cycle = []
    for _ in range(int(3 * 3600 / interval)):
        view = CacheView(now, fetched, {}, interval)
        due = pick_due(view, paths, refresh_seconds=refresh, max_per_cycle=50)
        per_cycle.append(len(due))
        for r in due:
            fetched[r.path] = now
        if len(fetched) == n:
            worst = max(worst, now - min(fetched.values()))
        now += interval
    assert len(fetched) == n
    assert worst <= refresh + interval, worst
    assert max(per_cycle) <= max(50, -(-n * interval // refresh)) == 84


async def test_migrated_guest_config_fetched_again():
    poller, client, clock, _ = make(client=FakeClient(n_nodes=2, guests_per_node=1))
    await poller.run_once()
    for row in client.answers["/cluster/resources"]:
        if row.get("vmid") == 100:
            row["node"] = "pve2"
    client.calls.clear()
    clock.t += 15
    snap = await poller.run_once()
    assert "/nodes/pve2/qemu/100/config" in client.calls
    assert values(snap, "pve_onboot_status")[("qemu/100", "pve2", "qemu")] == 1.0


async def test_unreachable_cluster_keeps_last_good_then_drops():
    poller, client, clock, stats = make(stale_after=60)
    await poller.run_once()
    err = PveUnreachableError("Connection refused")
    client.answers["/cluster/resources"] = err
    client.answers["/cluster/status"] = err
    clock.t += 15
    snap = await poller.run_once()
    assert not snap.reachable
    assert snap.results["resources"].stale and not snap.results["resources"].ok
    assert snap.results["resources"].error_kind == "unreachable"
    assert "pve_guest_info" in names(snap)  # last good data still served
    clock.t += 60
    snap = await poller.run_once()
    assert "pve_guest_info" not in names(snap)
    assert "pve_up" not in names(snap)
    own = {f.name: f for f in stats.families()}
    assert own["pve_exporter_cluster_up"].samples == ((("lab",), 0.0),)


async def test_offline_node_is_not_asked_and_failure_costs_only_its_series():
    client = FakeClient(n_nodes=3)
    client.answers["/cluster/status"] = status(3, offline={"pve3"})
    client.answers["/nodes/pve2/subscription"] = PveUnreachableError("No route to host", status=595)
    poller, _, _, _ = make(client=client)
    snap = await poller.run_once()
    assert not [c for c in client.calls if c.startswith("/nodes/pve3/")]
    subs = values(snap, "pve_subscription_status")
    assert ("node/pve1", "notfound") in subs and not any(k[0] == "node/pve2" for k in subs)
    assert not snap.results["subscription"].ok
    assert snap.results["replication"].ok and snap.results["resources"].ok


async def test_deadline_cuts_a_hanging_request():
    client = FakeClient()
    client.hang.add("/version")
    poller, _, _, _ = make(client=client, interval=1.0)  # deadline 0.9 s
    snap = await poller.run_once()
    assert not snap.results["version"].ok
    assert snap.results["version"].error_kind == "timeout"
    assert snap.results["resources"].ok


async def test_single_flight():
    poller, client, _, _ = make()
    a, b = await asyncio.gather(poller.run_once(), poller.run_once())
    assert b.seq == a.seq + 1
    assert client.calls.count("/cluster/resources") == 2


async def test_overruns_counted_in_run_forever():
    clock = Clock()
    client = FakeClient()
    store, stats = SnapshotStore(), SelfStats()
    timing = PollerTiming(interval=10, timeout=5, stale_after=40)
    cycles = 0

    async def fake_sleep(d):
        clock.t += d

    poller = Poller(
        "lab", client, build_collectors(), store, stats, timing, clock=clock, monotonic=clock, sleep=fake_sleep
    )
    real_run_once = poller.run_once

    async def slow_run_once():
        nonlocal cycles
        snap = await real_run_once()
        cycles += 1
        clock.t += 25 if cycles == 2 else 1  # the 2nd cycle takes 2.5 intervals
        if cycles == 4:
            raise asyncio.CancelledError
        return snap

    poller.run_once = slow_run_once
    with pytest.raises(asyncio.CancelledError):
        await poller.run_forever()
    assert stats.overruns["lab"] == 2


async def test_parser_bug_costs_only_its_collector():
    poller, client, _, _ = make()

    def broken(shared, payloads):
        raise KeyError("surprise")

    poller.collectors = tuple(
        dataclasses.replace(c, parse=broken) if c.name == "version" else c for c in poller.collectors
    )
    client.answers["/version"] = ["not", "a", "mapping"]
    snap = await poller.run_once()
    assert snap.results["version"].error_kind == "parse" and not snap.results["version"].ok
    assert snap.results["resources"].ok and "pve_guest_info" in names(snap)


async def test_timeout_error_kind_recorded():
    client = FakeClient()
    client.answers["/cluster/config/qdevice"] = PveTimeoutError("slow")
    poller, _, _, _ = make(client=client)
    snap = await poller.run_once()
    assert snap.results["qdevice"].error_kind == "timeout"


async def test_restarted_guest_config_fetched_again():
    poller, client, clock, _ = make(client=FakeClient(n_nodes=1, guests_per_node=2))
    await poller.run_once()
    clock.t += 600
    for row in client.answers["/cluster/resources"]:
        if row.get("vmid") == 101:
            row["uptime"] = 30  # restarted 30 s ago, long after its config was read
        elif row.get("vmid") == 100:
            row["uptime"] = 100_000
    client.calls.clear()
    await poller.run_once()
    assert [c for c in client.calls if c.endswith("/config")] == ["/nodes/pve1/qemu/101/config"]


def test_config_refreshes_are_dealt_across_nodes():
    """Configs read node after node at start-up (the cap's burst) must not come due node after node:
    each cycle's refreshes are spread over the nodes (≤ 6 requests per node per minute is the budget)."""
    from collections import Counter

    from pve_exporter.collect.base import CacheView, pick_due

    nodes, per_node, interval, refresh = 10, 100, 5.0, 3600.0
    paths = [f"/nodes/pve{n}/qemu/{1000 * n + i}/config" for n in range(nodes) for i in range(per_node)]
    fetched: dict[str, float] = {}
    now, worst, cycles = 0.0, 0, 0
    while now < 2 * refresh:
        due = pick_due(CacheView(now, fetched, {}, interval), paths, refresh_seconds=refresh, max_per_cycle=50)
        if len(fetched) == len(paths):  # after the warm-up
            worst = max(worst, max(Counter(r.node for r in due).values(), default=0))
            assert max(now - t for t in fetched.values()) <= refresh + 60  # hourly, give or take a minute
            cycles += 1
        for r in due:
            fetched[r.path] = now
        now += interval
    assert cycles > 1000 and worst <= 1, worst  # pace 2 a cycle over 10 nodes: never two to one node at once
