"""Schedules as frozen values: parsed (and cached) once, then asked for the next tick many times.

Grammar, DST rules and the engine choice (cronsim; the evidence against croniter) are in docs/schedules.md.
In short: cron expressions are validated here with precise messages, then iterated by cronsim; fixed-time
jobs (minute and hour fields not starting with ``*``) follow the wall clock with Debian cron's DST rules,
which this module applies itself; all other jobs follow real time. ``@every d`` ticks at ``anchor + k*d``.

All instants in and out are timezone-aware; results are UTC and whole seconds.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import NamedTuple, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from etcdcron.durations import format_duration, parse_duration
from etcdcron.errors import ValidationError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""Where ``@every`` ticks are anchored when the caller gives no anchor."""

MAX_EXPR_LEN = 256
"""Longer expressions are rejected: nothing sensible needs more, and parsing cost stays bounded."""

MACROS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
    "@minutely": "* * * * *",
    "@secondly": "* * * * * *",
}

_WINDOW = 32
"""Consecutive ticks a cron schedule remembers: the many jobs sharing a schedule ask about the same ticks."""

_US = timedelta(microseconds=1)
_SECOND = timedelta(seconds=1)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # a February 29th exists in some years


class _Field(NamedTuple):
    name: str
    lo: int
    hi: int
    names: tuple[str, ...] = ()  # symbolic values, the first meaning ``lo``


_FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field(
        "month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
    ),
    _Field("day-of-week", 0, 7, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),  # 7 is Sunday too
)


