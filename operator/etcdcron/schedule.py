"""Schedules as frozen values: parsed (and cached) once, then asked for the next tick many times.

Grammar, DST rules and the engine choice are in docs/schedules.md. Cron expressions are validated by
``cronexpr``, iterated by cronsim on wall-clock times and mapped to instants by ``wallclock`` (Debian cron's
rules: fixed-time jobs follow the wall clock, others real time). ``@every d`` ticks at ``anchor + k*d``.

All instants in and out are timezone-aware; results are UTC and whole seconds.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from etcdcron.cronexpr import MACROS, MAX_EXPR_LEN, bad, canonical, clean
from etcdcron.durations import format_duration, parse_duration
from etcdcron.errors import ValidationError
from etcdcron.wallclock import next_tick, parse

__all__ = [
    "EPOCH",
    "MACROS",
    "MAX_EXPR_LEN",
    "CronSchedule",
    "EverySchedule",
    "Schedule",
    "count_ticks",
    "parse_schedule",
    "ticks_between",
    "zone_of",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""Where ``@every`` ticks are anchored when the caller gives no anchor."""

_WINDOW = 32
"""Consecutive ticks a cron schedule remembers: the many jobs sharing a schedule ask about the same ticks."""

_US = timedelta(microseconds=1)


def _require_aware(t: datetime) -> None:
    if t.tzinfo is None:
        raise ValueError(f"expected a timezone-aware datetime, got naive {t.isoformat()}")


