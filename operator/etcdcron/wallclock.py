"""Cron ticks in a time zone: the wall-clock times an expression names, mapped to the instants they occur at.

cronsim iterates plain (naive) wall-clock times; this module alone decides which instants fire. A wall time
occurs at one instant, at two (the clock fell back: PEP 495 ``fold`` 0 then 1) or at none (the clock sprang
forward over it). The rules, as Debian cron (docs/schedules.md):

* real-time jobs (a ``*`` in the minute or hour field) fire at every occurrence, and not for skipped times;
* fixed-time jobs fire at the first occurrence only, and a skipped time fires when the gap ends (the
  transition instant), several skipped times of one gap making one tick;
* a clock change of ``CORRECTION`` or more is a correction, not DST: every job follows real time across it.

Fixing this per zone never converges (30- and 45-minute shifts, midnight transitions, 24-hour jumps); mapping
each wall time through the zone's own fold/gap answers makes every zone the same case.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta, tzinfo
from typing import cast

from cronsim import CronSim

CORRECTION = timedelta(hours=3)
"""Debian cron treats clock changes of 3 hours or more as corrections: "the new time is used immediately"."""

_SECOND = timedelta(seconds=1)
_EPOCH_NAIVE = datetime(1970, 1, 1)


def next_tick(parsed: CronSim, zone: tzinfo, fixed_time: bool, t: datetime) -> datetime:
    """The first tick strictly after ``t`` (aware, UTC, fold 0), in UTC and whole seconds; ``parsed`` is
    from ``parse``.

    Raises StopIteration if cronsim finds no matching wall time within 50 years, OverflowError past
    datetime.max. ``> t`` holds by construction: only occurrences after ``t`` are ever taken.
    """
    wall = t.replace(tzinfo=None)
    if zone is UTC:  # every wall time occurs exactly once
        tick: datetime = next(_walls(parsed, wall))
        return tick.replace(tzinfo=UTC)
    now = (wall - _EPOCH_NAIVE) // _SECOND  # ticks are whole seconds: "after t" is "after now"
    local = datetime.fromtimestamp(now, zone)
    wall = local.replace(tzinfo=None, fold=0)
    best: int | None = None
    first, second = _offset(zone, wall), _offset(zone, wall.replace(fold=1))
    if first != second:  # t's wall time occurs twice: t is in the first pass (fold 0) or the second
        shift = (first - second) // _SECOND
        repeats = not fixed_time or shift * _SECOND >= CORRECTION
        if not local.fold and repeats:
            # The second pass replays wall times from the fold's start, earlier than t's wall time: the first
            # one named fires after t. Later wall times are found below.
            end = _transition(zone, now, now + shift)  # the instant the clock goes back
            start = _wall(end, second) - _SECOND
            best = _first_after(zone, fixed_time, next(_walls(parsed, start)), now)
        elif local.fold and not repeats:
            # Every wall time left in the fold fired in the first pass: go on from the fold's last second.
            end = _transition(zone, now - shift, now)
            wall = _wall(end, first) - _SECOND
    it = _walls(parsed, wall)
    while True:
        # Wall times come in order and their first occurrences too, so the first wall time with a tick after
        # ``now`` has the earliest such tick (the fold case above aside).
        wall = next(it)
        tick_s = _first_after(zone, fixed_time, wall, now)
        if tick_s is not None:
            return datetime.fromtimestamp(tick_s if best is None else min(tick_s, best), UTC)
        first, second = _offset(zone, wall), _offset(zone, wall.replace(fold=1))
        if first < second:  # a skipped wall time that does not fire: nothing in this gap does, jump over it
            at = (wall - _EPOCH_NAIVE) // _SECOND
            end = _transition(zone, at - second // _SECOND, at - first // _SECOND)
            it = _walls(parsed, _wall(end, second) - _SECOND)


_SETS: dict[frozenset[object], frozenset[object]] = {}
_MAX_SETS = 4096  # distinct field sets worth sharing; past that (odd expressions) each keeps its own


@functools.lru_cache(maxsize=1 << 17)
def parse(cron: str) -> CronSim:
    """The parsed expression ``next_tick`` iterates, kept by its schedules: one per expression (the same
    expression in 8 zones is parsed once), its field sets frozen and shared between expressions, so nothing
    can change them by accident. Raises ``CronSimError`` if cronsim rejects the expression."""
    it = CronSim(cron, _EPOCH_NAIVE)
    for name, value in vars(it).items():
        if isinstance(value, set):
            frozen = frozenset(value)
            if len(_SETS) < _MAX_SETS:
                frozen = _SETS.setdefault(frozen, frozen)
            setattr(it, name, _SETS.get(frozen, frozen))
    return it


def _walls(parsed: CronSim, start: datetime) -> CronSim:
    """cronsim's iterator over the wall times after naive ``start``, without parsing the expression again (a
    third of a computed tick): a shallow copy of the parsed one (its attributes, ~1 µs; ``copy.copy`` takes
    5), moved to ``start``. cronsim keeps its position in ``dt`` and only reads the parsed fields
    (tests/unit/test_schedule.py checks both)."""
    it: CronSim = object.__new__(CronSim)
    state = parsed.__dict__.copy()
    state["dt"] = start.replace(microsecond=0)
    it.__dict__ = state
    return it


def _first_after(zone: tzinfo, fixed_time: bool, wall: datetime, now: int) -> int | None:
    """The earliest tick (epoch seconds) after ``now`` that naive ``wall`` gives rise to, if any."""
    first, second = _offset(zone, wall), _offset(zone, wall.replace(fold=1))
    at = (wall - _EPOCH_NAIVE) // _SECOND
    if first == second:  # an ordinary wall time
        tick = at - first // _SECOND
        return tick if tick > now else None
    if first > second:  # repeated: fold 0 uses the earlier (larger) offset, so it is the first occurrence
        tick = at - first // _SECOND
        if tick > now:
            return tick
        if not fixed_time or first - second >= CORRECTION:
            tick = at - second // _SECOND
            return tick if tick > now else None
        return None
    # Skipped: fold 0 applies the offset before the gap, fold 1 the one after; the clock changed in between.
    if not fixed_time or second - first >= CORRECTION:
        return None
    tick = _transition(zone, at - second // _SECOND, at - first // _SECOND)
    return tick if tick > now else None


def _offset(zone: tzinfo, wall: datetime) -> timedelta:
    return cast(timedelta, zone.utcoffset(wall))


def _wall(instant: int, offset: timedelta) -> datetime:
    """The naive wall time of epoch second ``instant`` under ``offset``."""
    return _EPOCH_NAIVE + instant * _SECOND + offset


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
