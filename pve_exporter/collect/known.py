"""The last known identity of each guest, so a guest on a dead node keeps its name in joins.

PVE keeps listing the guests of an offline node in /cluster/resources, but once pmxcfs has
dropped the node's status data (after 5 min) a guest row carries only what its config gives:
`{id, vmid, node, type, status: "unknown"}` plus `tags`, `lock`, `pool`, `hastate` (pve-api.md
§7.3; pve-manager `PVE/API2Tools.pm` extract_vm_stats). `name` and `template` come only from
status data. The poller keeps this memory across cycles; `remember_guests` is pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pve_exporter.pve.values import flag, split_tags, text

GUEST_TYPES = ("qemu", "lxc")


@dataclass(frozen=True, slots=True)
class KnownGuest:
    """Label values of pve_guest_info as last seen; `template` is "" while it was never known."""

    name: str
    template: str
    tags: str


def guest_identity(row: Mapping[str, Any], prev: KnownGuest | None) -> KnownGuest:
    """What the row says, and for the fields its missing status data leaves out, the last known value."""
    has_status = "name" in row or "template" in row
    name = text(row.get("name"))
    if name is None:
        name = prev.name if prev is not None else ""
    tpl = flag(row.get("template"))
    template = ("1" if tpl else "0") if tpl is not None else (prev.template if prev is not None else "")
    if "tags" in row or has_status or prev is None:
        tags = ";".join(split_tags(row.get("tags")))
    else:
        tags = prev.tags  # a status-less row: absent tags may mean "not known right now"
    if prev is not None and prev.name == name and prev.template == template and prev.tags == tags:
        return prev  # one object per guest while nothing changes (memory at 20 000 guests)
    return KnownGuest(name, template, tags)


def remember_guests(
    known: Mapping[str, KnownGuest], resources: Sequence[Mapping[str, Any]] | None
) -> Mapping[str, KnownGuest]:
    """The memory after this cycle's rows: every listed guest, merged with what was known.

    Guests no longer listed (deleted) are forgotten. Without rows (the API was not reached and
    its cached answer expired) the memory stays as it was.
    """
    if resources is None:
        return known
    out: dict[str, KnownGuest] = {}
    for row in resources:
        if row.get("type") not in GUEST_TYPES:
            continue
        rid = text(row.get("id"))
        if rid:
            out[rid] = guest_identity(row, known.get(rid))
    return MappingProxyType(out)
