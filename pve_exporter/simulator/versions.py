"""PVE release flavours: which fields and texts a given PVE version shows (pve-api.md §5).

Every version-dependent branch in the simulator asks a `PveVersion`, so a new quirk is one
property here instead of scattered `major >= 9` checks.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

# The version a bare major number stands for. 9.1.5 is the first release whose 401 reason is
# the generic `Authentication failed!` (pve-manager commit 26c10a2e).
DEFAULT_VERSIONS = {7: "7.4-17", 8: "8.4.1", 9: "9.1.5"}
_KNOWN_REPOIDS = {"7.4-17": "513c62be", "8.4.1": "2a5fa54a8503f96d", "9.1.5": "5cacb35d8e4f7a21"}
_KERNELS = {
    7: ("5.15.158-2-pve", "#1 SMP PVE 5.15.158-2 (2024-07-26T13:27Z)"),
    8: ("6.8.12-9-pve", "#1 SMP PREEMPT_DYNAMIC PMX 6.8.12-9 (2025-03-16T19:18Z)"),
    9: ("6.17.4-1-pve", "#1 SMP PREEMPT_DYNAMIC PMX 6.17.4-1 (2025-12-03T15:42Z)"),
}
_QEMU = {7: ("7.2.10", "pc-i440fx-7.2+pve0"), 8: ("9.0.2", "pc-q35-9.0+pve0"), 9: ("10.1.2", "pc-q35-10.1+pve1")}


@dataclass(frozen=True, slots=True)
class PveVersion:
    """A pve-manager version such as `8.4.1`, with the feature gates derived from it."""

    version: str
    parts: tuple[int, int, int]
    repoid: str

    @classmethod
    def parse(cls, value: int | str | PveVersion) -> PveVersion:
        if isinstance(value, PveVersion):
            return value
        text = str(value).strip()
        if text.isdigit():
            text = DEFAULT_VERSIONS.get(int(text), "")
        m = re.fullmatch(r"([789])\.(\d+)(?:[.-](\d+))?", text)
        if not m:
            raise ValueError(f"unsupported PVE version {value!r} (use 7, 8, 9 or e.g. '8.2.4')")
        major, minor, patch = int(m[1]), int(m[2]), int(m[3] or 0)
        if major == 7:  # 7.x writes the package release with a dash
            text = f"{major}.{minor}-{patch}"
        else:
            text = f"{major}.{minor}.{patch}"
        repoid = _KNOWN_REPOIDS.get(text) or hashlib.sha1(text.encode()).hexdigest()[: 8 if major < 8 else 16]
        return cls(text, (major, minor, patch), repoid)

    def at_least(self, *parts: int) -> bool:
        return self.parts >= tuple(parts) + (0,) * (3 - len(parts))

    @property
    def major(self) -> int:
        return self.parts[0]

    @property
    def release(self) -> str:
        return f"{self.parts[0]}.{self.parts[1]}"

    # ---- envelope and auth -------------------------------------------------------------
    @property
    def error_message_in_body(self) -> bool:
        """libpve-http-server-perl 5.2.0 (8.4) added `message` to error bodies."""
        return self.at_least(8, 4)

    @property
    def generic_auth_failure(self) -> bool:
        """From 9.1.5 every bad token or ticket answers `Authentication failed!`."""
        return self.at_least(9, 1, 5)

    # ---- /cluster/resources ------------------------------------------------------------
    @property
    def has_tags_and_cgroup_mode(self) -> bool:
        return self.at_least(7, 3)

    @property
    def node_hastate(self) -> bool:
        return self.at_least(8, 3)

    @property
    def memhost(self) -> bool:
        return self.major >= 9

    @property
    def sdn_localnetwork(self) -> bool:
        return self.major >= 8

    @property
    def network_entries(self) -> bool:
        """9.1 reports the built-in zone as `type:"network"` instead of `type:"sdn"`."""
        return self.at_least(9, 1)

    # ---- guests --------------------------------------------------------------------------
    @property
    def pressure(self) -> bool:
        return self.major >= 9

    @property
    def list_diskrw_zero(self) -> bool:
        """Non-full qemu lists carry `diskread/diskwrite: 0` before qemu-server 9.0.24."""
        return not self.at_least(9, 1)

    @property
    def qemu_memory_is_string(self) -> bool:
        return self.at_least(8, 1)

    @property
    def clipboard(self) -> bool:
        return self.at_least(8, 1)

    @property
    def ha_group(self) -> bool:
        """pve-ha-manager < 5.0.7 (PVE <= 9.0) still reports HA groups."""
        return not self.at_least(9, 1)

    @property
    def ha_failback(self) -> bool:
        return self.major >= 9

    @property
    def storage_float_totals(self) -> bool:
        """Before pve-storage 9.1.1 storage totals of 1e15 or more were encoded as floats."""
        return not self.at_least(9, 1)

    # ---- node status -----------------------------------------------------------------------
    @property
    def kernel_info(self) -> bool:
        return self.at_least(8, 1)

    @property
    def memory_available(self) -> bool:
        return self.major >= 9

    @property
    def new_memory_semantics(self) -> bool:
        """8.4: used = total - MemAvailable and free = MemFree (so used + free != total)."""
        return self.at_least(8, 4)

    @property
    def cpuinfo_vendor(self) -> bool:
        return self.at_least(9, 1, 5)

    @property
    def kernel(self) -> tuple[str, str]:
        return _KERNELS[self.major]

    @property
    def qemu(self) -> tuple[str, str]:
        """(running-qemu, running-machine) of a VM started on this version."""
        return _QEMU[self.major]

    @property
    def pveversion(self) -> str:
        return f"pve-manager/{self.version}/{self.repoid}"
