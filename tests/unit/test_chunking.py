"""Packing firing commits into etcd transactions (etcd refuses more than 128 compares or operations)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from etcdcron.firing import Cursor
from etcdcron.job import Job, StoredJob
from etcdcron.scheduler import TXN_LIMIT, JobState, chunk_by_partition

STORED = StoredJob(Job(name="j", schedule="@daily"), "id", datetime(2026, 1, 1, tzinfo=UTC))


def state(partition: int, i: int) -> JobState:
    return JobState(STORED, STORED.schedule(), Cursor("id"), f"k{i}".encode(), b"c", 1, 0, partition)


@given(st.lists(st.tuples(st.integers(0, 255), st.booleans()), max_size=600))
def test_chunks_respect_etcd_limits_and_keep_every_job(spec: list[tuple[int, bool]]) -> None:
    jobs = [state(p, i) for i, (p, _) in enumerate(spec)]
    completes: dict[int, Any] = {id(j): last for j, (_, last) in zip(jobs, spec, strict=True)}
    chunks = chunk_by_partition(jobs, lambda j: completes[id(j)])
    assert sorted(id(j) for c in chunks for j in c) == sorted(id(j) for j in jobs)
    for chunk in chunks:
        compares = 2 * len(chunk) + len({j.partition for j in chunk})
        ops = sum(2 if completes[id(j)] else 1 for j in chunk)
        assert compares <= TXN_LIMIT and ops <= TXN_LIMIT


def test_one_partition_packs_63_jobs() -> None:
    chunks = chunk_by_partition([state(7, i) for i in range(126)], lambda j: False)
    assert [len(c) for c in chunks] == [63, 63]
