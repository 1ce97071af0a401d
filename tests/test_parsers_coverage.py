"""Parsers of issue 13: pools, ZFS, physical disks, certificates, allocation, HA, guest devices, name label.

Fixtures are PVE 8 and PVE 9 shaped answers written from Proxmox's own sources (cited per fixture),
with the fields those sources leave out and offline nodes.
"""

from __future__ import annotations

import dataclasses

from pve_exporter.collect import build_collectors
from pve_exporter.collect.allocation import parse_allocation
from pve_exporter.collect.base import ApiFailure, CacheView, Family, NodeRef, Shared
from pve_exporter.collect.certificates import parse_certificates
from pve_exporter.collect.disks import parse_disks
from pve_exporter.collect.guest_devices import parse_guest_devices, with_devices
from pve_exporter.collect.guests import make_collector as make_guests
from pve_exporter.collect.ha import parse_ha_status
from pve_exporter.collect.name_label import add_name_label, guest_names
from pve_exporter.collect.node_pressure import COLLECTOR as PRESSURE
from pve_exporter.collect.per_node import payloads_by_node
from pve_exporter.collect.pools import parse_pools
from pve_exporter.collect.resources import parse_resources
from pve_exporter.collect.zfs import COLLECTOR as ZFS
from pve_exporter.collect.zfs import parse_zfs
from pve_exporter.collect.zfs_arc import parse_arc, with_arc


def flat(families: list[Family]) -> dict[tuple[str, tuple[str, ...]], float]:
    return {(f.name, vals): v for f in families for vals, v in f.samples}


def names(families: list[Family]) -> set[str]:
    return {f.name for f in families}


# ---- pools -------------------------------------------------------------------------------------------
# pve-manager PVE/API2/Pool.pm `index`: one {poolid, comment?} per pool the caller may audit (comment
# absent when unset). The members are in `read_pool` (/pools/{poolid}; 8.1 and later also
# /pools?poolid=X, which answers a one-element list) and never in the plain index, on 8 and on 9.
POOLS_INDEX_8 = [{"poolid": "dev"}, {"poolid": "prod", "comment": "production guests"}]
POOLS_INDEX_9 = [{"poolid": "dev"}, {"poolid": "prod", "comment": "production guests"}, {"poolid": "prod/db"}]
# /pools?poolid=prod (8.1+ / 9): the index shape with `members` (extract_vm_stats / extract_storage_stats rows).
POOLS_ONE_9 = [{"poolid": "prod", "comment": "production guests", "members": [
    {"id": "qemu/100", "type": "qemu", "vmid": 100, "node": "pve1", "status": "running"},
    {"id": "storage/pve1/nfs-backup", "type": "storage", "storage": "nfs-backup", "node": "pve1"},
]}]  # fmt: skip
# /cluster/resources (PVE 9.1, pve-api.md §2.3.6): pool rows carry aggregates only while a member runs;
# guests carry `pool` (only with Pool.Audit); pve3 is offline, its guest has no name.
RESOURCES_9 = [
    {"id": "/pool/prod", "type": "pool", "pool": "prod", "uptime": 864211, "maxcpu": 6, "cpu": 0.0387,
     "maxmem": 6442450944, "mem": 3221225472},
    {"id": "/pool/dev", "type": "pool", "pool": "dev"},
    {"id": "qemu/100", "type": "qemu", "vmid": 100, "node": "pve1", "status": "running", "name": "web-01",
     "uptime": 864211, "template": 0, "maxcpu": 4, "cpu": 0.05, "maxmem": 4294967296, "mem": 2254857830,
     "maxdisk": 34359738368, "disk": 0, "netin": 1, "netout": 2, "diskread": 3, "diskwrite": 4, "pool": "prod"},
    {"id": "qemu/101", "type": "qemu", "vmid": 101, "node": "pve1", "status": "stopped", "name": "VM 101",
     "uptime": 0, "template": 0, "maxcpu": 2, "cpu": 0, "maxmem": 2147483648, "mem": 0, "maxdisk": 1, "disk": 0,
     "pool": "prod"},
    {"id": "lxc/200", "type": "lxc", "vmid": 200, "node": "pve2", "status": "running", "name": "dns-01",
     "uptime": 432000, "template": 0, "maxcpu": 1.5, "cpu": 0.006, "maxmem": 1073741824, "mem": 134217728,
     "maxdisk": 8589934592, "disk": 1610612736},
    {"id": "qemu/300", "type": "qemu", "vmid": 300, "node": "pve3", "status": "unknown", "tags": "db"},
    {"id": "qemu/9000", "type": "qemu", "vmid": 9000, "node": "pve1", "status": "stopped", "name": "tmpl",
     "template": 1, "maxcpu": 2, "maxmem": 2147483648, "mem": 0},
    {"id": "node/pve1", "type": "node", "node": "pve1", "status": "online", "maxcpu": 16, "cpu": 0.04,
     "mem": 28033671168, "maxmem": 67276496896, "uptime": 1},
    {"id": "node/pve2", "type": "node", "node": "pve2", "status": "online", "maxcpu": 16, "cpu": 0.07,
     "mem": 33285996544, "maxmem": 67276496896, "uptime": 1},
    {"id": "node/pve3", "type": "node", "node": "pve3", "status": "offline"},
]  # fmt: skip


