"""Static sharding without a database: which configured targets this replica polls.

A target (cluster or backup server) belongs to shard `md5(name)[8:] mod total`, exactly
Prometheus's `hashmod` relabel action, so `total` replicas with `index` 0…total-1 and the same
config split the targets between them with no coordination and nothing polled twice.
"""

from __future__ import annotations

import hashlib


def shard_of(name: str, total: int) -> int:
    """Prometheus's hashmod: the last 8 bytes of the MD5 of the value, big-endian, modulo `total`."""
    digest = hashlib.md5(name.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[8:], "big") % total


def owned(name: str, index: int | None, total: int | None) -> bool:
    """True without sharding; else whether `name` falls in shard `index` of `total`."""
    if index is None or total is None:
        return True
    return shard_of(name, total) == index
