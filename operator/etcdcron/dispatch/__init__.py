"""Where a committed firing goes. A trigger is any ``async def trigger(firing)`` that returns None (or
``TriggerResult.SUCCESS``) on success, ``TriggerResult.FAILED`` (or raises) on failure, and
``TriggerResult.UNDELIVERABLE`` when no consumer can take it now (the firing is parked until one registers).

Retries and acknowledgement belong to the pool (pool/deliveries.py): they are persisted in etcd so a
takeover goes on where the member that died left off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from etcdcron.firing import Firing
from etcdcron.job import Job
from etcdcron.policy import TriggerResult

log = logging.getLogger(__name__)

Trigger = Callable[[Firing], Awaitable[TriggerResult | None]]
ErrorHandler = Callable[[Job | None, Exception], Awaitable[None] | None]


class TriggerFailed(Exception):
    """A trigger answered ``TriggerResult.FAILED`` without raising."""


async def call_handler(handler: ErrorHandler | None, job: Job | None, error: Exception) -> None:
    """Call a sync or async error handler; a failing handler is logged, never propagated."""
    if handler is None:
        return
    try:
        result = handler(job, error)
        if result is not None:
            await result
    except Exception:
        log.exception("error handler failed")


@dataclass(frozen=True, slots=True)
class Attempt:
    result: TriggerResult
    error: Exception | None = None


async def attempt(firing: Firing, trigger: Trigger) -> Attempt:
    """Call the trigger once; whatever it raises or returns becomes one of three results."""
    try:
        answer = await trigger(firing)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        return Attempt(TriggerResult.FAILED, e)
    if answer is None or answer == TriggerResult.SUCCESS:
        return Attempt(TriggerResult.SUCCESS)
    if answer == TriggerResult.UNDELIVERABLE:
        return Attempt(TriggerResult.UNDELIVERABLE)
    if answer == TriggerResult.FAILED:
        return Attempt(TriggerResult.FAILED, TriggerFailed(f"trigger failed for {firing.key}"))
    return Attempt(TriggerResult.FAILED, TypeError(f"trigger returned {answer!r}, not a TriggerResult"))