def test_pool_info_from_the_index_on_pve8_and_pve9():
    for index in (POOLS_INDEX_8, POOLS_INDEX_9):
        s = flat(parse_pools(index, []))
        assert s[("pve_pool_info", ("dev", ""))] == 1  # no comment key: empty label, still listed
        assert s[("pve_pool_info", ("prod", "production guests"))] == 1
        assert not [k for k in s if k[0] == "pve_pool_member_info"]  # the index lists no members
    assert ("pve_pool_info", ("prod/db", "")) in flat(parse_pools(POOLS_INDEX_9, []))  # nested (8.1+)


def test_pool_members_from_resources_and_from_listed_members():
    s = flat(parse_pools(POOLS_INDEX_9, RESOURCES_9))
    assert s[("pve_pool_member_info", ("prod", "qemu/100"))] == 1
    assert s[("pve_pool_member_info", ("prod", "qemu/101"))] == 1  # stopped members too
    assert ("pve_pool_member_info", ("prod", "lxc/200")) not in s
    s = flat(parse_pools(POOLS_ONE_9, []))
    assert s[("pve_pool_member_info", ("prod", "storage/pve1/nfs-backup"))] == 1
    assert s[("pve_pool_member_info", ("prod", "qemu/100"))] == 1


def test_pool_failure_or_missing_payload_keeps_resource_members():
    s = flat(parse_pools(None, RESOURCES_9))
    assert not [k for k in s if k[0] == "pve_pool_info"]
    assert s[("pve_pool_member_info", ("prod", "qemu/100"))] == 1


def test_pool_rows_restored_in_usage_families_like_ppe():
    s = flat(parse_resources(RESOURCES_9))
    p = ("/pool/prod",)
    assert s[("pve_cpu_usage_ratio", p)] == 0.0387 and s[("pve_cpu_usage_limit", p)] == 6
    assert s[("pve_memory_size_bytes", p)] == 6442450944 and s[("pve_memory_usage_bytes", p)] == 3221225472
    assert s[("pve_uptime_seconds", p)] == 864211
    # a pool without running members has no aggregates: nothing, not zeros
    assert not [k for k in s if k[1] == ("/pool/dev",)]
    assert ("pve_up", p) not in s and ("pve_disk_size_bytes", p) not in s


# ---- ZFS ----------------------------------------------------------------------------------------------
# pve-storage src/PVE/API2/Disks/ZFS.pm get_pool_data: `zpool list -HpPLo name,size,alloc,free,frag,dedup,health`,
# numbers via `+ 0` (frag in percent, dedup a factor). Same shape on PVE 8 (pve-storage 8.x) and 9.
ZFS_8 = [{"name": "rpool", "size": 498216206336, "alloc": 123480309760, "free": 374735896576, "frag": 12,
          "dedup": 1, "health": "ONLINE"}]  # fmt: skip
