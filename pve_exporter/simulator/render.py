"""JSON payloads of the simulated endpoints, shaped and typed as pve-api.md §2, §3 and §8 say.

Pure functions of (cluster, now, caller); no HTTP here. Keys PVE leaves out are left out, and
JSON types follow PVE's quirks (string loadavg, string LXC pressure, int 0/1 flags, ...).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

from pve_exporter.simulator.auth import Caller
from pve_exporter.simulator.errors import param_error
from pve_exporter.simulator.model import MiB, SimCluster, SimGuest, SimNode, SimTask, jitter
from pve_exporter.simulator.upid import Upid

Json = dict[str, Any]
SUBSCRIPTION_URL = "https://www.proxmox.com/en/proxmox-virtual-environment/pricing"
_PRODUCTS = {"c": "Community", "b": "Basic", "s": "Standard", "p": "Premium"}
_PRESSURE_KEYS = (
    "pressurecpusome", "pressurecpufull", "pressureiosome",
    "pressureiofull", "pressurememorysome", "pressurememoryfull",
)


def _ctime(ts: float) -> str:
    """Perl's `localtime` string (`Tue Feb  4 07:25:01 2025`), in UTC for determinism."""
    return time.asctime(time.gmtime(ts))


# ---- cluster level ----------------------------------------------------------------------------
def version(c: SimCluster) -> Json:
    v = c.version
    return {"version": v.version, "release": v.release, "repoid": v.repoid}


def cluster_status(c: SimCluster) -> list[Json]:
    local = c.local_node
    out: list[Json] = []
    if not c.standalone:
        out.append({"type": "cluster", "id": "cluster", "name": c.name, "nodes": len(c.nodes),
                    "version": c.config_version, "quorate": int(c.quorate)})
    for name in c.node_order:
        n = c.nodes[name]
        out.append({"type": "node", "id": f"node/{name}", "name": name, "nodeid": n.nodeid, "ip": n.ip,
                    "local": int(n is local), "online": int(n.online),
                    "level": n.subscription_level if n.online else ""})
    return out


def cluster_resources(c: SimCluster, now: float, caller: Caller, type_: str | None) -> list[Json]:
    """Pools, guests (VMID sorted as strings), nodes (hash order), storages, sdn: §2.3."""
    out: list[Json] = []
    pool_audit = caller.has("Pool.Audit")
    if type_ is None and pool_audit:
        out.extend(_pool_entries(c, now))
    if type_ in (None, "vm") and caller.has("VM.Audit"):
        for g in sorted(c.guests.values(), key=lambda g: str(g.vmid)):
            out.append(guest_resource(c, g, now, pool_audit))
    if type_ in (None, "node"):
        sys_audit, has_ha = caller.has("Sys.Audit"), bool(c.ha_services)
        out.extend(node_entry(c, c.nodes[name], now, sys_audit, resources=True, has_ha=has_ha)
                   for name in c.node_order)
    if type_ in (None, "storage") and caller.has("Datastore.Audit"):
        out.extend(_storage_entries(c))
    if type_ in (None, "sdn") and caller.has("SDN.Audit"):
        out.extend(_sdn_entries(c, type_))
    return out


def _pool_entries(c: SimCluster, now: float) -> list[Json]:
    # Aggregates count running members only, including ones the caller cannot see.
    agg: dict[str, list[Any]] = {p: [0, 0, 0, 0, 0.0, False] for p in c.pools}
    for g in c.guests.values():
        if g.pool in agg and g.running and c.nodes[g.node].online:
            a = agg[g.pool]
            maxcpu = g.maxcpu(c.nodes[g.node].maxcpu)
            a[0] = max(a[0], g.uptime(now))
            a[1] += g.mem(now)
            a[2] += g.maxmem
            a[3] += maxcpu
            a[4] += g.cpu(now) * maxcpu
            a[5] = True
    out = []
    for p in sorted(c.pools):
        d: Json = {"id": f"/pool/{p}", "type": "pool", "pool": p}
        up, mem, maxmem, maxcpu, cpu_w, any_running = agg[p]
        if any_running:
            d.update(uptime=up, maxcpu=maxcpu, cpu=round(cpu_w / maxcpu, 8) if maxcpu else 0,
                     maxmem=maxmem, mem=mem)
        out.append(d)
    return out


