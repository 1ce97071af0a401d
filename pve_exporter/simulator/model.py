"""Simulated cluster state: nodes, guests, storages, tasks, and the clock that drives them.

Nothing runs in the background. Every time-dependent value (uptime, counters, cpu jitter,
task completion) is computed from `clock()` when it is read, so tests move time by moving
the injected clock.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pve_exporter.simulator.auth import TokenTable, default_tokens
from pve_exporter.simulator.faults import Fault, FaultError, FaultSet
from pve_exporter.simulator.hardware import NodeHardware
from pve_exporter.simulator.stats import RequestStats
from pve_exporter.simulator.upid import Upid
from pve_exporter.simulator.versions import PveVersion

if TYPE_CHECKING:
    from pve_exporter.simulator.power import PowerTimings

Clock = Callable[[], float]
MiB = 1024 * 1024
GiB = 1024 * MiB
_MASK64 = (1 << 64) - 1
PVESTATD_INTERVAL = 10  # s: cpu and memory jitter change once per pvestatd broadcast


def jitter(*keys: int) -> float:
    """A cheap, deterministic hash of integers to [0, 1) (splitmix64 steps)."""
    x = 0x9E3779B97F4A7C15
    for k in keys:
        x = ((x ^ (k & _MASK64)) * 0xBF58476D1CE4E5B9) & _MASK64
        x ^= x >> 31
        x = (x * 0x94D049BB133111EB) & _MASK64
        x ^= x >> 29
    return (x >> 11) / float(1 << 53)


@dataclass(slots=True, eq=False)
class SimGuest:
    """One qemu VM or LXC container. Counters are `rate * uptime` (+ `counter_base`)."""

    vmid: int
    type: str  # "qemu" | "lxc"
    node: str
    name: str | None  # None: PVE's default name (`VM 101`, `CT101`)
    running: bool
    started_at: float
    maxmem: int
    maxdisk: int
    cores: int | None = 1
    sockets: int = 1
    cpulimit: str | None = None  # a config number: PVE sends it as a string
    template: bool = False
    lock: str | None = None
    tags: str | None = None
    pool: str | None = None
    ha: str | None = None  # requested HA state (`started`, `stopped`, ...); None = not HA-managed
    qmpstatus: str = "running"  # QMP run state while running (`paused`, ...)
    cpu_base: float = 0.05
    mem_frac: float = 0.5
    disk_frac: float = 0.3
    netin_rate: float = 0.0
    netout_rate: float = 0.0
    diskread_rate: float = 0.0
    diskwrite_rate: float = 0.0
    counter_base: int = 0
    pid: int = 0
    balloon: bool = True
    agent: bool = False
    serial: bool = False
    vga: str | None = None
    onboot: bool = False
    backed_up: bool = True
    maxswap: int = 512 * MiB
    ignores_acpi: bool = False  # a shutdown request is never answered: shutdown tasks run into their timeout

    @property
    def display_name(self) -> str:
        if self.type == "qemu":
            return self.name if self.name is not None else f"VM {self.vmid}"
        # LXC reports the hostname with whitespace removed
        return re.sub(r"\s+", "", self.name) if self.name else f"CT{self.vmid}"

    @property
    def sid(self) -> str:
        return f"{'vm' if self.type == 'qemu' else 'ct'}:{self.vmid}"

    def maxcpu(self, host_cpus: int) -> int | float:
        if self.type == "qemu":
            return min(self.sockets * (self.cores or 1), host_cpus)
        if self.cores:
            return self.cores
        if self.cpulimit:
            value = float(self.cpulimit)
            return int(value) if value.is_integer() else value
        return host_cpus

    def lxc_cpus(self, host_cpus: int) -> int | str:
        """`cpus` in LXC lists: cores, else the raw `cpulimit` string, else the host count."""
        if self.cores:
            return self.cores
        return self.cpulimit if self.cpulimit else host_cpus

    # ---- live values ----------------------------------------------------------------------
    def uptime(self, now: float) -> int:
        return max(0, int(now - self.started_at)) if self.running else 0

    def cpu(self, now: float) -> float | int:
        if not self.running or self.qmpstatus == "paused":
            return 0
        j = jitter(self.vmid, int(now // PVESTATD_INTERVAL))
        return round(self.cpu_base * (0.5 + j), 8)

    def mem(self, now: float) -> int:
        if not self.running:
            return 0
        j = jitter(self.vmid, 7, int(now // PVESTATD_INTERVAL))
        return min(self.maxmem, int(self.maxmem * self.mem_frac * (0.97 + 0.06 * j)))

    def disk_used(self) -> int:
        """LXC rootfs usage while running (qemu always reports 0)."""
        return int(self.maxdisk * self.disk_frac) if self.running and self.type == "lxc" else 0

    def counters(self, now: float) -> tuple[int, int, int, int]:
        """(netin, netout, diskread, diskwrite): bytes since the guest started."""
        if not self.running:
            return 0, 0, 0, 0
        up = max(0.0, now - self.started_at)
        b = self.counter_base
        return (
            b + int(self.netin_rate * up),
            b + int(self.netout_rate * up),
            b + int(self.diskread_rate * up),
            b + int(self.diskwrite_rate * up),
        )

    # ---- state changes (used by power actions) -------------------------------------------
    def start(self, now: float, pid: int) -> None:
        """Counters restart from 0 on every start, as in PVE."""
        self.running = True
        self.qmpstatus = "running"
        self.started_at = now
        self.counter_base = 0
        self.pid = pid

    def stop(self) -> None:
        self.running = False
        self.qmpstatus = "running"
        self.pid = 0


@dataclass(slots=True, eq=False)
class SimStorage:
    """A storage as enabled on one node; shared storages repeat the same numbers per node."""

    storage: str
    plugintype: str
    content: str  # comma list in this node's (random) order
    shared: bool
    total: int
    used: int
    active: bool = True
    enabled: bool = True


@dataclass(slots=True, eq=False)
class SimTask:
    """A worker task. It counts as running until `endtime` (None: until `SimCluster.finish_task`)."""

    upid: Upid
    log: list[str] = field(default_factory=list)
    endtime: float | None = None
    exitstatus: str = "OK"
    later: list[tuple[float, str]] = field(default_factory=list)  # (time, line): written when the worker gets there
    saved: str | int | None = "1"  # `/cluster/tasks` mixes "0"/"1" and 1
    on_finish: Callable[[SimTask], None] | None = None
    finished: bool = False  # on_finish has run

    @property
    def text(self) -> str:
        return self.upid.text

    def running(self, now: float) -> bool:
        return self.endtime is None or now < self.endtime

    def log_lines(self, now: float) -> list[str]:
        """The log as a reader sees it at `now`: it grows while the task runs, then ends with TASK ..."""
        lines = [*self.log, *(line for at, line in self.later if at <= now)]
        if self.running(now):
            return lines
        if self.exitstatus == "OK":
            last = "TASK OK"
        elif self.exitstatus.startswith("WARNINGS: "):
            last = f"TASK {self.exitstatus}"
        else:
            last = f"TASK ERROR: {self.exitstatus}"
        return [*lines, last]


@dataclass(slots=True, eq=False)
class SimNode:
    name: str
    nodeid: int
    ip: str
    maxcpu: int
    sockets: int
    cpu_model: str
    mhz: str
    maxmem: int
    rootfs_total: int
    rootfs_used: int
    swap_total: int
    boot_at: float
    cpu_base: float
    mem_frac: float  # (total - MemAvailable) / total
    memfree_frac: float  # MemFree / total
    serverid: str
    ssl_fingerprint: str | None
    subscription_level: str = ""  # "" = no subscription (`notfound`)
    subscription_key: str | None = None
    subscription_checktime: int = 0
    subscription_nextdue: str = ""
    subscription_regdate: str = ""
    online: bool = True
    offline_since: float | None = None
    cgroup_mode: int = 2
    next_pid: int = 100_000
    guests: list[SimGuest] = field(default_factory=list)  # in the node's (hash-like) list order
    storages: list[SimStorage] = field(default_factory=list)
    tasks: list[SimTask] = field(default_factory=list)  # oldest first
    hardware: NodeHardware = field(default_factory=NodeHardware)  # ZFS pools, disks, certificates

    def uptime(self, now: float) -> int:
        return max(0, int(now - self.boot_at))

    def cpu(self, now: float) -> float:
        j = jitter(self.nodeid, 11, int(now // PVESTATD_INTERVAL))
        return round(min(1.0, self.cpu_base * (0.7 + 0.6 * j)), 10)

    def iowait(self, now: float) -> float:
        return round(0.002 * jitter(self.nodeid, 13, int(now // PVESTATD_INTERVAL)), 10)

    def mem_used(self, now: float) -> int:
        j = jitter(self.nodeid, 17, int(now // PVESTATD_INTERVAL))
        return int(self.maxmem * self.mem_frac * (0.99 + 0.02 * j))

    def loadavg(self, now: float) -> list[str]:
        base = self.cpu(now) * self.maxcpu
        return [f"{base * f:.2f}" for f in (1.0, 0.93, 0.88)]

    def alloc_pid(self) -> int:
        self.next_pid += 1 + (self.next_pid * 7919) % 397
        return self.next_pid


@dataclass(slots=True, eq=False)
class ReplicationJob:
    guest: int
    jobnum: int
    target: str
    source: str
    schedule: str | None = None  # None: the default `*/15`
    rate: float | None = None
    comment: str | None = None
    disable: bool = False
    error: str | None = None  # the job fails every run with this message
    fail_count: int = 0
    duration: float = 3.2

    @property
    def id(self) -> str:
        return f"{self.guest}-{self.jobnum}"

    @property
    def interval(self) -> int:
        m = re.fullmatch(r"\*/(\d+)", self.schedule or "*/15")
        return int(m.group(1)) * 60 if m else 900


class SimCluster:
    """One simulated PVE cluster, generated deterministically from `seed` and `name`.

    Guests are spread `guests_per_node` per node with VMIDs from 100; every 4th is LXC.
    The first few guests of a cluster are fixed oddities (see `generate.SPECIAL_GUESTS`).
    Attaching it to a `Simulator` with a different time source regenerates it on that clock,
    so attach before mutating.
    """

    def __init__(
        self,
        name: str = "sim1",
        *,
        nodes: int = 3,
        guests_per_node: int = 10,
        storages: int = 3,
        pve_version: int | str | PveVersion = 9,
        seed: int | str = 1,
        node_ip: str = "127.0.0.1",
        ceph: bool = False,
        qdevice: bool | None = None,
        standalone: bool = False,
        clock: Clock | None = None,
        power: PowerTimings | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        if standalone and nodes != 1:
            raise ValueError("a standalone PVE host has exactly one node")
        self.name = name
        self.version = PveVersion.parse(pve_version)
        self.seed = seed
        self.node_count = nodes
        self.guests_per_node = max(0, guests_per_node)
        self.storage_count = max(0, storages)
        self.node_ip = node_ip
        self.ceph = ceph
        self.qdevice = (nodes % 2 == 0 and not standalone) if qdevice is None else qdevice
        self.standalone = standalone
        self.faults = FaultSet()
        self.stats = RequestStats()
        from pve_exporter.simulator.power import PowerTimings  # power.py registers routes using this model

        self.power = power if power is not None else PowerTimings()
        self._populate(clock or time.time)

    def _populate(self, clock: Clock) -> None:
        from pve_exporter.simulator.generate import populate  # generation needs these classes

        self.clock: Clock = clock
        self._clock_source: Clock = clock
        self.nodes: dict[str, SimNode] = {}
        self.node_order: list[str] = []  # hash-like order used by every node list
        self.guests: dict[int, SimGuest] = {}
        self.pools: list[str] = []
        self.replication: list[ReplicationJob] = []
        self.config_version = 1
        self._pending: list[SimTask] = []  # tasks whose end has not been processed yet
        self._timers: list[tuple[float, int, Callable[[], None]]] = []  # (at, seq, callback): see schedule()
        self._timer_seq = 0
        self._advancing = False
        self.power_locks: dict[int, SimTask] = {}  # vmid -> the power task holding the guest's config lock
        self.created_at = clock()
        populate(self, self.created_at)

    def rebind_clock(self, clock: Clock, source: Clock) -> None:
        """Attach to a simulator clock; a different time source regenerates the state."""
        if source is not self._clock_source:
            self._populate(clock)
            self._clock_source = source
        self.clock = clock

    # ---- lookups ----------------------------------------------------------------------------
    def now(self) -> float:
        return self.clock()

    @property
    def local_node(self) -> SimNode:
        """The node that answers the API: the first online node (pve1 while it is up)."""
        for node in self.nodes.values():
            if node.online:
                return node
        return next(iter(self.nodes.values()))

    def resolve_node(self, name: str) -> SimNode | None:
        return self.local_node if name == "localhost" else self.nodes.get(name)

    def guest(self, vmid: int) -> SimGuest | None:
        return self.guests.get(vmid)

    def guest_on(self, node: str, vmid: int, type_: str) -> SimGuest | None:
        g = self.guests.get(vmid)
        return g if g is not None and g.node == node and g.type == type_ else None

    @property
    def quorate(self) -> bool:
        online = sum(1 for n in self.nodes.values() if n.online)
        votes, expected = online, len(self.nodes)
        if self.qdevice:
            votes, expected = votes + 1, expected + 1
        return votes * 2 > expected

    @property
    def ha_services(self) -> list[SimGuest]:
        return [g for g in self.guests.values() if g.ha is not None]

    @property
    def ha_master(self) -> SimNode | None:
        if not self.ha_services:
            return None
        names = list(self.nodes)
        preferred = names[1:] + names[:1]  # pve2 is master while up, like a long-lived cluster
        return next((self.nodes[n] for n in preferred if self.nodes[n].online), None)

    def ha_state(self, g: SimGuest) -> str | None:
        """The CRM service state: the request, or `fence` while the guest's node is down."""
        if g.ha is None:
            return None
        if not self.nodes[g.node].online and g.ha == "started":
            return "fence"
        return g.ha

    # ---- node power / reachability ----------------------------------------------------------
    def set_node_online(self, name: str, online: bool, *, reboot: bool = False) -> None:
        """Take a node off the network (or bring it back).

        `reboot=True` on the way back resets the node's uptime and restarts its running guests,
        as after a power cut; otherwise it is a network partition and nothing restarts.
        """
        node = self.nodes[name]
        now = self.now()
        if node.online == online:
            return
        node.online = online
        node.offline_since = None if online else now
        if online and reboot:
            node.boot_at = now
            for g in node.guests:
                if g.running:
                    g.start(now, node.alloc_pid())

    # ---- faults -----------------------------------------------------------------------------
    def add_fault(self, kind: str, **kwargs: Any) -> Fault:
        """Add a fault (see faults.py). `node_down` takes the node offline until it is removed."""
        node = kwargs.get("node")
        if node is not None and node not in self.nodes and kind == "node_down":
            raise FaultError(f"unknown node {node!r}")
        fault = self.faults.add(kind, **kwargs)
        if kind == "node_down":
            self.set_node_online(fault.node or "", False)
        return fault

    def remove_fault(self, fault_id: str) -> Fault | None:
        fault = self.faults.remove(fault_id)
        if fault is not None and fault.kind == "node_down":
            self._restore_node(fault.node)
        return fault

    def clear_faults(self) -> list[Fault]:
        removed = self.faults.clear()
        for fault in removed:
            if fault.kind == "node_down":
                self._restore_node(fault.node)
        return removed

    def _restore_node(self, name: str | None) -> None:
        still_down = any(f.kind == "node_down" and f.node == name for f in self.faults.list())
        if name in self.nodes and not still_down:
            self.set_node_online(name, True)

    # ---- tasks ------------------------------------------------------------------------------
    def add_task(
        self,
        node: str,
        type_: str,
        id_: str,
        user: str,
        *,
        duration: float | None = 1.0,
        exitstatus: str = "OK",
        log: Iterable[str] = (),
        on_finish: Callable[[SimTask], None] | None = None,
        start: float | None = None,
        saved: str | int | None = None,
    ) -> SimTask:
        """Register a worker task on `node`; it finishes `duration` seconds after `start`.

        `on_finish` runs once, lazily, on the first request after the task ended.
        """
        n = self.nodes[node]
        started = self.now() if start is None else start
        pid = n.alloc_pid()
        pstart = max(1, int((started - n.boot_at) * 100))
        upid = Upid(node, pid, pstart, int(started), type_, id_, user)
        task = SimTask(
            upid=upid,
            log=list(log),
            endtime=None if duration is None else started + duration,
            exitstatus=exitstatus,
            saved=saved,
            on_finish=on_finish,
        )
        n.tasks.append(task)
        self._pending.append(task)
        if len(n.tasks) > 1000:  # keep memory bounded under load tests
            del n.tasks[:-1000]
        return task

    def finish_task(self, task: SimTask, exitstatus: str = "OK", *, at: float | None = None) -> None:
        task.exitstatus = exitstatus
        task.endtime = self.now() if at is None else at
        self.advance()

    def find_task(self, node: str, upid_text: str) -> SimTask | None:
        n = self.nodes.get(node)
        if n is None:
            return None
        return next((t for t in reversed(n.tasks) if t.text == upid_text), None)

    def schedule(self, at: float, callback: Callable[[], None]) -> None:
        """Run `callback` once, lazily, on the first `advance` at or after `at` (HA's delayed LRM work)."""
        self._timer_seq += 1
        self._timers.append((at, self._timer_seq, callback))

    def advance(self, now: float | None = None) -> None:
        """Run the `on_finish` hooks of tasks that have ended by `now`, and due `schedule` callbacks.

        Earliest first; a hook may register further tasks or callbacks, which run in the same call
        when they are due too (a clock jump over a whole HA start). Re-entrant calls return at once.
        """
        now = self.now() if now is None else now
        if self._advancing or (not self._pending and not self._timers):
            return
        self._advancing = True
        try:
            while True:
                due = [t for t in self._pending if t.endtime is not None and now >= t.endtime]
                timers = [x for x in self._timers if x[0] <= now]
                if not due and not timers:
                    return
                task = min(due, key=lambda t: t.endtime or 0.0) if due else None
                timer = min(timers, key=lambda x: (x[0], x[1])) if timers else None
                if task is not None and (timer is None or (task.endtime or 0.0) <= timer[0]):
                    self._pending.remove(task)
                    task.finished = True
                    if task.on_finish is not None:
                        task.on_finish(task)
                elif timer is not None:
                    self._timers.remove(timer)
                    timer[2]()
        finally:
            self._advancing = False

    # ---- guests -----------------------------------------------------------------------------
    def move_guest(self, vmid: int, node: str) -> SimGuest:
        """Migrate a guest to another node (its config moves; counters restart there)."""
        g = self.guests[vmid]
        target = self.nodes[node]
        if g.node == node:
            return g
        self.nodes[g.node].guests.remove(g)
        target.guests.append(g)
        g.node = node
        if g.running:
            g.start(self.now(), target.alloc_pid())
        return g


class Simulator:
    """Several clusters sharing one clock, one token table and the global knobs.

    `now()` is `clock() + offset`; `advance()` moves the offset, which is what
    `POST /_sim/clock` does on a simulator running on the wall clock.
    """

    def __init__(
        self,
        clusters: Iterable[SimCluster],
        *,
        tokens: TokenTable | None = None,
        clock: Clock | None = None,
        auth_delay: float = 0.0,
        latency_ms: float = 0.0,
        compress: bool = True,
    ) -> None:
        self._clock: Clock = clock or time.time
        self._offset = 0.0
        self.tokens: Mapping[str, tuple[str, frozenset[str] | set[str]]] = (
            dict(tokens) if tokens is not None else default_tokens()
        )
        self.auth_delay = auth_delay
        self.latency_ms = latency_ms
        self.compress = compress
        self.clusters: dict[str, SimCluster] = {}
        for c in clusters:
            if c.name in self.clusters:
                raise ValueError(f"duplicate cluster name {c.name!r}")
            c.rebind_clock(self.now, self._clock)
            self.clusters[c.name] = c

    def now(self) -> float:
        return self._clock() + self._offset

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._offset += seconds
        return self.now()

    def cluster(self, name: str) -> SimCluster:
        return self.clusters[name]