ZFS_9 = [
    {"name": "rpool", "size": 498216206336, "alloc": 123480309760, "free": 374735896576, "frag": 7,
     "dedup": 1.0, "health": "ONLINE"},
    {"name": "tank", "size": 7999999967232, "alloc": 5999999967232, "free": 2000000000000, "frag": 31,
     "dedup": 1.35, "health": "DEGRADED"},
    {"name": "broken", "health": "FAULTED"},  # a faulted pool: zpool prints `-` for sizes; nothing is invented
]  # fmt: skip


def test_zfs_pools_pve8_and_pve9():
    s = flat(parse_zfs([("pve1", ZFS_8), ("pve2", ZFS_9)]))
    assert s[("pve_zfs_pool_size_bytes", ("pve1", "rpool"))] == 498216206336
    assert s[("pve_zfs_pool_fragmentation_ratio", ("pve1", "rpool"))] == 0.12
    assert s[("pve_zfs_pool_dedup_ratio", ("pve2", "tank"))] == 1.35
    assert s[("pve_zfs_pool_healthy", ("pve2", "rpool"))] == 1
    assert s[("pve_zfs_pool_healthy", ("pve2", "tank"))] == 0
    assert s[("pve_zfs_pool_info", ("pve2", "tank", "DEGRADED"))] == 1
    assert s[("pve_zfs_pool_healthy", ("pve2", "broken"))] == 0
    assert ("pve_zfs_pool_size_bytes", ("pve2", "broken")) not in s


def test_zfs_node_without_zfsutils_is_no_data_not_a_failure():
    # ZFS.pm: `die "zfsutils-linux not installed\n"` → HTTP 500; kept as data by the collector.
    assert ZFS.api_errors_are_data and ZFS.tier == "slow"
    fams = parse_zfs([("pve1", ApiFailure(500, "zfsutils-linux not installed")), ("pve2", ZFS_8)])
    assert {k[1][0] for k in flat(fams)} == {"pve2"}


# ---- physical disks ----------------------------------------------------------------------------------
# pve-storage src/PVE/Diskmanage.pm get_disks + src/PVE/API2/Disks.pm list: health from smartctl
# ("PASSED" ATA, "OK" SAS/NVMe, "FAILED!"), "UNKNOWN" without SMART; wearout remaining % for ssd/nvme
# (NVMe: 100 - "Percentage Used", may be fractional) else "N/A"; serial/wwn default "unknown"; `used`
# absent on an unused disk. Older pve-storage (before `is_ssdlike`) lists NVMe drives as `ssd`, newer as `nvme`.
DISKS_8 = [
    {"devpath": "/dev/sda", "size": 480103981056, "model": "SAMSUNG_MZ7LH480HAHQ-00005", "serial": "S45PNA0M",
     "wwn": "0x5002538e0000", "type": "ssd", "health": "PASSED", "wearout": 97, "rpm": 0, "gpt": 1,
     "vendor": "ATA", "used": "ZFS", "osdid": -1, "osdid-list": None, "by_id_link": "/dev/disk/by-id/ata-x"},
    {"devpath": "/dev/nvme0n1", "size": 1000204886016, "model": "Samsung SSD 970", "serial": "S4EWNX0N",
     "wwn": "eui.0025", "type": "ssd", "health": "PASSED", "wearout": 100, "gpt": 1, "osdid": -1},
]  # fmt: skip
DISKS_9 = [
    {"devpath": "/dev/nvme0n1", "size": 1000204886016, "model": "Samsung SSD 980 PRO 1TB", "serial": "S5GXNF0R",
     "wwn": "eui.002538b", "type": "nvme", "health": "PASSED", "wearout": 6.5, "gpt": 1, "used": "LVM",
     "osdid": -1, "osdid-list": None},
    {"devpath": "/dev/sdb", "size": 4000787030016, "model": "WDC_WD40EFRX", "serial": "WD-WCC7K",
     "wwn": "unknown", "type": "hdd", "health": "FAILED!", "wearout": "N/A", "rpm": 5400, "gpt": 0,
     "osdid": -1},
    {"devpath": "/dev/sdc", "size": 16008609792, "model": "Cruzer", "serial": "unknown", "wwn": "unknown",
     "type": "usb", "health": "UNKNOWN", "wearout": "N/A", "osdid": -1},
    {"devpath": "/dev/sdd", "size": 2000398934016, "type": "hdd", "health": "OK", "wearout": "N/A",
     "osdid": -1},  # SAS: "SMART Health Status: OK"; no model key
    {"devpath": "/dev/sdb1", "parent": "/dev/sdb", "size": 1, "health": "UNKNOWN", "type": "partition"},
]  # fmt: skip


