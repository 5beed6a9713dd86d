"""The elected reconciler's one status writer: keeps etcd and every resource's status true, at a bounded
rate, and deletes resources whose ``ttlSeconds`` passed.

One task, not one per resource: a heap says when each resource is next looked at (``cadence.py``), looks
are paced by one token bucket (``cadence.RATE`` per second) and run a few at a time. A look reads etcd
(re-mirroring if it drifted: ``reconcile``), computes the status *at that moment* (so NEXT is never in the
past when written, however late the look) and writes only what changed. Resources arrive from kopf's
watch (``track``): a new one is looked at soon, a change of meaning (generation, deletion, a dispatch
failure) at once, ahead of routine looks.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from prometheus_client import Counter, Gauge

from etcdcron.controller import cadence
from etcdcron.controller.looks import observe, warn_on_change
from etcdcron.controller.reconcile import Context
from etcdcron.controller.resource import expires_at, utcnow
from etcdcron.controller.status import Observed, desired_status, status_patch
from etcdcron.errors import EtcdCronError
from etcdcron.firing import to_ms
from etcdcron.k8s_resource import GROUP, PLURAL, VERSION, api_error
from etcdcron.pacing import TokenBucket

log = logging.getLogger(__name__)
Ref = tuple[str, str]
WRITES = Counter("etcdcron_status_writes", "Status patches the reconciler sent", ["reason"])
TRACKED = Gauge("etcdcron_status_tracked", "Resources whose status the elected reconciler keeps")
RETRY_SECONDS = 2.0
FOLLOW_SECONDS = 60.0


class StatusKeeper:
    """Status of every resource the elected reconciler serves (see the module docstring)."""

    WORKERS = 16
    """Looks in flight at once (each waits on etcd, then on a status patch in a thread of its own): the
    rate limit, not the API server's latency under load, should be what bounds the writes."""

    def __init__(self, context: Context, rate: float = cadence.RATE, workers: int = WORKERS) -> None:
        self.context = context
        self.rate = rate
        self.bodies: dict[Ref, dict[str, Any]] = {}
        self._heap: list[tuple[int, int, Ref]] = []  # (due ms, sequence, resource)
        self._due: dict[Ref, int] = {}  # the latest due time of each resource (older heap entries are stale)
        self._urgent: deque[Ref] = deque()
        self._queued: set[Ref] = set()
        self._busy: set[Ref] = set()
        self._following: dict[Ref, int] = {}  # resources looked at every refresh interval until (ms)
        self._seq = 0
        self._wake = asyncio.Event()
        self._bucket = TokenBucket(rate, max(rate / 10, 1))
        self._slots = asyncio.Semaphore(workers)
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="status")
        self._failure: BaseException | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- what kopf's watch tells -------------------------------------------------------------------------
    def track(self, body: dict[str, Any], deleted: bool = False) -> None:
        """The latest version of a resource (or its deletion), from the watch or a handler."""
        meta = body["metadata"]
        ref = (meta["namespace"], meta["name"])
        if deleted:
            self.bodies.pop(ref, None)
            self._due.pop(ref, None)
            self._following.pop(ref, None)
            TRACKED.set(len(self.bodies))
            return
        old = self.bodies.get(ref)
        if old is not None and _version(body) < _version(old):
            return  # older than the one our own write returned
        self.bodies[ref] = body
        TRACKED.set(len(self.bodies))
        if old is None:
            spread = int(self.interval().total_seconds() * 1000 * random.random())
            self._schedule(ref, cadence.first_look_ms(body.get("status") or {}, utcnow(), spread))
        elif cadence.meaning(body) != cadence.meaning(old):
            self.look_now(ref)

    def follow(self, ref: Ref, seconds: float = FOLLOW_SECONDS) -> None:
        """Something is about to change that the schedule does not announce (a run-now or backfill
        request): look now and then every refresh interval for ``seconds``, not just once per tick."""
        self._following[ref] = to_ms(utcnow()) + int(seconds * 1000)
        self.look_now(ref)

    def look_now(self, ref: Ref) -> None:
        if ref not in self._queued:
            self._queued.add(ref)
            self._urgent.append(ref)
            self._wake.set()

    def interval(self) -> Any:
        return cadence.refresh_interval(len(self.bodies), self.rate)

    def _schedule(self, ref: Ref, due_ms: int) -> None:
        self._due[ref] = due_ms
        self._seq += 1
        heapq.heappush(self._heap, (due_ms, self._seq, ref))
        self._wake.set()

    # -- the loop ------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Until cancelled; an unexpected error in a look ends it (and so the reconciler), loudly."""
        try:
            while self._failure is None:
                ref = await self._next()
                if ref is None:
                    continue
                await self._bucket.take()
                await self._slots.acquire()
                self._busy.add(ref)
                task = asyncio.create_task(self._look_once(ref))
                self._tasks.add(task)
                task.add_done_callback(self._done)
            raise self._failure
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()
            self._wake.set()

    async def _next(self) -> Ref | None:
        """The next resource to look at: an urgent one, else the earliest due; None to check again."""
        while True:
            while self._urgent:
                ref = self._urgent.popleft()
                self._queued.discard(ref)
                if ref in self.bodies and ref not in self._busy:
                    return ref
                if ref in self._busy:
                    self._schedule(ref, to_ms(utcnow()) + 500)
            while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                heapq.heappop(self._heap)  # stale: rescheduled or gone
            self._wake.clear()
            if self._heap:
                wait_ms = self._heap[0][0] - to_ms(utcnow())
                if wait_ms <= 0:
                    _, _, ref = heapq.heappop(self._heap)
                    del self._due[ref]
                    if ref in self._busy:
                        self._schedule(ref, to_ms(utcnow()) + 500)
                        continue
                    return ref
            else:
                wait_ms = 60_000
            if self._failure is not None:
                return None
            # asyncio.timeout, not wait_for: no inner task, which kopf would cancel as one of its own when
            # it stops (it cancels every task created after it started)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_ms / 1000):
                    await self._wake.wait()

    async def _look_once(self, ref: Ref) -> None:
        try:
            due_ms = await self.look(ref)
        except (EtcdCronError, ApiException) as e:  # 429 under load, etcd away: again shortly
            why = api_error(e) if isinstance(e, ApiException) else str(e)
            log.warning("%s/%s: status not kept now, again in %.0fs: %s", *ref, RETRY_SECONDS, why)
            due_ms = to_ms(utcnow()) + int(RETRY_SECONDS * 1000)
        finally:
            self._busy.discard(ref)
        if due_ms is not None and ref in self.bodies and due_ms < self._due.get(ref, due_ms + 1):
            self._schedule(ref, due_ms)  # not later than a look already due (an urgent one came between)

    async def look(self, ref: Ref) -> int | None:
        """Make etcd and the status of one resource true now; when (ms) to look again (None: never)."""
        body = self.bodies.get(ref)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        now = utcnow()
        expiry = expires_at(body)
        if expiry is not None and now >= expiry:
            await self._expire(body)
            return None
        observed = await observe(body, self.context)
        if observed is None:
            return to_ms(utcnow()) + int(RETRY_SECONDS * 1000)
        before = body.get("status") or {}
        interval = self.interval()
        status, wake_ms = desired_status(body, observed, now, interval)
        wake_ms = cadence.next_look_ms(status, wake_ms, now, interval, expiry)
        changes = status_patch(before, status)
        if changes:
            written = await self._patch(body, changes, "routine")
            if written is not None:
                self.track(written)
            await warn_on_change(body, before, status, self.context)
        final = cadence.completion_look_ms(
            observed.stored, observed.cursor, (body.get("spec") or {}).get("maxRuns"), wake_ms
        )
        if observed.etcd_error is not None:
            wake_ms = min(wake_ms, to_ms(utcnow()) + int(RETRY_SECONDS * 1000))
        now_ms = to_ms(utcnow())
        if self._following.get(ref, 0) > now_ms or observed.bad_entry is not None:
            wake_ms = min(wake_ms, now_ms + int(interval.total_seconds() * 1000))  # a fix shows soon
        elif ref in self._following:
            del self._following[ref]
        return min(wake_ms, final) if final is not None else wake_ms

    async def _patch(
        self, body: dict[str, Any], changes: dict[str, Any], reason: str
    ) -> dict[str, Any] | None:
        """Patch the status subresource; the resource as written (None if it is gone)."""
        meta = body["metadata"]
        api = k8s.CustomObjectsApi(self.context.api)
        loop = asyncio.get_running_loop()
        try:
            written: dict[str, Any] = await loop.run_in_executor(
                self._executor,
                lambda: api.patch_namespaced_custom_object_status(
                    GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], {"status": changes}
                ),
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        WRITES.labels(reason).inc()
        return written

    async def _expire(self, body: dict[str, Any]) -> None:
        """Delete a resource whose ttlSeconds passed (its finalizer then removes the etcd job)."""
        meta = body["metadata"]
        status, _wake = desired_status(body, Observed(None, None), utcnow(), self.interval())
        changes = status_patch(body.get("status") or {}, status)
        if changes:
            await self._patch(body, changes, "expired")
        api = k8s.CustomObjectsApi(self.context.api)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self._executor,
                lambda: api.delete_namespaced_custom_object(
                    GROUP, VERSION, meta["namespace"], PLURAL, meta["name"]
                ),
            )
            log.info("%s/%s: ttlSeconds passed, resource deleted", meta["namespace"], meta["name"])
        except ApiException as e:
            if e.status != 404:
                raise


def _version(body: dict[str, Any]) -> int:
    """The resourceVersion as a number (etcd's revision in practice; 0 if it is not one)."""
    try:
        return int(body["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0
