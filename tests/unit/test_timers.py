"""The timer queue: jobs come out by moment, first pushed first, each once, at most ``limit`` a call."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from etcdcron.job import Job, StoredJob
from etcdcron.pool.commit import JobState
from etcdcron.pool.timers import TimerQueue

STORED = StoredJob(Job(name="j", schedule="@daily"), "id", datetime(2026, 1, 1, tzinfo=UTC))


def job(i: int) -> JobState:
    return JobState(STORED, STORED.schedule(), None, f"/p/jobs/0000/t/j{i}".encode(), 1, 0, 0)


@settings(deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 20), st.integers(0, 9)), max_size=80),
    st.integers(0, 25),
    st.integers(1, 30),
    st.sets(st.integers(0, 9)),
)
def test_pop_due_matches_a_sorted_list_of_entries(
    pushes: list[tuple[int, int]], at: int, limit: int, stale: set[int]
) -> None:
    jobs = [job(i) for i in range(10)]
    queue = TimerQueue()
    for moment, i in pushes:
        queue.push(moment, jobs[i])
    assert len(queue) == len(pushes)
    assert queue.next_at() == (min(m for m, _ in pushes) if pushes else None)

    def current(j: JobState) -> bool:
        return jobs.index(j) not in stale

    # The model: entries sorted by moment, then push order; popped one by one until `limit` distinct
    # current jobs are taken (a stale or repeated entry is consumed without counting).
    entries = sorted(enumerate(pushes), key=lambda e: (e[1][0], e[0]))
    expected: list[JobState] = []
    consumed = 0
    for _, (moment, i) in entries:
        if moment > at or len(expected) >= limit:
            break
        consumed += 1
        if i not in stale and jobs[i] not in expected:
            expected.append(jobs[i])
    assert queue.pop_due(at, limit, current) == expected
    assert len(queue) == len(pushes) - consumed
    left = [(m, i) for _, (m, i) in entries[consumed:]]
    assert queue.next_at() == (left[0][0] if left else None)
    assert queue.pop_due(10**9, 10**9, lambda j: True) == list(dict.fromkeys(jobs[i] for _, i in left))


def test_sweep_drops_stale_entries_once_they_outnumber_the_live_ones() -> None:
    queue = TimerQueue()
    live, stale = job(0), job(1)
    for moment in range(3000):
        queue.push(moment % 7, stale)
    queue.push(3, live)
    queue.sweep(1, lambda j: j is live)
    assert len(queue) == 1 and queue.next_at() == 3
    assert queue.pop_due(3, 10, lambda j: True) == [live]


def test_a_push_before_the_earliest_moment_wakes_the_loop() -> None:
    queue = TimerQueue()
    queue.push(100, job(0))
    queue._wake.clear()
    queue.push(100, job(1))
    queue.push(200, job(2))
    assert not queue._wake.is_set()
    queue.push(50, job(3))
    assert queue._wake.is_set()
