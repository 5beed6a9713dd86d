"""Firing commits as values: what each due job commits, how jobs pack into transactions, the requests of
each transaction, and what a refused transaction means for each of its jobs. Pure: no I/O, table-tested.

A transaction's compares are: every partition key's create revision equals the member's fence; every job's
spec and cursor mod revisions are where the member last saw them. Its operations move each cursor (and, on
a job's last run, delete the spec: the final cursor stays as the run state of record until the job is
deleted, so ``max_runs`` stays a ceiling across suspend and re-mirroring by the operator). etcd refuses a
transaction that names a key twice, so a chunk never carries two jobs with the same spec or cursor key. An
at-least-once job's commit also writes an in-flight record per fired tick (deleted when the trigger
succeeds); a final run's record keeps the job's spec, since the commit deletes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from etcdcron.etcdops import TxnBuilder, TxnRequest
from etcdcron.firing import Cursor, InFlight, Plan
from etcdcron.job import StoredJob
from etcdcron.keys import Keys, cursor_of_job_key
from etcdcron.policy import Delivery
from etcdcron.schedule import Schedule

TXN_LIMIT = 128
"""etcd's default --max-txn-ops: the most compares, and the most operations, one transaction may carry."""
TXN_BYTES = 1 << 20
"""Below etcd's default --max-request-bytes (1.5 MiB): a final run's record carries its job's spec."""


@dataclass(frozen=True, slots=True)
class Pending:
    """A commit planned for one job: the ticks it fires and the cursor it writes."""

    plan: Plan
    cursor: Cursor
    final: bool  # the job's last run: its spec is deleted with it
    records: tuple[tuple[bytes, InFlight], ...]  # each fired tick's in-flight record, and its key


@dataclass(slots=True, eq=False)
class JobState:
    """A loaded job: its spec, parsed schedule, run state and the revisions its commit compares.

    A member holds one per job it owns (a third of a million at 1M jobs over 3 members), so it keeps only
    what it cannot derive: the cursor key comes from the spec key, and a job that never fired (no stored
    cursor of this version) holds no cursor object until its first commit (``_cursor`` None).
    """

    stored: StoredJob
    schedule: Schedule
    _cursor: Cursor | None  # None: a fresh cursor, ``Cursor(stored.id)``
    spec_key: bytes
    spec_revision: int
    cursor_revision: int
    partition: int
    pending: Pending | None = None  # a commit planned or sent whose outcome is not known yet

    @property
    def cursor(self) -> Cursor:
        cursor = self._cursor
        return Cursor(self.stored.id) if cursor is None else cursor

    @cursor.setter
    def cursor(self, cursor: Cursor) -> None:
        self._cursor = cursor

    @property
    def cursor_key(self) -> bytes:
        return cursor_of_job_key(self.spec_key)


def pending_commit(job: JobState, plan: Plan, now_ms: int, commit_id: str, keys: Keys) -> Pending:
    """The cursor ``plan`` leads to: runs and misses counted, stamped with this attempt's commit id; and
    the record of each tick it fires (built once: the commit writes them, the deliveries carry them)."""
    cursor = job.cursor
    runs = cursor.runs + len(plan.fire)
    max_runs = job.stored.job.max_runs
    final = max_runs is not None and runs >= max_runs
    return Pending(
        plan,
        Cursor(
            job.stored.id,
            plan.last_tick_ms,
            runs,
            cursor.missed + plan.missed,
            commit_id,
            now_ms if plan.fire else cursor.fired_ms,
        ),
        final,
        tuple(inflight_records(job, plan.fire, final, keys)),
    )


def _final(job: JobState) -> bool:
    return job.pending is not None and job.pending.final


def _at_least_once(job: JobState) -> bool:
    return job.stored.job.delivery is Delivery.AT_LEAST_ONCE


def _cost(job: JobState) -> tuple[int, int]:
    """(operations, bytes) of a job in a commit: its cursor (or, on its last run, the deletes of spec and
    cursor), plus an in-flight record per fired tick when delivery is at-least-once."""
    assert job.pending is not None
    ops = 2 if job.pending.final else 1  # the cursor, and the spec's delete
    size = 256
    if _at_least_once(job):
        ops += len(job.pending.plan.fire)
        size += 160 * len(job.pending.plan.fire)
        if job.pending.final:
            size += len(job.stored.to_json())
    return ops, size


def chunk_by_partition(jobs: Sequence[JobState]) -> list[list[JobState]]:
    """Pack planned jobs into as few transactions as etcd's limits allow, no key twice in one.

    A job costs two compares (spec, cursor) and one operation (two when its last run deletes it); each
    distinct partition in a transaction costs one more compare (its fence). Jobs are taken partition by
    partition, so fences are shared and a transaction carries up to 63 jobs.
    """
    chunks: list[list[JobState]] = []
    deferred: list[JobState] = []
    chunk: list[JobState] = []
    keys: set[bytes] = set()
    partitions: set[int] = set()
    compares = ops = 0
    size = 0
    for job in sorted(jobs, key=lambda j: j.partition):
        if job.spec_key in keys or job.cursor_key in keys:
            deferred.append(job)  # same key twice: etcd would refuse the whole transaction
            continue
        job_ops, job_size = _cost(job)
        job_compares = 2 + (job.partition not in partitions)
        full = compares + job_compares > TXN_LIMIT or ops + job_ops > TXN_LIMIT or size + job_size > TXN_BYTES
        if chunk and full:
            chunks.append(chunk)
            chunk, compares, ops, size, partitions, keys = [], 0, 0, 0, set(), set()
            job_compares = 3
        chunk.append(job)
        keys.update((job.spec_key, job.cursor_key))
        partitions.add(job.partition)
        compares += job_compares
        ops += job_ops
        size += job_size
    if chunk:
        chunks.append(chunk)
    if deferred:
        chunks.extend(chunk_by_partition(deferred))
    return chunks


