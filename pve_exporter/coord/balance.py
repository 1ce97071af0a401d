"""The fair share: which free targets to take and which held ones to hand back (pure, no I/O).

With R live replicas and N targets every replica holds ⌊N/R⌋..⌈N/R⌉. A replica only ever decides for
itself, from one consistent view of the lease table, so the replicas converge without talking to each
other: hold more than ⌈N/R⌉ → release the surplus; others below ⌊N/R⌋ and not enough free targets for
them → the first donors (by name) release one each; below ⌊N/R⌋ → take free ones; at ⌊N/R⌋ → take one
more only if the free targets outnumber what the others still lack. Which target is taken or released
follows rendezvous hashing (a stable score per replica and target), so the same targets tend to come back
to the same replica and nothing moves while the replicas and the config stay the same.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class View:
    """One read of the tables: the live replicas and the live lease holder of each leased target."""

    replicas: frozenset[str]
    holders: Mapping[str, str]  # target -> owner, only leases that have not expired


@dataclass(frozen=True, slots=True)
class Plan:
    release: frozenset[str]
    take: tuple[str, ...]


def score(replica: str, target: str) -> int:
    """Rendezvous hash: a replica prefers the targets it scores highest."""
    return int.from_bytes(hashlib.sha256(f"{replica}\0{target}".encode()).digest()[:8], "big")


def share(n: int, r: int) -> tuple[int, int]:
    """(⌊N/R⌋, ⌈N/R⌉)."""
    return n // r, -(-n // r)


def plan(targets: Sequence[str], me: str, view: View, *, may_take: bool = True) -> Plan:
    """What `me` should release and take now (release and take never both: one step at a time)."""
    configured = set(targets)
    replicas = set(view.replicas) | {me}
    floor, cap = share(len(configured), len(replicas))
    holders = {t: o for t, o in view.holders.items() if t in configured}
    held = sorted((t for t, o in holders.items() if o == me), key=lambda t: score(me, t))  # least wanted first
    counts = Counter(o for o in holders.values() if o in replicas)
    free = [t for t in targets if t not in holders]
    lacking = sum(max(0, floor - counts[r]) for r in replicas if r != me)  # what the others still need
    if len(held) > cap:
        return Plan(frozenset(held[: len(held) - cap]), ())
    shortfall = lacking - len(free)
    if shortfall > 0 and len(held) > floor:
        donors = sorted(r for r in replicas if counts[r] > floor)
        if me in donors[:shortfall]:
            return Plan(frozenset(held[:1]), ())
    if not may_take or not free:
        return Plan(frozenset(), ())
    want = max(0, floor - len(held))
    spare = len(free) - want - lacking
    if spare > 0:
        want += min(spare, cap - max(len(held), floor))
    ranked = sorted(free, key=lambda t: score(me, t), reverse=True)
    return Plan(frozenset(), tuple(ranked[:want]))
