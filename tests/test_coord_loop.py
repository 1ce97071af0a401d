"""The coordinator's renew loop on an in-memory lease table and a manual clock (no database, no sleeping):
what it polls when leases are won, lost, released, and when PostgreSQL is unreachable or hangs."""

from __future__ import annotations

from collections.abc import Collection

import asyncpg
import pytest

from pve_exporter.coord.balance import View
from pve_exporter.coord.coordinator import Coordinator
from tests.simharness import FixedClock, series

LEASE = 30.0


class FakeStore:
    """The lease table's semantics (pve_exporter/coord/store.py) with the test's clock as the database's."""

    def __init__(self, clock: FixedClock) -> None:
        self.clock = clock
        self.leases: dict[str, tuple[str, float]] = {}  # target -> (owner, expires)
        self.replicas: dict[str, float] = {}
        self.fail: BaseException | None = None
        self.resets = 0

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    def _acquire(self, me: str, targets: Collection[str], lease: float) -> set[str]:
        now, won = self.clock.monotonic(), set()
        for t in targets:
            owner, expires = self.leases.get(t, (me, now))
            if expires <= now or owner == me:
                self.leases[t] = (me, now + lease)
                won.add(t)
        return won

    async def renew(self, me: str, held: Collection[str], lease_seconds: float) -> set[str]:
        self._check()
        self.replicas[me] = self.clock.monotonic() + lease_seconds
        return self._acquire(me, held, lease_seconds)

    async def view(self) -> View:
        self._check()
        now = self.clock.monotonic()
        return View(frozenset(r for r, e in self.replicas.items() if e > now),
                    {t: o for t, (o, e) in self.leases.items() if e > now})  # fmt: skip

    async def acquire(self, me: str, targets: Collection[str], lease_seconds: float) -> set[str]:
        self._check()
        return self._acquire(me, targets, lease_seconds)

    async def release(self, me: str, targets: Collection[str]) -> None:
        self._check()
        for t in targets:
            if self.leases.get(t, ("", 0))[0] == me:
                del self.leases[t]

    async def leave(self, me: str) -> None:
        self._check()
        for t in [t for t, (o, _) in self.leases.items() if o == me]:
            del self.leases[t]
        self.replicas.pop(me, None)

    async def reset(self) -> None:
        self.resets += 1

    async def close(self) -> None:
        pass


class Host:
    """The daemon's side: the configured targets and what retarget() was last told."""

    def __init__(self, targets: list[str]) -> None:
        self.targets = targets
        self.polled: set[str] = set()
        self.calls = 0

    async def retarget(self, owned: set[str]) -> bool:
        self.polled = set(owned)
        self.calls += 1
        return True


def replica(name: str, store: FakeStore, host: Host, clock: FixedClock) -> Coordinator:
    return Coordinator(name, LEASE, store, targets=lambda: host.targets, retarget=host.retarget,
                       monotonic=clock.monotonic)  # fmt: skip


async def settle(clock: FixedClock, *coords: Coordinator, ticks: int = 3) -> None:
    for _ in range(ticks):
        for c in coords:
            await c.tick()
        clock.t += LEASE / 3


async def test_nothing_is_taken_in_the_first_interval_then_the_fair_share():
    clock = FixedClock()
    store = FakeStore(clock)
    hosts = [Host(["a", "b", "c", "d", "e"]) for _ in range(2)]
    coords = [replica(f"r{i}", store, h, clock) for i, h in enumerate(hosts)]
    for c in coords:
        await c.tick()
    assert all(h.polled == set() for h in hosts)  # settling: both announce themselves first
    await settle(clock, *coords)
    assert hosts[0].polled | hosts[1].polled == {"a", "b", "c", "d", "e"}
    assert not hosts[0].polled & hosts[1].polled
    assert sorted(len(h.polled) for h in hosts) == [2, 3]


async def test_unreachable_database_keeps_polling_takes_nothing_and_recovers():
    clock = FixedClock()
    store = FakeStore(clock)
    host = Host(["a", "b"])
    c = replica("r0", store, host, clock)
    await settle(clock, c)
    assert host.polled == {"a", "b"} and c.up
    store.fail = ConnectionRefusedError(111, "Connection refused")
    host.targets = ["a", "b", "new"]
    for _ in range(10):  # far past the lease: still polling, nothing new
        clock.t += LEASE / 3
        await c.tick()
    assert host.polled == {"a", "b"} and not c.up and c.losses == 0
    store.fail = None
    await settle(clock, c)
    assert c.up and host.polled == {"a", "b", "new"}


