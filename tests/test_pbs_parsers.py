"""PBS parsers on fixtures that follow proxmox-backup's API types (tests/fixtures/pbs/README.md cites the sources)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from pve_exporter.export import gzipjoin
from pve_exporter.pbs import collectors as pc
from pve_exporter.pbs import parse as p
from pve_exporter.pbs.render import join, join_gz, render_server

FIX = Path(__file__).parent / "fixtures" / "pbs"
NOW = 1767229500.0  # a little after the fixtures' newest times


def load(name: str) -> Any:
    return json.loads((FIX / f"{name}.json").read_text())["data"]


def samples(families) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for f in families:
        for values, v in f.samples:
            out[(f.name, tuple(zip(f.labels, values, strict=True)))] = v
    return out


def test_version_and_node_status():
    s = samples(p.parse_version(load("version")) + p.parse_node_status(load("node_status")))
    assert s[("pbs_version_info", (("version", "3.4"), ("release", "1"), ("repoid", "b8a5a1d4")))] == 1
    assert s[("pbs_node_memory_size_bytes", ())] == 16777216000
    assert s[("pbs_node_memory_usage_bytes", ())] == 4294967296
    assert s[("pbs_node_swap_usage_bytes", ())] == 0  # a real zero stays
    assert s[("pbs_node_rootfs_available_bytes", ())] == 83000000000
    assert (s[("pbs_node_load1", ())], s[("pbs_node_load15", ())]) == (0.52, 0.33)
    assert s[("pbs_node_cpu_usage_ratio", ())] == 0.035 and s[("pbs_node_iowait_ratio", ())] == 0.002
    assert s[("pbs_node_uptime_seconds", ())] == 864000
    assert p.parse_node_status(None) == [] and p.parse_version({}) == []


def test_datastores_sizes_estimate_and_info():
    s = samples(p.parse_datastores(load("datastore_usage"), load("datastore_list"), NOW))
    ds = lambda name, store: s.get((name, (("datastore", store),)))  # noqa: E731
    assert ds("pbs_datastore_used_bytes", "store1") == 910000000000
    assert ds("pbs_datastore_available_bytes", "store2") == 1800000000000
    assert ds("pbs_datastore_estimated_full_timestamp_seconds", "store1") == 1767900000
    assert ds("pbs_datastore_estimated_full_timestamp_seconds", "store2") is None  # in the past: not growing
    assert ds("pbs_datastore_size_bytes", "offsite") is None  # lookup failed: absent, not 0
    info = {dict(k[1])["datastore"]: dict(k[1]) for k in s if k[0] == "pbs_datastore_info"}
    expected = {"datastore": "store1", "comment": "main", "maintenance": "", "mount_status": "nonremovable"}
    expected["error"] = ""
    assert info["store1"] == expected
    assert info["store2"]["maintenance"] == "read-only"
    assert info["offsite"]["mount_status"] == "notmounted" and "No such file" in info["offsite"]["error"]


def test_old_pbs_sends_minus_one_for_a_failed_lookup():
    s = samples(p.parse_datastores([{"store": "x", "total": -1, "used": -1, "avail": -1, "error": "gone"}], [], NOW))
    assert not [k for k in s if k[0] != "pbs_datastore_info"]


def test_gc_from_admin_gc_and_fallback_to_usage_gc_status():
    s = samples(p.parse_gc(load("gc"), load("datastore_usage")))
    g = lambda name, store: s.get((name, (("datastore", store),)))  # noqa: E731
    assert g("pbs_gc_last_run_timestamp_seconds", "store1") == 1767226800
    assert g("pbs_gc_last_run_success", "store1") == 1
    assert g("pbs_gc_removed_bytes", "store1") == 2000000000 and g("pbs_gc_pending_bytes", "store1") == 300000000
    assert g("pbs_gc_last_run_success", "offsite") == 0
    assert g("pbs_gc_removed_bytes", "store2") is None  # never ran (no upid): absent
    assert g("pbs_gc_last_run_success", "store2") is None
    older = samples(p.parse_gc(None, load("datastore_usage")))  # PBS without /admin/gc
    assert older[("pbs_gc_removed_bytes", (("datastore", "store1"),))] == 2000000000
    assert ("pbs_gc_removed_bytes", (("datastore", "store2"),)) not in older


def test_jobs_states():
    s = samples(p.parse_jobs({"verify": load("verify"), "prune": load("prune"), "sync": load("sync")}))
    key = lambda t, i, d: (("job_type", t), ("job_id", i), ("datastore", d))  # noqa: E731
    assert s[("pbs_job_last_run_success", key("verify", "v-store1", "store1"))] == 1
    assert s[("pbs_job_last_run_success", key("prune", "p-store1", "store1"))] == 1  # WARNINGS is success
    assert s[("pbs_job_last_run_success", key("sync", "s-offsite", "offsite"))] == 0
    assert s[("pbs_job_last_run_timestamp_seconds", key("sync", "s-offsite", "offsite"))] == 1767229300
    assert s[("pbs_job_next_run_timestamp_seconds", key("verify", "v-store2", "store2"))] == 1767571200
    assert ("pbs_job_last_run_success", key("verify", "v-store2", "store2")) not in s  # never ran


def test_groups_snapshots_and_guest_ids():
    groups = [("store1", "", load("groups")), ("store1", "prod", load("groups")[:1])]
    s = samples(p.parse_groups(groups) + p.parse_snapshots([("store1", "", load("snapshots"))]))
    vm = (("datastore", "store1"), ("namespace", ""), ("backup_type", "vm"), ("backup_id", "100"), ("id", "qemu/100"))
    ct = (("datastore", "store1"), ("namespace", ""), ("backup_type", "ct"), ("backup_id", "101"), ("id", "lxc/101"))
    host = (("datastore", "store1"), ("namespace", ""), ("backup_type", "host"), ("backup_id", "pbs1"),
            ("id", "host/pbs1"))  # fmt: skip
    assert s[("pbs_backup_group_last_backup_timestamp_seconds", vm)] == 1767225600
    assert s[("pbs_backup_group_snapshots", ct)] == 3
    assert s[("pbs_backup_group_last_size_bytes", vm)] == 34359738368  # the newest snapshot's size
    assert s[("pbs_backup_group_last_verified_ok", vm)] == 1  # newest *verified* one
    assert s[("pbs_backup_group_last_verified_ok", ct)] == 0  # newest verification failed
    assert ("pbs_backup_group_last_verified_ok", host) not in s  # never verified: absent
    assert ("pbs_backup_group_last_size_bytes", host) not in s  # no size: absent
    prod = tuple((k, "prod" if k == "namespace" else v) for k, v in vm)
    assert s[("pbs_backup_group_snapshots", prod)] == 7
    assert p.newest_guest_backups(groups) == {
        "": {"qemu/100": 1767225600, "lxc/101": 1766620800},
        "prod": {"qemu/100": 1767225600},
    }


def test_slimmed_snapshot_listing_parses_the_same():
    raw = load("snapshots")
    slim = p.slim_snapshots(raw)
    assert len(slim) < len(raw)
    assert samples(p.parse_snapshots([("s", "", slim)])) == samples(p.parse_snapshots([("s", "", raw)]))


def test_failed_tasks_of_the_last_day():
    s = samples(p.parse_failed_tasks(load("tasks_errors"), NOW))
    assert s[("pbs_failed_tasks_last_day", (("task", "syncjob"),))] == 1  # the other one is older than a day
    assert s[("pbs_last_failed_task_timestamp_seconds", (("task", "syncjob"),))] == 1767229300
    assert s[("pbs_failed_tasks_last_day", (("task", "garbage_collection"),))] == 1


def test_plans_chain_datastores_namespaces_listings():
    payloads = {pc.DATASTORES.key: load("datastore_list"), pc.USAGE.key: load("datastore_usage")}
    assert pc.stores(payloads) == ["offsite", "store1", "store2"]
    payloads[pc.namespace_request("store1").key] = load("namespaces")
    by = {c.name: c for c in pc.build_pbs_collectors()}
    keys = [r.key for r in by["groups"].plan(payloads)]
    assert "/admin/datastore/store1/groups" in keys and "/admin/datastore/store1/groups?ns=prod" in keys
    assert "/admin/datastore/offsite/groups" in keys  # a store without a namespace listing: the root
    own = {"/admin/datastore/store1/groups?ns=prod": [], "/admin/datastore/store1/groups": [], "/version": {}}
    assert [(s, ns) for s, ns, _ in pc.listings(own, "groups")] == [("store1", ""), ("store1", "prod")]


def test_rendered_with_server_first_and_joined_per_family():
    fams = p.parse_datastores(load("datastore_usage"), [], NOW)
    both = [render_server(fams, "backup1"), render_server(fams, "backup2")]
    text = join(both).decode()
    assert gzip.decompress(gzipjoin.finish(gzipjoin.concat([]), join_gz(both))).decode() == text
    assert 'pbs_datastore_used_bytes{server="backup1",datastore="store1"} 910000000000\n' in text
    assert text.count("# TYPE pbs_datastore_used_bytes gauge") == 1  # one header for both servers
    used = [ln for ln in text.splitlines() if ln.startswith("pbs_datastore_used_bytes{")]
    assert [ln.split('"')[1] for ln in used] == ["backup1", "backup1", "backup2", "backup2"]  # lines together


def test_the_join_takes_the_newest_of_every_source_for_this_clusters_guests_only():
    from pve_exporter.collect.backups import parse_backups

    resources = [{"type": "qemu", "vmid": 100}, {"type": "lxc", "vmid": 101}, {"type": "qemu", "vmid": 102}]
    listing = [{"vmid": 100, "ctime": 1000, "content": "backup", "subtype": "qemu"},
               {"vmid": 101, "ctime": 5000, "content": "backup", "subtype": "lxc"}]  # fmt: skip
    external = {"qemu/100": 2000.0, "lxc/101": 4000.0, "qemu/102": 3000.0, "qemu/999": 9000.0}
    s = samples(parse_backups(resources, [listing], external))
    last = {dict(k[1])["id"]: v for k, v in s.items() if k[0] == "pve_guest_last_backup_timestamp_seconds"}
    assert last == {"qemu/100": 2000.0, "lxc/101": 5000.0, "qemu/102": 3000.0}  # 999 is not this cluster's
    count = {dict(k[1])["id"]: v for k, v in s.items() if k[0] == "pve_guest_backups"}
    assert count == {"qemu/100": 1.0, "lxc/101": 1.0}  # volumes on PVE's storages only
