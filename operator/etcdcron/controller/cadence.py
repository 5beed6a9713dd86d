"""When the status writer looks at each resource, so the API server gets a bounded rate of writes: pure.

One look at a resource reads etcd and writes its status if it changed. Looks are paced by one budget for
the whole reconciler (``RATE`` writes/s); routine looks (counters, a NEXT that moves on) use ``SHARE`` of it
and the rest is left for changes of meaning (a condition, a new generation, completion, TTL deletion).
So each resource is looked at once per tick of its schedule, just before the NEXT it shows comes
(``LEAD``), and no more often than ``refresh_interval(resources)``: every ``FLOOR`` (5 s) for up to 800
resources, every N / 160 s beyond (about a minute at 10,000; a schedule faster than that shows the first
tick after the next look as NEXT); a schedule slower than ``LONGEST`` is still looked at that often.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from etcdcron.controller.resource import parse_time
from etcdcron.controller.status import LEAD
from etcdcron.errors import ValidationError
from etcdcron.firing import Cursor, first_after_ms, next_scheduled_ms, to_ms
from etcdcron.job import StoredJob

RATE = 200.0
"""Status writes per second the reconciler sends, at most (all resources together)."""
SHARE = 0.8
"""Of ``RATE``, what routine looks may use; the rest is headroom for changes of meaning."""
FLOOR = timedelta(seconds=5)
"""A resource is looked at no more often than this while only its counters move."""
SETTLE = timedelta(milliseconds=600)
"""After a final run's tick, the look waits this long for its commit to land."""
SCAN_LIMIT = 1000
"""At most this many ticks are walked to find when the final run fires (beyond: the routine look)."""
LONGEST = timedelta(minutes=1)
"""A resource whose NEXT is further away than this is still looked at this often (counters, drift)."""


def refresh_interval(resources: int, rate: float = RATE) -> timedelta:
    """How long a resource may go without a look while only its counters move."""
    return max(FLOOR, timedelta(seconds=resources / (rate * SHARE)))


def next_look_ms(
    status: dict[str, Any], wake_ms: int, now: datetime, interval: timedelta, expiry: datetime | None
) -> int:
    """When to look again, from what ``desired_status`` wrote and the look it asked for (``wake_ms``).

    ``desired_status`` looks again after ``interval`` at the latest. When the NEXT it wrote is further
    away than that, only counters can move before it, so the look waits until just before that NEXT
    (``LEAD``), or ``LONGEST`` (or ``interval``, if longer): one look, so one write, per tick."""
    now_ms, step = to_ms(now), _ms(interval)
    if wake_ms < now_ms + step:
        return wake_ms  # a NEXT about to come, an expiry: as asked
    target = now_ms + max(step, _ms(LONGEST))
    shown = status.get("nextScheduleTime")
    if shown:
        target = min(target, to_ms(parse_time(str(shown))) - _ms(LEAD))
    if expiry is not None:
        target = min(target, to_ms(expiry))
    return max(wake_ms, target)


def completion_look_ms(
    stored: StoredJob | None, cursor: Cursor | None, max_runs: Any, before_ms: int
) -> int | None:
    """When to look to write the final state of a job whose ``maxRuns`` run fires before ``before_ms``
    (its tick plus ``SETTLE``), so ``Complete`` shows within a second of it; None otherwise."""
    if stored is None or cursor is None or max_runs is None:
        return None
    remaining = int(max_runs) - cursor.runs
    if remaining <= 0 or remaining > SCAN_LIMIT:
        return None
    try:
        schedule = stored.schedule()
    except ValidationError:
        return None
    nominal: int | None = first_after_ms(stored, cursor)
    for _ in range(remaining):
        assert nominal is not None
        nominal = next_scheduled_ms(schedule, nominal, stored)
        if nominal is None or nominal + stored.offset_ms > before_ms:
            return None
    assert nominal is not None
    return nominal + stored.offset_ms + _ms(SETTLE)


def first_look_ms(status: dict[str, Any], now: datetime, spread_ms: int) -> int:
    """When to look at a resource first seen (a new leader lists them all): at once if its status shows no
    NEXT, else before that NEXT comes and within ``spread_ms`` (so a takeover of many is spread out)."""
    now_ms = to_ms(now)
    shown = status.get("nextScheduleTime")
    if not shown or not status.get("conditions"):
        return now_ms
    due = to_ms(parse_time(str(shown))) - _ms(LEAD)
    return max(now_ms, min(due, now_ms + spread_ms))


def meaning(body: dict[str, Any]) -> tuple[Any, ...]:
    """What, in a resource seen on the watch, calls for a look at once rather than at its routine time:
    a new generation, a deletion, a dispatch failure set or cleared by a replica."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    failure = (status.get("dispatchFailure") or {}).get("message")
    return meta.get("generation"), bool(meta.get("deletionTimestamp")), failure


def _ms(delta: timedelta) -> int:
    return int(delta / timedelta(milliseconds=1))
