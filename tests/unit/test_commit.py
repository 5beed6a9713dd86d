"""The pure commit module: packing into transactions, building them, and resolving a refused one."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from aetcd import rpc
from hypothesis import given, settings
from hypothesis import strategies as st

from etcdcron.etcdops import create_revision_is, delete, mod_revision_is, put
from etcdcron.firing import Cursor, InFlight, Plan
from etcdcron.job import Job, StoredJob
from etcdcron.keys import Keys
from etcdcron.policy import Delivery
from etcdcron.pool.commit import (
    TXN_LIMIT,
    JobState,
    Outcome,
    Readback,
    StoredCursor,
    build_commit,
    chunk_by_partition,
    pending_commit,
    resolve_refused,
)

KEYS = Keys("/p")
STORED = StoredJob(Job(name="j", schedule="@daily", max_runs=3), "id", datetime(2026, 1, 1, tzinfo=UTC))
PLAN = Plan((1000,), 0, 1000, 2000)


def state(partition: int, i: int, *, final: bool = False, name: str | None = None) -> JobState:
    job = JobState(
        STORED,
        STORED.schedule(),
        Cursor("id", runs=2 if final else 0),
        f"/p/jobs/{partition:04d}/t/{name or f'k{i}'}".encode(),
        10,
        20,
        partition,
    )
    job.pending = pending_commit(job, PLAN, 1000, f"c{i}", KEYS)
    assert job.pending.final == final
    return job


@settings(deadline=None)
@given(st.lists(st.tuples(st.integers(0, 255), st.booleans(), st.integers(0, 3)), max_size=600))
def test_chunks_respect_etcd_limits_never_repeat_a_key_and_keep_every_job(
    spec: list[tuple[int, bool, int]],
) -> None:
    # Some jobs share their keys (two states of one job due together must never break a commit).
    jobs = [
        state(p, i, final=final, name="shared" if dup == 0 else None)
        for i, (p, final, dup) in enumerate(spec)
    ]
    chunks = chunk_by_partition(jobs)
    assert sorted(id(j) for c in chunks for j in c) == sorted(id(j) for j in jobs)
    for chunk in chunks:
        compares = 2 * len(chunk) + len({j.partition for j in chunk})
        ops = sum((2 if j.pending and j.pending.final else 1) + 1 for j in chunk)  # + its in-flight record
        assert compares <= TXN_LIMIT and ops <= TXN_LIMIT
        keys = [k for j in chunk for k in (j.spec_key, j.cursor_key)]
        assert len(keys) == len(set(keys))


def test_one_partition_packs_63_jobs() -> None:
    chunks = chunk_by_partition([state(7, i) for i in range(126)])
    assert [len(c) for c in chunks] == [63, 63]


def test_pending_commit_counts_runs_and_marks_the_last() -> None:
    job = state(1, 0)
    assert job.pending is not None
    assert job.pending.cursor == Cursor("id", 1000, 1, 0, "c0", 1000)
    assert state(1, 1, final=True).pending.final  # type: ignore[union-attr]


def test_build_commit_fences_each_partition_once_and_leaves_out_dropped_ones() -> None:
    chunk = [state(1, 0), state(1, 1, final=True), state(2, 2)]
    commit = build_commit(chunk, {1: 111}, KEYS)
    assert [j.spec_key for j in commit.jobs] == [chunk[0].spec_key, chunk[1].spec_key]
    assert commit.fences == {1: 111}
    assert len(commit.request.compare) == 1 + 2 * 2
    # A cursor put and an in-flight record; a final run deletes its spec, puts its cursor and its record.
    assert len(commit.request.success) == 2 + 3
    records = chunk[1].pending.records  # type: ignore[union-attr]
    assert [r.spec for _, r in records] == [STORED.to_json()]
    assert records[0][0] == b"/p/inflight/0001/t/k1/t1000"
    assert chunk[0].pending.records[0][1] == InFlight("id", 1000, 1)  # type: ignore[union-attr]
    written = chunk[0].pending.records[0][1].to_json()  # type: ignore[union-attr]
    assert commit.request.success[1].request_put.value == written  # what the commit writes


def test_at_most_once_commits_write_no_in_flight_record() -> None:
    job = state(1, 0)
    job.stored = StoredJob(replace(STORED.job, delivery=Delivery.AT_MOST_ONCE), "id", STORED.created_at)
    assert len(build_commit([job], {1: 111}, KEYS).request.success) == 1


ME = Cursor("id", 1000, 1, 0, "c0", 1000)  # what state(1, 0) plans to write


@pytest.mark.parametrize(
    ("fence_now", "spec_revision", "cursor", "outcome"),
    [
        (111, 10, StoredCursor(30, ME), Outcome.LANDED),  # our earlier attempt landed
        (None, 10, StoredCursor(30, ME), Outcome.LANDED),  # ... even if the partition moved since
        (None, 10, StoredCursor(20, Cursor("id")), Outcome.FENCE_LOST),
        (999, 10, None, Outcome.FENCE_LOST),
        (111, 11, StoredCursor(20, Cursor("id")), Outcome.CHANGED),
        (111, None, None, Outcome.CHANGED),
        (111, 10, StoredCursor(30, Cursor("id", 1000, 1, 0, "someone-else", 1000)), Outcome.CURSOR_MOVED),
        (111, 10, StoredCursor(30, None), Outcome.CURSOR_MOVED),  # a bad entry now
        (111, 10, StoredCursor(20, Cursor("id")), Outcome.RETRY),  # another job's compare failed
    ],
)
def test_resolve_refused(
    fence_now: int | None, spec_revision: int | None, cursor: StoredCursor | None, outcome: Outcome
) -> None:
    job = state(1, 0)
    commit = build_commit([job], {1: 111}, KEYS)
    refusal = resolve_refused(commit, Readback({1: fence_now}, [spec_revision], [cursor]))
    assert [r.outcome for r in refusal.resolutions] == [outcome]
    assert refusal.lost == (frozenset() if fence_now == 111 else frozenset({1}))


def test_a_commit_is_the_transaction_the_separate_builders_describe() -> None:
    chunk = [state(1, 0), state(1, 1, final=True), state(2, 2)]
    commit = build_commit(chunk, {1: 111, 2: 222}, KEYS)
    compares = [create_revision_is(KEYS.partition(1), 111), create_revision_is(KEYS.partition(2), 222)]
    ops = []
    for job in chunk:
        assert job.pending is not None
        compares += [mod_revision_is(job.spec_key, 10), mod_revision_is(job.cursor_key, 20)]
        ops += [delete(job.spec_key)] if job.pending.final else []
        ops.append(put(job.cursor_key, job.pending.cursor.to_json()))
        ops += [put(key, record.to_json()) for key, record in job.pending.records]
    assert commit.request == rpc.TxnRequest(compare=compares, success=ops)
