"""The engine against the independent oracle (schedule_oracle.py) around every UTC-offset change of every IANA
zone from 1970 to 2037.

Transitions are deduplicated by (instant, offset before, offset after): zones sharing one behave the same in
a window of hours (transitions are days apart), so each is checked once, in the first zone that has it.
Every unique transition gets the core expressions (every minute; a fixed time inside the gap or repeated
period); the zones named in issue 8 and one transition per behaviour class (local wall time of
the change, offsets, weekday) gets the whole family. ``ETCDCRON_ORACLE=full`` runs the whole family on
every unique transition (4 minutes here; not in the default suite); ``ETCDCRON_ORACLE=all`` does so on every
transition of every zone, shared ones again.

In each window of instants (A, B] the engine's ``ticks_between`` must equal the oracle's ticks, and
``next_after`` with nothing remembered, from A, from each tick and from instants chosen inside folds and
gaps, must give the oracle's next tick, or one after B. Every answer must be strictly after its query and
name a wall time of the expression (or be the end of a gap that skipped one, for fixed-time jobs).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import zoneinfo
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest
import schedule_oracle as oracle
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from etcdcron.errors import ValidationError
from etcdcron.schedule import CronSchedule, parse_schedule, ticks_between

MODE = os.environ.get("ETCDCRON_ORACLE", "")
FULL = MODE in ("full", "all")  # the whole family on every transition (minutes)
DEDUPE = MODE != "all"  # "all": every zone's own transitions too, shared ones again (tens of minutes)
_EPOCH = datetime(1970, 1, 1)
H = 3600


class Transition(NamedTuple):
    zone: str  # the first zone (sorted) that has it
    index: int  # of the period that starts at ``at`` in oracle.periods(zone)
    at: int  # epoch seconds
    before: int  # UTC offsets, seconds
    after: int
    zones: int  # how many zones have this exact transition

    @property
    def shift(self) -> int:
        return self.after - self.before

    def wall(self, offset: int) -> datetime:
        """The wall clock at the change read with ``offset``: where it leaves (before) or lands (after)."""
        return _EPOCH + timedelta(seconds=self.at + offset)


class Coverage(NamedTuple):
    zones: int
    transitions: int  # over all zones, with repeats
    unique: list[Transition]


@functools.cache
def coverage() -> Coverage:
    seen: dict[tuple[int, ...], Transition] = {}
    total = 0
    zones = sorted(zoneinfo.available_timezones())
    for zone in zones:
        ps, _ = oracle.periods(zone)
        assert oracle.complete(zone), f"{zone}: a slim TZif file; the oracle reads transitions, not rules"
        for i in range(1, len(ps)):
            p, q = ps[i - 1], ps[i]
            if oracle.FIRST <= q.start < oracle.LAST:
                total += 1
                key = (q.start, p.offset, q.offset)
                old = seen.get(key) if DEDUPE else None
                if old is None:
                    seen[key if DEDUPE else (*key, total)] = Transition(zone, i, *key, 1)
                else:
                    seen[key] = old._replace(zones=old.zones + 1)
    return Coverage(len(zones), total, sorted(seen.values(), key=lambda t: (t.zone, t.at)))


def behaviour_classes() -> list[Transition]:
    """One transition per (wall time of the change, sub-hour part of the offset, shift, weekday)."""
    out: dict[tuple[object, ...], Transition] = {}
    for tr in coverage().unique:
        wall = tr.wall(tr.before)
        out.setdefault((wall.time(), tr.before % H, tr.shift, wall.weekday()), tr)
    return list(out.values())


# -- the family of expressions around one transition ------------------------------------------------------


class Check(NamedTuple):
    expr: str
    windows: list[tuple[int, int]]  # instants (A, B], epoch seconds


def _hm(w: datetime) -> str:
    return f"{w.minute} {w.hour}"


def family(tr: Transition, full: bool) -> Iterator[Check]:
    s = abs(tr.shift)
    crit = [tr.at] if tr.shift > 0 else [tr.at - s, tr.at, tr.at + s]  # where walls jump or start repeating
    lo, hi = min(tr.wall(tr.before), tr.wall(tr.after)), max(tr.wall(tr.before), tr.wall(tr.after))
    mid = lo + (hi - lo) / 2
    around = [(tr.at - s - H, tr.at + s + H)] if s <= 6 * H else [(c - H, c + H) for c in crit]

    def near(d: int) -> list[tuple[int, int]]:
        return [(c - d, c + d) for c in crit]

    minute = timedelta(minutes=1)
    yield Check("* * * * *", near(150))
    yield Check(f"{_hm(mid)} * * *", around)  # a fixed time in the gap or fold
    if not full:
        return
    yield Check(f"*/30 {(lo - minute).hour},{lo.hour},{mid.hour},{hi.hour} * * *", around)
    yield Check("*/15 * * * *", near(1200))
    yield Check("@hourly", near(3700))
    for w in (lo - minute, lo, hi - minute, hi, hi + minute):
        yield Check(f"{_hm(w)} * * *", around)
    span = min(24, (hi - lo) // timedelta(hours=1) + 1)
    hours = sorted({(lo + timedelta(hours=k)).hour for k in range(span)})
    yield Check(f"0,15,30,45 {','.join(map(str, hours))} * * *", around)  # several skipped times: one tick
    yield Check("@daily", near(2 * H))
    for day in sorted({(lo - minute).isoweekday() % 7, hi.isoweekday() % 7}):
        yield Check(f"0 */6 * * {day}", near(3 * H))  # real time on one weekday (bug D)
        yield Check(f"0 0 * * {day}", near(3 * H))
    yield Check("*/20 * * * * *", near(90))
    yield Check(f"15 {_hm(lo)} * * *", around)
    yield Check(f"15 {_hm(mid)} * * *", around)


# -- comparing ---------------------------------------------------------------------------------------------


def _utc(instant: float) -> datetime:
    return datetime.fromtimestamp(instant, UTC)


def _fresh(s: CronSchedule) -> CronSchedule:
    return dataclasses.replace(s)


def check(tr: Transition, c: Check) -> int:
    """Compare engine and oracle for one expression around one transition; the number of ticks compared."""
    ps, _ = oracle.periods(tr.zone)
    ps = ps[max(0, tr.index - 2) : tr.index + 2]
    expr = oracle.parse(c.expr)
    schedule = parse_schedule(c.expr, tr.zone)
    assert isinstance(schedule, CronSchedule)
    where = f"{tr.zone} transition {_utc(tr.at).isoformat()} ({tr.before}s -> {tr.after}s) {c.expr!r}"
    compared = 0
    for a, b in c.windows:
        pad = timedelta(minutes=2)
        lo_wall = min(tr.wall(tr.before), tr.wall(tr.after)) - timedelta(seconds=tr.at - a) - pad
        hi_wall = max(tr.wall(tr.before), tr.wall(tr.after)) + timedelta(seconds=b - tr.at) + pad
        want = [x for x in oracle.ticks(expr, ps, lo_wall, hi_wall) if a < x <= b]
        got = ticks_between(_fresh(schedule), _utc(a), _utc(b), 10_000)
        assert [int(x.timestamp()) for x in got] == want, where
        compared += len(want)
        queries = {a + 0.5, tr.at - 1, tr.at - 0.25, tr.at, tr.at + 1, (a + b) / 2, b - 0.5}
        queries |= set(want[:-1])  # from each tick, nothing remembered: ticks_between is repeated next_after
        if len(want) <= 4:
            queries |= {x - 0.5 for x in want}
        for q in sorted(x for x in queries if a <= x < b):
            tick = _fresh(schedule).next_after(_utc(q))
            assert tick is not None, where
            t = tick.timestamp()
            assert t > q and t == int(t), f"{where}: next_after({_utc(q)}) = {tick}"
            assert oracle.names(expr, tr.zone, int(t)), f"{where}: {tick} is not named"
            expected = next((x for x in want if x > q), None)
            if expected is None:
                assert t > b, f"{where}: next_after({_utc(q)}) = {tick}, the oracle has none up to {_utc(b)}"
            else:
                assert t == expected, f"{where}: next_after({_utc(q)}) = {tick}, oracle {_utc(expected)}"
    return compared


def run(transitions: list[Transition], full: bool) -> tuple[int, int, int]:
    exprs: set[str] = set()
    checks = ticks = 0
    for tr in transitions:
        for c in family(tr, full):
            ticks += check(tr, c)
            checks += 1
            exprs.add(c.expr)
    return checks, len(exprs), ticks


@pytest.mark.timeout(0 if FULL else 300)  # full and all modes take minutes
def test_every_transition_of_every_zone_core_family() -> None:
    cov = coverage()
    assert cov.zones > 500 and len(cov.unique) > 5000  # the tz database is all there
    checks, exprs, ticks = run(cov.unique, FULL)
    print(f"\n{cov.zones} zones, {cov.transitions} transitions, {len(cov.unique)} unique: "
          f"{checks} checks, {exprs} distinct expressions, {ticks} ticks compared")  # fmt: skip


def test_one_transition_per_behaviour_class_whole_family() -> None:
    classes = behaviour_classes()
    checks, exprs, ticks = run(classes, True)
    print(f"\n{len(classes)} behaviour classes: {checks} checks, {exprs} distinct expressions, {ticks} ticks")


def zone_transitions(zone: str) -> list[Transition]:
    ps, _ = oracle.periods(zone)
    return [
        Transition(zone, i, ps[i].start, ps[i - 1].offset, ps[i].offset, 1)
        for i in range(1, len(ps))
        if oracle.FIRST <= ps[i].start < oracle.LAST
    ]


@pytest.mark.parametrize("zone", ["Pacific/Chatham", "Australia/Lord_Howe", "Asia/Pyongyang", "Pacific/Apia"])
def test_zones_named_in_issue_8_whole_family(zone: str) -> None:
    transitions = zone_transitions(zone)
    if not FULL and len(transitions) > 30:  # all of them get the core family anyway
        transitions = transitions[::4]
    checks, exprs, ticks = run(transitions, True)
    assert ticks > 0
    print(f"\n{zone}: {len(transitions)} transitions, {checks} checks, {exprs} expressions, {ticks} ticks")


def test_the_oracle_reads_what_zoneinfo_reads() -> None:
    """Its transitions and offsets are the ones the engine sees, so a disagreement is the engine's."""
    for tr in coverage().unique[:: 1 if FULL else 7]:
        zone = zoneinfo.ZoneInfo(tr.zone)
        assert _utc(tr.at - 1).astimezone(zone).utcoffset() == timedelta(seconds=tr.before), tr
        assert _utc(tr.at).astimezone(zone).utcoffset() == timedelta(seconds=tr.after), tr


