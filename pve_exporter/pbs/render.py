"""Backup server families → exposition text with `server` as the first label (once per snapshot)."""

from __future__ import annotations

from collections.abc import Iterable

from pve_exporter.collect.base import Family
from pve_exporter.export.prometheus import render


def with_server(families: Iterable[Family], server: str) -> list[Family]:
    """The families with `server` prepended to every series' labels."""
    return [
        Family(f.name, f.kind, f.help, ("server", *f.labels), tuple(((server, *v), x) for v, x in f.samples))
        for f in families
    ]


def render_server(families: Iterable[Family], server: str) -> bytes:
    return render(with_server(families, server))