def _bad(reason: str) -> ValidationError:
    return ValidationError("schedule", reason)


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
    """A cron expression in a time zone, iterated by cronsim.

    ``next_after`` answers from a small window of remembered consecutive ticks if it can (~1.5 µs), else asks
    cronsim (~45-100 µs, a third of it cronsim re-parsing the expression). Jobs sharing a schedule mostly ask
    about the same ticks, so a member restarting with 330k jobs pays ~3 µs per job (docs/schedules.md). The
    window is replaced as a whole, so concurrent callers at worst recompute a tick.
    """

    cron: str  # the validated 6-field form cronsim reads (seconds first, names as numbers)
    zone: tzinfo
    wall_clock: bool  # a fixed-time job: Debian cron's DST rules apply (see _next_wall_clock)
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
            nxt = self._next_wall_clock(utc) if self.wall_clock else self._next_real_time(utc)
        except (StopIteration, OverflowError):  # cronsim gives up after 50 years; or past datetime.max
            return None
        object.__setattr__(self, "_window", _grow(win, key, nxt))
        return nxt

    def _next_real_time(self, t: datetime) -> datetime:
        """Wildcard jobs fire at every instant whose local wall time matches: each real hour once, and a wall
        time that is skipped (spring forward) is skipped."""
        tick: datetime = next(CronSim(self.cron, t.astimezone(self.zone)))
        return tick.astimezone(UTC)

    def _next_wall_clock(self, t: datetime) -> datetime:
        """Fixed-time jobs, as Debian cron: a repeated wall time fires once (its first occurrence); a skipped
        one fires when the gap ends."""
        zone = self.zone
        local = t.astimezone(zone)
        wall = local.replace(tzinfo=None, fold=0)
        if local.fold:
            # ``t`` is in the second pass through a repeated period, whose wall times all fired in the first
            # pass: search on from the period's last second (the transition is at most one shift before t).
            before, after = _offset(zone, wall), _offset(zone, local)
            now = (t - EPOCH) // _SECOND
            shift = _transition(zone, now - (before - after) // _SECOND, now)
            wall = _EPOCH_NAIVE + shift * _SECOND + before - _SECOND
        return _instant(zone, next(CronSim(self.cron, wall)))


def _offset(zone: tzinfo, dt: datetime) -> timedelta:
    return cast(timedelta, zone.utcoffset(dt))


def _instant(zone: tzinfo, wall: datetime) -> datetime:
    """When a fixed-time job due at naive wall time ``wall`` fires: its first occurrence, or the gap's end."""
    before = _offset(zone, wall)  # fold=0: the offset in force before a transition at ``wall``
    after = _offset(zone, wall.replace(fold=1))
    if before >= after:  # an ordinary or repeated wall time
        return (wall - before).replace(tzinfo=UTC)
    # Skipped: the transition lies in (wall - after, wall - before].
    shift = _transition(
        zone, (wall - after - _EPOCH_NAIVE) // _SECOND, (wall - before - _EPOCH_NAIVE) // _SECOND
    )
    return datetime.fromtimestamp(shift, UTC)


def _transition(zone: tzinfo, lo: int, hi: int) -> int:
    """The first second in (lo, hi] (epoch seconds) whose UTC offset differs from lo's; there must be one."""
    before = datetime.fromtimestamp(lo, zone).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi


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
    text = expr.strip()
    words = text.split(maxsplit=1)
    if words and words[0].lower() == "@every":
        interval = _every_interval(text)
        zone_of(time_zone)
        if anchor is None:
            anchor = EPOCH
        _require_aware(anchor)
        return EverySchedule(text, time_zone, interval, anchor.astimezone(UTC).replace(microsecond=0))
    return _parse_cron(text, time_zone)


# Large enough that every distinct (expression, zone) of a big pool stays shared: jobs hold their schedule
# anyway, and an evicted one would be parsed again per job, each copy with its own tick window (memory and
# ~100 µs of CPU per job; the 1M-job benchmark with 11,520 distinct schedules showed it).
@functools.lru_cache(maxsize=1 << 17)
def _parse_cron(text: str, time_zone: str) -> CronSchedule:
    cron, wall_clock = _canonical(text)
    zone = zone_of(time_zone)
    try:  # parsing above is stricter than cronsim; this keeps "parsed" meaning "cronsim will not raise"
        CronSim(cron, EPOCH)
    except CronSimError as e:
        raise _bad(f"{text!r} rejected by the cron engine: {e}") from None
    return CronSchedule(text, time_zone, cron, zone, wall_clock)


@functools.lru_cache(maxsize=1024)
def _every_interval(text: str) -> timedelta:
    rest = text[6:].strip()
    if not rest:
        raise _bad("@every needs a duration, e.g. '@every 90s'")
    try:
        interval = parse_duration(rest, "schedule")
    except ValidationError as e:
        raise _bad(f"@every duration: {e.reason}") from None
    if interval < timedelta(seconds=1):
        raise _bad(f"@every interval must be at least 1s, got {rest!r}")
    if interval % timedelta(seconds=1):
        raise _bad(
            f"@every interval must be a whole number of seconds, got {rest!r} ({format_duration(interval)})"
        )
    return interval


@functools.lru_cache(maxsize=1024)
def zone_of(time_zone: str) -> tzinfo:
    """The tzinfo for an IANA name. UTC maps to ``datetime.UTC``: cronsim iterates it without conversions."""
    if time_zone in ("UTC", "Etc/UTC"):
        return UTC
    try:
        return ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):  # ValueError: not a valid key at all (e.g. a path)
        raise ValidationError("time_zone", f"unknown time zone {time_zone!r}") from None


