"""One standard gzip stream from parts compressed once, apart (no re-compression per scrape).

Each part is raw deflate ended by a sync flush, so parts concatenate into one valid deflate
stream; the gzip trailer's CRC-32 of the whole is combined from the parts' CRCs in GF(2), the way
zlib's crc32_combine does (zlib >= 1.2.12, crc32.c: multmodp, x2nmodp). A single-member stream,
unlike concatenated gzip members, is read correctly by every client (curl, aiohttp, Go).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

_POLY = 0xEDB88320  # CRC-32 polynomial, reflected
_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # gzip, deflate, no flags, mtime 0, unknown OS
_FINAL_BLOCK = b"\x03\x00"  # an empty final fixed-Huffman block


def _multmodp(a: int, b: int) -> int:
    """a(x) * b(x) modulo the CRC polynomial (reflected bit order)."""
    m = 1 << 31
    p = 0
    while True:
        if a & m:
            p ^= b
            if a & (m - 1) == 0:
                break
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1
    return p


_X2N = [1 << 30]  # x^(2^0) = x^1
for _ in range(31):
    _X2N.append(_multmodp(_X2N[-1], _X2N[-1]))


def _x8nmodp(n: int) -> int:
    """x^(8n) modulo the CRC polynomial: the operator that shifts a CRC past n bytes."""
    p = 1 << 31  # x^0
    k = 3
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return p


@dataclass(frozen=True, slots=True)
class Part:
    """`data` compressed as sync-flushed raw deflate, with what the trailer needs."""

    deflate: bytes
    crc: int
    size: int
    shift: int  # x^(8*size) mod P, precomputed so a join costs one multiply per part

    @classmethod
    def of(cls, data: bytes, level: int = 1) -> Part:
        c = zlib.compressobj(level, zlib.DEFLATED, -15)
        body = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
        return cls(body, zlib.crc32(data), len(data), _x8nmodp(len(data)))


def combine(first: Part, second: Part) -> Part:
    """One part holding `first`'s data, then `second`'s: a part cached across scrapes plus a fresh one."""
    crc = _multmodp(second.shift, first.crc) ^ second.crc
    return Part(first.deflate + second.deflate, crc, first.size + second.size, _multmodp(first.shift, second.shift))


@dataclass(frozen=True, slots=True)
class Joined:
    """Parts already strung together (deflate bytes, CRC-32 and size of their data): a cacheable prefix."""

    deflate: bytes
    crc: int
    size: int


def concat(parts: Iterable[Part]) -> Joined:
    crc = 0
    size = 0
    chunks = []
    for p in parts:
        chunks.append(p.deflate)
        crc = _multmodp(p.shift, crc) ^ p.crc
        size += p.size
    return Joined(b"".join(chunks), crc, size)


def as_part(joined: Joined) -> Part:
    """Joined parts as one part, to follow another prefix (see `combine`)."""
    return Part(joined.deflate, joined.crc, joined.size, _x8nmodp(joined.size))


def finish_chunks(prefix: Joined, *tail: Part) -> list[bytes]:
    """A complete gzip stream as chunks to write one after the other (the prefix is not copied)."""
    crc, size = prefix.crc, prefix.size
    chunks = [_HEADER, prefix.deflate]
    for p in tail:
        chunks.append(p.deflate)
        crc = _multmodp(p.shift, crc) ^ p.crc
        size += p.size
    chunks.append(_FINAL_BLOCK + struct.pack("<II", crc, size & 0xFFFFFFFF))
    return chunks


def finish(prefix: Joined, *tail: Part) -> bytes:
    """A complete gzip stream: the prefix's data followed by the tail parts' data."""
    return b"".join(finish_chunks(prefix, *tail))


def join(parts: Iterable[Part]) -> bytes:
    """A complete gzip stream of the parts' concatenated data."""
    return finish(concat(parts))