@dataclass(frozen=True, slots=True)
class Schedule(ABC):
    """When a job fires. ``expr`` and ``time_zone`` are as the user gave them."""

    expr: str
    time_zone: str

    @abstractmethod
    def next_after(self, t: datetime) -> datetime | None:
        """The first tick strictly after ``t`` (aware), in UTC; None if there is none (within 50 years)."""

    def next_after_ms(self, after_ms: int) -> int | None:
        """``next_after`` in milliseconds since the epoch (what the timer queue and cursors hold)."""
        nxt = self.next_after(datetime.fromtimestamp(after_ms / 1000, UTC))
        return None if nxt is None else int(nxt.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class EverySchedule(Schedule):
    """``@every <interval>``: ticks at ``anchor + k*interval`` for k >= 1, the same on every member."""

    interval: timedelta
    anchor: datetime  # UTC, whole seconds

    def next_after(self, t: datetime) -> datetime | None:
        """O(1) arithmetic, about 1 µs."""
        _require_aware(t)
        k = max((t - self.anchor) // self.interval + 1, 1)
        try:
            return self.anchor + k * self.interval
        except OverflowError:  # past datetime.max
            return None


class _Window(NamedTuple):
    """Consecutive ticks: ``ticks[0]`` is the first tick after ``lo``, and each tick is the next after the one
    before. Keys are exact integer microseconds since the epoch, for bisect."""

    lo: int
    keys: tuple[int, ...]
    ticks: tuple[datetime, ...]


@dataclass(frozen=True, slots=True)
class CronSchedule(Schedule):
    """A cron expression in a time zone.

    ``next_after`` answers from a small window of remembered consecutive ticks if it can (~1.5 µs), else
    computes the tick (``wallclock.next_tick``, ~20-45 µs, most of it cronsim). Jobs sharing a schedule mostly
    ask about the same ticks, so a member restarting with 330k jobs pays ~3 µs per job (docs/schedules.md).
    The window is replaced as a whole, so concurrent callers at worst recompute a tick.
    """

    cron: str  # the validated 6-field form cronsim reads (seconds first, names as numbers, steps spelled out)
    zone: tzinfo
    fixed_time: bool  # neither minute nor hour starts with '*': Debian cron's DST rules apply (wallclock)
    parsed: CronSim = field(compare=False, hash=False, repr=False)  # wallclock.parse(cron)
    _window: _Window | None = field(default=None, init=False, compare=False, hash=False, repr=False)

    def next_after(self, t: datetime) -> datetime | None:
        _require_aware(t)
        key = (t - EPOCH) // _US
        win = self._window
        if win is not None and win.lo <= key < win.keys[-1]:
            return win.ticks[bisect_right(win.keys, key)]
        # As a plain UTC instant: a caller's own fold (even a meaningless fold=1 on UTC) must not be taken for
        # the second pass through a repeated hour; the zone conversion sets fold itself.
        utc = t.astimezone(UTC).replace(fold=0)
        try:
            nxt = next_tick(self.parsed, self.zone, self.fixed_time, utc)
        except (StopIteration, OverflowError):  # cronsim gives up after 50 years; or past datetime.max
            return None
        object.__setattr__(self, "_window", _grow(win, key, nxt))
        return nxt

    def next_after_ms(self, after_ms: int) -> int | None:
        """From the window without a datetime in or out when it can (a member loading a million jobs asks
        once per job; ticks are whole seconds, so a window key is exact in milliseconds)."""
        key = after_ms * 1000
        win = self._window
        if win is not None and win.lo <= key < win.keys[-1]:
            return win.keys[bisect_right(win.keys, key)] // 1000
        return Schedule.next_after_ms(self, after_ms)


def _grow(win: _Window | None, key: int, nxt: datetime) -> _Window:
    """The window after learning that ``nxt`` is the first tick after ``key``."""
    nxt_key = (nxt - EPOCH) // _US
    if win is not None and key == win.keys[-1]:  # iterating forward: extend, dropping the oldest
        keys, ticks = (*win.keys, nxt_key), (*win.ticks, nxt)
        if len(keys) <= _WINDOW:
            return _Window(win.lo, keys, ticks)
        return _Window(keys[-_WINDOW - 1], keys[-_WINDOW:], ticks[-_WINDOW:])
    if win is not None and key < win.lo and nxt_key == win.keys[0]:  # same next tick: the window reaches back
        return win._replace(lo=key)
    return _Window(key, (nxt_key,), (nxt,))


# -- parsing -----------------------------------------------------------------------------------------------


def parse_schedule(expr: str, time_zone: str = "UTC", *, anchor: datetime | None = None) -> Schedule:
    """Parse and validate a schedule; raises ``ValidationError`` naming ``schedule`` or ``time_zone``.

    ``anchor`` (aware) only matters for ``@every``: ticks are ``anchor + k*interval``, k >= 1, with the anchor
    truncated to whole seconds; without one they are anchored at the Unix epoch. Cron schedules are cached by
    (expr, time_zone), so the many jobs sharing an expression share one value and its tick window.
    """
    parsed = _parse(expr, time_zone)
    if isinstance(parsed, CronSchedule):
        return parsed
    text, interval = parsed
    if anchor is None:
        anchor = EPOCH
    _require_aware(anchor)
    return EverySchedule(text, time_zone, interval, anchor.astimezone(UTC).replace(microsecond=0))


# Large enough that every distinct (expression, zone) of a big pool stays shared: jobs hold their schedule
# anyway, and an evicted one would be parsed again per job, each copy with its own tick window (memory and
# ~100 µs of CPU per job; the 1M-job benchmark with 11,520 distinct schedules showed it). Keyed by the text
# as given: a member loading a million jobs asks about each twice, and a hit must cost nothing more.
@functools.lru_cache(maxsize=1 << 17)
def _parse(expr: str, time_zone: str) -> CronSchedule | tuple[str, timedelta]:
    """A cron schedule (one value for every spelling of an expression), or ``@every``'s text and interval."""
    text = clean(expr)
    words = text.split(maxsplit=1)
    if words and words[0].lower() == "@every":  # any case, like the other macros
        interval = _every_interval(text)
        zone_of(time_zone)
        return text, interval
    return _parse_cron(text, time_zone)


@functools.lru_cache(maxsize=1 << 17)
def _parse_cron(text: str, time_zone: str) -> CronSchedule:
    cron, fixed_time = canonical(text)
    zone = zone_of(time_zone)
    try:  # validation is stricter than cronsim; this keeps "parsed" meaning "cronsim will not raise"
        parsed = parse(cron)
    except CronSimError as e:
        raise bad(f"{text!r} rejected by the cron engine: {e}") from None
    return CronSchedule(text, time_zone, cron, zone, fixed_time, parsed)


def _every_interval(text: str) -> timedelta:
    rest = text[6:].strip()
    if not rest:
        raise bad("@every needs a duration, e.g. '@every 90s'")
    if rest.isascii() and rest.isdigit():  # Go's time.ParseDuration rejects it too: seconds? minutes?
        raise bad(f"@every duration {rest!r} has no unit (write e.g. {rest}s)")
    try:
        interval = parse_duration(rest, "schedule")
    except ValidationError as e:
        raise bad(f"@every duration: {e.reason}") from None
    if interval < timedelta(seconds=1):
        raise bad(f"@every interval must be at least 1s, got {rest!r}")
    if interval % timedelta(seconds=1):
        exact = format_duration(interval)
        raise bad(f"@every interval must be a whole number of seconds, got {rest!r} ({exact})")
    return interval


@functools.lru_cache(maxsize=1024)
def zone_of(time_zone: str) -> tzinfo:
    """The tzinfo for an IANA name. UTC maps to ``datetime.UTC``: its wall clock is the instant itself."""
    if time_zone in ("UTC", "Etc/UTC"):
        return UTC
    try:
        return ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):  # ValueError: not a valid key at all (e.g. a path)
        raise ValidationError("time_zone", f"unknown time zone {time_zone!r}") from None


# -- catch-up helpers ---------------------------------------------------------------------------------------


def ticks_between(schedule: Schedule, after: datetime, until: datetime, limit: int) -> list[datetime]:
    """Ticks in (after, until], oldest first, at most ``limit``: the ticks missed while nobody fired."""
    ticks: list[datetime] = []
    cursor = after
    while len(ticks) < limit:
        nxt = schedule.next_after(cursor)
        if nxt is None or nxt > until:
            break
        ticks.append(nxt)
        cursor = nxt
    return ticks


def count_ticks(schedule: Schedule, after: datetime, until: datetime, limit: int) -> int:
    """How many ticks lie in (after, until], counting at most ``limit``; O(1) for ``@every``."""
    _require_aware(after)
    _require_aware(until)
    if isinstance(schedule, EverySchedule):
        first = max((after - schedule.anchor) // schedule.interval + 1, 1)
        last = (until - schedule.anchor) // schedule.interval
        return max(0, min(last - first + 1, limit))
    return len(ticks_between(schedule, after, until, limit))
