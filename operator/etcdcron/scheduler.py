"""A pool member: own partitions, load their jobs, wait for the next tick, commit it under a fence, dispatch.

Read top to bottom:
1. ``Membership`` keeps this member registered on a lease.
2. The control loop (``_control``) turns the live member set into the partitions this member should own
   (rendezvous hashing), acquires free ones (a partition key bound to our lease; its create revision is the
   fence), releases ones another member should now own, loads each acquired partition's jobs and applies job
   changes from one watch.
3. The fire loop (``_fire_loop``) pops due jobs from a timer queue and commits them in batches: one etcd
   transaction per chunk, which succeeds only while every partition key is still ours (the fence) and every
   job's spec and cursor are where we last saw them. Only a committed tick is dispatched.

A member that was paused or cut off fails its fence and fires nothing another member fired. A commit whose
outcome is unknown (etcd went away mid-call) is retried unchanged; if it had landed, the retry's cursor
compare fails, the stored cursor equals the planned one, and the firings are dispatched then: once.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from etcdcron import etcd, metrics
from etcdcron.dispatch import ErrorHandler, Trigger, call_handler, deliver
from etcdcron.errors import EtcdCronError, EtcdUnavailableError
from etcdcron.etcd import EtcdClient, KeyValue
from etcdcron.firing import Cursor, Firing, Plan, first_after_ms, from_ms, next_tick_ms, plan
from etcdcron.job import StoredJob
from etcdcron.keys import Keys, range_end
from etcdcron.membership import Membership
from etcdcron.partitions import owned_by, owner
from etcdcron.schedule import Schedule
from etcdcron.store import JobStore

log = logging.getLogger(__name__)

TXN_LIMIT = 128
"""etcd's default --max-txn-ops: the most compares, and the most operations, one transaction may carry."""

MAX_DUE_PER_ROUND = 4000
PREPARE_AHEAD_MS = 100
"""Due jobs are planned and their transactions built this long before their moment, so the moment itself
costs only the round trip to etcd (lateness measured in bench/throughput.py)."""
RETRY_DELAY_MS = 250


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True, eq=False)
class JobState:
    """A loaded job: its spec, parsed schedule, run state and the revisions its commit compares."""

    stored: StoredJob
    schedule: Schedule
    cursor: Cursor
    spec_key: bytes
    cursor_key: bytes
    spec_revision: int
    cursor_revision: int
    partition: int
    pending: tuple[Plan, Cursor] | None = None  # a commit sent whose outcome is unknown


def chunk_by_partition(jobs: list[JobState], completes: Callable[[JobState], bool]) -> list[list[JobState]]:
    """Pack jobs into as few commit transactions as etcd's limits allow.

    A job costs two compares (spec, cursor) and one operation (two when its last run deletes it); each
    distinct partition in a transaction costs one more compare (its fence). Jobs are taken partition by
    partition, so fences are shared and a transaction carries up to ~60 jobs.
    """
    chunks: list[list[JobState]] = []
    chunk: list[JobState] = []
    compares = ops = 0
    partitions: set[int] = set()
    for job in sorted(jobs, key=lambda j: j.partition):
        job_ops = 2 if completes(job) else 1
        job_compares = 2 + (job.partition not in partitions)
        if chunk and (compares + job_compares > TXN_LIMIT or ops + job_ops > TXN_LIMIT):
            chunks.append(chunk)
            chunk, compares, ops, partitions = [], 0, 0, set()
            job_compares = 3
        chunk.append(job)
        partitions.add(job.partition)
        compares += job_compares
        ops += job_ops
    if chunk:
        chunks.append(chunk)
    return chunks


@dataclass(frozen=True, slots=True)
class _Commit:
    """One firing transaction, built ahead of its moment: the jobs, the fences it checks, its requests."""

    jobs: list[JobState]
    fences: dict[int, int]
    compares: list[Any]
    ops: list[Any]


@dataclass(slots=True)
class PartitionState:
    fence: int  # create revision of our partition key
    loaded_revision: int = 0
    jobs: dict[bytes, JobState] = field(default_factory=dict)


