"""Committed firings on their way to the trigger: held until their tick (commits are sent ahead of it),
then one task each, so a slow trigger never delays a commit or another firing; a clean leave waits for all
of them before the member gives up its lease."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from etcdcron import metrics
from etcdcron.dispatch import ErrorHandler, Trigger, deliver
from etcdcron.firing import Firing, from_ms

log = logging.getLogger("etcdcron.pool")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Deliveries:
    def __init__(
        self, trigger: Trigger, on_error: ErrorHandler | None, clock: Callable[[], int] = _now_ms
    ) -> None:
        self.trigger = trigger
        self.on_error = on_error
        self.clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, firings: list[Firing], tick_ms: int) -> None:
        """Deliver ``firings`` (all of one tick) at ``tick_ms``, or now if it has passed; each firing's
        ``fired`` is the moment it is handed to the trigger."""
        self._spawn(self._at(firings, tick_ms))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _at(self, firings: list[Firing], tick_ms: int) -> None:
        wait = tick_ms - self.clock()
        if wait > 0:
            await asyncio.sleep(wait / 1000)
        now = self.clock()
        fired = from_ms(now)
        lateness = max(now - tick_ms, 0) / 1000
        for firing in firings:
            metrics.FIRINGS.inc()
            metrics.LATENESS.observe(lateness)
            self._spawn(self._deliver(dataclasses.replace(firing, fired=fired)))

    async def _deliver(self, firing: Firing) -> None:
        try:
            if not await deliver(firing, self.trigger, self.on_error):
                metrics.DISPATCH_ERRORS.inc()
        except Exception:  # deliver() handles trigger failures; this is a bug, and must not pass unseen
            metrics.DISPATCH_ERRORS.inc()
            log.exception("delivery of %s failed", firing.key)

    async def drain(self, grace: float) -> int:
        """Wait up to ``grace`` seconds for deliveries in progress (and those they start); returns how many
        are still running."""
        deadline = asyncio.get_running_loop().time() + grace
        while self._tasks:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            await asyncio.wait(set(self._tasks), timeout=remaining)
        return len(self._tasks)