def test_disks_pve8_and_pve9():
    s = flat(parse_disks([("pve1", DISKS_8), ("pve2", DISKS_9)]))
    assert s[("pve_physical_disk_healthy", ("pve1", "/dev/sda"))] == 1
    assert s[("pve_physical_disk_wearout_ratio", ("pve1", "/dev/sda"))] == 0.97
    assert s[("pve_physical_disk_info", ("pve1", "/dev/sda", "ssd", "SAMSUNG_MZ7LH480HAHQ-00005", "S45PNA0M",
                                         "0x5002538e0000", "ZFS"))] == 1  # fmt: skip
    assert s[("pve_physical_disk_wearout_ratio", ("pve2", "/dev/nvme0n1"))] == 0.065
    assert s[("pve_physical_disk_healthy", ("pve2", "/dev/sdb"))] == 0  # FAILED!
    assert s[("pve_physical_disk_healthy", ("pve2", "/dev/sdd"))] == 1  # SAS OK
    assert ("pve_physical_disk_healthy", ("pve2", "/dev/sdc")) not in s  # UNKNOWN: absent
    assert ("pve_physical_disk_wearout_ratio", ("pve2", "/dev/sdb")) not in s  # N/A: absent
    assert s[("pve_physical_disk_size_bytes", ("pve2", "/dev/sdb"))] == 4000787030016
    assert s[("pve_physical_disk_info", ("pve2", "/dev/sdd", "hdd", "", "", "", ""))] == 1
    assert not [k for k in s if k[1][1] == "/dev/sdb1"]  # partitions are not disks


# ---- certificates ---------------------------------------------------------------------------------
# pve-manager PVE/API2/Certificates.pm info → pve-common src/PVE/Certificate.pm get_certificate_info:
# filename, fingerprint, subject/issuer (X509_NAME_oneline), notbefore/notafter (epoch; absent when the
# ASN.1 time cannot be parsed), san, pem; PVE 9 adds public-key-type/-bits (ignored).
CERTS_8 = [
    {"filename": "pve-root-ca.pem", "fingerprint": "AA:BB", "subject": "/CN=Proxmox Virtual Environment/OU=x/O=PVE",
     "issuer": "/CN=Proxmox Virtual Environment/OU=x/O=PVE", "notbefore": 1600000000, "notafter": 1915360000,
     "san": [], "pem": "-----BEGIN CERTIFICATE-----"},
    {"filename": "pve-ssl.pem", "fingerprint": "CC:DD", "subject": "/OU=PVE Cluster Node/O=PVE/CN=pve1.lan",
     "issuer": "/CN=Proxmox Virtual Environment/OU=x/O=PVE", "notbefore": 1600000000, "notafter": 1663072000,
     "san": ["127.0.0.1", "pve1.lan"]},
]  # fmt: skip
CERTS_9 = [
    {"filename": "pveproxy-ssl.pem", "fingerprint": "EE:FF", "subject": "/CN=pve1.example.com",
     "issuer": "/C=US/O=Let's Encrypt/CN=R11", "notbefore": 1760000000, "notafter": 1767776000,
     "public-key-type": "rsaEncryption", "public-key-bits": 4096, "san": ["pve1.example.com"]},
    {"filename": "broken.pem", "fingerprint": "00:11", "subject": "/CN=x"},  # notafter unparsable: absent
]  # fmt: skip


