"""Parsers beyond prometheus-pve-exporter: node status, guest lists (PSI), tasks, Ceph, backups."""

from __future__ import annotations

from pve_exporter.collect.backups import parse_backups, plan_backup_listings
from pve_exporter.collect.base import Shared
from pve_exporter.collect.ceph import parse_ceph, uses_ceph
from pve_exporter.collect.guests import parse_guest_lists
from pve_exporter.collect.node_status import parse_node_status
from pve_exporter.collect.status import make_shared
from pve_exporter.collect.tasks import parse_tasks


def flat(families):
    return {(f.name, vals): v for f in families for vals, v in f.samples}


NODE_STATUS_9 = {
    "uptime": 1480737, "idle": 0, "cpu": 0.0404739747502543, "wait": 0.00053701572688914,
    "loadavg": ["1.74", "1.86", "1.50"], "kversion": "Linux 6.17.4-1-pve #1 SMP",
    "current-kernel": {"sysname": "Linux", "release": "6.17.4-1-pve", "version": "#1", "machine": "x86_64"},
    "cpuinfo": {"model": "Intel(R) Xeon(R) E-2388G CPU @ 3.20GHz", "sockets": 1, "cores": 8, "cpus": 16,
                "mhz": "3200.000", "hvm": "1", "user_hz": 100, "flags": "fpu"},
    "memory": {"total": 67276496896, "used": 28033671168, "free": 30127226880, "available": 39242825728},
    "swap": {"total": 8589930496, "used": 0, "free": 8589930496}, "ksm": {"shared": 0},
    "rootfs": {"total": 100861726720, "used": 12884901888, "avail": 82814287872, "free": 87976824832},
    "pveversion": "pve-manager/9.1.4/5cacb35d8e4f7a21",
}  # fmt: skip


def test_node_status_pve9():
    s = flat(parse_node_status([("pve1", NODE_STATUS_9)]))
    n = ("node/pve1",)
    assert s[("pve_node_load1", n)] == 1.74 and s[("pve_node_load15", n)] == 1.5
    assert s[("pve_node_memory_available_bytes", n)] == 39242825728
    assert s[("pve_node_rootfs_available_bytes", n)] == 82814287872
    assert s[("pve_node_cpu_info", ("node/pve1", "Intel(R) Xeon(R) E-2388G CPU @ 3.20GHz", "1", "8", "16", "3200"))]
    assert s[("pve_node_kernel_info", ("node/pve1", "6.17.4-1-pve", "pve-manager/9.1.4/5cacb35d8e4f7a21"))] == 1


def test_node_status_pve7_has_no_available_memory_and_odd_mhz():
    st = dict(NODE_STATUS_9, memory={"total": 1, "used": 1, "free": 0})
    st.pop("current-kernel")
    st["cpuinfo"] = dict(st["cpuinfo"], mhz=0)
    s = flat(parse_node_status([("pve1", st)]))
    assert not [k for k in s if k[0] == "pve_node_memory_available_bytes"]
    assert s[("pve_node_cpu_info", ("node/pve1", "Intel(R) Xeon(R) E-2388G CPU @ 3.20GHz", "1", "8", "16", ""))]
    assert s[("pve_node_kernel_info", ("node/pve1", "Linux 6.17.4-1-pve #1 SMP", "pve-manager/9.1.4/5cacb35d8e4f7a21"))]


def test_guest_psi_strings_for_lxc_numbers_for_qemu_running_only():
    qemu = [{"vmid": 100, "status": "running", "pressurecpusome": 0.12, "pressureiofull": 0, "memhost": 5,
             "ballooninfo": {"actual": 4294967296}},
            {"vmid": 101, "status": "stopped", "pressurecpusome": 0, "memhost": 0}]  # fmt: skip
    lxc = [{"vmid": 200, "type": "lxc", "status": "running", "pressurecpusome": "0.25", "pressureiosome": None,
            "swap": 0, "maxswap": 536870912}]  # fmt: skip
    s = flat(parse_guest_lists([("pve1", qemu)], [("pve1", lxc)]))
    assert s[("pve_guest_pressure_cpu_some_ratio", ("qemu/100",))] == 0.0012  # PVE percent → ratio
    assert s[("pve_guest_pressure_cpu_some_ratio", ("lxc/200",))] == 0.0025
    assert ("pve_guest_pressure_io_some_ratio", ("lxc/200",)) not in s  # null: unknown, not 0
    assert ("pve_guest_pressure_cpu_some_ratio", ("qemu/101",)) not in s
    assert s[("pve_guest_balloon_actual_bytes", ("qemu/100",))] == 4294967296
    assert s[("pve_guest_swap_size_bytes", ("lxc/200",))] == 536870912


