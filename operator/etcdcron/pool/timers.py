"""The timer queue: loaded jobs ordered by their next moment, one queue for every partition a member owns.

Jobs come due in crowds (every job on a schedule at the same instant), so the queue is a heap of distinct
moments, each with the list of its jobs in the order they were pushed: a push onto a known moment is one
append (no heap entry, tuple or sequence number per job: ~100 bytes less per loaded job at 1M jobs).

Entries are never removed in place (a reload or a handover just stops them being current); stale ones are
skipped when popped and swept once they outnumber the live jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import Callable

from etcdcron.pool.commit import JobState


class TimerQueue:
    def __init__(self) -> None:
        self._moments: list[int] = []  # heap of the distinct moments in ``_due``
        self._due: dict[int, list[JobState]] = {}  # moment -> its jobs, first pushed first; never empty
        self._size = 0
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return self._size

    def push(self, at_ms: int | None, job: JobState) -> None:
        """Wake ``job`` at ``at_ms`` (None: never again)."""
        if at_ms is None:
            return
        jobs = self._due.get(at_ms)
        if jobs is None:
            if not self._moments or at_ms < self._moments[0]:
                self._wake.set()
            self._due[at_ms] = [job]
            heapq.heappush(self._moments, at_ms)
        else:
            jobs.append(job)
        self._size += 1

    def next_at(self) -> int | None:
        return self._moments[0] if self._moments else None

    def pop_due(self, at_ms: int, limit: int, is_current: Callable[[JobState], bool]) -> list[JobState]:
        """Up to ``limit`` current jobs due at or before ``at_ms``, earliest first, each once."""
        due: dict[int, JobState] = {}
        moments = self._moments
        while moments and moments[0] <= at_ms and len(due) < limit:
            moment = moments[0]
            jobs = self._due[moment]
            taken = 0
            for job in jobs:
                if len(due) >= limit:
                    break
                taken += 1
                if is_current(job):
                    due[id(job)] = job
            self._size -= taken
            if taken == len(jobs):
                heapq.heappop(moments)
                del self._due[moment]
            else:
                del jobs[:taken]
        return list(due.values())

    def sweep(self, live: int, is_current: Callable[[JobState], bool]) -> None:
        """Drop entries of jobs no longer loaded once they outnumber the live ones (a daily job's stale
        entry would otherwise stay for a day after a reload or a handover)."""
        if self._size > 2 * live + 1024:
            kept = {at: [j for j in jobs if is_current(j)] for at, jobs in self._due.items()}
            self._due = {at: jobs for at, jobs in kept.items() if jobs}
            self._moments = list(self._due)
            heapq.heapify(self._moments)
            self._size = sum(len(jobs) for jobs in self._due.values())

    def wake(self) -> None:
        self._wake.set()

    async def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, less if an earlier entry is pushed or ``wake`` is called."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=max(seconds, 0.0005))
