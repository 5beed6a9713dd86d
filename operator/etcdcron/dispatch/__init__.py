"""Where a committed firing goes. A trigger is any ``async def trigger(firing)`` that returns None (or
``TriggerResult.SUCCESS``) on success, ``TriggerResult.FAILED`` (or raises) on failure, and
``TriggerResult.UNDELIVERABLE`` when no consumer can take it now (the firing is parked until one registers).
A trigger may buffer: if it has a ``flush()`` method, the pool calls it after each group of calls (a
tick's firings) and acknowledges none of them before it returned; if it raises, they all failed.
A trigger that knows a retry cannot succeed (the request itself is wrong) raises ``FinalError``: the firing
fails at once, whatever the failure policy.

Retries and acknowledgement belong to the pool (pool/deliveries.py): they are persisted in etcd so a
takeover goes on where the member that died left off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any

from etcdcron.firing import Firing
from etcdcron.job import Job
from etcdcron.policy import TriggerResult

log = logging.getLogger(__name__)

Trigger = Callable[[Firing], Awaitable[TriggerResult | None]]
ErrorHandler = Callable[[Job | None, Exception], Awaitable[None] | None]


class TriggerFailed(Exception):
    """A trigger answered ``TriggerResult.FAILED`` without raising."""


class FinalError(Exception):
    """Raised by a trigger when the same delivery can never succeed (the Kubernetes API server refuses the
    object with a 4xx): the firing fails now, without the retries of its failure policy."""


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

    @property
    def final(self) -> bool:
        """A failure no retry can fix (the trigger raised ``FinalError``)."""
        return isinstance(self.error, FinalError)


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


def start_attempt(firing: Firing, trigger: Trigger) -> Attempt | Coroutine[Any, Any, Attempt]:
    """Call the trigger now and run it until it first waits: its outcome if it never did (a stdout line,
    a queue put), else a coroutine that finishes it, to run as a task.

    A tick's firings are all started this way, one after the other, before any other work: a task per
    firing would put the loop's scheduling, and everything each firing does after its trigger, between
    one firing and the next (Python 3.12's eager tasks do the same; this runs on 3.11)."""
    coro = attempt(firing, trigger)
    try:
        waiting_on = coro.send(None)
    except StopIteration as done:
        result: Attempt = done.value
        return result
    return _finish(_Started(coro, waiting_on))


async def _finish(started: _Started) -> Attempt:
    return await started


class _Started:
    """A coroutine already run to its first wait, to be awaited from there: what ``yield from`` does,
    minus its first ``send(None)``, which ``start_attempt`` made."""

    __slots__ = ("coro", "waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, Attempt], waiting_on: Any) -> None:
        self.coro = coro
        self.waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, Attempt]:
        coro, waiting_on = self.coro, self.waiting_on
        while True:
            try:
                sent = yield waiting_on
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as e:  # a cancellation (or anything thrown in) goes to the trigger
                try:
                    waiting_on = coro.throw(e)
                except StopIteration as done:
                    result: Attempt = done.value
                    return result
            else:
                try:
                    waiting_on = coro.send(sent)
                except StopIteration as done:
                    result = done.value
                    return result
