"""Where a member's handled failures go: one log line, a metric and the user's handler, once each.

A bad entry in etcd is reported once per version (key and mod revision), not on every reload or retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from etcdcron import metrics
from etcdcron.decode import BadEntryError
from etcdcron.dispatch import ErrorHandler, call_handler
from etcdcron.job import Job

log = logging.getLogger("etcdcron.pool")

_REPORTED_MAX = 100_000
"""Versions of bad entries remembered; past this the memory is cleared (and each is reported once more)."""


class Reporter:
    def __init__(
        self, member_id: str, on_error: ErrorHandler | None, on_etcd_error: ErrorHandler | None
    ) -> None:
        self.member_id = member_id
        self.on_error = on_error
        self.on_etcd_error = on_etcd_error
        self._reported: dict[bytes, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def etcd_error(self, error: Exception, job: Job | None = None) -> None:
        metrics.ETCD_ERRORS.inc()
        log.warning("member %s: etcd error: %s", self.member_id, error)
        await call_handler(self.on_etcd_error, job, error)

    def bad_entry(self, error: BadEntryError, revision: int) -> None:
        """Skip-and-report: logged and handed to ``on_error`` the first time this version is seen."""
        if self._reported.get(error.key) == revision:
            return
        if len(self._reported) >= _REPORTED_MAX:
            self._reported.clear()
        self._reported[error.key] = revision
        log.error("member %s: skipping %s", self.member_id, error)
        self._spawn(call_handler(self.on_error, None, error))

    def error(self, job: Job | None, error: Exception) -> None:
        self._spawn(call_handler(self.on_error, job, error))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
