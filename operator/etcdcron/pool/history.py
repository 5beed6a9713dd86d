"""Each job's recent settled firings (``P/history/...``), appended to as firings settle.

Histories are not loaded with a partition (a member holding 330k daily jobs would hold millions of
entries): the first time a job settles a firing its history is read from etcd, in one batched read with
the others of that flush, and kept in a bounded cache, so a job that fires often is read once and a daily
job once a day.

A job's routine entries (a scheduled firing that succeeded) rewrite its history at most once per
``REWRITE_SECONDS``: a job firing every second would otherwise rewrite its whole history (a few KiB)
every second, the largest write of a firing. Routine rewrites are also paced, ``ROUTINE_WRITES_PER_SECOND``
per member, longest-waiting first: ten thousand jobs firing every second (or due at the same midnight)
would otherwise cost etcd thousands of multi-KiB puts a second; past that rate each job's routine entries
simply wait longer (about jobs / rate seconds). They wait in memory meanwhile; any other entry (a failure,
a skip, a parked firing, a run-now or backfill firing, the first success after one of those) is written
at once with what waits, unpaced, and so is everything when a partition is handed over or the member
leaves.
"""

from __future__ import annotations

import collections
import heapq
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from etcdcron import etcd
from etcdcron.decode import BadEntryError, decode_history
from etcdcron.etcd import EtcdClient
from etcdcron.etcdops import Write
from etcdcron.firing import HISTORY_LENGTH, SCHEDULED, HistoryEntry, history_json
from etcdcron.keys import Keys
from etcdcron.pacing import TokenBucket
from etcdcron.pool.commit import TXN_LIMIT
from etcdcron.pool.reporting import Reporter

CACHED_HISTORIES = 10_000
REWRITE_SECONDS = 5.0
ROUTINE_WRITES_PER_SECOND = 200.0
"""Routine history rewrites a member sends per second, at most (a second's worth may be saved up)."""
BUDGET_GATHER_SECONDS = 0.25
"""When only the pace holds rewrites back, wait at least this long so they go out in batches."""
Cache = collections.OrderedDict[bytes, tuple[str, list[HistoryEntry]]]


@dataclass(slots=True)
class _Pending:
    partition: int
    job_id: str
    lease: int
    since: float  # when its first waiting entry came: the longest-waiting go first
    entries: list[HistoryEntry] = field(default_factory=list)
    urgent: bool = False  # holds an entry worth writing at once (not a routine scheduled success)


class HistoryBook:
    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        reporter: Reporter,
        clock: Callable[[], float] = time.monotonic,
        rate: float = ROUTINE_WRITES_PER_SECOND,
    ) -> None:
        self.client = client
        self.keys = keys
        self.reporter = reporter
        self.clock = clock
        self._written: dict[bytes, float] = {}  # history key -> when this member last wrote it
        self._cache: collections.OrderedDict[bytes, tuple[str, list[HistoryEntry]]] = (
            collections.OrderedDict()
        )
        self._pending: dict[bytes, _Pending] = {}
        self._budget = TokenBucket(rate, rate, clock)

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(self, partition: int, spec_key: bytes, job_id: str, lease: int, entry: HistoryEntry) -> None:
        key = self.keys.sibling(spec_key, "history")
        pending = self._pending.get(key)
        if pending is None or pending.job_id != job_id:
            pending = self._pending[key] = _Pending(partition, job_id, lease, self.clock())
        previous = pending.entries[-1] if pending.entries else self._last_written(key, job_id)
        pending.entries.append(entry)
        del pending.entries[:-HISTORY_LENGTH]  # a long wait keeps only what the history would
        routine = entry.result == "success" and entry.kind == SCHEDULED
        recovered = previous is not None and previous.result != "success"  # a failure is over: say so
        pending.urgent = pending.urgent or not routine or recovered

    def _last_written(self, key: bytes, job_id: str) -> HistoryEntry | None:
        cached = self._cache.get(key)
        return cached[1][-1] if cached and cached[0] == job_id and cached[1] else None

    def forget(self, history_prefix: bytes) -> None:
        """A partition was dropped: another member may write its histories now (what still waits here
        was for a partition no longer ours: its writes would be refused by the fence)."""
        for key in [k for k in self._cache if k.startswith(history_prefix)]:
            del self._cache[key]
        for key in [k for k in self._pending if k.startswith(history_prefix)]:
            del self._pending[key]

    def due_in(self) -> float | None:
        """Seconds until the first waiting history may be written (0: now); None if none waits."""
        if not self._pending:
            return None
        now = self.clock()
        if any(p.urgent for p in self._pending.values()):
            return 0.0
        due = max(min(self._written.get(k, 0.0) + REWRITE_SECONDS - now for k in self._pending), 0.0)
        if due > 0:
            return due
        paced = self._budget.wait_seconds()
        return 0.0 if paced == 0 else max(paced, BUDGET_GATHER_SECONDS)

    async def writes(self, every: Iterable[int] = ()) -> list[tuple[int, bytes, Write]]:
        """The history puts of what settled since the last call: every urgent one and every one of a
        partition in ``every``; routine ones whose history was not written in the last ``REWRITE_SECONDS``
        as far as the pace allows, longest-waiting first (the rest wait; see ``due_in``). Reads the
        histories not cached; raises EtcdUnavailableError, keeping everything for the next call, when etcd
        cannot be read."""
        now, forced = self.clock(), set(every)
        written = self._written
        pending: dict[bytes, _Pending] = {}
        routine: list[bytes] = []
        for key, p in self._pending.items():
            if p.urgent or p.partition in forced:
                pending[key] = p
            elif now - written.get(key, -REWRITE_SECONDS) >= REWRITE_SECONDS:
                routine.append(key)
        if routine:
            allowed = self._budget.take_up_to(len(routine))
            if allowed < len(routine):
                routine = heapq.nsmallest(allowed, routine, key=lambda k: self._pending[k].since)
            pending.update((key, self._pending[key]) for key in routine)
        for key in pending:
            del self._pending[key]
        try:
            await self._read([key for key in pending if key not in self._cache])
        except BaseException:
            for key, p in pending.items():  # unless newer ones came meanwhile, which keep theirs
                self._pending.setdefault(key, p)
            raise
        writes = []
        for key, p in pending.items():
            job_id, entries = self._cache.pop(key, (p.job_id, []))
            entries = (entries if job_id == p.job_id else []) + p.entries
            del entries[:-HISTORY_LENGTH]
            self._cache[key] = (p.job_id, entries)
            written.pop(key, None)
            written[key] = now
            writes.append((p.partition, key, Write(history_json(p.job_id, entries), p.lease)))
        while len(self._cache) > CACHED_HISTORIES:
            self._cache.popitem(last=False)
        while len(written) > CACHED_HISTORIES:  # the oldest writes: long enough ago to be due anyway
            del written[next(iter(written))]
        return writes

    async def _read(self, keys: list[bytes]) -> None:
        for start in range(0, len(keys), TXN_LIMIT):
            chunk = keys[start : start + TXN_LIMIT]
            response = await self.client.txn([], [etcd.get(key) for key in chunk])
            for key, r in zip(chunk, response.responses, strict=True):
                kvs = r.response_range.kvs
                if not kvs:
                    continue
                try:
                    self._cache[key] = decode_history(kvs[0].key, kvs[0].value)
                except BadEntryError as e:  # reported, then written afresh
                    self.reporter.bad_entry(e, kvs[0].mod_revision)
