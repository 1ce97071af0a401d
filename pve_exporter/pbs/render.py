"""Backup server families → exposition text with `server` as the first label, once per snapshot.

Each family is rendered and compressed as (header, samples) in the poller's worker thread; a scrape
only joins them, putting one header before the samples of every selected server (the text format
wants a family's lines together), so nothing is rendered or compressed as a whole per scrape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pve_exporter.collect.base import Family
from pve_exporter.export import gzipjoin
from pve_exporter.export.gzipjoin import Part
from pve_exporter.export.prometheus import header, render_samples


@dataclass(frozen=True, slots=True)
class RenderedFamily:
    header: bytes
    samples: bytes
    header_gz: Part
    samples_gz: Part


Rendered = Mapping[str, RenderedFamily]  # family name → its rendered lines


def with_server(families: Iterable[Family], server: str) -> list[Family]:
    """The families with `server` prepended to every series' labels."""
    return [
        Family(f.name, f.kind, f.help, ("server", *f.labels), tuple(((server, *v), x) for v, x in f.samples))
        for f in families
    ]


def render_server(families: Iterable[Family], server: str) -> dict[str, RenderedFamily]:
    out = {}
    for f in with_server(families, server):
        head, samples = header(f).encode(), render_samples(f, None).encode()
        out[f.name] = RenderedFamily(head, samples, Part.of(head), Part.of(samples))
    return out


def _ordered(parts: Sequence[Rendered]) -> list[tuple[bool, RenderedFamily]]:
    """(is the family's first, family) in page order: each family's header once, then every server's samples."""
    out = []
    for name in sorted({n for r in parts for n in r}):
        got = [r[name] for r in parts if name in r]
        out += [(i == 0, fam) for i, fam in enumerate(got)]
    return out


def join(parts: Sequence[Rendered]) -> bytes:
    """Several servers' rendered families as one plain page."""
    return b"".join((fam.header if first else b"") + fam.samples for first, fam in _ordered(parts))


def join_gz(parts: Sequence[Rendered]) -> Part:
    """The same page from the parts compressed at render time (no compression here)."""
    pieces = [p for first, fam in _ordered(parts) for p in ((fam.header_gz,) if first else ()) + (fam.samples_gz,)]
    return gzipjoin.as_part(gzipjoin.concat(pieces))
