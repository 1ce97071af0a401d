"""`GET /cluster/tasks` (one call) → failed tasks per node and task type in PVE's recent-task window.

    pvesh get /cluster/tasks
    # HELP pve_node_failed_tasks Failed tasks among the node's recent tasks, by task type
    pve_node_failed_tasks{cluster="prod",id="node/pve1",task="vzdump"} 1

PVE keeps each node's running tasks plus its last finished ones here (pve-api.md §2.4), so this is
a gauge over that window, not a counter. A status other than `OK` or `WARNINGS: n` is a failure
(§7.29). Needs Sys.Audit on `/`: without it a token sees no tasks at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pve_exporter.collect.base import CacheView, Collector, Family, FamilyBuilder, Request, Shared, build_all
from pve_exporter.pve.values import num, text

TASKS = Request("/cluster/tasks")


def task_failed(status: str) -> bool:
    return status != "OK" and not status.startswith("WARNINGS")


def parse_tasks(rows: Any) -> list[Family]:
    failed = FamilyBuilder(
        "pve_node_failed_tasks", "gauge", "Failed tasks among the node's recent tasks, by task type",
        ("id", "task"),
    )  # fmt: skip
    running = FamilyBuilder("pve_node_running_tasks", "gauge", "Tasks running on the node", ("id",))
    last_failed = FamilyBuilder(
        "pve_node_last_failed_task_timestamp_seconds", "gauge",
        "End time of the newest failed task of this type on the node (Unix time)", ("id", "task"),
    )  # fmt: skip
    if not isinstance(rows, list):
        return []
    counts: dict[tuple[str, str], int] = {}
    newest: dict[tuple[str, str], float] = {}
    run: dict[str, int] = {}
    for row in rows:
        node, kind = text(row.get("node")), text(row.get("type"))
        if not node or not kind:
            continue
        nid = f"node/{node}"
        status = text(row.get("status"))
        if status is None:  # no status yet: still running
            run[nid] = run.get(nid, 0) + 1
            continue
        if task_failed(status):
            counts[(nid, kind)] = counts.get((nid, kind), 0) + 1
            end = num(row.get("endtime"))
            if end is not None:
                newest[(nid, kind)] = max(newest.get((nid, kind), 0.0), end)
        else:
            counts.setdefault((nid, kind), 0)
    for key in sorted(counts):
        failed.add(key, float(counts[key]))
    for key in sorted(newest):
        last_failed.add(key, newest[key])
    for nid in sorted(run):
        running.add((nid,), float(run[nid]))
    return build_all((failed, running, last_failed))


def slim_tasks(rows: Any) -> Any:
    if not isinstance(rows, list):
        return rows
    keep = ("node", "type", "status", "endtime")
    return [{k: r[k] for k in keep if k in r} for r in rows if isinstance(r, Mapping)]


def _plan(shared: Shared, cache: CacheView) -> list[Request]:
    return [TASKS]


def _parse(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
    return parse_tasks(payloads.get(TASKS.key))


COLLECTOR = Collector("tasks", "fast", _plan, _parse, slim=slim_tasks)