@dataclass(frozen=True, slots=True)
class Commit:
    """One firing transaction, built ahead of its moment: the jobs, the fences it checks, its request."""

    jobs: list[JobState]
    fences: dict[int, int]
    request: TxnRequest


def inflight_records(
    job: JobState, ticks: tuple[int, ...], final: bool, keys: Keys
) -> list[tuple[bytes, InFlight]]:
    """The in-flight records an at-least-once commit writes, one per fired tick: (key, record)."""
    first_run = job.cursor.runs + 1
    spec = job.stored.to_json() if final else None
    prefix = keys.sibling(job.spec_key, "inflight") + b"/"
    return [
        (
            prefix + record.tag.encode(),
            record,
        )
        for i, tick in enumerate(ticks)
        for record in [
            InFlight(job.stored.id, tick, first_run + i, spec=spec if i == len(ticks) - 1 else None)
        ]
    ]


def build_commit(chunk: Sequence[JobState], fences: Mapping[int, int], keys: Keys) -> Commit:
    """The transaction of one chunk; jobs of partitions no longer in ``fences`` are left out."""
    used = {j.partition: fences[j.partition] for j in chunk if j.partition in fences}
    jobs = [j for j in chunk if j.partition in used]
    txn = TxnBuilder()
    for p, fence in used.items():
        txn.create_revision_is(keys.partition(p), fence)
    for job in jobs:
        pending = job.pending
        assert pending is not None
        lease = job.stored.lease
        txn.mod_revision_is(job.spec_key, job.spec_revision)
        txn.mod_revision_is(job.cursor_key, job.cursor_revision)
        if pending.final:
            txn.delete(job.spec_key)
        txn.put(job.cursor_key, pending.cursor.to_json(), lease)
        if _at_least_once(job):
            for key, record in pending.records:
                txn.put(key, record.to_json(), lease)
    return Commit(jobs, used, txn.request)


# -- a refused commit --------------------------------------------------------------------------------------
class Outcome(Enum):
    LANDED = "landed"  # an earlier attempt of ours had landed (its commit id is in the cursor): dispatch
    FENCE_LOST = "fence lost"  # the partition is no longer ours: forget the plan, fire nothing
    CHANGED = "changed"  # the spec was replaced or deleted: the watch brings the new version
    CURSOR_MOVED = "cursor moved"  # someone else wrote the cursor (a restore, a final commit): adopt it
    RETRY = "retry"  # nothing of this job's explains the refusal (another job's did): plan again now


@dataclass(frozen=True, slots=True)
class StoredCursor:
    """A cursor as read back: its mod revision and value (None: the value is a bad entry)."""

    mod_revision: int
    cursor: Cursor | None


@dataclass(frozen=True, slots=True)
class Readback:
    """What etcd holds now for a refused commit's keys, in the commit's order."""

    fences: Mapping[int, int | None]  # partition -> create revision of its key now (None: gone)
    specs: Sequence[int | None]  # each job's spec mod revision (None: deleted)
    cursors: Sequence[StoredCursor | None]  # each job's cursor (None: none stored)


@dataclass(frozen=True, slots=True)
class Resolution:
    job: JobState
    outcome: Outcome
    cursor: StoredCursor | None  # what to adopt (LANDED, CURSOR_MOVED)


@dataclass(frozen=True, slots=True)
class Refusal:
    lost: frozenset[int]  # partitions whose fence failed
    resolutions: list[Resolution]


def resolve_refused(commit: Commit, readback: Readback) -> Refusal:
    """Why a commit was refused, job by job. Order matters: our own landed commit is recognised first (a
    retry of a commit that had landed before etcd's answer was lost), whatever else changed since."""
    lost = frozenset(p for p, fence in commit.fences.items() if readback.fences.get(p) != fence)
    resolutions = []
    for job, spec_revision, stored in zip(commit.jobs, readback.specs, readback.cursors, strict=True):
        assert job.pending is not None
        stored_revision = stored.mod_revision if stored is not None else 0
        if (
            stored is not None
            and stored_revision != job.cursor_revision
            and stored.cursor == job.pending.cursor
        ):
            outcome = Outcome.LANDED
        elif job.partition in lost:
            outcome = Outcome.FENCE_LOST
        elif spec_revision != job.spec_revision:
            outcome = Outcome.CHANGED
        elif stored_revision != job.cursor_revision:
            outcome = Outcome.CURSOR_MOVED
        else:
            outcome = Outcome.RETRY
        resolutions.append(Resolution(job, outcome, stored))
    return Refusal(lost, resolutions)
