"""The renew loop a coordinated daemon owns: heartbeat, renew, rebalance, and tell the daemon what it owns.

Every lease_seconds/3 the coordinator renews its leases (with its heartbeat, at one database `now()`),
reads the table, releases or takes targets toward the fair share (balance.py), and calls the daemon's
`retarget(owned)` when the owned set changed. Polling stops *before* a lease is handed back, and starts
only after one is won, so two replicas never poll one target while PostgreSQL answers.

When a renewal fails, two cases are told apart:
- PostgreSQL is unreachable (connection refused or dropped, server shutting down): monitoring goes on
  with the targets owned so far and nothing new is taken — duplicates are better than gaps, since the
  other replicas cannot take anything either. Leases are renewed again as soon as the server answers.
- Anything else (a statement that times out, an unexpected error): the leases may be running out while
  the others can see the database, so 2/3 of lease_seconds after the last successful renewal this
  replica stops polling everything it held, well before anyone else may take it over.
After a failure (and at start) nothing is taken for one renewal interval, so every live replica has
announced itself again before the shares are counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import structlog

from pve_exporter.collect.base import Family, FamilyBuilder
from pve_exporter.coord.balance import plan
from pve_exporter.coord.store import LeaseStore, PgLeaseStore
from pve_exporter.settings import CoordinationSettings

log = structlog.get_logger("pve_exporter.coord")

GIVE_UP = 2 / 3  # of lease_seconds since the last successful renewal (timeouts and unexpected errors)

Retarget = Callable[[set[str]], Awaitable[bool]]
Sleep = Callable[[float], Awaitable[None]]


def unreachable(exc: BaseException) -> bool:
    """Whether the error says the database cannot be used at all, by any replica with this config (not
    that it is slow): refused, dropped, shutting down, too many connections, login or database refused."""
    return isinstance(
        exc,
        OSError
        | asyncpg.PostgresConnectionError
        | asyncpg.ConnectionDoesNotExistError
        | asyncpg.exceptions.OperatorInterventionError  # admin/crash shutdown, cannot connect now
        | asyncpg.exceptions.TooManyConnectionsError
        | asyncpg.exceptions.InvalidAuthorizationSpecificationError  # a rotated password, pg_hba
        | asyncpg.exceptions.InvalidCatalogNameError  # the database was dropped
        | asyncpg.InterfaceError,  # "connection is closed"
    ) and not isinstance(exc, TimeoutError)


class Coordinator:
    """Owns the renew loop (start/stop) and exposes its state as self-metrics."""

    def __init__(
        self,
        replica: str,
        lease_seconds: float,
        store: LeaseStore,
        *,
        targets: Callable[[], Sequence[str]],
        retarget: Retarget,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.replica = replica
        self.lease_seconds = lease_seconds
        self.interval = lease_seconds / 3
        self.store = store
        self._targets = targets
        self._retarget = retarget
        self.monotonic = monotonic
        self._sleep = sleep
        self.held: set[str] = set()  # leases won and renewed (or kept while PostgreSQL is unreachable)
        self.polled: set[str] = set()  # what the daemon was last told to poll
        self.up = False
        self.replicas = 0  # live replicas in the last view
        self._seen: set[str] = set()  # their names
        self._said_down = False
        self.renewals = 0
        self.losses = 0
        self.last_ok: float | None = None  # monotonic time a successful renewal was sent
        self._take_after: float | None = None  # settle: nothing is taken before this (start, recovery)
        self._task: asyncio.Task[None] | None = None
        self.log = log.bind(replica=replica)
        # Called after leases were won or a replica left: the control plane adopts a dead replica's
        # unfinished operations on the clusters owned here.
        self.on_gained: Callable[[], Awaitable[object]] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"coordination-{self.replica}")

    async def stop(self) -> None:
        """Cancel and await the loop; the leases stay until leave() (or until they expire)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def leave(self) -> None:
        """After the daemon stopped polling: hand every lease back so the others take over at once."""
        try:
            await asyncio.wait_for(self.store.leave(self.replica), self.interval)
            self.log.info("coordination left", released=sorted(self.held))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the leases simply expire
            self.log.warning("could not release the leases; they expire by themselves", error=repr(exc))
        self.held = set()
        await self.store.close()

    async def _run(self) -> None:
        while True:
            started = self.monotonic()
            await self.tick()
            await self._sleep(max(0.0, started + self.interval - self.monotonic()))

    # -- one round ---------------------------------------------------------------------------

    async def tick(self) -> None:
        """Renew, read, rebalance; never raises (a failure is the database's state, not a bug here)."""
        sent = self.monotonic()
        targets = list(dict.fromkeys(self._targets()))
        try:
            await self._round(sent, targets)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(sent, exc)

    async def _round(self, sent: float, targets: list[str]) -> None:
        configured = set(targets)
        gone = self.held - configured  # removed from the config: stop, then hand back
        keep = self.held & configured
        renewed = await self.store.renew(self.replica, keep, self.lease_seconds)
        lost = keep - renewed
        self.renewals += len(renewed)
        self.losses += len(lost)
        if lost:
            self.log.warning("leases lost", targets=sorted(lost))
        self.held = renewed
        self.last_ok = sent
        if not self.up:
            self.up = True
            self._take_after = sent + self.interval * 0.9  # the others announce themselves first
            self.log.info("coordination up", held=sorted(self.held))
        await self._publish()
        if gone:
            await self.store.release(self.replica, gone)
        view = await self.store.view()
        self.replicas = len(view.replicas | {self.replica})
        left, self._seen = self._seen - view.replicas, set(view.replicas)
        may_take = self._take_after is None or self.monotonic() >= self._take_after
        step = plan(targets, self.replica, view, may_take=may_take)
        if step.release:
            self.held -= step.release
            await self._publish()  # stop polling before anyone else may start
            await self.store.release(self.replica, step.release)
            self.log.info("leases released for balance", targets=sorted(step.release), replicas=self.replicas)
        if step.take:
            won = await self.store.acquire(self.replica, step.take, self.lease_seconds)
            if won:
                self.held |= won
                self.log.info("leases acquired", targets=sorted(won), replicas=self.replicas)
                await self._publish()
                await self._gained()
                return
        if left:  # a replica died: its unfinished operations on clusters owned here are adopted
            await self._gained()

    async def _gained(self) -> None:
        if self.on_gained is None:
            return
        try:
            await self.on_gained()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the leases stand; adoption is tried again with the next lease won
            self.log.warning("could not adopt the unfinished operations of newly owned clusters", error=repr(exc))

    async def _failed(self, sent: float, exc: BaseException) -> None:
        was_up, self.up = self.up, False
        await self.store.reset()
        if unreachable(exc):
            if was_up or (self.last_ok is None and not self._said_down):
                self._said_down = True  # at start: said once, not every renewal interval
                self.log.warning("PostgreSQL unreachable: polling what was owned, taking nothing new",
                                 held=sorted(self.held), error=repr(exc))  # fmt: skip
            return
        since = sent - self.last_ok if self.last_ok is not None else None
        if self.held and (since is None or since >= self.lease_seconds * GIVE_UP):
            self.losses += len(self.held)
            self.log.warning("leases could not be renewed in time: stopping before they expire",
                             targets=sorted(self.held), error=repr(exc))  # fmt: skip
            self.held = set()
            await self._publish()
        elif was_up or (self.last_ok is None and not self._said_down):
            self._said_down = True
            self.log.warning("lease renewal failed", error=repr(exc))

    async def _publish(self) -> None:
        if self.held != self.polled:
            wanted = set(self.held)
            if await self._retarget(wanted):
                self.polled = wanted

    # -- self-metrics --------------------------------------------------------------------------

    def families(self, clusters: set[str] | None = None) -> list[Family]:
        up = FamilyBuilder(
            "pve_exporter_coordination_up", "gauge",
            "1 if the last lease renewal in PostgreSQL succeeded, 0 while it fails (owned targets are still polled)",
            (),
        )  # fmt: skip
        up.add((), 1.0 if self.up else 0.0)
        replicas = FamilyBuilder(
            "pve_exporter_coordination_replicas", "gauge", "Live replicas seen in the last lease round", ()
        )
        replicas.add((), float(self.replicas))
        renewals = FamilyBuilder(
            "pve_exporter_coordination_lease_renewals_total", "counter", "Leases renewed in PostgreSQL", ()
        )
        renewals.add((), float(self.renewals))
        losses = FamilyBuilder(
            "pve_exporter_coordination_lease_losses_total", "counter",
            "Leases this replica lost (taken by another replica, or given up when they could not be renewed)", (),
        )  # fmt: skip
        losses.add((), float(self.losses))
        info = FamilyBuilder(
            "pve_exporter_replica_info", "gauge", "This replica's name in the coordination (always 1)", ("replica",)
        )
        info.add((self.replica,), 1.0)
        return [up.build(), replicas.build(), renewals.build(), losses.build(), info.build()]


def coordinator_for(
    cfg: CoordinationSettings,
    *,
    targets: Callable[[], Sequence[str]],
    retarget: Retarget,
    monotonic: Callable[[], float] = time.monotonic,
) -> Coordinator:
    """The coordinator of `coordination:` settings over PostgreSQL (connects and statements time out after
    half a renewal interval, so a hanging server is noticed well before the give-up point)."""
    interval = cfg.lease_seconds / 3
    store = PgLeaseStore(cfg.secret(), timeout=max(0.5, interval / 2))
    return Coordinator(cfg.replica, cfg.lease_seconds, store, targets=targets, retarget=retarget, monotonic=monotonic)
