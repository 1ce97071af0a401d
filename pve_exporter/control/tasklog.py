"""An operation's PVE task log, read from the node in its UPID and paged the way PVE pages it.

`GET /nodes/{node}/tasks/{upid}/log?start=&limit=` (pve-manager PVE/API2/Tasks.pm read_task_log)
answers `[{"n": <1-based line number>, "t": <text>}]` and the line count in the envelope's `total`;
`start` skips that many lines. The daemon passes the page through, masking anything that looks
like a secret (a log is read by every `read` token, as an operation's error message is).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pve_exporter.control.scrub import scrub_secrets
from pve_exporter.pve.client import PveClient
from pve_exporter.pve.values import integer


@dataclass(frozen=True, slots=True)
class LogLine:
    n: int
    t: str


@dataclass(frozen=True, slots=True)
class TaskLogPage:
    lines: tuple[LogLine, ...]
    total: int  # lines in the whole log (PVE's count; "no content" counts as one)


def parse_task_log(data: Any, total: int | None, start: int) -> TaskLogPage:
    """PVE's answer → a page; rows without a line number are dropped, texts are scrubbed. Pure."""
    lines: list[LogLine] = []
    for row in data if isinstance(data, list) else ():
        if not isinstance(row, Mapping):
            continue
        n = integer(row.get("n"))
        if n is None:
            continue
        raw = row.get("t")
        lines.append(LogLine(n, (scrub_secrets(str(raw)) or "") if raw is not None else ""))
    known = total if total is not None and total >= 0 else start + len(lines)
    return TaskLogPage(tuple(lines), max(known, lines[-1].n if lines else 0))


async def read_task_log(client: PveClient, node: str, upid: str, *, start: int, limit: int) -> TaskLogPage:
    """One page of the task's log; PveError (unreachable, `no such task`, ...) goes to the caller."""
    data, total = await client.get_page(f"/nodes/{node}/tasks/{upid}/log", {"start": start, "limit": limit})
    return parse_task_log(data, total, start)