def _canonical(text: str) -> tuple[str, bool]:
    """Validate a cron expression or macro: its 6-field form for cronsim, and whether it is fixed-time."""
    if not text:
        raise _bad("must not be empty")
    if len(text) > MAX_EXPR_LEN:
        raise _bad(f"must be at most {MAX_EXPR_LEN} characters, got {len(text)}")
    prefix = text.split("=", 1)[0].upper()
    if "=" in text and prefix in ("CRON_TZ", "TZ"):
        raise _bad(f"{prefix}= prefixes are not supported; set time_zone instead")
    if text.startswith("@"):
        macro = MACROS.get(text.lower())
        if macro is None:
            raise _bad(f"unknown macro {text!r} (known: {', '.join(MACROS)}, @every <duration>)")
        text = macro
    parts = text.split()
    if len(parts) not in (5, 6):
        raise _bad(
            "expected 5 fields (minute hour day-of-month month day-of-week) "
            f"or 6 (second minute hour day-of-month month day-of-week), got {len(parts)}"
        )
    skip = 6 - len(parts)  # a 5-field expression has no seconds field
    fields = [_parse_field(part, pos, _FIELDS[pos - 1 + skip]) for pos, part in enumerate(parts, 1)]
    canon = ["0"] * skip + [c for c, _ in fields]
    dom, month, dow = fields[-3], fields[-2], fields[-1]
    # Vixie/Debian: day-of-month and day-of-week are ANDed if either starts with '*', else ORed.
    day_and = dom[0].startswith("*") or dow[0].startswith("*")
    if day_and and dom[1] is not None and month[1] is not None:
        first_day = min(dom[1])
        if first_day > max(_DAYS_IN_MONTH[m] for m in month[1]):
            raise _bad(
                f"field {len(parts) - 2} (day-of-month) day {first_day} never occurs in the selected months"
            )
    wall_clock = not parts[-5].startswith("*") and not parts[-4].startswith("*")
    return " ".join(canon), wall_clock


def _parse_field(text: str, pos: int, spec: _Field) -> tuple[str, frozenset[int] | None]:
    """One field: its cronsim form, and the plain numbers it selects (None if it uses L, LW or #)."""
    where = f"field {pos} ({spec.name})"
    if text == "?":
        if spec.name not in ("day-of-month", "day-of-week"):
            raise _bad(f"{where} '?' is only allowed in day-of-month and day-of-week")
        text = "*"
    canon: list[str] = []
    values: set[int] | None = set()
    for item in text.split(","):
        if not item:
            raise _bad(f"{where} has an empty list item in {text!r}")
        c, v = _parse_item(item, where, spec)
        canon.append(c)
        values = None if values is None or v is None else values | v
    return ",".join(canon), None if values is None else frozenset(values)


def _parse_item(item: str, where: str, spec: _Field) -> tuple[str, frozenset[int] | None]:
    upper = item.upper()
    if spec.name == "day-of-month" and upper in ("L", "LW"):
        return upper, None
    if spec.name == "day-of-week" and "#" in item:
        day, _, nth = item.partition("#")
        if not (_is_uint(nth) and 1 <= int(nth) <= 5):
            raise _bad(f"{where} '#' must be followed by an occurrence 1-5, got {item!r}")
        return f"{_value(day, item, where, spec)}#{int(nth)}", None
    if spec.name == "day-of-week" and upper.endswith("L"):
        return f"{_value(item[:-1], item, where, spec)}L", None
    base, slash, step_text = item.partition("/")
    if base == "*":
        lo, hi, canon = spec.lo, spec.hi, "*"
    elif "-" in base:
        first, _, last = base.partition("-")
        lo, hi = _value(first, item, where, spec), _value(last, item, where, spec)
        if hi < lo:
            raise _bad(f"{where} range {base!r} is reversed ({lo} > {hi})")
        canon = f"{lo}-{hi}"
    else:
        lo = _value(base, item, where, spec)
        hi = spec.hi if slash else lo  # "5/15" means from 5 to the end, every 15
        canon = str(lo)
    if not slash:
        return canon, frozenset(range(lo, hi + 1))
    span = spec.hi - spec.lo + 1
    if not (_is_uint(step_text) and 1 <= int(step_text) <= span):
        raise _bad(f"{where} step {step_text!r} in {item!r} must be a number from 1 to {span}")
    step = int(step_text)
    return f"{canon}/{step}", frozenset(range(lo, hi + 1, step))


def _value(token: str, item: str, where: str, spec: _Field) -> int:
    if token.upper() in spec.names:
        return spec.lo + spec.names.index(token.upper())
    if not token:
        raise _bad(f"{where} is missing a value in {item!r}")
    if not _is_uint(token):
        raise _bad(f"{where} {token!r} is not a number{' or name' if spec.names else ''}")
    value = int(token)
    if not spec.lo <= value <= spec.hi:
        raise _bad(f"{where} value {value} out of range {spec.lo}-{spec.hi}")
    return value


def _is_uint(s: str) -> bool:
    return s.isascii() and s.isdigit()


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
