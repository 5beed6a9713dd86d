"""The timer queue: loaded jobs ordered by their next moment, one heap for every partition a member owns.

Entries are never removed in place (a reload or a handover just stops them being current); stale ones are
skipped when popped and swept once they outnumber the live jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Callable

from etcdcron.pool.commit import JobState


class TimerQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, JobState]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, at_ms: int | None, job: JobState) -> None:
        """Wake ``job`` at ``at_ms`` (None: never again)."""
        if at_ms is None:
            return
        if not self._heap or at_ms < self._heap[0][0]:
            self._wake.set()
        heapq.heappush(self._heap, (at_ms, next(self._seq), job))

    def next_at(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, at_ms: int, limit: int, is_current: Callable[[JobState], bool]) -> list[JobState]:
        """Up to ``limit`` current jobs due at or before ``at_ms``, each once."""
        due: dict[int, JobState] = {}
        while self._heap and self._heap[0][0] <= at_ms and len(due) < limit:
            _, _, job = heapq.heappop(self._heap)
            if is_current(job):
                due[id(job)] = job
        return list(due.values())

    def sweep(self, live: int, is_current: Callable[[JobState], bool]) -> None:
        """Drop entries of jobs no longer loaded once they outnumber the live ones (a daily job's stale
        entry would otherwise stay for a day after a reload or a handover)."""
        if len(self._heap) > 2 * live + 1024:
            self._heap = [entry for entry in self._heap if is_current(entry[2])]
            heapq.heapify(self._heap)

    def wake(self) -> None:
        self._wake.set()

    async def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, less if an earlier entry is pushed or ``wake`` is called."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=max(seconds, 0.0005))
