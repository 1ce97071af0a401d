"""Node hardware the simulator models: ZFS pools, physical disks, certificates (and the ARC size).

Deterministic per node. The third node of a cluster (pve3) carries the built-in problems a demo
and the alert tests need: a DEGRADED `tank` pool, an HDD whose SMART verdict is `FAILED!`, an
SSD with 6 % life left and an ACME certificate (`pveproxy-ssl.pem`) that expires ten days after
the cluster was generated. The `/_sim` control API flips any of them (control.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

GiB = 1 << 30
DAY = 86400


@dataclass(slots=True)
class SimZpool:
    name: str
    size: int
    alloc: int
    frag: int  # percent
    dedup: float
    health: str = "ONLINE"


@dataclass(slots=True)
class SimDisk:
    devpath: str
    size: int
    model: str
    serial: str
    type: str  # hdd | ssd | nvme | usb | unknown
    health: str = "PASSED"  # PASSED | OK | FAILED! | UNKNOWN
    wearout: float | None = None  # remaining life in percent; None → "N/A"
    used: str | None = None
    wwn: str = "unknown"


@dataclass(slots=True)
class SimCert:
    filename: str
    subject: str
    issuer: str
    notbefore: int
    notafter: int

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(f"{self.filename}/{self.subject}/{self.notafter}".encode()).digest()
        return ":".join(f"{b:02X}" for b in digest)


@dataclass(slots=True)
class NodeHardware:
    zpools: list[SimZpool] = field(default_factory=list)
    disks: list[SimDisk] = field(default_factory=list)
    certs: list[SimCert] = field(default_factory=list)

    def arc_size(self) -> float:
        """ARC grows with the pools' allocated data, capped like zfs_arc_max's PVE default (16 GiB)."""
        if not self.zpools:
            return 0.0
        return float(min(16 * GiB, sum(p.alloc for p in self.zpools) // 64))

    def zpool(self, name: str) -> SimZpool | None:
        return next((p for p in self.zpools if p.name == name), None)

    def disk(self, devpath: str) -> SimDisk | None:
        return next((d for d in self.disks if d.devpath == devpath), None)

    def cert(self, filename: str) -> SimCert | None:
        return next((c for c in self.certs if c.filename == filename), None)


def make_hardware(index: int, name: str, cluster: str, now: float) -> NodeHardware:
    """The hardware of node number `index` (1-based) named `name`."""
    hw = NodeHardware()
    serial = hashlib.sha256(f"{cluster}/{name}".encode()).hexdigest()[:8].upper()
    hw.zpools.append(SimZpool("rpool", 498_216_206_336, 98_000_000_000 + index * 7_000_000_000, 3 + index, 1.0))
    hw.disks += [
        SimDisk("/dev/nvme0n1", 500_107_862_016, "Samsung SSD 980 PRO 500GB", f"S5GY{serial}", "nvme",
                wearout=100.0 - 3 * index, used="ZFS", wwn=f"eui.0025388{serial.lower()}"),
        SimDisk("/dev/nvme1n1", 500_107_862_016, "Samsung SSD 980 PRO 500GB", f"S5GZ{serial}", "nvme",
                wearout=100.0 - 2 * index, used="ZFS", wwn=f"eui.0025389{serial.lower()}"),
    ]  # fmt: skip
    node_start = int(now) - 400 * DAY
    hw.certs += [
        SimCert("pve-root-ca.pem", "/CN=Proxmox Virtual Environment/OU=sim/O=PVE Cluster Manager CA",
                "/CN=Proxmox Virtual Environment/OU=sim/O=PVE Cluster Manager CA", node_start,
                node_start + 3650 * DAY),
        SimCert("pve-ssl.pem", f"/OU=PVE Cluster Node/O=Proxmox Virtual Environment/CN={name}.sim",
                "/CN=Proxmox Virtual Environment/OU=sim/O=PVE Cluster Manager CA", node_start, node_start + 730 * DAY),
    ]  # fmt: skip
    if index == 3:  # the built-in problems
        hw.zpools.append(SimZpool("tank", 7_999_999_967_232, 5_999_999_967_232, 31, 1.35, health="DEGRADED"))
        hw.disks += [
            SimDisk("/dev/sda", 4_000_787_030_016, "WDC_WD40EFRX-68N32N0", f"WD-WCC7K{serial}", "hdd", used="ZFS"),
            SimDisk("/dev/sdb", 4_000_787_030_016, "WDC_WD40EFRX-68N32N0", f"WD-WCC7L{serial}", "hdd",
                    health="FAILED!", used="ZFS"),
            SimDisk("/dev/sdc", 240_057_409_536, "INTEL_SSDSC2KB240G8", f"PHYF{serial}", "ssd", wearout=6.0,
                    used="LVM", wwn="0x55cd2e415"),
            SimDisk("/dev/sdd", 16_008_609_792, "Cruzer_Blade", "unknown", "usb", health="UNKNOWN"),
        ]  # fmt: skip
        hw.certs.append(
            SimCert("pveproxy-ssl.pem", f"/CN={name}.example.com", "/C=US/O=Let's Encrypt/CN=R11",
                    int(now) - 80 * DAY, int(now) + 10 * DAY)
        )  # fmt: skip
    return hw


def zfs_list(hw: NodeHardware) -> list[dict[str, object]]:
    """pve-storage ZFS.pm get_pool_data: `zpool list -HpPLo name,size,alloc,free,frag,dedup,health`."""
    return [
        {"name": p.name, "size": p.size, "alloc": p.alloc, "free": p.size - p.alloc, "frag": p.frag,
         "dedup": p.dedup, "health": p.health}
        for p in hw.zpools
    ]  # fmt: skip


def disks_list(hw: NodeHardware) -> list[dict[str, object]]:
    """pve-storage Diskmanage.pm get_disks, sorted by device name like API2/Disks.pm list."""
    out = []
    for d in sorted(hw.disks, key=lambda d: d.devpath):
        row: dict[str, object] = {
            "devpath": d.devpath, "size": d.size, "model": d.model, "serial": d.serial, "wwn": d.wwn,
            "type": d.type, "health": d.health, "wearout": "N/A" if d.wearout is None else d.wearout,
            "vendor": "ATA" if d.type in ("hdd", "ssd") else "unknown", "gpt": 1,
            "rpm": 5400 if d.type == "hdd" else 0, "osdid": -1, "osdid-list": None,
            "by_id_link": f"/dev/disk/by-id/{'nvme' if d.type == 'nvme' else 'ata'}-{d.model}_{d.serial}",
        }  # fmt: skip
        if d.used:
            row["used"] = d.used
        out.append(row)
    return out


def certificates_info(hw: NodeHardware) -> list[dict[str, object]]:
    """pve-common Certificate.pm get_certificate_info per file, as PVE/API2/Certificates.pm lists them."""
    return [
        {"filename": c.filename, "fingerprint": c.fingerprint, "subject": c.subject, "issuer": c.issuer,
         "notbefore": c.notbefore, "notafter": c.notafter, "san": [], "public-key-type": "rsaEncryption",
         "public-key-bits": 2048, "pem": "-----BEGIN CERTIFICATE-----\n(simulated)\n-----END CERTIFICATE-----\n"}
        for c in hw.certs
    ]  # fmt: skip
