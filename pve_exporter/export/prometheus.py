"""Snapshot → Prometheus text exposition, rendered once per snapshot and served as bytes.

Rendering happens when a snapshot is swapped in, never inside a scrape: a scrape only joins
pre-rendered byte strings (and gzips them once per change). Every data series gets the `cluster`
label first; no sample carries a timestamp.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import zlib
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
    sends, joins parts into one gzip stream; a plain scrape inflates that in a worker thread.
    `gen` is process-wide and never repeats: a poller rebuilt by a reload starts its `seq` at 1
    again, so `seq` cannot tell two renderings apart.
    """

    __slots__ = ("gen", "parts", "text")

    def __init__(self, snap: Snapshot) -> None:
        self.gen = next(_generation)
        self.parts: dict[str, tuple[Part, Part]] = {
            f.name: (Part.of(header(f).encode()), Part.of(render_samples(f, snap.cluster).encode()))
            for f in snap.families
        }
        self.text: dict[str, tuple[bytes, bytes]] | None = None  # inflated on a plain scrape's demand

    def plain(self) -> dict[str, tuple[bytes, bytes]]:
        """(header, samples) text per family: the parts inflated once (in one go: they form one
        valid stream back to back) and kept with this rendering, so a plain scrape after another
        cluster changed inflates only that cluster. Runs in a worker thread."""
        if self.text is None:
            items = list(self.parts.items())
            raw = _inflate(b"".join(p.deflate for _, pair in items for p in pair))
            text: dict[str, tuple[bytes, bytes]] = {}
            at = 0
            for name, (head, samples) in items:
                text[name] = (raw[at : at + head.size], raw[at + head.size : at + head.size + samples.size])
                at += head.size + samples.size
            self.text = text
        return self.text


_generation = itertools.count(1)  # next() on a count is atomic under the GIL: safe from worker threads


def _inflate(deflate: bytes) -> bytes:
    """Joined parts (sync-flushed raw deflate without a final block) back to text; runs off the loop."""
    return zlib.decompressobj(-15).decompress(deflate)


Key = tuple[str, ...]


def _plain_page(rendered: list[RenderedCluster]) -> bytes:
    """The plain page of these clusters, grouped by family as the text format wants (worker thread)."""
    texts = [r.plain() for r in rendered]
    out: list[bytes] = []
    for name in sorted({n for t in texts for n in t}):
        head = False
        for t in texts:
            pair = t.get(name)
            if pair is None:
                continue
            if not head:
                out.append(pair[0])
                head = True
            out.append(pair[1])
    return b"".join(out)


