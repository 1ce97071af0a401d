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
from pve_exporter.export import gzipjoin
from pve_exporter.export.gzipjoin import Part
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
    """One cluster's families, each compressed once at render time as (header, samples) parts.

    Only the compressed form is kept (about a tenth of the text). A gzip scrape, what Prometheus
    sends, joins parts into one gzip stream; a plain scrape decompresses that.
    """

    __slots__ = ("parts", "seq")

    def __init__(self, snap: Snapshot) -> None:
        self.seq = snap.seq
        self.parts: dict[str, tuple[Part, Part]] = {
            f.name: (Part.of(header(f).encode()), Part.of(render_samples(f, snap.cluster).encode()))
            for f in snap.families
        }


class Exposition:
    """Holds the rendered clusters and serves any selection of them, grouped by family."""

    MAX_CACHED = 16  # distinct ?cluster= selections whose joined page is kept

    def __init__(self) -> None:
        self._clusters: dict[str, RenderedCluster] = {}
        self._cache: dict[tuple[str, ...], tuple[tuple[int, ...], gzipjoin.Joined]] = {}
        self._prepared: dict[tuple[str, int], RenderedCluster] = {}

    def prepare(self, snap: Snapshot) -> None:
        """Snapshot preparer (poller's worker thread): render and compress before the swap."""
        self._prepared[(snap.cluster, snap.seq)] = RenderedCluster(snap)

    def update(self, snap: Snapshot) -> None:
        """Snapshot listener: swap in what `prepare` rendered (or render now), so scrapes never pay."""
        rendered = self._prepared.pop((snap.cluster, snap.seq), None) or RenderedCluster(snap)
        for key in list(self._prepared):  # list(): other pollers' threads may add meanwhile
            if key[0] == snap.cluster and key[1] < snap.seq:
                self._prepared.pop(key, None)
        self._clusters[snap.cluster] = rendered

    def remove(self, cluster: str) -> None:
        self._clusters.pop(cluster, None)
        self._cache.clear()

    def clusters(self) -> list[str]:
        return sorted(self._clusters)

    def parts(self, selection: Sequence[str]) -> list[Part]:
        """Each family's header once, then its samples from every selected cluster (the text format
        wants a family's lines together)."""
        rendered = [self._clusters[c] for c in sorted(selection) if c in self._clusters]
        out: list[Part] = []
        for name in sorted({n for r in rendered for n in r.parts}):
            head = None
            for r in rendered:
                part = r.parts.get(name)
                if part is None:
                    continue
                if head is None:
                    head = part[0]
                    out.append(head)
                out.append(part[1])
        return out

    def gzipped(self, selection: Sequence[str], extra: Part | None = None) -> bytes:
        """The page as one gzip stream. The selection's joined parts are cached until one of its
        clusters changes; `extra` (the self-metrics, new every scrape) is appended to that."""
        key = tuple(sorted(selection))
        version = tuple(self._clusters[c].seq if c in self._clusters else -1 for c in key)
        hit = self._cache.get(key)
        if hit is None or hit[0] != version:
            hit = (version, gzipjoin.concat(self.parts(key)))
            if len(self._cache) >= self.MAX_CACHED and key not in self._cache:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = hit
        return gzipjoin.finish(hit[1], extra) if extra is not None else gzipjoin.finish(hit[1])

    def body(self, selection: Sequence[str], *, gzipped: bool = False) -> bytes:
        """The same page, plain (decompressed) unless `gzipped`."""
        gz = self.gzipped(selection)
        return gz if gzipped else gzip.decompress(gz)