@dataclass(slots=True)
class Holder:
    member_id: str
    create_revision: int
    lease: int


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
        self.store = JobStore(client, keys)
        self.trigger = trigger
        self.member_id = member_id
        self.on_error = on_error
        self.on_etcd_error = on_etcd_error
        self.clock = clock
        self.membership = Membership(
            client, keys, member_id, lease_ttl, self._on_lease_lost, self._report_etcd_error
        )
        self.partitions: dict[int, PartitionState] = {}
        self.settled = asyncio.Event()  # set while we hold and have loaded every partition we should own
        self._members: set[str] = set()
        self._holders: dict[int, Holder] = {}
        self._holders_revision = 0
        self._heap: list[tuple[int, int, JobState]] = []
        self._seq = itertools.count()
        self._commits = itertools.count()
        self._instance = uuid.uuid4().hex[
            :8
        ]  # commit ids stay unique across restarts with the same member id
        self._wake = asyncio.Event()
        self._inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._deliveries: set[asyncio.Task[bool]] = set()
        self._reconcile_queued = False

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.membership.join()
        for coro in (
            self.membership.keep_alive(),
            self._mirror_members(),
            self._mirror_holders(),
            self._watch_jobs(),
            self._control(),
            self._fire_loop(),
            self._periodic_reconcile(),
        ):
            self._tasks.append(asyncio.create_task(coro))

    async def stop(self, grace: float = 5.0) -> None:
        """Leave cleanly: stop firing, let running triggers finish (up to ``grace``), revoke the lease."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._deliveries:
            await asyncio.wait(self._deliveries, timeout=grace)
        await self.membership.leave()
        self.partitions.clear()
        metrics.PARTITIONS_OWNED.set(0)

    async def __aenter__(self) -> Member:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_settled(self, timeout: float) -> None:
        await asyncio.wait_for(self.settled.wait(), timeout)

    @property
    def owned(self) -> frozenset[int]:
        return frozenset(self.partitions)

    # -- error reporting -----------------------------------------------------------------------------------
    async def _report_etcd_error(self, error: Exception, job: StoredJob | None = None) -> None:
        metrics.ETCD_ERRORS.inc()
        log.warning("member %s: etcd error: %s", self.member_id, error)
        await call_handler(self.on_etcd_error, job.job if job else None, error)

    async def _on_lease_lost(self) -> None:
        await self._inbox.put(("lease_lost", None))

    # -- watches feeding the control loop ------------------------------------------------------------------
    async def _mirror_members(self) -> None:
        root = self.keys.members_root()

        def apply(kvs: Iterable[KeyValue], put: bool) -> None:
            for kv in kvs:
                (self._members.add if put else self._members.discard)(self.keys.member_id_of(kv.key))

        await self._mirror(root, lambda: self._members.clear(), apply, lambda rev: None)

    async def _mirror_holders(self) -> None:
        root = self.keys.partitions_root()

        def apply(kvs: Iterable[KeyValue], put: bool) -> None:
            for kv in kvs:
                p = self.keys.partition_of_key(kv.key)
                if put:
                    self._holders[p] = Holder(kv.value.decode(), kv.create_revision, kv.lease)
                else:
                    self._holders.pop(p, None)

        def seen(revision: int) -> None:
            self._holders_revision = revision

        await self._mirror(root, lambda: self._holders.clear(), apply, seen)

    async def _mirror(
        self,
        root: bytes,
        reset: Callable[[], None],
        apply: Callable[[Iterable[KeyValue], bool], None],
        seen: Callable[[int], None],
    ) -> None:
        """Keep a small prefix mirrored in memory (snapshot, then watch); nudge the control loop on change."""
        while True:
            try:
                snapshot = await self.client.range(root, range_end(root))
                reset()
                apply(snapshot.kvs, True)
                seen(snapshot.header.revision)
                self._request_reconcile()
                async for batch in self.client.watch(root, range_end(root), snapshot.header.revision + 1):
                    for event in batch.events:
                        apply([event.kv], event.is_put)
                    seen(batch.revision)
                    self._request_reconcile()
            except EtcdUnavailableError as e:
                await self._report_etcd_error(e)
                await asyncio.sleep(0.5)

    async def _watch_jobs(self) -> None:
        """One watch over every job spec; events for partitions we do not own are ignored."""
        root = self.keys.jobs_root()
        while True:
            try:
                head = await self.client.range(root, range_end(root), limit=1, count_only=True)
                await self._inbox.put(("jobs_reset", head.header.revision))
                async for batch in self.client.watch(root, range_end(root), head.header.revision + 1):
                    if batch.events:
                        await self._inbox.put(("jobs", batch))
            except EtcdUnavailableError as e:
                await self._report_etcd_error(e)
                await asyncio.sleep(0.5)

    async def _periodic_reconcile(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._request_reconcile()

    def _request_reconcile(self) -> None:
        if not self._reconcile_queued:
            self._reconcile_queued = True
            self._inbox.put_nowait(("reconcile", None))

    # -- control loop: ownership and job table -------------------------------------------------------------
    async def _control(self) -> None:
        while True:
            kind, payload = await self._inbox.get()
            try:
                if kind == "reconcile":
                    self._reconcile_queued = False
                    await self._reconcile()
                elif kind == "jobs":
                    self._apply_job_events(payload)
                elif kind == "jobs_reset":
                    # The jobs watch restarted at this revision: reload what was loaded before it.
                    for p, state in list(self.partitions.items()):
                        if state.loaded_revision < payload:
                            await self._load(p)
                elif kind == "lease_lost":
                    for p in list(self.partitions):
                        self._drop(p, "lease lost")
                elif kind == "fence_lost":
                    self._drop(payload, "fence lost")
                    await self._reconcile()
            except EtcdUnavailableError as e:
                await self._report_etcd_error(e)
            except EtcdCronError as e:
                log.warning("member %s: %s", self.member_id, e)

    async def _reconcile(self) -> None:
        lease = self.membership.lease
        desired = owned_by(self.member_id, self.keys.partitions, self._members) if lease else frozenset()
        for p, state in list(self.partitions.items()):
            holder = self._holders.get(p)
            if self._holders_revision >= state.fence and (
                holder is None or holder.create_revision != state.fence
            ):
                self._drop(p, "partition key gone")
            elif p not in desired:
                await self._release(p)
        for p, holder in list(self._holders.items()):
            if holder.lease == lease and lease and p not in self.partitions:
                # Ours on paper only: a release or acquisition whose answer was lost. Free it.
                key = self.keys.partition(p)
                await self.client.txn(
                    [etcd.create_revision_is(key, holder.create_revision)], [etcd.delete(key)]
                )
        for p in sorted(desired - self.partitions.keys()):
            # Loading a partition can take a while: re-check against the member set as it is now.
            if (
                p not in self._holders
                and self.membership.lease
                and owner(p, self._members | {self.member_id}) == self.member_id
            ):
                await self._acquire(p)
        if self.membership.lease and desired == self.partitions.keys():
            self.settled.set()
        else:
            self.settled.clear()

    async def _acquire(self, p: int) -> None:
        key = self.keys.partition(p)
        response = await self.client.txn(
            [etcd.create_revision_is(key, 0)],
            [etcd.put(key, self.member_id.encode(), self.membership.lease)],
        )
        if not response.succeeded:
            return
        self.partitions[p] = PartitionState(fence=response.header.revision)
        metrics.PARTITIONS_OWNED.set(len(self.partitions))
        log.debug("member %s acquired partition %d", self.member_id, p)
        await self._load(p)

    async def _release(self, p: int) -> None:
        state = self.partitions.get(p)
        if state is None:
            return
        self._drop(p, "handed over")
        key = self.keys.partition(p)
        await self.client.txn([etcd.create_revision_is(key, state.fence)], [etcd.delete(key)])

    def _drop(self, p: int, why: str) -> None:
        state = self.partitions.pop(p, None)
        if state is None:
            return
        log.info("member %s gives up partition %d (%s)", self.member_id, p, why)
        self.settled.clear()
        metrics.PARTITIONS_OWNED.set(len(self.partitions))
        metrics.JOBS_LOADED.dec(len(state.jobs))
        self._compact_heap()

    def _compact_heap(self) -> None:
        """Drop timer entries of jobs no longer loaded once they outnumber the live ones (a daily job's stale
        entry would otherwise stay for a day after a reload or a handover)."""
        live = sum(len(state.jobs) for state in self.partitions.values())
        if len(self._heap) > 2 * live + 1024:
            self._heap = [entry for entry in self._heap if self._is_current(entry[2])]
            heapq.heapify(self._heap)

    async def _load(self, p: int) -> None:
        state = self.partitions.get(p)
        if state is None:
            return
        snapshot = await self.store.read_partition(p)
        if self.partitions.get(p) is not state:
            return  # dropped while we read
        previous = state.jobs
        metrics.JOBS_LOADED.dec(len(previous))
        state.jobs = {}
        state.loaded_revision = snapshot.revision
        for kv in snapshot.jobs:
            cursor_kv = snapshot.cursors.get(kv.key)
            job = self._upsert(state, p, kv, cursor_kv)
            old = previous.get(kv.key)
            if (
                job is not None
                and old is not None
                and old.pending is not None
                and old.stored.id == job.stored.id
            ):
                self._settle_pending(old, job)
        self._compact_heap()

    def _settle_pending(self, old: JobState, new: JobState) -> None:
        """A reload found a commit whose outcome was unknown: dispatch it if it had landed, else forget it."""
        assert old.pending is not None
        if new.cursor == old.pending[1]:
            new.cursor, new.pending = old.cursor, old.pending
            self._landed(new, new.cursor_revision, self.clock())

    def _apply_job_events(self, batch: etcd.WatchBatch) -> None:
        for event in batch.events:
            ref = self.keys.parse_job_key(event.kv.key)
            state = self.partitions.get(ref.partition)
            if state is None or event.kv.mod_revision <= state.loaded_revision:
                continue
            if state.jobs.pop(event.kv.key, None) is not None:
                metrics.JOBS_LOADED.dec()
            if event.is_put:
                # A new version always comes with its cursor deleted in the same transaction.
                self._upsert(state, ref.partition, event.kv, None)

    def _upsert(
        self, state: PartitionState, p: int, kv: KeyValue, cursor_kv: KeyValue | None
    ) -> JobState | None:
        try:
            stored = StoredJob.from_json(kv.value)
            schedule = stored.schedule()
        except (EtcdCronError, ValueError, KeyError) as e:
            # Never crash the pool on one bad job, and never delete it: report and skip.
            log.error("member %s: cannot load job at %s: %s", self.member_id, kv.key.decode(), e)
            asyncio.get_running_loop().create_task(call_handler(self.on_error, None, e))
            return None
        cursor = Cursor.for_job(stored, cursor_kv.value if cursor_kv is not None else None)
        if stored.job.max_runs is not None and cursor.runs >= stored.job.max_runs:
            return None
        ref = self.keys.ref(stored.job.namespace, stored.job.name)
        job = JobState(
            stored,
            schedule,
            cursor,
            kv.key,
            self.keys.cursor(ref),
            kv.mod_revision,
            cursor_kv.mod_revision if cursor_kv is not None else 0,
            p,
        )
        state.jobs[kv.key] = job
        metrics.JOBS_LOADED.inc()
        self._schedule(job, next_tick_ms(schedule, first_after_ms(stored, cursor), stored))
        return job

    def _schedule(self, job: JobState, at_ms: int | None) -> None:
        if at_ms is None:
            return
        if not self._heap or at_ms < self._heap[0][0]:
            self._wake.set()
        heapq.heappush(self._heap, (at_ms, next(self._seq), job))

    def _is_current(self, job: JobState) -> bool:
        state = self.partitions.get(job.partition)
        return state is not None and state.jobs.get(job.spec_key) is job

    # -- fire loop: timer queue and fenced commits ---------------------------------------------------------
    async def _fire_loop(self) -> None:
        """Wait for the next due moment; plan its commits up to PREPARE_AHEAD_MS early, send them on time."""
        while True:
            now = self.clock()
            if not self._heap or self._heap[0][0] > now + PREPARE_AHEAD_MS:
                self._wake.clear()
                delay = (self._heap[0][0] - PREPARE_AHEAD_MS - now) / 1000 if self._heap else 1.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=max(delay, 0.0005))
                continue
            at = max(self._heap[0][0], now)
            due: list[JobState] = []
            while self._heap and self._heap[0][0] <= at and len(due) < MAX_DUE_PER_ROUND:
                _, _, job = heapq.heappop(self._heap)
                if self._is_current(job):
                    due.append(job)
            commits = self._prepare(due, at)
            wait = (at - self.clock()) / 1000
            if wait > 0:
                await asyncio.sleep(wait)
            await asyncio.gather(*(self._send(commit) for commit in commits))

    def _prepare(self, due: list[JobState], now: int) -> list[_Commit]:
        """Plan every due job as of ``now`` and build its commit transactions (CPU work, done ahead)."""
        planned: list[JobState] = []
        for job in {id(j): j for j in due}.values():
            if job.pending is None:
                p = plan(job.stored, job.schedule, job.cursor, now)
                if not p.fire and not p.missed:
                    self._schedule(job, p.next_ms)
                    continue
                cursor = job.cursor
                commit = f"{self.member_id}:{self._instance}:{next(self._commits)}"
                job.pending = (
                    p,
                    Cursor(
                        job.stored.id,
                        p.last_tick_ms,
                        cursor.runs + len(p.fire),
                        cursor.missed + p.missed,
                        commit,
                        now if p.fire else cursor.fired_ms,
                    ),
                )
            planned.append(job)
        built = (self._build(chunk) for chunk in chunk_by_partition(planned, self._complete))
        return [commit for commit in built if commit.jobs]

    def _complete(self, job: JobState) -> bool:
        assert job.pending is not None
        max_runs = job.stored.job.max_runs
        return max_runs is not None and job.pending[1].runs >= max_runs

    def _build(self, chunk: list[JobState]) -> _Commit:
        fences = {
            j.partition: self.partitions[j.partition].fence for j in chunk if j.partition in self.partitions
        }
        chunk = [j for j in chunk if j.partition in fences]
        compares = [etcd.create_revision_is(self.keys.partition(p), fence) for p, fence in fences.items()]
        ops = []
        for job in chunk:
            compares.append(etcd.mod_revision_is(job.spec_key, job.spec_revision))
            compares.append(etcd.mod_revision_is(job.cursor_key, job.cursor_revision))
            assert job.pending is not None
            if self._complete(job):
                ops.append(etcd.delete(job.spec_key))  # the final cursor stays: the run state of record
            ops.append(etcd.put(job.cursor_key, job.pending[1].to_json(), job.stored.lease))
        return _Commit(chunk, fences, compares, ops)

    async def _send(self, commit: _Commit) -> None:
        chunk, fences, compares, ops = commit.jobs, commit.fences, commit.compares, commit.ops
        metrics.COMMITS.inc()
        try:
            response = await self.client.txn(compares, ops)
        except EtcdUnavailableError as e:
            # Outcome unknown: retry the very same commit later; its compares tell whether it had landed.
            await self._report_etcd_error(e, chunk[0].stored if chunk else None)
            retry_at = self.clock() + RETRY_DELAY_MS
            for job in chunk:
                self._schedule(job, retry_at)
            return
        if response.succeeded:
            fired_at = self.clock()
            for job in chunk:
                self._landed(job, response.header.revision, fired_at)
            return
        metrics.COMMIT_CONFLICTS.inc()
        await self._resolve_conflict(chunk, fences)

    def _landed(self, job: JobState, revision: int, fired_at: int) -> None:
        """The commit is in etcd: move the cursor, dispatch its ticks, schedule the next one."""
        assert job.pending is not None
        p, cursor = job.pending
        complete = self._complete(job)
        job.pending = None
        first_run = job.cursor.runs + 1
        job.cursor, job.cursor_revision = cursor, revision
        spec = job.stored.job
        if p.missed:
            metrics.MISSED.inc(p.missed)
            log.info(
                "job %s/%s: %d missed tick(s) skipped by catch-up policy %s",
                spec.namespace,
                spec.name,
                p.missed,
                spec.catch_up.value,
            )
        fired = from_ms(fired_at)
        for i, tick in enumerate(p.fire):
            firing = Firing(
                job.stored,
                from_ms(tick),
                fired,
                first_run + i,
                self.member_id,
                complete and i == len(p.fire) - 1,
            )
            metrics.FIRINGS.inc()
            metrics.LATENESS.observe(max(fired_at - tick, 0) / 1000)
            task = asyncio.get_running_loop().create_task(self._deliver(firing))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)
        if complete:
            state = self.partitions.get(job.partition)
            if state is not None and state.jobs.get(job.spec_key) is job:
                del state.jobs[job.spec_key]
                metrics.JOBS_LOADED.dec()
            return
        self._schedule(job, p.next_ms)

    async def _deliver(self, firing: Firing) -> bool:
        ok = await deliver(firing, self.trigger, self.on_error)
        if not ok:
            metrics.DISPATCH_ERRORS.inc()
        return ok

    async def _resolve_conflict(self, chunk: list[JobState], fences: dict[int, int]) -> None:
        """A commit was refused: find out which compare failed and why, per partition and per job."""
        ops = [etcd.get(self.keys.partition(p)) for p in fences]
        for job in chunk:
            ops += [etcd.get(job.spec_key), etcd.get(job.cursor_key)]
        try:
            response = await self.client.txn([], ops)
        except EtcdUnavailableError as e:
            await self._report_etcd_error(e)
            retry_at = self.clock() + RETRY_DELAY_MS
            for job in chunk:
                self._schedule(job, retry_at)
            return
        ranges = [r.response_range.kvs for r in response.responses]
        lost = set()
        for (p, fence), kvs in zip(fences.items(), ranges, strict=False):
            if not kvs or kvs[0].create_revision != fence:
                lost.add(p)
        rest = ranges[len(fences) :]
        fired_at = self.clock()
        for i, job in enumerate(chunk):
            spec_kvs, cursor_kvs = rest[2 * i], rest[2 * i + 1]
            assert job.pending is not None
            planned = job.pending[1]
            cursor_kv = cursor_kvs[0] if cursor_kvs else None
            if (
                cursor_kv is not None
                and cursor_kv.mod_revision != job.cursor_revision
                and Cursor.from_json(cursor_kv.value) == planned
            ):
                self._landed(job, cursor_kv.mod_revision, fired_at)  # an earlier attempt of ours had landed
                continue
            if job.partition in lost:
                job.pending = None
                continue
            spec_kv = spec_kvs[0] if spec_kvs else None
            if spec_kv is None or spec_kv.mod_revision != job.spec_revision:
                job.pending = None  # changed or deleted: the watch brings the new version
                continue
            if (cursor_kv.mod_revision if cursor_kv else 0) != job.cursor_revision:
                # Someone else moved the cursor (a deleted-and-landed final commit, a restore): adopt it.
                job.pending = None
                job.cursor = Cursor.for_job(job.stored, cursor_kv.value if cursor_kv else None)
                job.cursor_revision = cursor_kv.mod_revision if cursor_kv else 0
            self._schedule(job, self.clock())
        for p in lost:
            await self._inbox.put(("fence_lost", p))


async def run_member(member: Member, stop: Awaitable[None]) -> None:
    """Run ``member`` until ``stop`` resolves, then leave cleanly."""
    await member.start()
    try:
        await stop
    finally:
        await member.stop()
