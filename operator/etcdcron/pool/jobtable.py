"""The job table: the jobs of the partitions a member owns, loaded from a snapshot and kept current by the
jobs watch. Everything read passes the decode boundary: a bad entry is skipped, counted and reported once
per version, never deleted, and never stops the other jobs.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field

from etcdcron import metrics
from etcdcron.decode import BadEntryError, decode_job, job_ref, stored_cursor
from etcdcron.errors import ValidationError
from etcdcron.etcd import KeyValue, WatchBatch
from etcdcron.firing import first_after_ms, first_tick_after_ms, next_tick_ms
from etcdcron.keys import Keys
from etcdcron.pool.commit import JobState
from etcdcron.pool.reporting import Reporter
from etcdcron.pool.timers import TimerQueue
from etcdcron.store import JobStore, PartitionSnapshot


@dataclass(frozen=True, slots=True)
class Loaded:
    carried: list[tuple[JobState, JobState]]  # (before, after) of jobs already loaded, same version
    snapshot: PartitionSnapshot


@dataclass(slots=True)
class Partition:
    """A partition this member owns: its fence and its loaded jobs."""

    fence: int  # create revision of our partition key
    loaded_revision: int = 0
    jobs: dict[bytes, JobState] = field(default_factory=dict)
    bad: dict[bytes, int] = field(default_factory=dict)  # skipped entries: key -> mod revision


class JobTable:
    def __init__(self, store: JobStore, keys: Keys, timers: TimerQueue, reporter: Reporter) -> None:
        self.store = store
        self.keys = keys
        self.timers = timers
        self.reporter = reporter
        self.partitions: dict[int, Partition] = {}
        self._stray: dict[bytes, int] = {}  # bad keys outside every partition's range
        self.on_removed: list[Callable[[int], None]] = []  # told when a partition is no longer ours

    # -- ownership ------------------------------------------------------------------------------------------
    def fences(self) -> dict[int, int]:
        return {p: state.fence for p, state in self.partitions.items()}

    def add(self, p: int, fence: int) -> None:
        self.partitions[p] = Partition(fence)
        metrics.PARTITIONS_OWNED.set(len(self.partitions))

    def remove(self, p: int) -> bool:
        state = self.partitions.pop(p, None)
        if state is None:
            return False
        metrics.PARTITIONS_OWNED.set(len(self.partitions))
        metrics.JOBS_LOADED.dec(len(state.jobs))
        self._count_bad()
        self.timers.sweep(self.live(), self.is_current)
        for hook in self.on_removed:
            hook(p)
        return True

    def clear(self) -> None:
        for p in list(self.partitions):
            self.remove(p)

    def live(self) -> int:
        return sum(len(state.jobs) for state in self.partitions.values())

    def is_current(self, job: JobState) -> bool:
        state = self.partitions.get(job.partition)
        return state is not None and state.jobs.get(job.spec_key) is job

    def finish(self, job: JobState) -> None:
        """The job's last run landed (its spec deleted with it): unload it."""
        state = self.partitions.get(job.partition)
        if state is not None and state.jobs.get(job.spec_key) is job:
            del state.jobs[job.spec_key]
            metrics.JOBS_LOADED.dec()

    # -- loading --------------------------------------------------------------------------------------------
    async def load(self, p: int) -> Loaded | None:
        """(Re)load a partition from one snapshot (None: not ours, or dropped while we read). The result
        pairs jobs loaded before with their new state (same id), so the caller can settle commits whose
        outcome was unknown, and carries the snapshot for what else the partition holds."""
        state = self.partitions.get(p)
        if state is None:
            return None
        snapshot = await self.store.read_partition(p)
        if self.partitions.get(p) is not state:
            return None
        previous = state.jobs
        state.jobs, state.bad = {}, {}
        state.loaded_revision = snapshot.revision
        carried = []
        cursors = snapshot.cursors
        for kv in snapshot.jobs:
            key = kv.key  # one bytes object for the table's key and the job's (each read of kv.key is a copy)
            job = self._upsert(state, key, kv, cursors.get(key))
            if job is not None and previous:
                old = previous.get(key)
                if old is not None and old.stored.id == job.stored.id:
                    carried.append((old, job))
        metrics.JOBS_LOADED.inc(len(state.jobs) - len(previous))
        self._count_bad()
        self.timers.sweep(self.live(), self.is_current)
        _settle_garbage_collector()
        return Loaded(carried, snapshot)

    def apply(self, batch: WatchBatch) -> None:
        """Job changes from the watch; events of partitions we do not own (or loaded after) are ignored."""
        for event in batch.events:
            kv = event.kv
            try:
                p = job_ref(self.keys, kv.key).partition
            except BadEntryError as e:
                if event.is_put:
                    self._stray[kv.key] = kv.mod_revision
                    self.reporter.bad_entry(e, kv.mod_revision)
                else:
                    self._stray.pop(kv.key, None)
                continue
            state = self.partitions.get(p)
            if state is None or kv.mod_revision <= state.loaded_revision:
                continue
            key = kv.key
            if state.jobs.pop(key, None) is not None:
                metrics.JOBS_LOADED.dec()
            state.bad.pop(key, None)
            if event.is_put and self._upsert(state, key, kv, None) is not None:
                # A new version always comes with its cursor deleted (or rewritten) in the same transaction;
                # a cursor kept across versions is read back when a commit is refused.
                metrics.JOBS_LOADED.inc()
        self._count_bad()

    def _upsert(
        self, state: Partition, key: bytes, kv: KeyValue, cursor_kv: KeyValue | None
    ) -> JobState | None:
        """Decode and schedule one job (not counted in ``JOBS_LOADED``: callers count per batch)."""
        try:
            ref, stored = decode_job(self.keys, key, kv.value)
            try:
                schedule = stored.schedule()
            except ValidationError as e:  # e.g. a time zone this machine's tzdata no longer has
                raise BadEntryError(key, f"{e.field}: {e.reason}") from None
            cursor = None if cursor_kv is None else stored_cursor(stored, cursor_kv.key, cursor_kv.value)
        except BadEntryError as e:
            state.bad[key] = kv.mod_revision
            self.reporter.bad_entry(e, kv.mod_revision)
            return None
        max_runs = stored.job.max_runs
        if max_runs is not None and cursor is not None and cursor.runs >= max_runs:
            return None
        job = JobState(
            stored,
            schedule,
            cursor,
            key,
            kv.mod_revision,
            cursor_kv.mod_revision if cursor_kv is not None else 0,
            ref.partition,
        )
        state.jobs[key] = job
        after = first_after_ms(stored, cursor) if cursor is not None else first_tick_after_ms(stored)
        self.timers.push(next_tick_ms(schedule, after, stored), job)
        return job

    def _count_bad(self) -> None:
        metrics.BAD_ENTRIES.set(len(self._stray) + sum(len(s.bad) for s in self.partitions.values()))


def _settle_garbage_collector() -> None:
    """Take what is alive now, the jobs just loaded with it, out of the collector's sight (``gc.freeze``).

    A loaded job lives until its partition is dropped and holds no reference cycle, so refcounting frees it;
    but each full collection would walk every one of them: 10 full collections of up to ~2M objects while a
    member loads 333k jobs (~15% of its start-up CPU), and later a stall of the event loop of ~0.2-0.7 s
    each time one comes due. Young garbage is collected first (cheap), so what is frozen is live; only a
    cycle that died after reaching the oldest generation and before this call is kept for good (a few
    objects per load, none of them jobs).
    """
    gc.collect(1)
    gc.freeze()
