"""Where a committed firing goes. A trigger is any ``async def trigger(firing) -> None``.

``deliver`` runs a trigger under the job's retry policy and hands a final failure to the error handler:
the tick itself is already committed, so it is never silently lost nor fired again by another member.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from etcdcron.firing import Firing
from etcdcron.job import Job

log = logging.getLogger(__name__)

Trigger = Callable[[Firing], Awaitable[None]]
ErrorHandler = Callable[[Job | None, Exception], Awaitable[None] | None]


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


async def deliver(firing: Firing, trigger: Trigger, on_error: ErrorHandler | None) -> bool:
    """Run ``trigger`` with the job's retries; True if it succeeded."""
    job = firing.job.job
    policy = job.retry
    for attempt in range(policy.retries + 1):
        try:
            await trigger(firing)
            return True
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if attempt < policy.retries:
                log.warning(
                    "job %s/%s: trigger failed (attempt %d of %d): %s",
                    job.namespace,
                    job.name,
                    attempt + 1,
                    policy.retries + 1,
                    e,
                )
                await asyncio.sleep(policy.interval.total_seconds())
                continue
            log.error("job %s/%s: trigger failed for tick %s: %s", job.namespace, job.name, firing.key, e)
            await call_handler(on_error, job, e)
    return False
