"""A slow, obviously-correct reference for cron ticks in a time zone, independent of the engine (issue 8).

It shares no code with ``etcdcron``: transitions and offsets come straight from the TZif file ``zoneinfo``
loads (RFC 8536, read here), matching is a plain set test per field, and ticks come from walking every
wall-clock minute of a window (and, for 6-field expressions, every second the seconds field names) and
applying the documented rules (docs/schedules.md) to the instants each wall time occurs at:

* real-time jobs fire at every occurrence of a wall time they name, never for a skipped one;
* fixed-time jobs fire at the first occurrence; a wall time skipped by a change of under 3 hours fires at
  the instant the change happens (the gap's end);
* across a change of 3 hours or more every job follows real time.
"""

from __future__ import annotations

import bisect
import functools
import os
import struct
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import NamedTuple

CORRECTION = 3 * 3600  # seconds: a clock change this large is a correction, not DST
FIRST, LAST = (
    int(datetime(1970, 1, 1, tzinfo=UTC).timestamp()),
    int(datetime(2038, 1, 1, tzinfo=UTC).timestamp()),
)
_EPOCH = datetime(1970, 1, 1)


# -- zones -------------------------------------------------------------------------------------------------


class Period(NamedTuple):
    """Instants [start, end) (epoch seconds) during which the zone's UTC offset is ``offset`` seconds."""

    start: int
    end: int
    offset: int


def tzif_bytes(key: str) -> bytes:
    """The TZif file zoneinfo uses for ``key``: the first one on TZPATH, else the tzdata package's."""
    for root in zoneinfo.TZPATH:
        path = os.path.join(root, key)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                return f.read()
    return resources.files("tzdata.zoneinfo").joinpath(key).read_bytes()


@functools.cache
def periods(key: str) -> tuple[list[Period], str]:
    """The zone's constant-offset periods (consecutive equal offsets merged) and its footer TZ string.

    The last period runs to the end of time; the footer's rules govern it, which is why callers must not
    look past the last transition in the file if the footer has DST rules (``slim`` files).
    """
    data = tzif_bytes(key)
    assert data[:4] == b"TZif", key

    def counts(at: int) -> tuple[int, ...]:
        return struct.unpack(">6l", data[at + 20 : at + 44])

    isut, isstd, leap, timecnt, typecnt, charcnt = counts(0)
    assert data[4] >= ord("2"), f"{key}: TZif version 1 has no 64-bit data"
    at = 44 + timecnt * 5 + typecnt * 6 + charcnt + leap * 8 + isstd + isut  # skip the 32-bit block
    isut, isstd, leap, timecnt, typecnt, charcnt = counts(at)
    at += 44
    times = struct.unpack(f">{timecnt}q", data[at : at + 8 * timecnt])
    at += 8 * timecnt
    kinds = data[at : at + timecnt]
    at += timecnt
    offsets = [struct.unpack(">lBB", data[at + 6 * i : at + 6 * i + 6])[0] for i in range(typecnt)]
    at += typecnt * 6 + charcnt + leap * 12 + isstd + isut
    footer = data[at:].strip(b"\n").decode()
    out = [Period(-(2**62), 2**62, offsets[0])]  # RFC 8536: type 0 before the first transition
    for t, kind in zip(times, kinds, strict=True):
        if offsets[kind] != out[-1].offset:
            out[-1] = out[-1]._replace(end=t)
            out.append(Period(t, 2**62, offsets[kind]))
    return out, footer


def complete(key: str) -> bool:
    """Whether ``periods(key)`` lists every change up to 2037 without the footer's rules: a footer without
    DST rules adds none, and ``zic -b fat`` files spell out every transition through 2037."""
    ps, footer = periods(key)
    return "," not in footer or datetime.fromtimestamp(ps[-1].start, UTC).year >= 2037


# -- expressions -------------------------------------------------------------------------------------------

_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@minutely": "* * * * *"}


@dataclass(frozen=True)
class Expr:
    """Numbers, ``*``, ranges, steps and lists only: enough for the family the oracle checks."""

    text: str
    seconds: tuple[int, ...]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0-6, Sunday 0
    day_and: bool  # Vixie: AND if either day field starts with '*', else OR
    fixed_time: bool  # neither minute nor hour starts with '*'

    def matches_day(self, w: datetime) -> bool:
        dom, dow = w.day in self.days, w.isoweekday() % 7 in self.weekdays
        return w.month in self.months and (dom and dow if self.day_and else dom or dow)

    def matches(self, w: datetime) -> bool:
        return (
            w.second in self.seconds
            and w.minute in self.minutes
            and w.hour in self.hours
            and self.matches_day(w)
        )