def guest_resource(c: SimCluster, g: SimGuest, now: float, pool_audit: bool) -> Json:
    node = c.nodes[g.node]
    d: Json = {"id": f"{g.type}/{g.vmid}", "type": g.type, "vmid": g.vmid, "node": g.node}
    if not node.online:
        # Past pmxcfs's 5-min window only config-derived keys remain (§7.3).
        d["status"] = "unknown"
    else:
        mem = g.mem(now)
        netin, netout, dread, dwrite = g.counters(now)
        if g.running:
            d["status"] = g.qmpstatus if g.type == "qemu" else "running"
        else:
            d["status"] = "stopped"
        d.update(name=g.display_name, uptime=g.uptime(now), template=int(g.template),
                 maxcpu=g.maxcpu(node.maxcpu), cpu=g.cpu(now), maxmem=g.maxmem, mem=mem)
        if g.type == "qemu" and c.version.memhost:
            d["memhost"] = _memhost(g, mem)
        d.update(maxdisk=g.maxdisk, disk=g.disk_used(), netin=netin, netout=netout,
                 diskread=dread, diskwrite=dwrite)
    if g.pool and pool_audit:
        d["pool"] = g.pool
    if g.lock:
        d["lock"] = g.lock
    if g.tags and c.version.has_tags_and_cgroup_mode:
        d["tags"] = g.tags
    if (hastate := c.ha_state(g)) is not None:
        d["hastate"] = hastate
    return d


def _memhost(g: SimGuest, mem: int) -> int:
    return int(mem * 1.06) if g.running else 0


def node_entry(
    c: SimCluster, n: SimNode, now: float, sys_audit: bool, *, resources: bool, has_ha: bool = False
) -> Json:
    """A node in `/cluster/resources` (`resources=True`) or `/nodes` (adds ssl_fingerprint)."""
    d: Json = {"id": f"node/{n.name}", "type": "node", "node": n.name,
               "status": "online" if n.online else "offline"}
    if n.online:
        d["level"] = n.subscription_level
        if sys_audit:
            d.update(uptime=n.uptime(now), cpu=n.cpu(now), maxcpu=n.maxcpu, mem=n.mem_used(now),
                     maxmem=n.maxmem, disk=n.rootfs_used, maxdisk=n.rootfs_total)
    if resources:
        if c.version.has_tags_and_cgroup_mode:
            d["cgroup-mode"] = n.cgroup_mode
        if c.version.node_hastate and has_ha:  # only once the HA manager has a node_status
            d["hastate"] = "online" if n.online else "unknown"
    else:
        d["ssl_fingerprint"] = n.ssl_fingerprint
    return d


def _storage_entries(c: SimCluster) -> list[Json]:
    by_id: dict[str, list[Json]] = {}
    for name in c.node_order:
        n = c.nodes[name]
        for st in n.storages:
            if not st.enabled:
                continue
            d: Json = {"id": f"storage/{name}/{st.storage}", "type": "storage", "storage": st.storage,
                       "node": name, "plugintype": st.plugintype, "content": st.content,
                       "shared": int(st.shared)}
            if n.online and st.active:
                d.update(status="available", disk=st.used, maxdisk=st.total)
            else:
                d["status"] = "unknown"
            by_id.setdefault(st.storage, []).append(d)
    return [d for entries in by_id.values() for d in entries]


def _sdn_entries(c: SimCluster, type_: str | None) -> list[Json]:
    v = c.version
    out: list[Json] = []
    for name in sorted(c.node_order):
        if not c.nodes[name].online:
            continue
        if v.network_entries:
            if type_ is None:  # `?type=sdn` lists only not-yet-upgraded nodes' sdn entries
                out.append({"id": f"network/{name}/zone/localnetwork", "type": "network",
                            "network-type": "zone", "network": "localnetwork", "node": name,
                            "status": "ok"})
        elif v.sdn_localnetwork:
            out.append({"id": f"sdn/{name}/localnetwork", "sdn": "localnetwork", "node": name,
                        "type": "sdn", "status": "ok"})
    return out