@pytest.mark.parametrize("error", [
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.InvalidPasswordError("password authentication failed"),
    asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
])  # fmt: skip
async def test_a_database_nobody_can_use_counts_as_unreachable(error):
    clock = FixedClock()
    store = FakeStore(clock)
    host = Host(["a"])
    c = replica("r0", store, host, clock)
    await settle(clock, c)
    store.fail = error
    for _ in range(5):
        clock.t += LEASE / 3
        await c.tick()
    assert host.polled == {"a"}


async def test_renewals_that_time_out_stop_polling_before_the_lease_can_expire():
    clock = FixedClock()
    store = FakeStore(clock)
    host = Host(["a", "b"])
    c = replica("r0", store, host, clock)
    await settle(clock, c)
    last_ok = c.last_ok
    assert last_ok is not None
    store.fail = TimeoutError()
    clock.t += LEASE / 3 - 0.01  # first failed renewal: still within 2/3 of the lease
    await c.tick()
    assert host.polled == {"a", "b"}
    clock.t += LEASE / 3  # second: past 2/3 of the lease since the last success, before the lease ends
    await c.tick()
    assert clock.monotonic() - last_ok < LEASE
    assert host.polled == set() and c.losses == 2
    # the database's view: the leases were still valid when polling stopped (nobody polled twice)
    assert all(e > clock.monotonic() for _, e in store.leases.values())


async def test_a_lease_taken_by_another_replica_stops_polling_at_once():
    clock = FixedClock()
    store = FakeStore(clock)
    host = Host(["a"])
    c = replica("r0", store, host, clock)
    await settle(clock, c)
    store.leases["a"] = ("other", clock.monotonic() + LEASE)  # e.g. this replica was frozen past its lease
    await c.tick()
    assert host.polled == set() and c.losses == 1


async def test_a_target_removed_from_the_config_is_released():
    clock = FixedClock()
    store = FakeStore(clock)
    host = Host(["a", "b"])
    c = replica("r0", store, host, clock)
    await settle(clock, c)
    host.targets = ["a"]
    await c.tick()
    assert host.polled == {"a"} and "b" not in store.leases


async def test_leave_hands_every_lease_back():
    clock = FixedClock()
    store = FakeStore(clock)
    hosts = [Host(["a", "b"]), Host(["a", "b"])]
    a, b = replica("r0", store, hosts[0], clock), replica("r1", store, hosts[1], clock)
    await settle(clock, a, b)
    await a.leave()
    assert all(o == "r1" for o, _ in store.leases.values())
    await settle(clock, b, ticks=1)
    assert hosts[1].polled == {"a", "b"}


def test_self_metrics_exist_from_the_start():
    from pve_exporter.export.prometheus import render

    clock = FixedClock()
    c = replica("r0", FakeStore(clock), Host([]), clock)
    s = series(render(c.families()).decode())
    assert s[("pve_exporter_coordination_up", frozenset())] == 0.0
    assert s[("pve_exporter_coordination_lease_renewals_total", frozenset())] == 0.0
    assert s[("pve_exporter_coordination_lease_losses_total", frozenset())] == 0.0
    assert s[("pve_exporter_replica_info", frozenset({("replica", "r0")}))] == 1.0


async def test_adoption_is_asked_for_when_leases_are_won_and_when_a_replica_leaves():
    clock = FixedClock()
    store = FakeStore(clock)
    hosts = [Host(["a", "b"]), Host(["a", "b"])]
    a, b = replica("r0", store, hosts[0], clock), replica("r1", store, hosts[1], clock)
    calls: list[str] = []

    async def adopt() -> None:
        calls.append("adopt")

    b.on_gained = adopt
    await settle(clock, a, b)
    assert calls == ["adopt"]  # b won its share
    calls.clear()
    await settle(clock, b, ticks=1)
    assert calls == []  # nothing changed: nothing to adopt
    del store.replicas["r0"]  # r0 died and its heartbeat ran out (its lease has not yet)
    await b.tick()
    assert calls == ["adopt"]  # b may own r0's operations' clusters already


async def test_a_failing_adoption_does_not_cost_the_leases():
    clock = FixedClock()
    store = FakeStore(clock)
    host = Host(["a"])
    c = replica("r0", store, host, clock)

    async def broken() -> None:
        raise RuntimeError("history down")

    c.on_gained = broken
    await settle(clock, c)
    assert host.polled == {"a"} and c.up
