"""Committed firings on their way to the trigger: one task each, so a slow trigger never delays a commit,
and a clean leave can wait for all of them before the member gives up its lease."""

from __future__ import annotations

import asyncio
import logging

from etcdcron import metrics
from etcdcron.dispatch import ErrorHandler, Trigger, deliver
from etcdcron.firing import Firing

log = logging.getLogger("etcdcron.pool")


class Deliveries:
    def __init__(self, trigger: Trigger, on_error: ErrorHandler | None) -> None:
        self.trigger = trigger
        self.on_error = on_error
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, firing: Firing) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(firing))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, firing: Firing) -> None:
        try:
            if not await deliver(firing, self.trigger, self.on_error):
                metrics.DISPATCH_ERRORS.inc()
        except Exception:  # deliver() handles trigger failures; this is a bug, and must not pass unseen
            metrics.DISPATCH_ERRORS.inc()
            log.exception("delivery of %s failed", firing.key)

    async def drain(self, grace: float) -> int:
        """Wait up to ``grace`` seconds for deliveries in progress; returns how many are still running."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        return len(self._tasks)