def test_certificates_pve8_and_pve9():
    s = flat(parse_certificates([("pve1", CERTS_8), ("pve2", CERTS_9)]))
    assert s[("pve_node_certificate_expiry_timestamp_seconds", ("pve1", "pve-ssl.pem"))] == 1663072000
    assert s[("pve_node_certificate_expiry_timestamp_seconds", ("pve2", "pveproxy-ssl.pem"))] == 1767776000
    assert s[("pve_node_certificate_info", ("pve2", "pveproxy-ssl.pem", "/CN=pve1.example.com",
                                            "/C=US/O=Let's Encrypt/CN=R11", "EE:FF"))] == 1  # fmt: skip
    assert ("pve_node_certificate_expiry_timestamp_seconds", ("pve2", "broken.pem")) not in s
    assert s[("pve_node_certificate_info", ("pve2", "broken.pem", "/CN=x", "", "00:11"))] == 1


# ---- per-node planning: offline nodes are not asked -------------------------------------------------
def _shared(resources=RESOURCES_9) -> Shared:
    nodes = (NodeRef("pve1", True, None, 1, True), NodeRef("pve2", True, None, 2, False),
             NodeRef("pve3", False, None, 3, False))  # fmt: skip
    return Shared("prod", [], resources, nodes, "prod")


def test_per_node_collectors_are_slow_and_skip_offline_nodes():
    by_name = {c.name: c for c in build_collectors()}
    for name, suffix in (("zfs", "disks/zfs"), ("disks", "disks/list"), ("certificates", "certificates/info")):
        c = by_name[name]
        assert c.tier == "slow"
        keys = [r.key for r in c.plan(_shared(), CacheView(0.0))]
        assert keys == [f"/nodes/pve1/{suffix}", f"/nodes/pve2/{suffix}"]
    assert by_name["pools"].tier == "slow" and by_name["ha"].tier == "slow"
    assert [r.key for r in by_name["pools"].plan(_shared(), CacheView(0.0))] == ["/pools"]
    assert by_name["allocation"].plan(_shared(), CacheView(0.0)) == []


def test_payloads_by_node_matches_only_its_suffix():
    p = {"/nodes/pve1/disks/zfs": 1, "/nodes/pve1/disks/list": 2, "/nodes/pve2/disks/zfs": 3, "/pools": 4}
    assert payloads_by_node(p, "disks/zfs") == [("pve1", 1), ("pve2", 3)]


# ---- allocation ---------------------------------------------------------------------------------------
def test_allocation_sums_running_and_all_without_templates_or_offline_nodes():
    s = flat(parse_allocation(RESOURCES_9))
    assert s[("pve_node_allocated_cpus", ("node/pve1", "running"))] == 4
    assert s[("pve_node_allocated_cpus", ("node/pve1", "all"))] == 6  # template 9000 excluded
    assert s[("pve_node_allocated_memory_bytes", ("node/pve1", "all"))] == 4294967296 + 2147483648
    assert s[("pve_node_allocated_cpus", ("node/pve2", "running"))] == 1.5
    assert not [k for k in s if k[1][0] == "node/pve3"]  # offline: sizes unknown


def test_allocation_node_without_guests_is_zero():
    rows = [r for r in RESOURCES_9 if r["type"] == "node"]
    s = flat(parse_allocation(rows))
    assert s[("pve_node_allocated_memory_bytes", ("node/pve1", "all"))] == 0