def cluster_tasks(c: SimCluster, now: float, caller: Caller) -> list[Json]:
    """Each node's running tasks plus its 25 latest finished ones, newest first (§2.4)."""
    picked: list[SimTask] = []
    for n in c.nodes.values():
        finished = [t for t in n.tasks if not t.running(now)]
        picked.extend(t for t in n.tasks if t.running(now))
        picked.extend(finished[-25:])
    if not caller.has("Sys.Audit"):
        # Only tasks whose (split) user equals the caller: a token never matches itself.
        picked = [t for t in picked if t.upid.split_user()[0] == caller.authid]
    picked.sort(key=lambda t: t.upid.starttime, reverse=True)
    out = []
    for t in picked:
        user, token = t.upid.split_user()
        d: Json = {"upid": t.text, "node": t.upid.node}
        running = t.running(now)
        if running:
            d["pid"] = t.upid.pid
        d.update(starttime=t.upid.starttime, type=t.upid.type, id=t.upid.id, user=user)
        if token:
            d["tokenid"] = token
        if t.saved is not None:
            d["saved"] = t.saved
        if not running:
            d["endtime"] = int(t.endtime or now)
            d["status"] = t.exitstatus
        out.append(d)
    return out


def not_backed_up(c: SimCluster) -> list[Json]:
    return [{"vmid": g.vmid, "name": g.display_name, "type": g.type}
            for g in sorted(c.guests.values(), key=lambda g: g.vmid) if not g.backed_up]


def qdevice(c: SimCluster) -> Json:
    if not c.qdevice:
        return {}
    return {"Model": "Net", "Algorithm": "Fifty-Fifty split", "QNetd host": "10.0.0.250",
            "Tie-breaker": "Node with lowest node id", "State": "Connected"}


def ha_status_current(c: SimCluster, now: float) -> list[Json]:
    local = c.local_node
    quorate = c.quorate
    out: list[Json] = [{"id": "quorum", "type": "quorum", "node": local.name,
                        "status": "OK" if quorate else f"No quorum on node '{local.name}'!",
                        "quorate": int(quorate)}]
    services = c.ha_services
    master = c.ha_master
    if not services or master is None:
        return out
    ts = int(now) - 2
    out.append({"id": "master", "type": "master", "node": master.name,
                "status": f"{master.name} (active, {_ctime(ts)})", "timestamp": ts})
    ha_nodes = {g.node for g in services}
    for name in sorted(c.nodes):
        n = c.nodes[name]
        if n.online:
            mode = "active" if name in ha_nodes else "idle"
            lts = int(now) - 5
            out.append({"id": f"lrm:{name}", "type": "lrm", "node": name,
                        "status": f"{name} ({mode}, {_ctime(lts)})", "timestamp": lts})
        else:
            lts = int(n.offline_since or now)
            out.append({"id": f"lrm:{name}", "type": "lrm", "node": name,
                        "status": f"{name} (old timestamp - dead?, {_ctime(lts)})", "timestamp": lts})
    for g in sorted(services, key=lambda g: g.vmid):
        state = c.ha_state(g) or "started"
        d: Json = {"id": f"service:{g.sid}", "type": "service", "sid": g.sid, "node": g.node,
                   "crm_state": state, "state": state, "status": f"{g.sid} ({g.node}, {state})",
                   "request_state": g.ha, "max_restart": 1, "max_relocate": 1}
        if c.version.ha_failback:
            d["failback"] = 1
        out.append(d)
    return out


def ha_manager_status(c: SimCluster, now: float) -> Json:
    local = c.local_node
    quorum = {"node": local.name, "quorate": "1" if c.quorate else ""}  # a Perl boolean
    services = c.ha_services
    master = c.ha_master
    if not services or master is None:
        return {"manager_status": {}, "quorum": quorum, "lrm_status": {}}
    node_status = {name: ("online" if n.online else "unknown") for name, n in c.nodes.items()}
    service_status: Json = {}
    for g in sorted(services, key=lambda g: g.vmid):
        entry: Json = {"node": g.node, "state": c.ha_state(g),
                       "uid": hashlib.md5(f"{c.name}/{g.sid}".encode()).hexdigest()[:22]}
        if g.running and c.nodes[g.node].online:
            entry["running"] = 1
        service_status[g.sid] = entry
    ha_nodes = {g.node for g in services}
    lrm: Json = {}
    for name, n in c.nodes.items():
        ts = int(now) - 5 if n.online else int(n.offline_since or now)
        lrm[name] = {"mode": "active", "state": "active" if name in ha_nodes else "wait_for_agent_lock",
                     "timestamp": ts, "results": {}}
    return {"manager_status": {"master_node": master.name, "timestamp": int(now) - 2,
                               "node_status": node_status, "service_status": service_status},
            "quorum": quorum, "lrm_status": lrm}


