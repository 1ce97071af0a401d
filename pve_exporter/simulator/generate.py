"""Seeded generation of a cluster's nodes, guests, storages, tasks and jobs.

Only `random.Random(f"{seed}/{cluster}")` is used, so the same seed, name and clock give the
same cluster. Per-guest work is a handful of `rng` calls, which keeps 200 nodes x 100 guests
well under a second.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from pve_exporter.simulator.hardware import make_hardware
from pve_exporter.simulator.model import GiB, MiB, ReplicationJob, SimGuest, SimNode, SimStorage

if TYPE_CHECKING:
    from pve_exporter.simulator.model import SimCluster

DAY = 86_400
ODD_NAME = 'odd name, "quoted" \u00fcml\u00e4ut \u2603'

# Fixed oddities, by cluster-wide guest index (VMID = 100 + index). Index % 4 == 3 is LXC.
SPECIAL_GUESTS: dict[int, dict[str, Any]] = {
    0: {"name": "web-01", "running": True, "tags": "prod;web", "pool": "prod", "ha": "started",
        "agent": True, "serial": True, "vga": "serial0", "onboot": True},
    1: {"name": None, "running": False, "lock": "backup", "pool": "prod"},  # "VM 101"
    2: {"name": ODD_NAME, "running": True, "backed_up": False},
    3: {"name": "dns-01", "running": True, "cores": None, "cpulimit": "1.5", "tags": "infra",
        "ha": "started"},
    4: {"name": "tmpl-debian12", "running": False, "template": True},
    5: {"name": "66601", "running": True, "counter_base": 2**53 + 1},  # numeric name; counters > 2^53
    6: {"name": "build-runner", "running": True, "qmpstatus": "paused", "tags": "go-proxmox+cloud-init"},
    7: {"name": None, "running": False, "lock": "backup", "backed_up": False},  # "CT107"
}
_ROLES = ("web", "db", "app", "cache", "mq", "mail", "build", "git", "mon", "proxy", "ldap", "ci", "vpn")
_TAGS = (None, None, None, "prod", "prod;web", "dev", "infra", "db;prod", "test", "k8s;worker")
_POOLS = (None, None, None, "prod", "dev")
_CPU_MODELS = (
    "Intel(R) Xeon(R) E-2388G CPU @ 3.20GHz",
    "AMD EPYC 7313P 16-Core Processor",
    "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
    "AMD Ryzen 9 7950X3D 16-Core Processor",
)
# (id, plugin type, content, shared)
_STORAGES = (
    ("local", "dir", ("iso", "vztmpl", "backup"), False),
    ("local-lvm", "lvmthin", ("images", "rootdir"), False),
    ("nfs-backup", "nfs", ("backup",), True),
    ("pbs-archive", "pbs", ("backup",), True),  # > 1e15 bytes: a float before pve-storage 9.1.1
    ("zfs-data", "zfspool", ("images", "rootdir"), False),
)


def populate(cluster: SimCluster, now: float) -> None:
    rng = random.Random(f"{cluster.seed}/{cluster.name}")
    nodes = [_make_node(cluster, rng, i, now) for i in range(1, cluster.node_count + 1)]
    for i, node in enumerate(nodes, 1):
        cluster.nodes[node.name] = node
        node.hardware = make_hardware(i, node.name, cluster.name, now)
    cluster.node_order = _unsorted_order([n.name for n in nodes], rng)
    cluster.pools = ["dev", "prod"]
    cluster.config_version = cluster.node_count + 4

    shared: dict[str, tuple[int, int]] = {}
    for node in nodes:
        node.storages = _make_storages(cluster, rng, node, shared)

    k = 0
    for node in nodes:
        made = []
        for _ in range(cluster.guests_per_node):
            g = _make_guest(rng, k, node, now)
            cluster.guests[g.vmid] = g
            made.append(g)
            k += 1
        rng.shuffle(made)  # PVE lists guests in hash order
        node.guests = made

    for i, node in enumerate(nodes):
        _seed_tasks(cluster, rng, i, node, now)
    if len(nodes) >= 2:
        _make_replication(cluster, nodes)


def _unsorted_order(names: list[str], rng: random.Random) -> list[str]:
    """A shuffled order that is neither name- nor nodeid-sorted, so no client relies on it."""
    order = names[:]
    rng.shuffle(order)
    if len(order) > 1 and (order == sorted(names) or order == names):
        order = order[1:] + order[:1]
    return order


def _make_node(cluster: SimCluster, rng: random.Random, i: int, now: float) -> SimNode:
    maxcpu = rng.choice((8, 16, 24, 32, 48, 64))
    level = "" if i % 3 == 0 else ("c" if i == 1 else rng.choice("cbsp"))
    sockets = 2 if maxcpu >= 48 else 1
    rootfs_total = rng.choice((100, 250, 500)) * 1_008_617_267
    node = SimNode(
        name=f"pve{i}",
        nodeid=0 if cluster.standalone else i,
        ip=cluster.node_ip.format(n=i) if "{" in cluster.node_ip else cluster.node_ip,
        maxcpu=maxcpu,
        sockets=sockets,
        cpu_model=rng.choice(_CPU_MODELS),
        mhz=f"{rng.choice((2000, 2400, 2900, 3200, 3600))}.{rng.randrange(1000):03d}",
        maxmem=rng.choice((64, 128, 256, 384, 512)) * GiB - 1_442_840_576,
        rootfs_total=rootfs_total,
        rootfs_used=int(rootfs_total * rng.uniform(0.05, 0.45)),
        swap_total=8 * GiB - 4096,
        # pve2 has been up > 497 days, so its UPIDs carry a 9-hex-digit pstart (§7.28)
        boot_at=now - (rng.uniform(500 * DAY, 560 * DAY) if i == 2 else rng.uniform(1.5 * DAY, 400 * DAY)),
        cpu_base=rng.uniform(0.02, 0.4),
        mem_frac=rng.uniform(0.3, 0.8),
        memfree_frac=0.0,
        serverid=rng.randbytes(16).hex().upper(),
        ssl_fingerprint=None if i == 4 else ":".join(f"{b:02X}" for b in rng.randbytes(32)),
        subscription_level=level,
        next_pid=rng.randrange(200_000, 2_000_000),
    )
    node.memfree_frac = (1 - node.mem_frac) * rng.uniform(0.2, 0.6)
    if level:
        node.subscription_key = f"pve{sockets}{level}-{rng.randbytes(5).hex()}"
        node.subscription_checktime = int(now - rng.uniform(0, DAY))
        node.subscription_nextdue = "2027-03-01"
        node.subscription_regdate = "2025-03-01 00:00:00"
    return node


def _make_storages(
    cluster: SimCluster, rng: random.Random, node: SimNode, shared: dict[str, tuple[int, int]]
) -> list[SimStorage]:
    result = []
    last_node = node.nodeid == cluster.node_count and cluster.node_count > 1
    specs = []
    for idx in range(cluster.storage_count):
        if idx < len(_STORAGES):
            specs.append(_STORAGES[idx])
        else:
            specs.append((f"data{idx - len(_STORAGES) + 1}", "dir", ("images",), False))
    if cluster.ceph:  # a hyper-converged cluster has its RBD pool as a shared storage
        specs.append(("ceph-pool", "rbd", ("images", "rootdir"), True))
    for sid, plugin, content, is_shared in specs:
        if sid == "local":
            total, used = node.rootfs_total, node.rootfs_used
        elif sid == "pbs-archive":
            total, used = 1_125_899_906_842_624, 312_345_678_901_234
        elif is_shared:
            if sid not in shared:
                t = rng.choice((8, 16, 32)) * 1_000_000_000_000
                shared[sid] = (t, int(t * rng.uniform(0.2, 0.8)))
            total, used = shared[sid]
        else:
            total = rng.choice((1, 2, 4)) * 999_653_638_144
            used = int(total * rng.uniform(0.05, 0.7))
        order = list(content)
        rng.shuffle(order)  # content lists come in random order
        st = SimStorage(sid, plugin, ",".join(order), is_shared, total, used)
        if sid == "nfs-backup" and last_node:
            st.active = False  # the one storage per cluster that reads `unknown`
        result.append(st)
    return result


def _make_guest(rng: random.Random, k: int, node: SimNode, now: float) -> SimGuest:
    r = rng.random
    is_lxc = k % 4 == 3
    spec = SPECIAL_GUESTS.get(k)
    if spec is None:
        template = not is_lxc and r() < 0.04
        spec = {
            "name": None if r() < 0.15 else f"{rng.choice(_ROLES)}-{rng.randint(1, 30):02d}",
            "running": not template and r() < 0.8,
            "template": template,
            "lock": "backup" if r() < 0.03 else None,
            "tags": rng.choice(_TAGS),
            "pool": rng.choice(_POOLS),
            "backed_up": r() >= 0.1,
            "balloon": r() < 0.7,
            "agent": not is_lxc and r() < 0.5,
        }
        if r() < 0.08:
            spec["ha"] = "started" if spec["running"] else "stopped"
        if not is_lxc and spec["running"] and r() < 0.02:
            spec["qmpstatus"] = "paused"
    node_up = now - node.boot_at
    g = SimGuest(
        vmid=100 + k,
        type="lxc" if is_lxc else "qemu",
        node=node.name,
        name=None,
        running=False,
        started_at=now - min(node_up - 120, 10 ** rng.uniform(2.5, 6.8)),
        maxmem=rng.choice((512, 1024, 2048, 4096, 8192)) * MiB,
        maxdisk=(rng.choice((4, 8, 16)) if is_lxc else rng.choice((8, 16, 32, 64, 128))) * GiB,
        cores=rng.choice((1, 2, 4, 8)),
        cpu_base=rng.uniform(0.001, 0.3),
        mem_frac=rng.uniform(0.2, 0.9),
        disk_frac=rng.uniform(0.1, 0.8),
        netin_rate=10 ** rng.uniform(1.5, 6.0),
        netout_rate=10 ** rng.uniform(1.5, 5.5),
        diskread_rate=10 ** rng.uniform(2.0, 6.0),
        diskwrite_rate=10 ** rng.uniform(2.0, 6.0),
        pid=rng.randrange(1000, 4_000_000),
    )
    for key, value in spec.items():
        setattr(g, key, value)
    if g.template:
        g.running = False
    return g


def _seed_tasks(cluster: SimCluster, rng: random.Random, i: int, node: SimNode, now: float) -> None:
    """A few finished tasks per node so task lists look lived-in (vzdump, qmstart, ...)."""
    span = min(20 * 3600.0, now - node.boot_at - 600)
    t0 = now - span
    cluster.add_task(node.name, "aptupdate", "", "root@pam", start=t0, duration=14.0, saved="1",
                     log=["starting apt-get update", "Reading package lists..."])
    vzdump_status, vzdump_log = _VZDUMP_OUTCOMES[i % len(_VZDUMP_OUTCOMES)]
    cluster.add_task(node.name, "vzdump", "", "root@pam", start=t0 + span * 0.3, duration=612.0,
                     exitstatus=vzdump_status, log=vzdump_log, saved="1")
    qemu = [g for g in node.guests if g.type == "qemu" and not g.template]
    if qemu:
        vmid = str(qemu[0].vmid)
        cluster.add_task(node.name, "qmstart", vmid, "root@pam", start=t0 + span * 0.5, duration=2.4,
                         saved=1)
        if i == 0:
            cluster.add_task(
                node.name, "qmshutdown", vmid, "monitor@pve!power", start=t0 + span * 0.7, duration=60.0,
                exitstatus="VM quit/powerdown failed - got timeout", saved="1",
                log=[f"shutdown VM {vmid}: requesting ACPI shutdown"],
            )
    if i == cluster.node_count - 1 and cluster.node_count > 1:
        # a backup still running: it shows pid and no status until it ends an hour later
        cluster.add_task(node.name, "vzdump", "", "root@pam", start=now - rng.uniform(60, 600),
                         duration=3600.0, saved="0", log=["INFO: starting new backup job"])


_VZDUMP_OUTCOMES: tuple[tuple[str, list[str]], ...] = (
    ("OK", ["INFO: starting new backup job: vzdump --all 1 --storage nfs-backup --mode snapshot",
            "INFO: Backup job finished successfully"]),
    ("WARNINGS: 2", ["INFO: starting new backup job: vzdump --all 1 --storage nfs-backup --mode snapshot",
                     "WARNING: guest-agent fs-freeze failed", "WARNING: guest-agent fs-thaw failed",
                     "INFO: Backup job finished with warnings"]),
    ("job errors", ["INFO: starting new backup job: vzdump --all 1 --storage nfs-backup --mode snapshot",
                    "ERROR: Backup of VM 102 failed - unable to open file '/mnt/pve/nfs-backup/dump/x.tmp'",
                    "INFO: Failed at 2026-11-20 01:10:12", "INFO: Backup job finished with errors"]),
)


def _make_replication(cluster: SimCluster, nodes: list[SimNode]) -> None:
    names = [n.name for n in nodes]

    def target_of(g: SimGuest) -> str:
        return names[(names.index(g.node) + 1) % len(names)]

    jobs = []
    if (g := cluster.guests.get(100)) is not None:
        jobs.append(ReplicationJob(g.vmid, 0, target_of(g), g.node, schedule="*/30", rate=50))
    if (g := cluster.guests.get(103)) is not None:
        jobs.append(ReplicationJob(g.vmid, 0, target_of(g), g.node, disable=True,
                                   comment="paused during migration"))
    if (g := cluster.guests.get(108)) is not None:
        jobs.append(ReplicationJob(
            g.vmid, 0, target_of(g), g.node, fail_count=3,
            error=f"command 'set -o pipefail && pvesm export local-lvm:vm-{g.vmid}-disk-0 raw+size - "
                  f"-with-snapshots 1' failed: exit code 255",
        ))
    cluster.replication = jobs