# ---- HA -----------------------------------------------------------------------------------------------
# pve-ha-manager src/PVE/API2/HA/Status.pm status/current (pve-api.md §3.10); PVE 8 entries have `group`,
# PVE 9 `failback`; without HA only the quorum entry (and, 5.1.3+, fencing).
HA_8 = [
    {"id": "quorum", "type": "quorum", "node": "pve1", "status": "OK", "quorate": 1},
    {"id": "master", "type": "master", "node": "pve2", "status": "pve2 (active, Tue Feb  4 07:25:01 2025)",
     "timestamp": 1738650301},
    {"id": "lrm:pve1", "type": "lrm", "node": "pve1", "status": "pve1 (active, Tue Feb  4 07:24:58 2025)"},
    {"id": "service:vm:100", "type": "service", "sid": "vm:100", "node": "pve1", "state": "started",
     "group": "g1", "status": "vm:100 (pve1, started)"},
    {"id": "service:vm:300", "type": "service", "sid": "vm:300", "node": "pve3", "state": "fence"},
    {"id": "service:ct:200", "type": "service", "sid": "ct:200", "node": "pve2", "state": "not found"},
]  # fmt: skip
HA_9_NONE = [
    {"id": "quorum", "type": "quorum", "node": "pve1", "status": "No quorum on node 'pve1'!", "quorate": 0},
    {"id": "fencing", "type": "fencing", "node": "pve1", "status": "x", "armed-state": "disarmed"},
]


def test_ha_counts_and_manager():
    s = flat(parse_ha_status(HA_8))
    assert s[("pve_ha_resources", ("started",))] == 1 and s[("pve_ha_resources", ("fence",))] == 1
    assert s[("pve_ha_resources", ("not found",))] == 1 and s[("pve_ha_resources", ("error",))] == 0
    assert s[("pve_ha_quorate", ())] == 1
    assert s[("pve_ha_manager_info", ("pve2", "active"))] == 1


def test_ha_without_resources_or_quorum():
    s = flat(parse_ha_status(HA_9_NONE))
    assert s[("pve_ha_quorate", ())] == 0
    assert s[("pve_ha_resources", ("started",))] == 0
    assert not [k for k in s if k[0] == "pve_ha_manager_info"]
    assert parse_ha_status(None) == []


# ---- guest devices (qemu-server vmstatus full mode: nics, blockstat) -------------------------------
QEMU_FULL_9 = [
    {"vmid": 100, "status": "running", "name": "web-01", "memhost": 5,
     "nics": {"tap100i0": {"netin": 9871234567, "netout": 1234987654}, "tap100i1": {"netin": 5, "netout": 6}},
     "blockstat": {"scsi0": {"rd_bytes": 5368712192, "wr_bytes": 21474836480, "rd_operations": 1},
                   "ide2": {"rd_bytes": 0, "wr_bytes": 0}}},
    {"vmid": 101, "status": "stopped", "name": "VM 101"},  # stopped: no QMP data at all
]  # fmt: skip


def test_guest_devices_counters():
    s = flat(parse_guest_devices([("pve1", QEMU_FULL_9)]))
    assert s[("pve_guest_network_receive_bytes_total", ("qemu/100", "tap100i0"))] == 9871234567
    assert s[("pve_guest_network_transmit_bytes_total", ("qemu/100", "tap100i1"))] == 6
    assert s[("pve_guest_disk_written_bytes_total", ("qemu/100", "scsi0"))] == 21474836480
    assert s[("pve_guest_disk_read_bytes_total", ("qemu/100", "ide2"))] == 0
    assert not [k for k in s if k[1][0] == "qemu/101"]


