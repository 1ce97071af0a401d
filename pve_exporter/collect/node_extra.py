"""Per-node endpoints, one call per online node: replication jobs and subscription.

    pvesh get /nodes/pve1/replication
    # HELP pve_replication_failed_syncs Proxmox vm replication fail_count
    pve_replication_failed_syncs{cluster="prod",id="100-0"} 0

The replication list already carries last_sync/next_sync/fail_count/duration, so unlike
prometheus-pve-exporter no per-job status call is made. Offline nodes are not asked.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from pve_exporter.collect.base import CacheView, Collector, Family, FamilyBuilder, Request, Shared, build_all
from pve_exporter.collect.node_status import node_payloads
from pve_exporter.pve.values import num, text

SUBSCRIPTION_STATES = ("new", "notfound", "active", "invalid", "expired", "suspended")


def _per_node(shared: Shared, suffix: str) -> list[Request]:
    return [Request(f"/nodes/{n}/{suffix}", node=n) for n in shared.online_nodes()]


def parse_replication(node_jobs: list[tuple[str, Any]]) -> list[Family]:
    info = FamilyBuilder(
        "pve_replication_info", "gauge", "Proxmox vm replication info", ("id", "type", "source", "target", "guest")
    )
    duration = FamilyBuilder("pve_replication_duration_seconds", "gauge", "Proxmox vm replication duration", ("id",))
    last_sync = FamilyBuilder(
        "pve_replication_last_sync_timestamp_seconds", "gauge", "Proxmox vm replication last_sync", ("id",)
    )
    last_try = FamilyBuilder(
        "pve_replication_last_try_timestamp_seconds", "gauge", "Proxmox vm replication last_try", ("id",)
    )
    next_sync = FamilyBuilder(
        "pve_replication_next_sync_timestamp_seconds", "gauge", "Proxmox vm replication next_sync", ("id",)
    )
    failed = FamilyBuilder("pve_replication_failed_syncs", "gauge", "Proxmox vm replication fail_count", ("id",))
    seen: set[str] = set()
    for node, jobs in node_jobs:
        if not isinstance(jobs, list):
            continue
        for job in jobs:
            jid = text(job.get("id"))
            if not jid or jid in seen:
                continue
            seen.add(jid)
            rid = jid  # prometheus-pve-exporter's format: the bare job id, node/… for source and target
            vmtype = text(job.get("vmtype")) or "qemu"
            guest = text(job.get("guest")) or jid.split("-", 1)[0]
            target = text(job.get("target"))
            info.add(
                (rid, text(job.get("type")) or "local", f"node/{text(job.get('source')) or node}",
                 f"node/{target}" if target else "", f"{vmtype}/{guest}"),
                1.0,
            )  # fmt: skip
            duration.add((rid,), num(job.get("duration")))
            # 0 means "never": publish nothing rather than 1970.
            for b, field in ((last_sync, "last_sync"), (last_try, "last_try"), (next_sync, "next_sync")):
                v = num(job.get(field))
                b.add((rid,), v if v else None)
            failed.add((rid,), num(job.get("fail_count")))
    return build_all((info, duration, last_sync, last_try, next_sync, failed))


def parse_due_date(value: Any) -> float | None:
    """`nextduedate` is a calendar date; read it as UTC midnight (PPE used the exporter's local zone)."""
    s = text(value)
    if not s:
        return None
    try:
        d = dt.datetime.strptime(s.strip()[:10], "%Y-%m-%d").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return d.timestamp()


def parse_subscription(node_subs: list[tuple[str, Any]]) -> list[Family]:
    info = FamilyBuilder(
        "pve_subscription_info", "gauge", "Proxmox VE subscription info (1 if present)", ("id", "level")
    )
    status = FamilyBuilder(
        "pve_subscription_status", "gauge", "Proxmox VE subscription status (1 if matches status)", ("id", "status")
    )
    due = FamilyBuilder(
        "pve_subscription_next_due_timestamp_seconds", "gauge",
        "Subscription next due date as Unix timestamp (UTC midnight)", ("id",),
    )  # fmt: skip
    for node, sub in node_subs:
        if not isinstance(sub, Mapping):
            continue
        nid = f"node/{node}"
        info.add((nid, text(sub.get("level")) or "unknown"), 1.0)  # prometheus-pve-exporter's value for none
        current = (text(sub.get("status")) or "").lower()
        for state in SUBSCRIPTION_STATES:
            status.add((nid, state), 1.0 if state == current else 0.0)
        if current and current not in SUBSCRIPTION_STATES:
            status.add((nid, current), 1.0)
        due.add((nid,), parse_due_date(sub.get("nextduedate")))
    return build_all((info, status, due))


def _plan_replication(shared: Shared, cache: CacheView) -> list[Request]:
    return _per_node(shared, "replication")


def _parse_replication(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
    return parse_replication(node_payloads(payloads, "replication"))


def _plan_subscription(shared: Shared, cache: CacheView) -> list[Request]:
    return _per_node(shared, "subscription")


def _parse_subscription(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
    return parse_subscription(node_payloads(payloads, "subscription"))


REPLICATION_COLLECTOR = Collector("replication", "fast", _plan_replication, _parse_replication)
SUBSCRIPTION_COLLECTOR = Collector("subscription", "slow", _plan_subscription, _parse_subscription)
