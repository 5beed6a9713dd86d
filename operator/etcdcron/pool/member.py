"""A pool member, as a small supervisor: own partitions → load their jobs → wait for the next tick →
commit it under a fence → dispatch.

Its loops run in one ``asyncio.TaskGroup``: keep-alive (membership.py), the mirrors of members and
partition keys and the jobs watch (watches.py), the control loop (ownership and the job table, driven by
typed messages), the fire loop (fireloop.py) and a one-second ticker. A loop handles what it expects (etcd
unavailable, a bad entry: reported once, the loop goes on). Anything else takes the member out loudly: the
other loops stop, the lease is revoked so its partitions move at once, ``failure`` is set, ``done`` fires,
and ``etcdcron member`` exits non-zero with one line. A live lease behind a dead loop cannot happen.

A clean leave (``stop``) loses nothing: the fire loop finishes its round (commits in flight land and are
dispatched), deliveries are awaited, and only then is the lease revoked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from etcdcron.dispatch import ErrorHandler, Trigger
from etcdcron.errors import EtcdCronError, EtcdUnavailableError
from etcdcron.etcd import EtcdClient, WatchBatch
from etcdcron.keys import Keys
from etcdcron.membership import Membership
from etcdcron.pool.backfill import Backfills
from etcdcron.pool.deliveries import Deliveries
from etcdcron.pool.fireloop import FireLoop, now_ms
from etcdcron.pool.jobtable import JobTable, Loaded
from etcdcron.pool.messages import (
    FenceLost,
    JobEvents,
    JobsWatchRestarted,
    LeaseLost,
    Message,
    Reconcile,
    RunRequests,
)
from etcdcron.pool.ownership import Ownership
from etcdcron.pool.recovery import Recovery
from etcdcron.pool.reporting import Reporter
from etcdcron.pool.settlements import Settlements
from etcdcron.pool.timers import TimerQueue
from etcdcron.pool.watches import mirror_holders, mirror_members, watch_jobs, watch_requests
from etcdcron.store import JobStore

log = logging.getLogger("etcdcron.pool")

RECONCILE_EVERY = 1.0
RELOAD_RETRY = 0.5
HANDOVER_SECONDS = 2.0


class MemberFailure(EtcdCronError):
    """A loop of the member failed unexpectedly; the member left the pool."""


class Member:
    """One member of the pool. Use ``async with Member(...)`` or ``start()``/``stop()``."""

    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        trigger: Trigger,
        *,
        member_id: str,
        lease_ttl: int = 5,
        on_error: ErrorHandler | None = None,
        on_etcd_error: ErrorHandler | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.client = client
        self.keys = keys
        self.member_id = member_id
        self.reporter = Reporter(member_id, on_error, on_etcd_error)
        self.membership = Membership(
            client, keys, member_id, lease_ttl, self._lease_lost, self.reporter.etcd_error
        )
        self.timers = TimerQueue()
        self.table = JobTable(JobStore(client, keys), keys, self.timers, self.reporter)
        self.ownership = Ownership(client, keys, self.table, member_id, self._handover)
        self.settlements = Settlements(client, keys, self.table.fences, self.reporter)
        self.deliveries = Deliveries(trigger, on_error, self.settlements, member_id, clock)
        self.backfills = Backfills(client, keys, self.table, self.deliveries, self.reporter, member_id, clock)
        self.recovery = Recovery(
            client,
            keys,
            self.table,
            self.deliveries,
            self.settlements,
            self.reporter,
            member_id,
            clock,
            self.backfills,
        )
        self.table.on_removed += [
            self.deliveries.forget,
            self.settlements.forget,
        ]
        self.fire_loop = FireLoop(
            client,
            keys,
            self.table,
            self.timers,
            self.deliveries,
            self.reporter,
            member_id,
            lambda p: self._inbox.put_nowait(FenceLost(p)),
            clock,
        )
        self.settled = asyncio.Event()  # set while we hold and have loaded every partition we should own
        self.done = asyncio.Event()  # the member has stopped: cleanly, or by ``failure``
        self.failure: MemberFailure | None = None
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._reconcile_queued = False
        self._supervisor: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.membership.join()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"member {self.member_id}")

    async def stop(self, grace: float = 5.0) -> None:
        """Leave cleanly: finish the commits in flight and dispatch them, let triggers finish (up to
        ``grace``), then revoke the lease so every partition moves at once."""
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is None:
            return
        self.fire_loop.close()
        if not supervisor.done():
            try:
                await asyncio.wait_for(self.fire_loop.finished.wait(), self.client.timeout + grace)
            except TimeoutError:
                log.warning("member %s: commits still in flight after %.0fs; leaving", self.member_id, grace)
            supervisor.cancel()
        await asyncio.gather(supervisor, return_exceptions=True)
        await self.backfills.close()  # a backfill resumes, from its last step, on the next owner
        if running := await self.deliveries.drain(grace):
            log.warning("member %s: %d trigger(s) still running at leave", self.member_id, running)
        with contextlib.suppress(TimeoutError):  # acknowledgements: what is not written is re-delivered
            await asyncio.wait_for(self.settlements.flush(), self.client.timeout)
        await self.membership.leave()
        self.table.clear()
        self.settled.clear()
        self.done.set()

    async def __aenter__(self) -> Member:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_settled(self, timeout: float) -> None:
        await asyncio.wait_for(self.settled.wait(), timeout)

    @property
    def owned(self) -> frozenset[int]:
        return frozenset(self.table.partitions)

    # -- supervision -----------------------------------------------------------------------------------------
    async def _supervise(self) -> None:
        loops: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "keep-alive": self.membership.keep_alive,
            "members mirror": lambda: mirror_members(
                self.client, self.keys, self.ownership, self._request_reconcile, self.reporter
            ),
            "partitions mirror": lambda: mirror_holders(
                self.client, self.keys, self.ownership, self._request_reconcile, self.reporter
            ),
            "jobs watch": lambda: watch_jobs(self.client, self.keys, self._inbox.put, self.reporter),
            "requests watch": lambda: watch_requests(self.client, self.keys, self._inbox.put, self.reporter),
            "settlements": self.settlements.run,
            "control": self._control,
            "fire": self.fire_loop.run,
            "ticker": self._ticker,
        }
        try:
            async with asyncio.TaskGroup() as group:
                for name, loop in loops.items():
                    group.create_task(self._guard(name, loop()), name=f"{self.member_id} {name}")
        except* MemberFailure as failures:
            await self._fail(failures.exceptions[0])  # type: ignore[arg-type]

    async def _guard(self, name: str, loop: Coroutine[Any, Any, None]) -> None:
        try:
            await loop
        except Exception as e:
            log.debug("member %s: %s loop failed", self.member_id, name, exc_info=True)
            raise MemberFailure(f"{name} loop failed: {type(e).__name__}: {e}") from e

    async def _fail(self, failure: MemberFailure) -> None:
        """Leave loudly: no lease may outlive a dead loop."""
        self.failure = failure
        log.critical("member %s leaves the pool: %s", self.member_id, failure)
        self.fire_loop.close()
        await self.backfills.close()
        self.ownership.drop_all("member failed")
        self.settled.clear()
        await self.membership.leave()
        self.reporter.error(None, failure)
        self.done.set()

    # -- control loop ----------------------------------------------------------------------------------------
    async def _lease_lost(self) -> None:
        await self._inbox.put(LeaseLost())

    def _request_reconcile(self) -> None:
        if not self._reconcile_queued:
            self._reconcile_queued = True
            self._inbox.put_nowait(Reconcile())

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(RECONCILE_EVERY)
            self._request_reconcile()

    async def _control(self) -> None:
        while True:
            message = await self._inbox.get()
            try:
                await self._handle(message)
            except EtcdUnavailableError as e:
                await self.reporter.etcd_error(e)
                if isinstance(message, JobsWatchRestarted):  # partitions left unreloaded: try again
                    loop = asyncio.get_running_loop()
                    loop.call_later(RELOAD_RETRY, self._inbox.put_nowait, message)

    async def _handle(self, message: Message) -> None:
        match message:
            case Reconcile():
                self._reconcile_queued = False
                await self._reconcile()
            case JobEvents(batch):
                self.table.apply(batch)
            case JobsWatchRestarted(revision):
                for p, state in list(self.table.partitions.items()):
                    if state.loaded_revision < revision:
                        await self._loaded(p, await self.table.load(p))
            case RunRequests(batch):
                await self._serve(batch)
            case LeaseLost():
                self.ownership.drop_all("lease lost")
                self.settled.clear()
            case FenceLost(partition):
                self.ownership.drop(partition, "fence lost")
                self.settled.clear()
                await self._reconcile()
            case _:
                raise TypeError(f"unknown message {message!r}")

    async def _loaded(self, p: int, loaded: Loaded | None) -> None:
        """A partition was (re)loaded: settle our own commits of unknown outcome, then pick up what the
        snapshot holds besides jobs (unsettled firings, histories, run-now requests)."""
        if loaded is not None:
            self.fire_loop.settle_reloaded(loaded.carried)
            await self.recovery.restore(p, loaded.snapshot)

    async def _serve(self, batch: WatchBatch) -> None:
        """Run-now requests of our partitions written after we loaded them (earlier ones the load served)."""
        for event in batch.events:
            p = self.keys.partition_of_sibling(event.kv.key, "requests")
            if p is None or not event.is_put:
                continue
            state = self.table.partitions.get(p)
            if state is not None and event.kv.mod_revision > state.loaded_revision:
                await self.recovery.serve(p, event.kv)

    async def _handover(self, p: int, fence: int) -> None:
        """Before a partition is released (another member should own it): let its commits in flight land
        and its deliveries settle, and write their acknowledgements, so the new owner re-delivers nothing
        that was delivered here. Bounded: what is still running then is the new owner's to re-deliver."""

        async def settled() -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + HANDOVER_SECONDS
            await self.fire_loop.quiesce(p, HANDOVER_SECONDS)
            await self.deliveries.quiesce(p, max(deadline - loop.time(), 0))

        await self.settlements.hand_over(p, fence, settled)

    def deliverable(self, *prefixes: str) -> int:
        """A consumer for these ``<namespace>/<name>`` prefixes is ready: deliver what was parked for them."""
        return self.deliveries.deliverable(prefixes)

    async def _reconcile(self) -> None:
        plan = self.ownership.plan(self.membership.lease)
        for p in plan.drop:
            self.ownership.drop(p, "partition key gone")
        for p, create_revision in plan.free:
            await self.ownership.free(p, create_revision)
        # Free partitions first (a leaver's are waited for), then the hand-overs (each waits for its
        # partition's commits and deliveries to settle).
        await self.ownership.acquire_all(
            plan.acquire, lambda: self.membership.lease, self._loaded, self.fire_loop.closing.is_set
        )
        await self.ownership.release_all(plan.release)
        if self.membership.lease and plan.desired == self.table.partitions.keys():
            self.settled.set()
        else:
            self.settled.clear()
