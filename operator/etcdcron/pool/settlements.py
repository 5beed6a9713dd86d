"""Settling firings in etcd, batched like commits: a delivered at-least-once firing's in-flight record is
deleted (its acknowledgement), a retrying or parked firing's record is rewritten, and each job's history
gets the result. Every write is fenced on its partition: a member that lost a partition writes nothing
there, and the new owner re-delivers what was never acknowledged (at-least-once).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable

from etcdcron import metrics
from etcdcron.errors import EtcdUnavailableError
from etcdcron.etcd import EtcdClient
from etcdcron.etcdops import TxnBuilder, Write
from etcdcron.firing import HistoryEntry
from etcdcron.keys import Keys
from etcdcron.pool.commit import TXN_LIMIT
from etcdcron.pool.history import HistoryBook
from etcdcron.pool.reporting import Reporter

log = logging.getLogger("etcdcron.pool")

GATHER_SECONDS = 0.02
"""Settlements wait this long after the first one so that a tick's acknowledgements go out together."""
RETRY_SECONDS = 0.5
WRITTEN_MAX = 100_000


class Settlements:
    def __init__(
        self, client: EtcdClient, keys: Keys, fences: Callable[[], dict[int, int]], reporter: Reporter
    ) -> None:
        self.client = client
        self.keys = keys
        self.fences = fences
        self.reporter = reporter
        self.history = HistoryBook(client, keys, reporter)
        self._ops: dict[int, dict[bytes, Write]] = {}  # partition -> key -> its latest write
        self._in_transit: set[bytes] = set()  # keys of writes on their way to etcd
        self._transit_by_partition: collections.Counter[int] = collections.Counter()
        self._handing_over: dict[int, int] = {}  # partitions being released -> their fence
        self._sent = asyncio.Event()
        self._written: dict[bytes, int] = {}  # key -> revision at which our last write of it landed
        self._wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()

    # -- what to write --------------------------------------------------------------------------------
    def put(self, partition: int, key: bytes, value: bytes, lease: int = 0) -> None:
        self._queue(partition, key, Write(value, lease))

    def delete(self, partition: int, key: bytes) -> None:
        self._queue(partition, key, Write(None))

    def record(self, partition: int, spec_key: bytes, job_id: str, lease: int, entry: HistoryEntry) -> None:
        """Add a settled firing to its job's history (the last ``HISTORY_LENGTH`` are kept)."""
        self.history.add(partition, spec_key, job_id, lease, entry)
        self.idle.clear()
        self._wake.set()

    def forget(self, partition: int) -> None:
        """A partition was dropped: its cached histories are another member's to write now."""
        self.history.forget(self.keys.history_of_partition(partition))

    async def hand_over(self, partition: int, fence: int, settled: Callable[[], Awaitable[None]]) -> None:
        """Write everything of a partition being released, under its fence, once ``settled`` returns (its
        deliveries are over): what is queued, and what another flush has on its way."""
        self._handing_over[partition] = fence
        try:
            await settled()
            await self.flush({partition: fence})
            while self._transit_by_partition[partition] > 0:
                self._sent.clear()
                await self._sent.wait()
        finally:
            del self._handing_over[partition]

    def settling(self, partition: int, key: bytes, revision: int) -> bool:
        """A write of ``key`` is queued, on its way, or landed after ``revision`` (a snapshot's): a reload
        must not act on what that snapshot still shows of it."""
        queued = key in self._in_transit or key in self._ops.get(partition, {})
        return queued or self._written.get(key, 0) > revision

    def _queue(self, partition: int, key: bytes, op: Write) -> None:
        self._ops.setdefault(partition, {})[key] = op
        self.idle.clear()
        self._wake.set()

    # -- writing --------------------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            waiting = self.history.due_in()  # histories that wait for their next rewrite
            if waiting is None or self._ops:
                await self._wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), waiting)
            await asyncio.sleep(GATHER_SECONDS)
            self._wake.clear()
            if not await self.flush(everything=False):
                await asyncio.sleep(RETRY_SECONDS)
                self._wake.set()

    async def flush(self, only: dict[int, int] | None = None, everything: bool = True) -> bool:
        """Write everything queued (``only``: just these partitions, under these fences); False if etcd
        could not be reached (what failed is queued again). Histories rewritten in the last few seconds
        wait, unless ``everything`` (a partition handed over, a member leaving)."""
        if self.history:
            forced = (only or self.fences()) if everything else ()
            try:
                for partition, key, op in await self.history.writes(forced):
                    self._ops.setdefault(partition, {})[key] = op
            except EtcdUnavailableError as e:
                await self.reporter.etcd_error(e)
                return False
        if only is None:
            pending, self._ops, fences = self._ops, {}, {**self._handing_over, **self.fences()}
        else:
            pending = {p: self._ops.pop(p) for p in only if p in self._ops}
            fences = only
        batches: list[tuple[dict[int, int], list[tuple[int, bytes, Write]]]] = []
        compares: dict[int, int] = {}
        ops: list[tuple[int, bytes, Write]] = []
        for partition, writes in sorted(pending.items()):
            if partition not in fences:
                continue  # no longer ours: the new owner settles from what etcd holds
            for key, op in writes.items():
                if len(ops) >= TXN_LIMIT or (partition not in compares and len(compares) >= TXN_LIMIT):
                    batches.append((compares, ops))
                    compares, ops = {}, []
                compares[partition] = fences[partition]
                ops.append((partition, key, op))
        if ops:
            batches.append((compares, ops))
        sending = {key for _, batch in batches for _, key, _ in batch}
        partitions = [p for _, batch in batches for p, _, _ in batch]
        self._in_transit |= sending
        self._transit_by_partition.update(partitions)
        try:
            results = await asyncio.gather(*(self._send(c, o) for c, o in batches))
        except asyncio.CancelledError:  # stopping: keep what may not have been written for the last flush
            self._requeue([op for _, batch in batches for op in batch])
            raise
        finally:
            self._in_transit -= sending
            self._transit_by_partition.subtract(partitions)
            self._sent.set()
        if not self._ops:
            self.idle.set()
        return all(results)

    def _requeue(self, ops: list[tuple[int, bytes, Write]]) -> None:
        """Write these again later, unless something newer was queued for the same key meanwhile."""
        for partition, key, op in ops:
            self._ops.setdefault(partition, {}).setdefault(key, op)
        if ops:
            self.idle.clear()

    async def _send(self, fences: dict[int, int], ops: list[tuple[int, bytes, Write]]) -> bool:
        txn = TxnBuilder()
        for p, fence in fences.items():
            txn.create_revision_is(self.keys.partition(p), fence)
        for _, key, write in ops:
            txn.write(key, write)
        try:
            response = await self.client.send_txn(txn.request)
        except EtcdUnavailableError as e:
            await self.reporter.etcd_error(e)
            self._requeue(ops)
            return False
        if response.succeeded:
            metrics.SETTLEMENTS.inc(len(ops))
            if len(self._written) > WRITTEN_MAX:  # the oldest half: snapshots older than those are rare
                for key in list(self._written)[: WRITTEN_MAX // 2]:
                    del self._written[key]
            for _, key, _ in ops:
                self._written.pop(key, None)
                self._written[key] = response.header.revision
            return True
        if len(fences) > 1:  # one lost partition refuses the whole batch: the others go on their own
            alone = [({p: fence}, [o for o in ops if o[0] == p]) for p, fence in fences.items()]
            return all(await asyncio.gather(*(self._send(f, o) for f, o in alone)))
        log.info("settlements of partition %s dropped: no longer ours", next(iter(fences)))
        return True
