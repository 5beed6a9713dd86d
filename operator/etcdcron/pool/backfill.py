"""Backfill: fire every tick of a job's schedule in a past (or any) range once, at a bounded rate.

A backfill is a request key (``P/requests/.../backfill-<from>-<to>``, so the same range asked twice is one
backfill) that records how far it got. The member owning the job fires it in steps: each step is one
fenced transaction that moves ``done_until`` and (at-least-once) writes the steps' in-flight records, then
delivers them. A member taking the partition over resumes where the last step landed. Backfilled firings
have ``kind`` backfill and run 0 (not counted), and the key of the tick they stand for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any

from etcdcron import etcd
from etcdcron.errors import EtcdUnavailableError
from etcdcron.etcd import EtcdClient, KeyValue
from etcdcron.firing import BACKFILL, Firing, InFlight, RunRequest, from_ms, to_ms
from etcdcron.keys import Keys
from etcdcron.policy import Delivery
from etcdcron.pool.deliveries import Deliveries
from etcdcron.pool.handoffs import Handoff
from etcdcron.pool.jobtable import JobTable
from etcdcron.pool.reporting import Reporter
from etcdcron.schedule import Schedule

log = logging.getLogger("etcdcron.pool")

MAX_STEP = 100
"""Ticks per step at most (one transaction: the request and a record per tick)."""


def ticks_in_range(schedule: Schedule, after_ms: int, until_ms: int, limit: int) -> list[int]:
    """Ticks in ``(after_ms, until_ms]``, oldest first, at most ``limit``."""
    ticks: list[int] = []
    cursor = after_ms
    while len(ticks) < limit:
        nxt = schedule.next_after(from_ms(cursor))
        if nxt is None or to_ms(nxt) > until_ms:
            break
        cursor = to_ms(nxt)
        ticks.append(cursor)
    return ticks


class Backfills:
    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        table: JobTable,
        deliveries: Deliveries,
        reporter: Reporter,
        member_id: str,
        clock: Callable[[], int],
    ) -> None:
        self.client = client
        self.keys = keys
        self.table = table
        self.deliveries = deliveries
        self.reporter = reporter
        self.member_id = member_id
        self.clock = clock
        self._running: dict[bytes, asyncio.Task[None]] = {}

    def start(self, p: int, spec_key: bytes, kv: KeyValue, request: RunRequest) -> None:
        if kv.key in self._running or request.done:
            return
        self._spawn(kv.key, self._run(p, spec_key, kv.key, kv.mod_revision, kv.lease, request))

    def _spawn(self, key: bytes, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._running[key] = task
        task.add_done_callback(lambda _: self._running.pop(key, None))

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def _run(
        self, p: int, spec_key: bytes, key: bytes, revision: int, lease: int, request: RunRequest
    ) -> None:
        step = min(MAX_STEP, max(1, math.ceil(request.rate)))
        pause = step / request.rate if request.rate > 0 else 1.0
        while not request.done:
            state = self.table.partitions.get(p)
            job = state.jobs.get(spec_key) if state is not None else None
            if state is None or job is None:
                return  # not ours now, or not loaded: the member that loads it resumes
            ticks = ticks_in_range(job.schedule, request.done_until_ms, request.to_ms, step + 1)
            done = len(ticks) <= step
            ticks = ticks[:step]
            request = dataclasses.replace(
                request,
                done_until_ms=ticks[-1] if ticks else request.to_ms,
                done=done,
                member=self.member_id,
            )
            records = [InFlight(job.stored.id, tick, 0, BACKFILL) for tick in ticks]
            prefix = self.keys.sibling(spec_key, "inflight") + b"/"
            at_least_once = job.stored.job.delivery is Delivery.AT_LEAST_ONCE
            ops = [etcd.put(key, request.to_json(), lease)]
            if at_least_once:
                ops += [etcd.put(prefix + r.tag.encode(), r.to_json(), job.stored.lease) for r in records]
            compares = [
                etcd.create_revision_is(self.keys.partition(p), state.fence),
                etcd.mod_revision_is(key, revision),
            ]
            try:
                response = await self.client.txn(compares, ops)
            except EtcdUnavailableError as e:
                await self.reporter.etcd_error(e, job.stored.job)
                return  # outcome unknown: the next load of the partition resumes from what landed
            if not response.succeeded:
                return  # taken over or changed: whoever holds it now goes on
            revision = response.header.revision
            now = self.clock()
            handoffs = [
                Handoff(
                    Firing(
                        job.stored, from_ms(r.tick_ms), from_ms(r.tick_ms), 0, self.member_id, False, BACKFILL
                    ),
                    p,
                    spec_key,
                    prefix + r.tag.encode(),
                    r,
                    at_least_once,
                )
                for r in records
            ]
            if handoffs:
                self.deliveries.start(handoffs, now)
            if not request.done:
                await asyncio.sleep(pause)
        log.info("backfill %s done", key.decode(errors="replace"))
