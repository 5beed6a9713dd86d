"""Committed firings on their way to the trigger, and what happens after: acknowledgement, retries by the
job's failure policy, parking when no consumer can take them.

A firing is held until its tick (commits are sent ahead of it), then delivered in a task of its own, so a
slow trigger never delays a commit or another firing. At-least-once firings have a record in etcd from
their commit on; it is deleted when the trigger succeeds or the failure policy gives up, and rewritten
with the attempt count and the next attempt's time while it retries, so a member taking over goes on
where this one stopped. At-most-once firings retry in memory only (a retry on another member could repeat
an attempt whose outcome was lost). A parked firing waits, recorded in etcd, until ``deliverable`` is
called with a prefix of its ``<namespace>/<name>``. A clean leave waits for the deliveries in progress.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from etcdcron import metrics
from etcdcron.dispatch import Attempt, ErrorHandler, Trigger, attempt, call_handler, start_attempt
from etcdcron.firing import HistoryEntry, error_text, from_ms, to_ms
from etcdcron.policy import Overlap, TriggerResult
from etcdcron.pool.handoffs import Done, Handoff, Hold
from etcdcron.pool.settlements import Settlements

log = logging.getLogger("etcdcron.pool")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Deliveries:
    def __init__(
        self,
        trigger: Trigger,
        on_error: ErrorHandler | None,
        settlements: Settlements,
        member_id: str,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.trigger = trigger
        self.on_error = on_error
        self.settlements = settlements
        self.member_id = member_id
        self.clock = clock
        self.parked: dict[bytes, Handoff] = {}
        self._active: dict[bytes, int] = {}  # in-flight keys being delivered here -> their partition
        self._settled = asyncio.Event()  # a delivery ended
        self._tasks: set[asyncio.Task[None]] = set()
        self._holds: dict[bytes, Hold] = {}  # spec key -> the overlap job's firing being delivered
        self._due: dict[int, list[Handoff]] = {}  # groups waiting for their moment, by that moment (ms)

    def start(self, handoffs: list[Handoff], not_before_ms: int) -> None:
        """Deliver ``handoffs`` at ``not_before_ms`` (their tick, or a retry's time), or now if passed.
        Everything due at one moment is delivered as one group (a tick's commits land in several)."""
        self._active.update((h.inflight_key, h.partition) for h in handoffs)
        group = self._due.get(not_before_ms)
        if group is not None:
            group.extend(handoffs)
            return
        self._due[not_before_ms] = list(handoffs)
        self._spawn(self._at(not_before_ms))

    def is_active(self, inflight_key: bytes) -> bool:
        return inflight_key in self._active or inflight_key in self.parked

    def busy(self, partition: int) -> bool:
        return partition in self._active.values()

    async def quiesce(self, partition: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s until no firing of ``partition`` is being delivered; False if some is."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.busy(partition):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), remaining)
        return True

    def park(self, handoff: Handoff) -> None:
        self.parked[handoff.inflight_key] = handoff
        metrics.PARKED.set(len(self.parked))

    def deliverable(self, prefixes: Iterable[str]) -> int:
        """A consumer for these ``<namespace>/<name>`` prefixes is there: deliver the firings parked for
        them now. Returns how many."""
        chosen = tuple(prefixes)
        ready = [h for h in self.parked.values() if h.name.startswith(chosen)]
        for h in ready:
            del self.parked[h.inflight_key]
            h.record = dataclasses.replace(h.record, parked=False)
        metrics.PARKED.set(len(self.parked))
        if ready:
            self.start(ready, 0)
        return len(ready)

    def forget(self, partition: int) -> None:
        """A partition moved: its parked firings, and those waiting for an earlier one, are the new
        owner's now (it finds their records)."""
        for key in [k for k, h in self.parked.items() if h.partition == partition]:
            del self.parked[key]
        metrics.PARKED.set(len(self.parked))
        for hold in self._holds.values():
            kept = [h for h in hold.waiting if h.partition != partition]
            for h in hold.waiting:
                if h.partition == partition:
                    self._active.pop(h.inflight_key, None)
            hold.waiting = collections.deque(kept)
        self._settled.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _at(self, not_before_ms: int) -> None:
        wait = not_before_ms - self.clock()
        if wait > 0:
            await asyncio.sleep(wait / 1000)
        group = self._due.pop(not_before_ms)
        # Every trigger first, as close to the moment as the loop allows; then the bookkeeping.
        done: list[Done] = []
        for h in group:
            if h.spec_key in self._holds and h.firing.job.job.overlap is not Overlap.ALLOW:
                self._hold(h)
                continue
            started = self._begin(h)
            if started is not None:
                done.append(started)
        if done and (error := self._flush()) is not None:  # written, not delivered: they failed
            for d in done:
                self._spawn(
                    self._deliver(d.handoff, Attempt(TriggerResult.FAILED, error), d.attempts, d.fired_ms)
                )
            done = []
        for h in group:
            if h.record.attempts == 0 and h.firing.kind == "scheduled":
                metrics.FIRINGS.inc()
                metrics.LATENESS.observe(max(not_before_ms - to_ms(h.firing.scheduled), 0) / 1000)
        for d in done:
            self._succeeded(d)
        if done:
            self._settled.set()

    def _begin(self, h: Handoff) -> Done | None:
        """Call ``h``'s trigger now: what to settle if it succeeded without waiting, else None (a task
        follows it up; for an ``overlap`` job, later ticks are held until it settles)."""
        attempts, now = h.record.attempts + 1, self.clock()
        try:
            started = start_attempt(h.firing.attempted(from_ms(now), attempts), self.trigger)
        except Exception:  # a bug here must not pass unseen, nor keep the others from firing
            self._failed(h)
            return None
        if isinstance(started, Attempt) and started.result is TriggerResult.SUCCESS:
            return Done(h, now, attempts)
        if h.firing.job.job.overlap is not Overlap.ALLOW:
            self._holds[h.spec_key] = Hold(h.inflight_key)
        self._spawn(self._deliver(h, started, attempts, now))
        return None

    def _flush(self) -> Exception | None:
        """A buffering trigger's ``flush`` (see etcdcron.dispatch): None once what it wrote is out."""
        flush = getattr(self.trigger, "flush", None)
        if flush is None:
            return None
        try:
            flush()
        except Exception as e:
            return e
        return None

    def _succeeded(self, d: Done) -> None:
        self._settle(d.handoff, "success", d.attempts, d.fired_ms)
        self._active.pop(d.handoff.inflight_key, None)

    def _hold(self, h: Handoff) -> None:
        """A tick of an ``overlap`` job while an earlier firing of it is being delivered."""
        if h.firing.job.job.overlap is Overlap.WAIT:
            self._holds[h.spec_key].waiting.append(h)
            return
        metrics.SKIPPED.inc()
        log.info("job %s: %s skipped: an earlier firing is still being delivered", h.name, h.firing.key)
        self._settle(h, "skipped", h.record.attempts, self.clock())
        self._active.pop(h.inflight_key, None)
        self._settled.set()

    def _release(self, h: Handoff) -> None:
        """``h`` settled: the ticks of its job that waited for it are delivered now, in order."""
        hold = self._holds.get(h.spec_key)
        if hold is None or hold.holder != h.inflight_key:
            return
        del self._holds[h.spec_key]
        while hold.waiting:
            started = self._begin(hold.waiting.popleft())
            if started is not None:
                self._succeeded(started)
                continue
            follower = self._holds.get(h.spec_key)
            if follower is not None:  # it did not finish at once: the rest wait for it
                follower.waiting.extend(hold.waiting)
                return

    def _failed(self, h: Handoff) -> None:
        metrics.DISPATCH_ERRORS.inc()
        log.exception("delivery of %s failed", h.firing.key)
        self._active.pop(h.inflight_key, None)
        self._settled.set()

    async def _deliver(
        self, h: Handoff, first: Attempt | Awaitable[Attempt], attempts: int, fired_ms: int
    ) -> None:
        try:
            outcome = first if isinstance(first, Attempt) else await first
            if not isinstance(first, Attempt) and outcome.result is TriggerResult.SUCCESS:
                error = self._flush()
                outcome = outcome if error is None else Attempt(TriggerResult.FAILED, error)
            await self._follow_up(h, outcome, attempts, fired_ms)
        except Exception:  # a bug here must not pass unseen, nor take other deliveries down
            self._failed(h)
        finally:
            self._active.pop(h.inflight_key, None)
            self._release(h)
            self._settled.set()

    async def _follow_up(self, h: Handoff, outcome: Attempt, attempts: int, now: int) -> None:
        """Settle, park or retry by the job's failure policy, from the outcome of attempt ``attempts``."""
        job = h.firing.job.job
        policy = job.failure_policy
        while True:
            key = h.firing.key
            if outcome.result is TriggerResult.SUCCESS:
                self._settle(h, "success", attempts, now)
                return
            if outcome.result is TriggerResult.UNDELIVERABLE:
                log.info("job %s: %s undeliverable: parked until a consumer registers", h.name, key)
                h.record = dataclasses.replace(h.record, attempts=attempts, parked=True)
                self._store(h)
                self._history(h, "undeliverable", attempts, now)
                self.park(h)
                return
            delay = None if outcome.final else policy.delay(attempts)
            if delay is None:
                metrics.DISPATCH_ERRORS.inc()
                log.error(
                    "job %s: trigger failed for %s (attempt %d): %s", h.name, key, attempts, outcome.error
                )
                await call_handler(self.on_error, job, outcome.error or RuntimeError("trigger failed"))
                self._settle(h, "failed", attempts, now, error_text(outcome.error))
                return
            log.warning(
                "job %s: trigger failed for %s (attempt %d, next in %s): %s",
                h.name,
                key,
                attempts,
                delay,
                outcome.error,
            )
            next_ms = now + int(delay.total_seconds() * 1000)
            if h.at_least_once:
                h.record = dataclasses.replace(h.record, attempts=attempts, next_attempt_ms=next_ms)
                self._store(h)
            await asyncio.sleep(max(next_ms - self.clock(), 0) / 1000)
            attempts, now = attempts + 1, self.clock()
            outcome = await attempt(h.firing.attempted(from_ms(now), attempts), self.trigger)
            if outcome.result is TriggerResult.SUCCESS and (error := self._flush()) is not None:
                outcome = Attempt(TriggerResult.FAILED, error)

    def _store(self, h: Handoff) -> None:
        lease = h.firing.job.lease
        self.settlements.put(h.partition, h.inflight_key, h.record.to_json(), lease)
        h.stored = True

    def _settle(self, h: Handoff, result: str, attempts: int, fired_ms: int, error: str = "") -> None:
        if h.stored:
            self.settlements.delete(h.partition, h.inflight_key)
        self._history(h, result, attempts, fired_ms, error)

    def _history(self, h: Handoff, result: str, attempts: int, fired_ms: int, error: str = "") -> None:
        f = h.firing
        entry = HistoryEntry(
            to_ms(f.scheduled), fired_ms, self.member_id, f.run, result, attempts, f.kind, error
        )
        self.settlements.record(h.partition, h.spec_key, f.job.id, f.job.lease, entry)

    async def drain(self, grace: float) -> int:
        """Wait up to ``grace`` seconds for deliveries in progress (and those they start); returns how many
        are still running."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._tasks:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.wait(set(self._tasks), timeout=remaining)
        return len(self._tasks)