def test_pve8_guest_lists_have_no_psi():
    s = flat(parse_guest_lists([("pve1", [{"vmid": 100, "status": "running", "cpu": 0.1}])], []))
    assert not [k for k in s if "pressure" in k[0]]


def test_tasks_failed_per_node_and_type():
    rows = [
        {"upid": "u1", "node": "pve1", "type": "vzdump", "status": "OK", "endtime": 10},
        {"upid": "u2", "node": "pve1", "type": "vzdump", "status": "job errors", "endtime": 20},
        {"upid": "u3", "node": "pve1", "type": "vzdump", "status": "unexpected status", "endtime": 30},
        {"upid": "u4", "node": "pve2", "type": "qmstart", "status": "WARNINGS: 2", "endtime": 40},
        {"upid": "u5", "node": "pve2", "type": "qmshutdown", "status": "VM quit/powerdown failed - got timeout",
         "endtime": 50},
        {"upid": "u6", "node": "pve2", "type": "vzdump", "pid": 1, "starttime": 60},  # running: no status
    ]  # fmt: skip
    s = flat(parse_tasks(rows))
    assert s[("pve_node_failed_tasks", ("node/pve1", "vzdump"))] == 2
    assert s[("pve_node_failed_tasks", ("node/pve2", "qmstart"))] == 0
    assert s[("pve_node_failed_tasks", ("node/pve2", "qmshutdown"))] == 1
    assert s[("pve_node_last_failed_task_timestamp_seconds", ("node/pve1", "vzdump"))] == 30
    assert s[("pve_node_running_tasks", ("node/pve2",))] == 1
    assert parse_tasks(None) == []


def shared_with(resources, status=None) -> Shared:
    return make_shared("prod", status, resources)


def test_ceph_only_planned_when_ceph_storage_exists_and_parsed():
    plain = shared_with([{"type": "storage", "plugintype": "dir", "id": "storage/pve1/local"}])
    rbd = shared_with([{"type": "storage", "plugintype": "rbd", "id": "storage/pve1/ceph"}],
                      [{"type": "cluster", "name": "prod", "quorate": 1}])  # fmt: skip
    assert not uses_ceph(plain) and uses_ceph(rbd)
    data = {"health": {"status": "HEALTH_WARN", "checks": {"OSD_DOWN": {"severity": "HEALTH_WARN"}}},
            "osdmap": {"num_osds": 6, "num_up_osds": 5, "num_in_osds": 6},
            "pgmap": {"bytes_total": 100, "bytes_used": 40, "bytes_avail": 60}}  # fmt: skip
    s = flat(parse_ceph(rbd, data))
    assert s[("pve_ceph_health_status", ("cluster/prod",))] == 1
    assert s[("pve_ceph_health_check", ("cluster/prod", "OSD_DOWN", "HEALTH_WARN"))] == 1
    assert s[("pve_ceph_osds", ("cluster/prod", "up"))] == 5
    assert s[("pve_ceph_bytes", ("cluster/prod", "avail"))] == 60
    assert parse_ceph(rbd, None) == []


def test_backup_listings_planned_once_per_shared_storage():
    status = [{"type": "node", "name": n, "online": int(n != "pve3")} for n in ("pve1", "pve2", "pve3")]
    res = []
    for n in ("pve1", "pve2", "pve3"):
        res.append({"type": "storage", "node": n, "storage": "local", "content": "iso,backup", "shared": 0,
                    "status": "available"})
        res.append({"type": "storage", "node": n, "storage": "nfs", "content": "backup", "shared": 1,
                    "status": "available"})
        res.append({"type": "storage", "node": n, "storage": "lvm", "content": "images", "shared": 0,
                    "status": "available"})  # fmt: skip
    keys = [r.key for r in plan_backup_listings(make_shared("prod", status, res))]
    assert keys == [
        "/nodes/pve1/storage/local/content?content=backup",
        "/nodes/pve1/storage/nfs/content?content=backup",
        "/nodes/pve2/storage/local/content?content=backup",
    ]


