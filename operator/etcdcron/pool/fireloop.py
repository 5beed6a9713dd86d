"""The fire loop: wait until the next due moment is near, plan and build its commits, send them ahead of
the moment, hand what landed to the deliveries (which hold each firing until its tick), and resolve what
was refused.

Commits go out 150 to ``COMMIT_AHEAD_MS`` (200) before their tick, so the etcd round trip is over when
the tick comes and the trigger is called on time (lateness: the timer's precision, not etcd's latency).
The price, stated in docs/design.md: a member killed after such a commit and before the tick loses those
firings (at-most-once delivery), a window up to ``COMMIT_AHEAD_MS`` wider than the round trip alone.

Only a committed tick is dispatched. A commit whose outcome is unknown (etcd went away mid-call) is retried
unchanged; if it had landed, the retry is refused, the cursor read back carries our commit id, and the
firings are dispatched then: once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime

from etcdcron import etcd, metrics
from etcdcron.decode import BadEntryError, decode_cursor
from etcdcron.errors import EtcdUnavailableError
from etcdcron.etcd import EtcdClient
from etcdcron.firing import Cursor, Firing, from_ms, plan, to_ms
from etcdcron.keys import Keys
from etcdcron.policy import Delivery
from etcdcron.pool.commit import (
    Commit,
    JobState,
    Outcome,
    Readback,
    StoredCursor,
    build_commit,
    chunk_by_partition,
    pending_commit,
    resolve_refused,
)
from etcdcron.pool.deliveries import Deliveries
from etcdcron.pool.handoffs import Handoff
from etcdcron.pool.jobtable import JobTable
from etcdcron.pool.reporting import Reporter
from etcdcron.pool.timers import TimerQueue

log = logging.getLogger("etcdcron.pool")

MAX_DUE_PER_ROUND = 4000
COMMIT_AHEAD_MS = 200
"""Due jobs are planned, built and committed up to this long before their moment (lateness and the window
it costs measured in bench/throughput.py)."""
GATHER_MS = 50
"""A round commits every job due in the next ``GATHER_MS`` together, so ticks spread by jitter are still
committed in large transactions (each due moment its own round: a transaction per few jobs)."""
RETRY_DELAY_MS = 250


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class FireLoop:
    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        table: JobTable,
        timers: TimerQueue,
        deliveries: Deliveries,
        reporter: Reporter,
        member_id: str,
        fence_lost: Callable[[int], None],
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.client = client
        self.keys = keys
        self.table = table
        self.timers = timers
        self.deliveries = deliveries
        self.reporter = reporter
        self.member_id = member_id
        self.fence_lost = fence_lost
        self.clock = clock
        self.closing = asyncio.Event()
        self.finished = asyncio.Event()
        self._commits = itertools.count()
        self._sending: collections.Counter[int] = collections.Counter()
        self._sent = asyncio.Event()
        self._instance = uuid.uuid4().hex[:8]  # commit ids stay unique across restarts of one member id

    def close(self) -> None:
        """Finish the round in progress (its commits are sent, and what lands is dispatched), then stop."""
        self.closing.set()
        self.timers.wake()

    async def run(self) -> None:
        try:
            while not self.closing.is_set():
                await self._round()
        finally:
            self.finished.set()

    async def _round(self) -> None:
        now = self.clock()
        next_at = self.timers.next_at()
        lead = COMMIT_AHEAD_MS - GATHER_MS  # the least time a commit has before its tick
        if next_at is None or next_at > now + lead:
            delay = (next_at - lead - now) / 1000 if next_at is not None else 1.0
            await self.timers.wait(delay)
            return
        at = max(next_at + GATHER_MS, now)
        commits = self._prepare(self.timers.pop_due(at, MAX_DUE_PER_ROUND, self.table.is_current), at)
        await asyncio.gather(*(self._send(commit) for commit in commits))

    def _prepare(self, due: list[JobState], now: int) -> list[Commit]:
        """Plan every due job as of ``now`` and build its transactions (CPU work, done ahead)."""
        planned: list[JobState] = []
        for job in due:
            if job.pending is None:
                p = plan(job.stored, job.schedule, job.cursor, now)
                if not p.fire and not p.missed:
                    self.timers.push(p.next_ms, job)
                    continue
                commit_id = f"{self.member_id}:{self._instance}:{next(self._commits)}"
                job.pending = pending_commit(job, p, now, commit_id, self.keys)
            planned.append(job)
        fences = self.table.fences()
        built = (build_commit(chunk, fences, self.keys) for chunk in chunk_by_partition(planned))
        return [commit for commit in built if commit.jobs]

    async def quiesce(self, partition: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s until no commit touching ``partition`` is on its way (its outcome, and
        its firings, still to come); False if one still is."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._sending[partition] > 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._sent.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sent.wait(), remaining)
        return True

    async def _send(self, commit: Commit) -> None:
        metrics.COMMITS.inc()
        self._sending.update(commit.fences.keys())
        try:
            await self._send_and_resolve(commit)
        finally:
            self._sending.subtract(commit.fences.keys())
            self._sent.set()

    async def _send_and_resolve(self, commit: Commit) -> None:
        try:
            response = await self.client.send_txn(commit.request)
        except EtcdUnavailableError as e:
            # Outcome unknown: retry the very same commit later; its compares tell whether it had landed.
            await self.reporter.etcd_error(e, commit.jobs[0].stored.job)
            self._retry_later(commit.jobs)
            return
        if any(job.pending is None for job in commit.jobs):
            # A reload read this commit's cursors while it was on its way and settled those jobs then
            # (``settle_reloaded``): they are dispatched already, not twice.
            commit = dataclasses.replace(commit, jobs=[job for job in commit.jobs if job.pending is not None])
        if response.succeeded:
            self.deliver([f for job in commit.jobs for f in self.landed(job, response.header.revision)])
            return
        metrics.COMMIT_CONFLICTS.inc()
        await self._resolve(commit)

    def _retry_later(self, jobs: list[JobState]) -> None:
        retry_at = self.clock() + RETRY_DELAY_MS
        for job in jobs:
            self.timers.push(retry_at, job)

    def deliver(self, handoffs: list[Handoff]) -> None:
        """Hand landed firings to the deliveries, one group per tick, each held until its tick is due."""
        by_tick: dict[datetime, list[Handoff]] = {}
        for handoff in handoffs:
            by_tick.setdefault(handoff.firing.due, []).append(handoff)  # the tick plus the job's jitter
        for tick, group in by_tick.items():
            self.deliveries.start(group, to_ms(tick))

    def landed(self, job: JobState, revision: int) -> list[Handoff]:
        """The commit is in etcd: move the cursor, schedule the next tick; returns the firings to deliver."""
        pending = job.pending
        assert pending is not None
        records = pending.records  # as the commit wrote them (at-least-once)
        job.pending = None
        job.cursor, job.cursor_revision = pending.cursor, revision
        spec = job.stored.job
        if pending.plan.missed:
            metrics.MISSED.inc(pending.plan.missed)
            log.info(
                "job %s/%s: %d missed tick(s) skipped by catch-up policy %s",
                spec.namespace,
                spec.name,
                pending.plan.missed,
                spec.catch_up.value,
            )
        ticks = pending.plan.fire
        stored = spec.delivery is Delivery.AT_LEAST_ONCE  # the commit wrote the in-flight records
        handoffs = []
        for i, (key, record) in enumerate(records):
            last = pending.final and i == len(ticks) - 1
            # ``fired`` is stamped when the firing is handed to the trigger
            tick = from_ms(record.tick_ms)
            firing = Firing(job.stored, tick, tick, record.run, self.member_id, last)
            handoffs.append(Handoff(firing, job.partition, job.spec_key, key, record, stored))
        if pending.final:
            self.table.finish(job)
        else:
            self.timers.push(pending.plan.next_ms, job)
        return handoffs

    def settle_reloaded(self, pairs: list[tuple[JobState, JobState]]) -> None:
        """A reload found commits whose outcome was unknown: dispatch those that had landed, forget others."""
        handoffs = []
        for old, new in pairs:
            if old.pending is not None and new.cursor == old.pending.cursor:
                new.cursor, new.pending = old.cursor, old.pending
                old.pending = None  # if that commit is still on its way, its answer finds it settled
                handoffs += self.landed(new, new.cursor_revision)
        self.deliver(handoffs)

    async def _resolve(self, commit: Commit) -> None:
        """A commit was refused: read back its keys and act on each job's outcome."""
        ops = [etcd.get(self.keys.partition(p)) for p in commit.fences]
        for job in commit.jobs:
            ops += [etcd.get(job.spec_key), etcd.get(job.cursor_key)]
        try:
            response = await self.client.txn([], ops)
        except EtcdUnavailableError as e:
            await self.reporter.etcd_error(e)
            self._retry_later(commit.jobs)
            return
        ranges = [r.response_range.kvs for r in response.responses]
        fences = {
            p: kvs[0].create_revision if kvs else None
            for p, kvs in zip(commit.fences, ranges[: len(commit.fences)], strict=True)
        }
        rest = ranges[len(commit.fences) :]
        specs = [kvs[0].mod_revision if kvs else None for kvs in rest[0::2]]
        cursors = [self._stored_cursor(kvs[0]) if kvs else None for kvs in rest[1::2]]
        refusal = resolve_refused(commit, Readback(fences, specs, cursors))
        now = self.clock()
        landed: list[Handoff] = []
        for r in refusal.resolutions:
            job = r.job
            if r.outcome is Outcome.LANDED:
                assert r.cursor is not None
                landed += self.landed(job, r.cursor.mod_revision)
                continue
            job.pending = None
            if r.outcome is Outcome.CURSOR_MOVED:
                stored = r.cursor
                if stored is not None and stored.cursor is None:
                    self.table.finish(job)  # its cursor became a bad entry: reported, skipped, kept
                    continue
                cursor = stored.cursor if stored is not None else None
                fresh = cursor is None or cursor.job_id != job.stored.id
                job.cursor = Cursor(job.stored.id) if fresh or cursor is None else cursor
                job.cursor_revision = stored.mod_revision if stored is not None else 0
                self.timers.push(now, job)
            elif r.outcome is Outcome.RETRY:
                # Refused for another job's reason (a sibling partition's fence): plan again now. Nothing
                # known explains it otherwise: back off rather than spin.
                self.timers.push(now if refusal.lost else now + RETRY_DELAY_MS, job)
        self.deliver(landed)
        for p in refusal.lost:
            self.fence_lost(p)

    def _stored_cursor(self, kv: etcd.KeyValue) -> StoredCursor:
        try:
            return StoredCursor(kv.mod_revision, decode_cursor(kv.key, kv.value))
        except BadEntryError as e:
            self.reporter.bad_entry(e, kv.mod_revision)
            return StoredCursor(kv.mod_revision, None)