class Exposition:
    """Holds the rendered clusters and serves any selection of them, grouped by family."""

    MAX_CACHED = 16  # distinct ?cluster= selections whose joined page is kept
    MAX_PLAIN_BYTES = 64 << 20  # plain pages kept for plain-text scrapers (the newest is always kept)

    def __init__(self) -> None:
        self._clusters: dict[str, RenderedCluster] = {}
        self._cache: dict[Key, tuple[tuple[int, ...], gzipjoin.Joined]] = {}
        self._plain: dict[Key, tuple[tuple[int, ...], bytes]] = {}
        self._plain_lock = asyncio.Lock()
        self._join_lock = asyncio.Lock()
        # At most one per cluster: a cycle cancelled between prepare and its swap leaves one behind,
        # which the cluster's next prepare replaces and remove() drops.
        self._prepared: dict[str, tuple[Snapshot, RenderedCluster]] = {}

    def prepare(self, snap: Snapshot) -> None:
        """Snapshot preparer (poller's worker thread): render and compress before the swap."""
        self._prepared[snap.cluster] = (snap, RenderedCluster(snap))

    def update(self, snap: Snapshot) -> None:
        """Snapshot listener: swap in what `prepare` rendered (or render now), so scrapes never pay."""
        got = self._prepared.get(snap.cluster)
        if got is not None and got[0] is snap:
            rendered = got[1]
            if self._prepared.get(snap.cluster) is got:  # a worker thread may have put a newer one
                self._prepared.pop(snap.cluster, None)
        else:
            rendered = RenderedCluster(snap)
        self._clusters[snap.cluster] = rendered
        self._drop_plain(snap.cluster)

    def remove(self, cluster: str) -> None:
        self._clusters.pop(cluster, None)
        self._prepared.pop(cluster, None)
        self._cache.clear()
        self._drop_plain(cluster)

    def _drop_plain(self, cluster: str) -> None:
        """Plain pages are big: free those that include a changed cluster now, not at the next scrape."""
        for key in [k for k in self._plain if cluster in k]:
            del self._plain[key]

    def clusters(self) -> list[str]:
        return sorted(self._clusters)

    @staticmethod
    def _key(selection: Sequence[str]) -> Key:
        """The selection as a cache key: sorted, each cluster once (`?cluster=a&cluster=a` is `a`)."""
        return tuple(sorted(set(selection)))

    def _version(self, key: Key) -> tuple[int, ...]:
        return tuple(self._clusters[c].gen if c in self._clusters else -1 for c in key)

    def version(self, selection: Sequence[str]) -> tuple[int, ...]:
        """The renderings a selection's page is made of: it changes whenever one of them is swapped."""
        return self._version(self._key(selection))

    def parts(self, selection: Sequence[str]) -> list[Part]:
        """Each family's header once, then its samples from every selected cluster (the text format
        wants a family's lines together)."""
        rendered = [self._clusters[c] for c in self._key(selection) if c in self._clusters]
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

    def _cached(self, key: Key, version: tuple[int, ...]) -> gzipjoin.Joined | None:
        hit = self._cache.get(key)
        return hit[1] if hit is not None and hit[0] == version else None

    def _keep(self, key: Key, version: tuple[int, ...], joined: gzipjoin.Joined) -> None:
        if len(self._cache) >= self.MAX_CACHED and key not in self._cache:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = (version, joined)

    def _joined_now(self, key: Key) -> gzipjoin.Joined:
        """The selection's parts strung together, on this thread (tests and tools)."""
        version = self._version(key)
        joined = self._cached(key, version)
        if joined is None:
            joined = gzipjoin.concat(self.parts(key))
            self._keep(key, version, joined)
        return joined

    async def joined(self, selection: Sequence[str]) -> tuple[tuple[int, ...], gzipjoin.Joined]:
        """The selection's parts strung together (a few MB and a CRC combine per part at reference
        scale: done in a worker thread), cached until one of its clusters changes."""
        key = self._key(selection)
        version = self._version(key)
        joined = self._cached(key, version)
        if joined is not None:
            return version, joined
        async with self._join_lock:  # concurrent scrapes of a changed page join it once
            version = self._version(key)
            joined = self._cached(key, version)
            if joined is None:
                joined = await asyncio.to_thread(gzipjoin.concat, self.parts(key))
                if self._version(key) == version:  # still current (no swap meanwhile): keep it
                    self._keep(key, version, joined)
        return version, joined

    async def gzip_chunks(self, selection: Sequence[str], extra: Part | None = None) -> list[bytes]:
        """The page as one gzip stream in chunks (nothing copied into one buffer); `extra` (the
        self-metrics, new every scrape) is appended."""
        joined = (await self.joined(selection))[1]
        return gzipjoin.finish_chunks(joined, extra) if extra is not None else gzipjoin.finish_chunks(joined)

    def gzipped(self, selection: Sequence[str], extra: Part | None = None) -> bytes:
        """The page as one gzip stream; `extra` (the self-metrics, new every scrape) is appended."""
        joined = self._joined_now(self._key(selection))
        return gzipjoin.finish(joined, extra) if extra is not None else gzipjoin.finish(joined)

    def body(self, selection: Sequence[str], *, gzipped: bool = False) -> bytes:
        """The same page, plain unless `gzipped` (synchronous: tests and tools; scrapes use `plain`)."""
        joined = self._joined_now(self._key(selection))
        return gzipjoin.finish(joined) if gzipped else _inflate(joined.deflate)

    async def plain(self, selection: Sequence[str]) -> bytes:
        """The plain page for a scrape without gzip, made in a worker thread (tens of MB at reference
        scale): each cluster's text is inflated once per rendering and kept with it, so when one of
        twenty clusters changed only that one is inflated again; the page is kept until one of its
        clusters changes, so repeated plain scrapes of one snapshot pay once, and the loop never does."""
        key = self._key(selection)
        hit = self._plain.get(key)
        if hit is not None and hit[0] == self._version(key):
            return hit[1]
        async with self._plain_lock:  # concurrent plain scrapes of one page make it once
            version = self._version(key)
            hit = self._plain.get(key)
            if hit is not None and hit[0] == version:
                return hit[1]
            rendered = [self._clusters[c] for c in key if c in self._clusters]
            text = await asyncio.to_thread(_plain_page, rendered)
            if self._version(key) == version:
                self._plain[key] = (version, text)
                self._trim_plain(key)
            return text

    def _trim_plain(self, newest: Key) -> None:
        total = sum(len(t) for _, t in self._plain.values())
        for key in [k for k in self._plain if k != newest]:
            if total <= self.MAX_PLAIN_BYTES:
                break
            total -= len(self._plain.pop(key)[1])