# -- random expressions at random instants near random transitions ----------------------------------------


def _items(lo: int, hi: int) -> st.SearchStrategy[str]:
    num = st.integers(lo, hi)
    step = st.integers(1, min(20, hi - lo + 1))
    pair = st.tuples(num, num).map(sorted)
    item = st.one_of(
        st.just("*"),
        st.integers(1, hi - lo + 1).map(lambda s: f"*/{s}"),
        num.map(str),
        st.tuples(num, step).map(lambda p: f"{p[0]}/{p[1]}"),
        pair.map(lambda p: f"{p[0]}-{p[1]}"),
        st.tuples(pair, step).map(lambda p: f"{p[0][0]}-{p[0][1]}/{p[1]}"),
    )
    return st.lists(item, min_size=1, max_size=3).map(",".join)


def _mostly_star(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.one_of(st.just("*"), st.just("*"), _items(lo, hi))


expressions = st.tuples(
    st.one_of(
        st.none(), st.sampled_from(["0", "*/20", "7,37", "0-5", "30"])
    ),  # seconds: few, the walk is per second
    _items(0, 59),
    _items(0, 23),
    _mostly_star(1, 31),
    _mostly_star(1, 12),
    _mostly_star(0, 7),
).map(lambda f: " ".join(x for x in f if x is not None))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(range(len(coverage().unique))),
    expressions,
    st.floats(-3 * H, 3 * H, allow_nan=False),
)
def test_random_expressions_near_random_transitions(index: int, expr_text: str, offset: float) -> None:
    """next_after from any instant within 3 h of a change is the oracle's first tick after it (looking a day
    ahead), or lies beyond that day."""
    tr = coverage().unique[index]
    ps, _ = oracle.periods(tr.zone)
    q = _utc(tr.at + offset).timestamp()  # the instant as a datetime holds it (microseconds)
    horizon = int(q) + 24 * H
    lo = min(p.offset for p in ps[tr.index - 1 : tr.index + 1])
    hi = max(p.offset for p in ps[tr.index - 1 : tr.index + 2])
    walls = _EPOCH + timedelta(seconds=int(q) + lo - 60), _EPOCH + timedelta(seconds=horizon + hi + 60)
    expr = oracle.parse(expr_text)
    want = next(
        (x for x in oracle.ticks(expr, ps[max(0, tr.index - 2) : tr.index + 3], *walls) if x > q), None
    )
    try:
        schedule = parse_schedule(expr_text, tr.zone)
    except ValidationError as e:  # "0 0 30 2 *": a day no selected month has, ANDed (docs/schedules.md)
        assert e.reason.endswith("never occurs in the selected months"), e.reason
        assume(False)
    tick = schedule.next_after(_utc(q))
    where = f"{tr.zone} {expr_text!r} after {_utc(q)}"
    if want is not None and want <= horizon:
        assert tick == _utc(want), where
    else:
        assert tick is None or tick > _utc(horizon), where
    if tick is not None:
        assert tick > _utc(q), where
        assert oracle.names(expr, tr.zone, int(tick.timestamp())), where
