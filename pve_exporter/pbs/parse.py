"""Pure parsers: Proxmox Backup Server API answers → metric families (no `server` label here).

Shapes follow proxmox-backup's API types (pbs-api-types/src/datastore.rs, jobs.rs, node.rs;
src/api2/status.rs, src/api2/admin/{datastore,gc,verify,prune,sync}.rs, src/api2/node/status.rs,
src/api2/version.rs). Every value PBS leaves out (or sends as -1 for "error") is absent, never 0.

    # HELP pbs_datastore_used_bytes Used bytes of the datastore's underlying storage
    pbs_datastore_used_bytes{server="backup1",datastore="store1"} 9.1e+11
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pve_exporter.collect.base import Family, FamilyBuilder, build_all
from pve_exporter.pve.values import num, text

G = "gauge"
JOB_TYPES = ("verify", "prune", "sync")
GROUP_LABELS = ("datastore", "namespace", "backup_type", "backup_id", "id")
_GUEST_KINDS = {"vm": "qemu", "ct": "lxc"}
DAY = 86400.0


def _rows(data: Any) -> list[Mapping[str, Any]]:
    return [r for r in data if isinstance(r, Mapping)] if isinstance(data, list) else []


def _size(value: Any) -> float | None:
    """Byte counts; PBS sends -1 for a datastore it could not look up (older releases)."""
    f = num(value)
    return f if f is not None and f >= 0 else None


def run_ok(state: Any) -> float | None:
    """A job's or task's last state: `OK` and `WARNINGS: n` succeeded, any other text is the error.
    None while it never ran (or is running: PBS then reports no state)."""
    s = text(state)
    if s is None:
        return None
    return 1.0 if s.upper() == "OK" or s.startswith("WARNINGS") else 0.0


def guest_id(backup_type: str, backup_id: str) -> str:
    """`vm`/`100` → `qemu/100` (joins with pve_guest_info); `host`/`x` → `host/x`."""
    kind = _GUEST_KINDS.get(backup_type)
    if kind is not None and backup_id.isdigit():
        return f"{kind}/{int(backup_id)}"
    return f"{backup_type}/{backup_id}"


# -- /version, /nodes/localhost/status --------------------------------------------------------


def parse_version(data: Any) -> list[Family]:
    """src/api2/version.rs: `{version, release, repoid}`."""
    info = FamilyBuilder(
        "pbs_version_info", G, "Proxmox Backup Server version (always 1)", ("version", "release", "repoid")
    )
    if isinstance(data, Mapping) and text(data.get("version")):
        info.add((text(data.get("version")) or "", text(data.get("release")) or "", text(data.get("repoid")) or ""), 1)
    return build_all([info])


def parse_node_status(data: Any) -> list[Family]:
    """src/api2/node/status.rs (NodeStatus in pbs-api-types/src/node.rs): memory/swap {total, used,
    free}, root {total, used, avail}, cpu and wait (0–1), loadavg [1, 5, 15], uptime (s)."""
    b = {
        "cpu": FamilyBuilder("pbs_node_cpu_usage_ratio", G, "CPU usage of the backup server (0-1)", ()),
        "wait": FamilyBuilder("pbs_node_iowait_ratio", G, "Fraction of CPU time waiting for I/O (0-1)", ()),
        "mem_size": FamilyBuilder("pbs_node_memory_size_bytes", G, "Memory of the backup server", ()),
        "mem_used": FamilyBuilder("pbs_node_memory_usage_bytes", G, "Used memory of the backup server", ()),
        "mem_free": FamilyBuilder("pbs_node_memory_free_bytes", G, "Free memory as PBS reports it", ()),
        "swap_size": FamilyBuilder("pbs_node_swap_size_bytes", G, "Swap size of the backup server", ()),
        "swap_used": FamilyBuilder("pbs_node_swap_usage_bytes", G, "Swap used on the backup server", ()),
        "root_size": FamilyBuilder("pbs_node_rootfs_size_bytes", G, "Size of the server's root filesystem", ()),
        "root_used": FamilyBuilder("pbs_node_rootfs_usage_bytes", G, "Used bytes of the root filesystem", ()),
        "root_avail": FamilyBuilder(
            "pbs_node_rootfs_available_bytes", G, "Bytes of the root filesystem available to non-root users", ()
        ),
        "load1": FamilyBuilder("pbs_node_load1", G, "1-minute load average of the backup server", ()),
        "load5": FamilyBuilder("pbs_node_load5", G, "5-minute load average of the backup server", ()),
        "load15": FamilyBuilder("pbs_node_load15", G, "15-minute load average of the backup server", ()),
        "uptime": FamilyBuilder("pbs_node_uptime_seconds", G, "Uptime of the backup server", ()),
    }
    if not isinstance(data, Mapping):
        return []
    mem = data.get("memory") if isinstance(data.get("memory"), Mapping) else {}
    swap = data.get("swap") if isinstance(data.get("swap"), Mapping) else {}
    root = data.get("root") if isinstance(data.get("root"), Mapping) else {}
    b["cpu"].add((), num(data.get("cpu")))
    b["wait"].add((), num(data.get("wait")))
    b["mem_size"].add((), _size(mem.get("total")))
    b["mem_used"].add((), _size(mem.get("used")))
    b["mem_free"].add((), _size(mem.get("free")))
    b["swap_size"].add((), _size(swap.get("total")))
    b["swap_used"].add((), _size(swap.get("used")))
    b["root_size"].add((), _size(root.get("total")))
    b["root_used"].add((), _size(root.get("used")))
    b["root_avail"].add((), _size(root.get("avail")))
    load = data.get("loadavg")
    if isinstance(load, list) and len(load) == 3:
        for key, value in zip(("load1", "load5", "load15"), load, strict=True):
            b[key].add((), num(value))
    b["uptime"].add((), num(data.get("uptime")))
    return build_all(b.values())


# -- datastores: /status/datastore-usage, /admin/datastore ------------------------------------


def _maintenance_type(value: Any) -> str:
    """`type=offline,message=…` (a property string) → `offline`; none → ``."""
    s = text(value) or ""
    for part in s.split(","):
        key, sep, v = part.partition("=")
        if sep and key.strip() == "type":
            return v.strip()
    return s.strip() if s and "=" not in s else ""


def parse_datastores(usage: Any, listing: Any, now: float) -> list[Family]:
    """`GET /status/datastore-usage` (DataStoreStatusListItem: store, total, used, avail, history,
    estimated-full-date, error, gc-status) and `GET /admin/datastore` (DataStoreListItem: store,
    comment, maintenance, mount-status). An estimated full date of 0 (no regression) or in the past
    (usage not growing) is absent: it would read as "full already"."""
    size = FamilyBuilder("pbs_datastore_size_bytes", G, "Size of the datastore's underlying storage", ("datastore",))
    used = FamilyBuilder("pbs_datastore_used_bytes", G, "Used bytes of the datastore's underlying storage",
                         ("datastore",))  # fmt: skip
    avail = FamilyBuilder("pbs_datastore_available_bytes", G, "Available bytes of the datastore's storage",
                          ("datastore",))  # fmt: skip
    full = FamilyBuilder(
        "pbs_datastore_estimated_full_timestamp_seconds", G,
        "When PBS expects the datastore to be full (linear regression over the last month; Unix time). "
        "Absent when usage is not growing or there is too little history", ("datastore",),
    )  # fmt: skip
    info = FamilyBuilder(
        "pbs_datastore_info", G, "A datastore of the backup server (always 1); `error` is PBS's lookup error",
        ("datastore", "comment", "maintenance", "mount_status", "error"),
    )  # fmt: skip
    listed = {text(r.get("store")): r for r in _rows(listing) if text(r.get("store"))}
    seen: set[str] = set()
    for row in _rows(usage):
        store = text(row.get("store"))
        if not store:
            continue
        seen.add(store)
        size.add((store,), _size(row.get("total")))
        used.add((store,), _size(row.get("used")))
        avail.add((store,), _size(row.get("avail")))
        est = num(row.get("estimated-full-date"))
        if est is not None and est > now:
            full.add((store,), est)
        meta = listed.get(store, {})
        mount = text(row.get("mount-status")) or text(meta.get("mount-status")) or ""
        info.add((store, text(meta.get("comment")) or "", _maintenance_type(meta.get("maintenance")), mount,
                  (text(row.get("error")) or "").strip()), 1)  # fmt: skip
    for store, meta in sorted(listed.items()):  # listed, but no usage row (no Datastore.Audit on it?)
        if store is not None and store not in seen:
            info.add((store, text(meta.get("comment")) or "", _maintenance_type(meta.get("maintenance")),
                      text(meta.get("mount-status")) or "", ""), 1)  # fmt: skip
    return build_all([size, used, avail, full, info])


def datastore_names(listing: Any, usage: Any = None) -> list[str]:
    names = {text(r.get("store")) for r in _rows(listing)} | {text(r.get("store")) for r in _rows(usage)}
    return sorted(n for n in names if n)


# -- garbage collection: /admin/gc (GarbageCollectionJobStatus), gc-status in datastore-usage --


def parse_gc(jobs: Any, usage: Any) -> list[Family]:
    """`GET /admin/gc` (src/api2/admin/gc.rs; GarbageCollectionJobStatus: store, the flattened
    GarbageCollectionStatus (upid, removed-bytes, pending-bytes, …), last-run-state,
    last-run-endtime, next-run). PBS releases without /admin/gc: the `gc-status` object of
    datastore-usage gives the byte counts. Byte counts are absent until GC ran (no `upid`)."""
    last = FamilyBuilder("pbs_gc_last_run_timestamp_seconds", G,
                         "End time of the datastore's last garbage collection (Unix time)", ("datastore",))  # fmt: skip
    ok = FamilyBuilder("pbs_gc_last_run_success", G, "1 if the last garbage collection succeeded, 0 if it failed",
                       ("datastore",))  # fmt: skip
    removed = FamilyBuilder("pbs_gc_removed_bytes", G, "Bytes the last garbage collection removed", ("datastore",))
    pending = FamilyBuilder(
        "pbs_gc_pending_bytes", G, "Bytes the last garbage collection found removable but kept for safety",
        ("datastore",),
    )  # fmt: skip
    done: set[str] = set()
    for row in _rows(jobs):
        store = text(row.get("store"))
        if not store:
            continue
        done.add(store)
        last.add((store,), num(row.get("last-run-endtime")))
        ok.add((store,), run_ok(row.get("last-run-state")))
        if text(row.get("upid")):
            removed.add((store,), _size(row.get("removed-bytes")))
            pending.add((store,), _size(row.get("pending-bytes")))
    for row in _rows(usage):
        store = text(row.get("store"))
        gc = row.get("gc-status")
        if store and store not in done and isinstance(gc, Mapping) and text(gc.get("upid")):
            removed.add((store,), _size(gc.get("removed-bytes")))
            pending.add((store,), _size(gc.get("pending-bytes")))
    return build_all([last, ok, removed, pending])


# -- jobs: /admin/{verify,prune,sync} (config + JobScheduleStatus, flattened) -----------------


def parse_jobs(by_type: Mapping[str, Any]) -> list[Family]:
    """`GET /admin/verify|prune|sync`: each row is the job's config (id, store, …) with
    JobScheduleStatus flattened in (next-run, last-run-state, last-run-upid, last-run-endtime)."""
    labels = ("job_type", "job_id", "datastore")
    last = FamilyBuilder("pbs_job_last_run_timestamp_seconds", G, "End time of the job's last run (Unix time)", labels)
    ok = FamilyBuilder("pbs_job_last_run_success", G, "1 if the job's last run succeeded, 0 if it failed", labels)
    nxt = FamilyBuilder("pbs_job_next_run_timestamp_seconds", G, "When the job runs next (Unix time)", labels)
    for job_type in JOB_TYPES:
        for row in _rows(by_type.get(job_type)):
            job_id = text(row.get("id"))
            if not job_id:
                continue
            key = (job_type, job_id, text(row.get("store")) or "")
            last.add(key, num(row.get("last-run-endtime")))
            ok.add(key, run_ok(row.get("last-run-state")))
            nxt.add(key, num(row.get("next-run")))
    return build_all([last, ok, nxt])


# -- backup groups and snapshots: /admin/datastore/{store}/groups|snapshots[?ns=] -------------


def parse_groups(listings: Iterable[tuple[str, str, Any]]) -> list[Family]:
    """`GET /admin/datastore/{store}/groups` (GroupListItem: backup-type, backup-id, last-backup,
    backup-count, files, owner), one listing per (datastore, namespace)."""
    last = FamilyBuilder(
        "pbs_backup_group_last_backup_timestamp_seconds", G, "Time of the group's newest snapshot (Unix time)",
        GROUP_LABELS,
    )  # fmt: skip
    count = FamilyBuilder("pbs_backup_group_snapshots", G, "Snapshots in the backup group", GROUP_LABELS)
    for store, ns, rows in listings:
        for row in _rows(rows):
            key = _group_key(store, ns, row)
            if key is None:
                continue
            last.add(key, num(row.get("last-backup")))
            count.add(key, num(row.get("backup-count")))
    return build_all([last, count])


def parse_snapshots(listings: Iterable[tuple[str, str, Any]]) -> list[Family]:
    """`GET /admin/datastore/{store}/snapshots` (SnapshotListItem: backup-type, backup-id,
    backup-time, size, verification {state: ok|failed, upid}): the size of the newest snapshot and
    the state of the newest verified one (absent when none was ever verified)."""
    size = FamilyBuilder("pbs_backup_group_last_size_bytes", G, "Size of the group's newest snapshot",
                         GROUP_LABELS)  # fmt: skip
    verified = FamilyBuilder(
        "pbs_backup_group_last_verified_ok", G,
        "1 if the newest verified snapshot of the group passed verification, 0 if it failed", GROUP_LABELS,
    )  # fmt: skip
    for store, ns, rows in listings:
        newest: dict[tuple[str, ...], tuple[float, Mapping[str, Any]]] = {}
        checked: dict[tuple[str, ...], tuple[float, float]] = {}
        for row in _rows(rows):
            key = _group_key(store, ns, row)
            t = num(row.get("backup-time"))
            if key is None or t is None:
                continue
            if key not in newest or t > newest[key][0]:
                newest[key] = (t, row)
            state = _verify_state(row)
            if state is not None and (key not in checked or t > checked[key][0]):
                checked[key] = (t, state)
        for key, (_, row) in newest.items():
            size.add(key, _size(row.get("size")))
        for key, (_, state) in checked.items():
            verified.add(key, state)
    return build_all([size, verified])


def _verify_state(row: Mapping[str, Any]) -> float | None:
    v = row.get("verification")
    state = text(v.get("state")) if isinstance(v, Mapping) else None
    return None if state is None else (1.0 if state == "ok" else 0.0)


def _group_key(store: str, ns: str, row: Mapping[str, Any]) -> tuple[str, ...] | None:
    btype, bid = text(row.get("backup-type")), text(row.get("backup-id"))
    if not btype or not bid:
        return None
    return (store, ns, btype, bid, guest_id(btype, bid))


def slim_snapshots(rows: Any) -> Any:
    """A listing holds every snapshot: keep, per group, the newest one and the newest verified one
    (the same row shape, so `parse_snapshots` reads both the raw and the slimmed listing)."""
    if not isinstance(rows, list):
        return rows
    keep: dict[tuple[Any, Any, str], tuple[float, Mapping[str, Any]]] = {}
    for row in _rows(rows):
        t = num(row.get("backup-time"))
        if t is None:
            continue
        slim = {k: row.get(k) for k in ("backup-type", "backup-id", "backup-time", "size", "verification")}
        for which, wanted in (("newest", True), ("verified", _verify_state(row) is not None)):
            k = (row.get("backup-type"), row.get("backup-id"), which)
            if wanted and (k not in keep or t > keep[k][0]):
                keep[k] = (t, slim)
    out: list[Mapping[str, Any]] = []
    for _, row in keep.values():
        if not any(r is row for r in out):
            out.append(row)
    return out


def newest_guest_backups(listings: Iterable[tuple[str, str, Any]]) -> dict[str, dict[str, float]]:
    """namespace → `qemu/<n>`/`lxc/<n>` → newest `last-backup` over every datastore (the join's input;
    namespaces stay apart: clusters sharing a server usually back up to one namespace each)."""
    out: dict[str, dict[str, float]] = {}
    for _store, ns, rows in listings:
        for row in _rows(rows):
            btype, bid = text(row.get("backup-type")), text(row.get("backup-id"))
            t = num(row.get("last-backup"))
            if btype not in _GUEST_KINDS or not bid or not bid.isdigit() or t is None:
                continue
            gid = guest_id(btype, bid)
            mine = out.setdefault(ns, {})
            mine[gid] = max(mine.get(gid, 0.0), t)
    return out


# -- tasks: /nodes/localhost/tasks?errors=1 ----------------------------------------------------


def parse_failed_tasks(rows: Any, now: float) -> list[Family]:
    """`GET /nodes/localhost/tasks?errors=1` (TaskListItem: upid, worker_type, starttime, endtime,
    status): failed tasks of the last day per type, and the newest failure's end time."""
    day = FamilyBuilder("pbs_failed_tasks_last_day", G, "Tasks of this type that failed in the last 24 hours",
                        ("task",))  # fmt: skip
    newest = FamilyBuilder(
        "pbs_last_failed_task_timestamp_seconds", G, "End time of the newest failed task of this type (Unix time)",
        ("task",),
    )  # fmt: skip
    counts: dict[str, int] = {}
    last: dict[str, float] = {}
    for row in _rows(rows):
        kind = text(row.get("worker_type"))
        end = num(row.get("endtime"))
        if not kind or end is None or run_ok(row.get("status")) != 0.0:
            continue
        last[kind] = max(last.get(kind, 0.0), end)
        counts.setdefault(kind, 0)
        if end >= now - DAY:
            counts[kind] += 1
    for kind in sorted(last):
        day.add((kind,), float(counts[kind]))
        newest.add((kind,), last[kind])
    return build_all([day, newest])