def _replication_config(j: Any) -> Json:
    d: Json = {"id": j.id, "type": "local", "guest": j.guest, "jobnum": j.jobnum, "target": j.target}
    if j.schedule:
        d["schedule"] = j.schedule
    d["source"] = j.source
    if j.rate is not None:
        d["rate"] = j.rate
    if j.comment:
        d["comment"] = j.comment
    if j.disable:
        d["disable"] = 1
    return d


def cluster_replication(c: SimCluster, caller: Caller) -> list[Json]:
    if not caller.has("VM.Audit"):
        return []
    return [_replication_config(j) for j in c.replication]


def node_replication(c: SimCluster, n: SimNode, now: float, caller: Caller, guest: int | None) -> list[Json]:
    out = []
    if not caller.has("VM.Audit"):
        return out
    for j in c.replication:
        g = c.guests.get(j.guest)
        if g is None or g.node != n.name or (guest is not None and j.guest != guest):
            continue
        iv = j.interval
        slot = int(now // iv) * iv
        target = c.nodes.get(j.target)
        d = _replication_config(j)
        d["vmtype"] = g.type
        error, fail_count = j.error, j.fail_count
        if target is not None and not target.online and not j.disable:
            down_since = target.offline_since or now
            error = f"ssh: connect to host {target.ip} port 22: No route to host"
            fail_count = max(1, int((now - down_since) // iv) + 1)
        if j.disable:
            last = int(c.created_at // iv) * iv - 86_400
            d.update(next_sync=slot + iv, last_sync=last, last_try=last, fail_count=0)
        elif error:
            d.update(next_sync=0 if target is not None and not target.online else slot + 300 * fail_count,
                     last_sync=int(c.created_at // iv) * iv - 3 * iv, last_try=slot,
                     fail_count=fail_count, error=error)
        else:
            d.update(next_sync=slot + iv, last_sync=slot, last_try=slot, fail_count=0, duration=j.duration)
        out.append(d)
    return out


def ceph_status(c: SimCluster) -> Json:
    names = list(c.nodes)
    up = [n for n in names if c.nodes[n].online]
    osds, up_osds = 3 * len(names), 3 * len(up)
    healthy = len(up) == len(names)
    checks: Json = {}
    if not healthy:
        checks["OSD_DOWN"] = {"severity": "HEALTH_WARN",
                              "summary": {"message": f"{osds - up_osds} osds down", "count": osds - up_osds}}
    total = osds * 3_840_000_000_000
    used = total // 5
    return {
        "fsid": str(uuid.UUID(hashlib.md5(f"ceph/{c.name}".encode()).hexdigest())),
        "health": {"status": "HEALTH_OK" if healthy else "HEALTH_WARN", "checks": checks, "mutes": []},
        "election_epoch": 42,
        "quorum": [names.index(n) for n in up],
        "quorum_names": up,
        "monmap": {"epoch": 3, "num_mons": len(names)},
        "osdmap": {"epoch": 1234, "num_osds": osds, "num_up_osds": up_osds, "num_in_osds": osds,
                   "num_remapped_pgs": 0},
        "pgmap": {"num_pgs": 129, "num_pools": 3, "num_objects": 812_345, "data_bytes": used // 3,
                  "bytes_used": used, "bytes_avail": total - used, "bytes_total": total},
        "mgrmap": {"available": True, "num_standbys": max(0, len(up) - 1)},
    }


# ---- node level -------------------------------------------------------------------------------
def nodes_list(c: SimCluster, now: float, caller: Caller) -> list[Json]:
    sys_audit = caller.has("Sys.Audit")
    return [node_entry(c, c.nodes[name], now, sys_audit, resources=False) for name in c.node_order]


def node_status(c: SimCluster, n: SimNode, now: float) -> Json:
    v = c.version
    release, kbuild = v.kernel
    used = n.mem_used(now)
    available = n.maxmem - used
    memfree = int(n.maxmem * n.memfree_frac)
    if v.new_memory_semantics:
        memory: Json = {"total": n.maxmem, "used": used, "free": memfree}
    else:
        memory = {"total": n.maxmem, "used": used, "free": n.maxmem - used}
    if v.memory_available:
        memory["available"] = available
    cpuinfo: Json = {"model": n.cpu_model, "sockets": n.sockets, "cores": n.maxcpu // 2 // n.sockets,
                     "cpus": n.maxcpu, "mhz": n.mhz, "hvm": "1", "user_hz": 100,
                     "flags": "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 "
                              "clflush mmx fxsr sse sse2 ht syscall nx pdpe1gb rdtscp lm constant_tsc "
                              "rep_good nopl xtopology cpuid pni pclmulqdq vmx ssse3 fma cx16 sse4_1 "
                              "sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor avx2"}
    if v.cpuinfo_vendor:
        cpuinfo["vendor"] = "AuthenticAMD" if "AMD" in n.cpu_model else "GenuineIntel"
        cpuinfo["family"] = "25" if "AMD" in n.cpu_model else "6"
    rootfs_free = n.rootfs_total - n.rootfs_used
    d: Json = {
        "uptime": n.uptime(now),
        "idle": 0,
        "cpu": n.cpu(now),
        "wait": n.iowait(now),
        "loadavg": n.loadavg(now),
        "kversion": f"Linux {release} {kbuild}",
        "cpuinfo": cpuinfo,
        "memory": memory,
        "swap": {"total": n.swap_total, "used": 0, "free": n.swap_total},
        "ksm": {"shared": 0},
        "rootfs": {"total": n.rootfs_total, "used": n.rootfs_used,
                   "avail": max(0, rootfs_free - n.rootfs_total // 20), "free": rootfs_free},
        "pveversion": v.pveversion,
    }
    if v.kernel_info:
        d["current-kernel"] = {"sysname": "Linux", "release": release, "version": kbuild, "machine": "x86_64"}
        d["boot-info"] = {"mode": "efi", "secureboot": 0} if n.nodeid % 2 else {"mode": "legacy-bios"}
    return d


def node_version(c: SimCluster) -> Json:
    return version(c)


def _pressure(g: SimGuest, now: float, as_string: bool) -> Json:
    """PSI avg10 of the guest's cgroup: a kernel percentage (0-100), mostly low (ProcFSTools::parse_pressure)."""
    bucket = int(now // 10)
    out: Json = {}
    for i, key in enumerate(_PRESSURE_KEYS):
        value = round(40.0 * jitter(g.vmid, 100 + i, bucket) ** 3, 2)
        out[key] = f"{value:.2f}" if as_string else value
    return out


def qemu_item(c: SimCluster, n: SimNode, g: SimGuest, now: float, full: bool) -> Json:
    """A `/nodes/{n}/qemu` entry; `full` adds what status/current always has (§3.3, §3.4)."""
    v = c.version
    running = g.running
    mem = g.mem(now)
    netin, netout, dread, dwrite = g.counters(now)
    d: Json = {"vmid": g.vmid, "name": g.display_name, "status": "running" if running else "stopped"}
    if running:
        d["pid"] = g.pid
    d.update(uptime=g.uptime(now), cpus=g.maxcpu(n.maxcpu), cpu=g.cpu(now), maxmem=g.maxmem, mem=mem)
    if v.memhost:
        d["memhost"] = _memhost(g, mem)
    d.update(maxdisk=g.maxdisk, disk=0, netin=netin, netout=netout)
    if full and running:
        d.update(diskread=dread, diskwrite=dwrite)
    elif v.list_diskrw_zero:
        d.update(diskread=0, diskwrite=0)
    if v.pressure and running:
        d.update(_pressure(g, now, as_string=False))
    if g.template:
        d["template"] = 1
    if g.serial:
        d["serial"] = 1
    if g.lock:
        d["lock"] = g.lock
    if g.tags:
        d["tags"] = g.tags
    if g.balloon:
        d["balloon_min"] = g.maxmem // 2
        d["shares"] = 1000
    if full:
        d["qmpstatus"] = g.qmpstatus if running else "stopped"
        if running:
            _full_fields(c, g, d, now, mem, (netin, netout, dread, dwrite))
    return d


def _full_fields(c: SimCluster, g: SimGuest, d: Json, now: float, mem: int,
                 counters: tuple[int, int, int, int]) -> None:
    netin, netout, dread, dwrite = counters
    d["nics"] = {f"tap{g.vmid}i0": {"netin": netin, "netout": netout}}
    rd_ops, wr_ops = dread // 12_288 + 1, dwrite // 8_192 + 1
    d["blockstat"] = {
        "scsi0": {
            "rd_bytes": dread, "wr_bytes": dwrite, "rd_operations": rd_ops, "wr_operations": wr_ops,
            "flush_operations": wr_ops // 20, "rd_total_time_ns": rd_ops * 150_000,
            "wr_total_time_ns": wr_ops * 480_000, "flush_total_time_ns": wr_ops * 9_000,
            "wr_highest_offset": g.maxdisk - 1_048_576, "rd_merged": 0, "wr_merged": 0,
            "unmap_operations": 0, "unmap_bytes": 0, "unmap_merged": 0, "unmap_total_time_ns": 0,
            "invalid_rd_operations": 0, "invalid_wr_operations": 0, "invalid_flush_operations": 0,
            "invalid_unmap_operations": 0, "failed_rd_operations": 0, "failed_wr_operations": 0,
            "failed_flush_operations": 0, "failed_unmap_operations": 0,
            "account_invalid": True, "account_failed": True,
            "idle_time_ns": int(jitter(g.vmid, 3, int(now)) * 1e9), "timed_stats": [],
        },
        # An empty CD-ROM is listed too, and has no idle_time_ns (never accessed).
        "ide2": {
            "rd_bytes": 0, "wr_bytes": 0, "rd_operations": 0, "wr_operations": 0, "flush_operations": 0,
            "rd_total_time_ns": 0, "wr_total_time_ns": 0, "flush_total_time_ns": 0,
            "wr_highest_offset": 0, "rd_merged": 0, "wr_merged": 0, "unmap_operations": 0,
            "unmap_bytes": 0, "unmap_merged": 0, "unmap_total_time_ns": 0,
            "invalid_rd_operations": 0, "invalid_wr_operations": 0, "invalid_flush_operations": 0,
            "invalid_unmap_operations": 0, "failed_rd_operations": 0, "failed_wr_operations": 0,
            "failed_flush_operations": 0, "failed_unmap_operations": 0,
            "account_invalid": False, "account_failed": False, "timed_stats": [],
        },
    }
    if g.balloon:
        total_mem = g.maxmem - 192 * MiB
        free_mem = max(0, total_mem - mem)
        d["ballooninfo"] = {"actual": g.maxmem, "max_mem": g.maxmem, "total_mem": total_mem,
                            "free_mem": free_mem, "mem_swapped_in": 0, "mem_swapped_out": 0,
                            "major_page_faults": 1811 + g.vmid, "minor_page_faults": 3_803_793 + g.vmid,
                            "last_update": int(now) - 1}
        d["balloon"] = g.maxmem
        d["freemem"] = free_mem
    qemu_version, machine = c.version.qemu
    d["running-machine"] = machine
    d["running-qemu"] = qemu_version
    d["proxmox-support"] = {"pbs-dirty-bitmap": True, "pbs-dirty-bitmap-savevm": True,
                            "pbs-dirty-bitmap-migration": True, "pbs-masterkey": True,
                            "query-bitmap-info": True, "backup-max-workers": True,
                            "pbs-library-version": "1.5.1 (UNKNOWN)"}


def ha_object(c: SimCluster, g: SimGuest) -> Json:
    if g.ha is None:
        return {"managed": 0}
    d: Json = {"managed": 1, "state": c.ha_state(g)}
    if c.version.ha_group:
        d["group"] = None
    return d


def qemu_status(c: SimCluster, n: SimNode, g: SimGuest, now: float) -> Json:
    d = qemu_item(c, n, g, now, full=True)
    d["ha"] = ha_object(c, g)
    if g.agent:
        d["agent"] = 1
    if g.vga and c.version.clipboard:
        d["clipboard"] = None
    return d


def lxc_item(c: SimCluster, n: SimNode, g: SimGuest, now: float) -> Json:
    running = g.running
    netin, netout, dread, dwrite = g.counters(now)
    d: Json = {"vmid": g.vmid, "type": "lxc", "name": g.display_name,
               "status": "running" if running else "stopped"}
    if running:
        d["pid"] = g.pid
    d.update(uptime=g.uptime(now), cpus=g.lxc_cpus(n.maxcpu), cpu=g.cpu(now), maxmem=g.maxmem,
             mem=g.mem(now), swap=0, maxswap=g.maxswap, disk=g.disk_used(), maxdisk=g.maxdisk,
             netin=netin, netout=netout, diskread=dread, diskwrite=dwrite)
    if g.template:
        d["template"] = 1
    if g.lock:
        d["lock"] = g.lock
    if g.tags:
        d["tags"] = g.tags
    if c.version.pressure and running:
        d.update(_pressure(g, now, as_string=True))  # pve-container leaves these as strings
    return d


def lxc_status(c: SimCluster, n: SimNode, g: SimGuest, now: float) -> Json:
    d = lxc_item(c, n, g, now)
    d["ha"] = ha_object(c, g)
    return d


def guest_list(c: SimCluster, n: SimNode, now: float, caller: Caller, type_: str, full: bool) -> list[Json]:
    if not caller.has("VM.Audit"):
        return []
    if type_ == "qemu":
        return [qemu_item(c, n, g, now, full) for g in n.guests if g.type == "qemu"]
    return [lxc_item(c, n, g, now) for g in n.guests if g.type == "lxc"]


def _mac(c: SimCluster, g: SimGuest) -> str:
    h = hashlib.md5(f"{c.name}/{g.vmid}/mac".encode()).digest()
    return "BC:24:11:" + ":".join(f"{b:02X}" for b in h[:3])


def _uuid(c: SimCluster, g: SimGuest, salt: str) -> str:
    return str(uuid.UUID(hashlib.md5(f"{c.name}/{g.vmid}/{salt}".encode()).hexdigest()))


def _with_digest(d: Json) -> Json:
    d["digest"] = hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()
    return d


def qemu_config(c: SimCluster, g: SimGuest) -> Json:
    """Config types per §3.9: integers int, booleans 0/1, `number` keys and `memory` strings."""
    v = c.version
    mem_mib = g.maxmem // MiB
    d: Json = {}
    if g.name is not None:
        d["name"] = g.name
    d.update(ostype="l26", cores=g.cores or 1, sockets=g.sockets, cpu="x86-64-v2-AES",
             memory=str(mem_mib) if v.qemu_memory_is_string else mem_mib,
             balloon=mem_mib // 2 if g.balloon else 0, numa=0, boot="order=scsi0;ide2;net0",
             scsihw="virtio-scsi-single",
             scsi0=f"local-lvm:vm-{g.vmid}-disk-0,iothread=1,size={g.maxdisk // (1024 * MiB)}G",
             ide2="none,media=cdrom", net0=f"virtio={_mac(c, g)},bridge=vmbr0,firewall=1",
             smbios1=f"uuid={_uuid(c, g, 'smbios')}", vmgenid=_uuid(c, g, "vmgenid"),
             meta=f"creation-qemu={v.qemu[0]},ctime={int(c.created_at) - 86_400 * (g.vmid % 300)}")
    if g.cpulimit:
        d["cpulimit"] = g.cpulimit
    if g.onboot:
        d["onboot"] = 1
        d["startup"] = "order=2,up=30,down=120"
    if g.agent:
        d["agent"] = "1"
    if g.serial:
        d["serial0"] = "socket"
    if g.vga:
        d["vga"] = g.vga
    if g.tags:
        d["tags"] = g.tags
    if g.lock:
        d["lock"] = g.lock
    if g.template:
        d["template"] = 1
    return _with_digest(d)


def lxc_config(c: SimCluster, g: SimGuest) -> Json:
    d: Json = {"arch": "amd64", "ostype": "debian"}
    if g.name:
        d["hostname"] = g.name
    if g.cores:
        d["cores"] = g.cores
    if g.cpulimit:
        d["cpulimit"] = g.cpulimit
    d.update(memory=g.maxmem // MiB, swap=g.maxswap // MiB, unprivileged=1, features="nesting=1",
             rootfs=f"local-lvm:vm-{g.vmid}-disk-0,size={g.maxdisk // (1024 * MiB)}G",
             net0=f"name=eth0,bridge=vmbr0,hwaddr={_mac(c, g)},ip=dhcp,type=veth")
    if g.onboot:
        d["onboot"] = 1
    if g.tags:
        d["tags"] = g.tags
    if g.lock:
        d["lock"] = g.lock
    if g.template:
        d["template"] = 1
    return _with_digest(d)


def node_storage(
    c: SimCluster, n: SimNode, caller: Caller, *, content: str | None, enabled: bool | None,
    storage: str | None,
) -> list[Json]:
    if storage is not None and all(st.storage != storage for st in n.storages):
        raise param_error({"storage": "No such storage."})
    if not (caller.has("Datastore.Audit") or caller.has("Datastore.AllocateSpace")):
        return []
    floats = c.version.storage_float_totals
    out = []
    for st in n.storages:
        if storage is not None and st.storage != storage:
            continue
        if content is not None and content not in st.content.split(","):
            continue
        if enabled and not st.enabled:
            continue
        active = st.active and st.enabled
        total, used = (st.total, st.used) if active else (0, 0)
        d: Json = {"storage": st.storage, "type": st.plugintype, "content": st.content,
                   "shared": int(st.shared), "enabled": int(st.enabled), "active": int(active),
                   "total": float(total) if floats and total >= 1e15 else total,
                   "used": float(used) if floats and used >= 1e15 else used,
                   "avail": total - used}
        if total > 0:
            d["used_fraction"] = used / total
        out.append(d)
    return out


def subscription(n: SimNode) -> Json:
    if not n.subscription_level:
        return {"status": "notfound", "message": "There is no subscription key", "serverid": n.serverid,
                "url": SUBSCRIPTION_URL}
    cpus = f"{n.sockets} CPU{'s' if n.sockets > 1 else ''}"
    return {"status": "active", "level": n.subscription_level, "key": n.subscription_key,
            "productname": f"Proxmox VE {_PRODUCTS[n.subscription_level]} Subscription {cpus}/year",
            "nextduedate": n.subscription_nextdue, "regdate": n.subscription_regdate,
            "serverid": n.serverid, "checktime": n.subscription_checktime, "sockets": n.sockets,
            "url": SUBSCRIPTION_URL}


# ---- tasks ------------------------------------------------------------------------------------
def _upid_fields(u: Upid) -> Json:
    user, token = u.split_user()
    d: Json = {"upid": u.text, "node": u.node, "pid": u.pid, "pstart": u.pstart, "starttime": u.starttime,
               "type": u.type, "id": u.id, "user": user}
    if token:
        d["tokenid"] = token
    return d


def _status_class(exitstatus: str) -> str:
    if exitstatus == "OK":
        return "ok"
    if exitstatus.startswith("WARNINGS: "):
        return "warning"
    if exitstatus == "unexpected status":
        return "unknown"
    return "error"


def node_tasks(
    n: SimNode, now: float, caller: Caller, *, start: int, limit: int, source: str,
    typefilter: str | None, userfilter: str | None, vmid: int | None, errors: bool,
    since: int | None, until: int | None, statusfilter: Iterable[str] | None,
) -> tuple[list[Json], int]:
    """`/nodes/{n}/tasks`: newest first, with the filters of §4.8; returns (page, total)."""
    wanted = set(statusfilter) if statusfilter else None
    rows = []
    for t in reversed(n.tasks):
        running = t.running(now)
        if (source == "archive" and running) or (source == "active" and not running):
            continue
        if not caller.has("Sys.Audit") and t.upid.user != caller.authid:
            continue
        if typefilter and t.upid.type != typefilter:
            continue
        if userfilter and userfilter not in t.upid.user:
            continue
        if vmid is not None and t.upid.id != str(vmid):
            continue
        if since is not None and t.upid.starttime < since:
            continue
        if until is not None and t.upid.starttime > until:
            continue
        if not running:
            cls = _status_class(t.exitstatus)
            if errors and cls in ("ok", "warning"):
                continue
            if wanted is not None and cls not in wanted:
                continue
        elif errors:
            continue
        d = _upid_fields(t.upid)
        if running:
            d["status"] = "RUNNING"
        else:
            d["endtime"] = int(t.endtime or now)
            d["status"] = t.exitstatus
        rows.append(d)
    total = len(rows)
    page = rows[start:] if limit == 0 else rows[start:start + limit]
    return page, total


def task_status(t: SimTask, now: float) -> Json:
    d = _upid_fields(t.upid)
    if t.running(now):
        d["status"] = "running"
    else:
        d["status"] = "stopped"
        d["exitstatus"] = t.exitstatus.replace("\n", " ")
    return d


def task_log(t: SimTask, now: float, start: int, limit: int) -> tuple[list[Json], int]:
    lines = t.log_lines(now)
    if not lines:
        return [{"n": 1, "t": "no content"}], 1
    picked = lines[start:] if limit == 0 else lines[start:start + limit]
    return [{"n": start + i + 1, "t": line} for i, line in enumerate(picked)], len(lines)
