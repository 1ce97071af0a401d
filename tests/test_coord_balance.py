"""The fair share (pve_exporter/coord/balance.py): replicas that each decide alone from the lease table
converge to ⌊N/R⌋..⌈N/R⌉ each, and nothing moves while the replicas and the targets stay the same."""

from __future__ import annotations

import random

import pytest

from pve_exporter.coord.balance import View, plan, share


def rounds(targets: list[str], replicas: list[str], holders: dict[str, str], n: int, seed: int = 1) -> int:
    """Let every replica act `n` times in a shuffled order on one shared table; returns the moves made."""
    rng = random.Random(seed)
    moves = 0
    for _ in range(n):
        order = replicas[:]
        rng.shuffle(order)
        for me in order:
            step = plan(targets, me, View(frozenset(replicas), dict(holders)))
            for t in step.release:
                assert holders.pop(t) == me
                moves += 1
            for t in step.take:
                assert t not in holders  # only free targets are taken
                holders[t] = me
                moves += 1
    return moves


def counts(replicas: list[str], holders: dict[str, str]) -> list[int]:
    return [sum(1 for o in holders.values() if o == r) for r in replicas]


@pytest.mark.parametrize(("n", "r"), [(1, 3), (2, 3), (4, 3), (7, 3), (10, 4), (30, 7), (6, 6), (3, 1)])
def test_replicas_converge_to_the_fair_share_and_then_stay_put(n, r):
    targets = [f"c{i}" for i in range(n)]
    replicas = [f"r{i}" for i in range(r)]
    holders: dict[str, str] = {}
    rounds(targets, replicas, holders, 6)
    floor, cap = share(n, r)
    assert set(holders) == set(targets)  # every target owned, by one replica (a dict)
    assert all(floor <= c <= cap for c in counts(replicas, holders)), counts(replicas, holders)
    assert rounds(targets, replicas, holders, 5, seed=2) == 0  # stable: nothing moves any more


def test_a_dead_replicas_targets_are_taken_and_nothing_else_moves():
    targets = [f"c{i}" for i in range(9)]
    replicas = ["a", "b", "c"]
    holders: dict[str, str] = {}
    rounds(targets, replicas, holders, 6)
    before = dict(holders)
    orphaned = {t for t, o in holders.items() if o == "c"}
    for t in orphaned:  # c died: its leases expired
        del holders[t]
    moves = rounds(targets, ["a", "b"], holders, 4)
    assert moves == len(orphaned)
    assert all(holders[t] == o for t, o in before.items() if o != "c")
    assert sorted(counts(["a", "b"], holders)) == [4, 5]


def test_a_joining_replica_gets_its_share_by_polite_releases():
    targets = [f"c{i}" for i in range(8)]
    holders: dict[str, str] = {}
    rounds(targets, ["a", "b"], holders, 4)
    assert counts(["a", "b"], holders) == [4, 4]
    moves = rounds(targets, ["a", "b", "c"], holders, 6)
    assert sorted(counts(["a", "b", "c"], holders)) == [2, 3, 3]
    assert moves == 2 * 2  # two targets moved: each released once and taken once


def test_a_lease_of_a_replica_without_heartbeat_is_not_free_until_it_expires():
    step = plan(["x", "y"], "a", View(frozenset({"a"}), {"x": "ghost"}))
    assert step.take == ("y",)


def test_nothing_is_taken_while_settling_but_surplus_is_still_released():
    view = View(frozenset({"a", "b"}), {"x": "a", "y": "a", "z": "a"})
    assert plan(["x", "y", "z", "w"], "a", view, may_take=False).release  # 3 > ⌈4/2⌉
    assert plan(["x", "y", "z", "w", "v"], "b", View(frozenset({"a", "b"}), {}), may_take=False).take == ()


def test_targets_no_longer_configured_do_not_count():
    view = View(frozenset({"a", "b"}), {"old1": "a", "old2": "a", "x": "b"})
    assert plan(["x", "y"], "a", view).take == ("y",)