def test_backups_newest_per_guest_and_count():
    resources = [{"type": "qemu", "vmid": 100}, {"type": "lxc", "vmid": 200}]
    listing1 = [
        {"volid": "nfs:backup/vzdump-qemu-100-a.vma.zst", "content": "backup", "ctime": 100, "vmid": 100,
         "subtype": "qemu"},
        {"volid": "nfs:backup/vzdump-qemu-100-b.vma.zst", "content": "backup", "ctime": 300, "vmid": 100},
    ]  # fmt: skip
    listing2 = [{"volid": "local:backup/vzdump-lxc-200-a.tar.zst", "content": "backup", "ctime": 200, "vmid": 200},
                {"volid": "local:iso/x.iso", "content": "iso", "ctime": 999}]  # fmt: skip
    s = flat(parse_backups(resources, [listing1, listing2, "garbage"]))
    assert s[("pve_guest_last_backup_timestamp_seconds", ("qemu/100",))] == 300
    assert s[("pve_guest_backups", ("qemu/100",))] == 2
    assert s[("pve_guest_last_backup_timestamp_seconds", ("lxc/200",))] == 200


def test_agent_enabled_property_string():
    from pve_exporter.collect.agent import agent_enabled

    assert agent_enabled({"agent": "1"}) and agent_enabled({"agent": "enabled=1,fstrim_cloned_disks=1"})
    assert agent_enabled({"agent": "1,type=virtio"})
    assert not agent_enabled({"agent": "0"}) and not agent_enabled({"agent": "enabled=0"})
    assert not agent_enabled({}) and not agent_enabled(None)


def test_agent_fsinfo_parsed_and_silent_agent_is_data():
    from pve_exporter.collect.agent import parse_agent
    from pve_exporter.collect.base import ApiFailure

    res = [{"type": "qemu", "vmid": 100, "node": "pve1"}, {"type": "qemu", "vmid": 101, "node": "pve1"},
           {"type": "qemu", "vmid": 102, "node": "pve1"}]  # fmt: skip
    payloads = {
        "/nodes/pve1/qemu/100/agent/get-fsinfo": {"result": [
            {"mountpoint": "/", "type": "ext4", "total-bytes": 1000, "used-bytes": 250},
            {"mountpoint": "/", "type": "ext4", "total-bytes": 1000, "used-bytes": 250},  # bind mount
            {"mountpoint": "/run", "type": "tmpfs", "total-bytes": 10, "used-bytes": 1},
            {"mountpoint": "/data", "type": "xfs"},  # no sizes reported
        ]},
        "/nodes/pve1/qemu/101/agent/get-fsinfo": ApiFailure(500, "QEMU guest agent is not running"),
    }  # fmt: skip
    s = flat(parse_agent(res, payloads))
    assert s[("pve_guest_filesystem_size_bytes", ("qemu/100", "/", "ext4"))] == 1000
    assert s[("pve_guest_filesystem_used_bytes", ("qemu/100", "/", "ext4"))] == 250
    assert len([k for k in s if k[0] == "pve_guest_filesystem_size_bytes"]) == 1
    assert s[("pve_guest_agent_up", ("qemu/100",))] == 1 and s[("pve_guest_agent_up", ("qemu/101",))] == 0
    assert ("pve_guest_agent_up", ("qemu/102",)) not in s  # never asked: unknown


def test_node_pressure_newest_bucket_with_the_source():
    from pve_exporter.collect.node_pressure import parse_node_pressure

    rows9 = [{"time": 60, "pressurecpusome": 0.5, "pressureiosome": 0.25}, {"time": 120, "pressurecpusome": 0.125},
             {"time": 180, "maxcpu": 16}]  # the newest bucket has no value yet  # fmt: skip
    rows8 = [{"time": 60, "cpu": 0.1, "loadavg": 0.5}]
    s = flat(parse_node_pressure([("pve1", rows9), ("pve2", rows8)]))
    assert s[("pve_node_pressure_cpu_some_ratio", ("node/pve1",))] == 0.00125  # PVE percent → ratio
    assert s[("pve_node_pressure_io_some_ratio", ("node/pve1",))] == 0.0025
    assert not [k for k in s if k[1] == ("node/pve2",)]  # PVE 8: no PSI data sources, nothing published
