"""Snapshot → Prometheus text exposition, rendered once per snapshot and served as bytes.

Rendering happens when a snapshot is swapped in, never inside a scrape: a scrape only joins
pre-rendered byte strings (and gzips them once per change). Every data series gets the `cluster`
label first; no sample carries a timestamp.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterable, Sequence

from pve_exporter.collect.base import Family
from pve_exporter.snapshot import Snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_ESC = str.maketrans({"\\": r"\\", '"': r"\"", "\n": r"\n"})
_HELP_ESC = str.maketrans({"\\": r"\\", "\n": r"\n"})


def escape(value: str) -> str:
    # Most label values need no escaping; the membership tests are ~10x cheaper than translate().
    if "\\" in value or '"' in value or "\n" in value:
        return value.translate(_ESC)
    return value


def fmt_value(v: float) -> str:
    if v.is_integer() and -1e16 < v < 1e16:
        return "%d" % v  # noqa: UP031  (measured: faster than str(int(v)) in the render loop)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


def header(f: Family) -> str:
    return f"# HELP {f.name} {f.help.translate(_HELP_ESC)}\n# TYPE {f.name} {f.kind}\n"


def render_samples(f: Family, cluster: str | None) -> str:
    """The sample lines of one family; `cluster` (if given) becomes the first label."""
    names = f.labels
    if cluster is not None:
        head = f'{f.name}{{cluster="{escape(cluster)}"'
        sep = ","
    else:
        head = f"{f.name}{{"
        sep = ""
    lines = []
    append = lines.append
    if len(names) == 1:
        n0 = f'{sep}{names[0]}="'
        # The hot loop (most families have only `id`): escape and format inline, no calls.
        for (v0,), value in f.samples:
            if "\\" in v0 or '"' in v0 or "\n" in v0:
                v0 = v0.translate(_ESC)
            sv = "%d" % value if value.is_integer() and -1e16 < value < 1e16 else fmt_value(value)  # noqa: UP031
            append(f'{head}{n0}{v0}"}} {sv}\n')
    elif names:
        for values, value in f.samples:
            body = ",".join([f'{n}="{escape(v)}"' for n, v in zip(names, values, strict=True)])
            append(f"{head}{sep}{body}}} {fmt_value(value)}\n")
    else:
        bare = f"{f.name} " if cluster is None else head + "} "
        for _, value in f.samples:
            append(f"{bare}{fmt_value(value)}\n")
    return "".join(lines)


def render(families: Iterable[Family], cluster: str | None = None) -> bytes:
    return "".join(header(f) + render_samples(f, cluster) for f in families).encode()


class RenderedCluster:
    """One cluster's families as (header, body) byte pairs, keyed by family name."""

    __slots__ = ("parts", "seq")

    def __init__(self, snap: Snapshot) -> None:
        self.seq = snap.seq
        self.parts: dict[str, tuple[bytes, bytes]] = {
            f.name: (header(f).encode(), render_samples(f, snap.cluster).encode()) for f in snap.families
        }


class Exposition:
    """Holds the rendered clusters and the joined (and gzipped) page for each cluster selection."""

    def __init__(self) -> None:
        self._clusters: dict[str, RenderedCluster] = {}
        self._cache: dict[tuple[str, ...], tuple[tuple[int, ...], bytes, bytes | None]] = {}

    def update(self, snap: Snapshot) -> None:
        """Snapshot listener: render now, so scrapes never pay for it."""
        self._clusters[snap.cluster] = RenderedCluster(snap)

    def remove(self, cluster: str) -> None:
        self._clusters.pop(cluster, None)
        self._cache.clear()

    def clusters(self) -> list[str]:
        return sorted(self._clusters)

    def body(self, selection: Sequence[str], *, gzipped: bool = False) -> bytes:
        """Joined exposition of the selected clusters (families grouped across clusters)."""
        key = tuple(sorted(selection))
        rendered = [self._clusters[c] for c in key if c in self._clusters]
        version = tuple(r.seq for r in rendered)
        hit = self._cache.get(key)
        if hit is None or hit[0] != version:
            names = sorted({n for r in rendered for n in r.parts})
            chunks: list[bytes] = []
            for name in names:
                head = None
                for r in rendered:
                    part = r.parts.get(name)
                    if part is None:
                        continue
                    if head is None:
                        head = part[0]
                        chunks.append(head)
                    chunks.append(part[1])
            hit = (version, b"".join(chunks), None)
            self._cache[key] = hit
        if not gzipped:
            return hit[1]
        if hit[2] is None:
            hit = (hit[0], hit[1], gzip.compress(hit[1], compresslevel=5))
            self._cache[key] = hit
        assert hit[2] is not None
        return hit[2]
