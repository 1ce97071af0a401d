"""UPID task identifiers, formatted and parsed exactly as pve-common `PVE/UPID.pm` does."""

from __future__ import annotations

import re
from dataclasses import dataclass

_UPID_RE = re.compile(
    r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):"
    r"([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$"
)


def format_upid(node: str, pid: int, pstart: int, starttime: int, type_: str, id_: str, user: str) -> str:
    """`pstart` grows to 9 hex digits after ~497 days of uptime; `%08X` keeps that as PVE does."""
    return f"UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{type_}:{id_}:{user}:"


@dataclass(frozen=True, slots=True)
class Upid:
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str  # as in the UPID: includes `!tokenid` for token tasks

    @property
    def text(self) -> str:
        return format_upid(self.node, self.pid, self.pstart, self.starttime, self.type, self.id, self.user)

    def split_user(self) -> tuple[str, str | None]:
        """Task status and lists report the token part separately as `tokenid`."""
        user, sep, token = self.user.partition("!")
        return user, (token if sep else None)


def parse_upid(text: str) -> Upid | None:
    m = _UPID_RE.match(text)
    if not m:
        return None
    return Upid(m[1], int(m[3], 16), int(m[4], 16), int(m[5], 16), m[6], m[7], m[8])