def parse(text: str) -> Expr:
    parts = _MACROS.get(text, text).split()
    if len(parts) == 5:
        parts.insert(0, "0")
    sets = [_field(p, *r) for p, r in zip(parts, _RANGES, strict=True)]
    return Expr(
        text,
        tuple(sorted(sets[0])),
        *map(frozenset, sets[1:5]),
        frozenset(d % 7 for d in sets[5]),
        parts[3].startswith("*") or parts[5].startswith("*"),
        not parts[1].startswith("*") and not parts[2].startswith("*"),
    )


def _field(text: str, lo: int, hi: int) -> set[int]:
    out: set[int] = set()
    for item in text.split(","):
        base, _, step = item.partition("/")
        if base == "*":
            a, b = lo, hi
        elif "-" in base:
            a, b = map(int, base.split("-"))
        else:
            a = int(base)
            b = hi if step else a
        out.update(range(a, b + 1, int(step or 1)))
    return out


# -- ticks -------------------------------------------------------------------------------------------------


def named(expr: Expr, lo: datetime, hi: datetime) -> Iterator[datetime]:
    """The wall times in [lo, hi) the expression names: every minute walked, then the seconds it names."""
    minute = lo.replace(second=0)
    while minute < hi:
        if minute.minute in expr.minutes and minute.hour in expr.hours and expr.matches_day(minute):
            for second in expr.seconds:
                wall = minute + timedelta(seconds=second)
                if lo <= wall < hi:
                    yield wall
        minute += timedelta(minutes=1)


def ticks(expr: Expr, ps: list[Period], lo: datetime, hi: datetime) -> list[int]:
    """Every tick (epoch seconds) coming from a named wall time in [lo, hi) (naive)."""
    return sorted({tick for wall in named(expr, lo, hi) for tick in _fires(expr, ps, wall)})


def _fires(expr: Expr, ps: list[Period], wall: datetime) -> list[int]:
    """The ticks named wall time ``wall`` gives rise to, by the rules in the module docstring."""
    w = (wall - _EPOCH) // timedelta(seconds=1)
    occurs = [i for i, p in enumerate(ps) if p.start <= w - p.offset < p.end]
    if len(occurs) == 1:
        return [w - ps[occurs[0]].offset]
    if len(occurs) == 2:  # the clock fell back over it: consecutive periods
        a, b = ps[occurs[0]], ps[occurs[1]]
        both = [w - a.offset, w - b.offset]
        return both if not expr.fixed_time or a.offset - b.offset >= CORRECTION else both[:1]
    assert not occurs, f"{wall} occurs {len(occurs)} times"
    # Skipped: it lies between the wall clock's end in one period and its start in the next.
    gap = next(
        i for i in range(1, len(ps)) if ps[i - 1].end + ps[i - 1].offset <= w < ps[i].start + ps[i].offset
    )
    if expr.fixed_time and ps[gap].offset - ps[gap - 1].offset < CORRECTION:
        return [ps[gap].start]
    return []


@functools.cache
def _starts(key: str) -> list[int]:
    return [p.start for p in periods(key)[0]]


def wall_of(key: str, instant: int) -> datetime:
    """The naive wall time in zone ``key`` at an instant (epoch seconds)."""
    p = periods(key)[0][bisect.bisect_right(_starts(key), instant) - 1]
    return _EPOCH + timedelta(seconds=instant + p.offset)


def names(expr: Expr, key: str, instant: int) -> bool:
    """Whether a tick at ``instant`` is a wall time the expression names in zone ``key``, or (fixed-time jobs)
    the end of a gap under 3 hours that skipped one: the invariant every engine answer must satisfy."""
    if expr.matches(wall_of(key, instant)):
        return True
    ps, starts = periods(key)[0], _starts(key)
    i = bisect.bisect_left(starts, instant)
    if i == len(ps) or starts[i] != instant or not expr.fixed_time:
        return False
    shift = ps[i].offset - ps[i - 1].offset
    if not 0 < shift < CORRECTION:
        return False
    gap_start = _EPOCH + timedelta(seconds=instant + ps[i - 1].offset)
    return any(True for _ in named(expr, gap_start, gap_start + timedelta(seconds=shift)))
