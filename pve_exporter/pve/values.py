"""Helpers for PVE's type wobble (pve-api.md §1.5, §8): numbers as strings, 0/1 booleans, nulls.

Every helper returns None for "unknown" so callers publish nothing rather than a fake zero.
"""

from __future__ import annotations

import math
import re
from typing import Any

_TAG_SPLIT = re.compile(r"[;,\s]+")
_BIG = 1 << 1000  # ints beyond float range are handled (and refused) below
_isfinite = math.isfinite


def num(value: Any) -> float | None:
    """Any JSON number, a numeric string ("0.35", "1.5", "1.1e+15") → float; else None."""
    t = type(value)  # the common cases first: this runs for every sample of every cycle
    if t is float:
        return value if _isfinite(value) else None
    if t is int and -_BIG < value < _BIG:
        return float(value)
    if value is None or t is bool:
        return None
    if isinstance(value, int | float):
        try:
            f = float(value)
        except OverflowError:  # a JSON integer beyond float range
            return None
    elif isinstance(value, str):
        s = value.strip()
        if not s:
            return None
        try:
            f = float(s)
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def integer(value: Any) -> int | None:
    """Like num() but as int (floats truncated, e.g. `1.12589990684262e+15`)."""
    f = num(value)
    return None if f is None else int(f)


def percent_ratio(value: Any) -> float | None:
    """A PVE percentage as a 0–1 ratio: PSI `pressure*` fields are kernel avg10 percentages
    (`1.30` = 1.3 % of the time stalled), numbers for QEMU and RRD rows, strings for LXC."""
    f = num(value)
    return None if f is None else round(f / 100.0, 12)  # 16.4094 → 0.164094, not 0.16409400000000002


def flag(value: Any) -> bool | None:
    """PVE booleans: 0/1 ints, "1"/"0"/"" strings, real true/false; None when absent."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        s = value.strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("", "0", "false", "no", "off"):
            return False
    return None


def text(value: Any) -> str | None:
    """A string field; numbers are stringified (a guest named 66601), None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def split_tags(value: Any) -> tuple[str, ...]:
    """Tags are `;`-separated since 7.3, but hand-edited configs use `,` or spaces (§7.44)."""
    s = text(value)
    if not s:
        return ()
    return tuple(sorted({t for t in _TAG_SPLIT.split(s) if t}))


def sorted_csv(value: Any) -> str:
    """Comma lists come in random order (§7.10); sorting keeps label values stable."""
    s = text(value) or ""
    return ",".join(sorted(p for p in (x.strip() for x in s.split(",")) if p))