def test_guest_devices_survive_payload_trimming():
    c = with_devices(make_guests(full=True))
    assert c.slim is not None
    slimmed = c.slim(QEMU_FULL_9)
    assert slimmed[0]["nics"]["tap100i0"] == {"netin": 9871234567, "netout": 1234987654}
    assert slimmed[0]["blockstat"]["scsi0"] == {"rd_bytes": 5368712192, "wr_bytes": 21474836480}
    fams = c.parse(_shared(), {"/nodes/pve1/qemu?full=1": slimmed, "/nodes/pve1/lxc": []})
    assert ("pve_guest_disk_read_bytes_total", ("qemu/100", "scsi0")) in flat(fams)
    plain = {c.name: c for c in build_collectors()}["guests"]
    assert "pve_guest_disk_read_bytes_total" not in names(plain.parse(_shared(), {"/nodes/pve1/qemu": slimmed}))
    devices = {c.name: c for c in build_collectors(guest_devices=True)}["guests"]
    assert devices.plan(_shared(), CacheView(0.0))[0].key == "/nodes/pve1/qemu?full=1"


# ---- name label -------------------------------------------------------------------------------------
def test_name_label_on_usage_families_only():
    fams = add_name_label(parse_resources(RESOURCES_9), guest_names(RESOURCES_9))
    by = {f.name: f for f in fams}
    assert by["pve_cpu_usage_ratio"].labels == ("id", "name")
    s = flat(fams)
    assert s[("pve_cpu_usage_ratio", ("qemu/100", "web-01"))] == 0.05
    assert s[("pve_cpu_usage_ratio", ("node/pve1", ""))] == 0.04
    assert by["pve_up"].labels == ("id",)  # merged with /cluster/status's pve_up: label set unchanged
    assert by["pve_guest_info"].labels[0] == "id" and "name" in by["pve_guest_info"].labels


def test_name_label_wraps_resources_collector_when_enabled():
    on = {c.name: c for c in build_collectors(guest_name_label=True)}["resources"]
    off = {c.name: c for c in build_collectors()}["resources"]
    assert {f.name: f.labels for f in on.parse(_shared(), {})}["pve_memory_usage_bytes"] == ("id", "name")
    assert {f.name: f.labels for f in off.parse(_shared(), {})}["pve_memory_usage_bytes"] == ("id",)


# ---- ZFS ARC from the node RRD (PVE 9 pve-node-9.0 has `arcsize`; PVE 8 pve2-node has not) ----------
RRD_9 = [{"time": 1738650000, "arcsize": 8589934592, "pressurecpusome": 0.12},
         {"time": 1738650060, "arcsize": 8600000000, "pressurecpusome": 0.1}]  # fmt: skip
RRD_8 = [{"time": 1738650000, "loadavg": 0.35, "cpu": 0.04}]


def test_arc_size_pve9_only_and_kept_through_trimming():
    s = flat(parse_arc([("pve1", RRD_9), ("pve2", RRD_8)]))
    assert s == {("pve_node_zfs_arc_size_bytes", ("node/pve1",)): 8600000000}
    c = with_arc(PRESSURE)
    assert c.slim is not None
    slim = c.slim(RRD_9)
    assert slim[-1]["arcsize"] == 8600000000
    key = "/nodes/pve1/rrddata?timeframe=hour&cf=AVERAGE"
    assert flat(c.parse(_shared(), {key: slim}))[("pve_node_zfs_arc_size_bytes", ("node/pve1",))] == 8600000000
    assert dataclasses.replace(c, slim=None).min_interval == PRESSURE.min_interval


def test_arcsize_in_the_influxdb_memory_point():
    from types import SimpleNamespace

    from pve_exporter.collect.zfs_arc import arc_sizes
    from pve_exporter.export.influx import node_hash

    key = "/nodes/pve1/rrddata?timeframe=hour&cf=AVERAGE"
    snap = SimpleNamespace(payloads={key: SimpleNamespace(data=RRD_9),
                                     "/nodes/pve2/rrddata?timeframe=hour&cf=AVERAGE": SimpleNamespace(data=RRD_8)})
    arc = arc_sizes(snap)  # type: ignore[arg-type]
    assert arc == {"pve1": 8600000000}
    st = {"memory": {"total": 1, "used": 1, "free": 0}}
    assert node_hash(st, arc.get("pve1"))["memory"]["arcsize"] == 8600000000
    assert "arcsize" not in node_hash(st, arc.get("pve2"))["memory"]  # PVE 8: no such RRD source
