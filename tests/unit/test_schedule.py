from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest
import schedule_oracle as oracle
from cronsim import CronSim
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from etcdcron.errors import ValidationError
from etcdcron.schedule import (
    EPOCH,
    MACROS,
    CronSchedule,
    EverySchedule,
    Schedule,
    count_ticks,
    parse_schedule,
    ticks_between,
    zone_of,
)
from etcdcron.wallclock import _walls, parse


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso).astimezone(UTC)


def fresh(schedule: Schedule) -> Schedule:
    """An equal schedule with nothing remembered: answers must not depend on the tick window."""
    return dataclasses.replace(schedule)


# -- DST: the table that chose the engine (see docs/schedules.md) ------------------------------------------


class DstCase(NamedTuple):
    id: str
    zone: str
    expr: str
    after: str  # ticks strictly after this instant...
    until: str  # ...and at or before this one
    expected: tuple[str, ...]


NY = "America/New_York"
DST_CASES = [
    # America/New_York 2026: spring forward 03-08 02:00 EST -> 03:00 EDT; fall back 11-01 02:00 -> 01:00.
    DstCase("ny-fall-daily-0130", NY, "30 1 * * *", "2026-10-31T12:00-04:00", "2026-11-02T12:00-05:00", (
        "2026-11-01T01:30-04:00", "2026-11-02T01:30-05:00",
    )),
    DstCase("ny-fall-daily-6field", NY, "0 30 1 * * *", "2026-10-31T12:00-04:00", "2026-11-02T12:00-05:00", (
        "2026-11-01T01:30-04:00", "2026-11-02T01:30-05:00",
    )),
    DstCase("ny-fall-from-repeated-hour", NY, "30 1 * * *",
            "2026-11-01T01:15-05:00", "2026-11-02T12:00-05:00", (
        "2026-11-02T01:30-05:00",
    )),
    DstCase("ny-fall-fixed-after-repeat", NY, "0 2 * * *",
            "2026-11-01T01:15-05:00", "2026-11-01T12:00-05:00", (
        "2026-11-01T02:00-05:00",
    )),
    DstCase("ny-fall-at-first-tick", NY, "0 1 * * *", "2026-11-01T01:00-04:00", "2026-11-02T12:00-05:00", (
        "2026-11-02T01:00-05:00",
    )),
    DstCase("ny-fall-hour-list", NY, "0 1,2 * * *", "2026-11-01T00:00-04:00", "2026-11-01T12:00-05:00", (
        "2026-11-01T01:00-04:00", "2026-11-01T02:00-05:00",
    )),
    DstCase("ny-fall-hourly", NY, "0 * * * *", "2026-11-01T00:00-04:00", "2026-11-01T03:00-05:00", (
        "2026-11-01T01:00-04:00", "2026-11-01T01:00-05:00", "2026-11-01T02:00-05:00",
        "2026-11-01T03:00-05:00",
    )),
    DstCase("ny-fall-15min", NY, "*/15 * * * *", "2026-11-01T01:30-04:00", "2026-11-01T01:30-05:00", (
        "2026-11-01T01:45-04:00", "2026-11-01T01:00-05:00", "2026-11-01T01:15-05:00",
        "2026-11-01T01:30-05:00",
    )),
    DstCase("ny-fall-2s", NY, "*/2 * * * * *", "2026-11-01T05:59:55Z", "2026-11-01T06:00:05Z", (
        "2026-11-01T05:59:56Z", "2026-11-01T05:59:58Z", "2026-11-01T06:00:00Z", "2026-11-01T06:00:02Z",
        "2026-11-01T06:00:04Z",
    )),
    DstCase("ny-spring-daily-0230", NY, "30 2 * * *", "2026-03-07T12:00-05:00", "2026-03-09T12:00-04:00", (
        "2026-03-08T03:00-04:00", "2026-03-09T02:30-04:00",
    )),
    DstCase("ny-spring-6field-seconds", NY, "15 30 2 * * *",
            "2026-03-07T12:00-05:00", "2026-03-09T12:00-04:00", (
        "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:15-04:00",
    )),
    DstCase("ny-spring-hour-list", NY, "0 1,2,3 * * *", "2026-03-08T00:00-05:00", "2026-03-08T12:00-04:00", (
        "2026-03-08T01:00-05:00", "2026-03-08T03:00-04:00",
    )),
    DstCase("ny-spring-weekly", NY, "0 2 * * SUN", "2026-03-01T12:00-05:00", "2026-03-15T12:00-04:00", (
        "2026-03-08T03:00-04:00", "2026-03-15T02:00-04:00",
    )),
    DstCase("ny-spring-hourly", NY, "0 * * * *", "2026-03-08T00:00-05:00", "2026-03-08T04:00-04:00", (
        "2026-03-08T01:00-05:00", "2026-03-08T03:00-04:00", "2026-03-08T04:00-04:00",
    )),
    DstCase("ny-spring-15min", NY, "*/15 * * * *", "2026-03-08T01:30-05:00", "2026-03-08T03:30-04:00", (
        "2026-03-08T01:45-05:00", "2026-03-08T03:00-04:00", "2026-03-08T03:15-04:00",
        "2026-03-08T03:30-04:00",
    )),
    DstCase("ny-spring-2s", NY, "*/2 * * * * *", "2026-03-08T06:59:55Z", "2026-03-08T07:00:05Z", (
        "2026-03-08T06:59:56Z", "2026-03-08T06:59:58Z", "2026-03-08T07:00:00Z", "2026-03-08T07:00:02Z",
        "2026-03-08T07:00:04Z",
    )),
    # Europe/London 2026: spring 03-29 01:00 GMT -> 02:00 BST; fall 10-25 02:00 BST -> 01:00 GMT.
    DstCase("london-fall-0130", "Europe/London", "30 1 * * *",
            "2026-10-24T12:00+01:00", "2026-10-26T12:00Z", (
        "2026-10-25T01:30+01:00", "2026-10-26T01:30+00:00",
    )),
    DstCase("london-fall-hourly", "Europe/London", "0 * * * *",
            "2026-10-25T00:00+01:00", "2026-10-25T02:00Z", (
        "2026-10-25T01:00+01:00", "2026-10-25T01:00+00:00", "2026-10-25T02:00+00:00",
    )),
    DstCase("london-spring-0130", "Europe/London", "30 1 * * *",
            "2026-03-28T12:00Z", "2026-03-30T12:00+01:00", (
        "2026-03-29T02:00+01:00", "2026-03-30T01:30+01:00",
    )),
    DstCase("london-spring-gap-start", "Europe/London", "0 1 * * *",
            "2026-03-28T12:00Z", "2026-03-30T12:00+01:00", (
        "2026-03-29T02:00+01:00", "2026-03-30T01:00+01:00",
    )),
    # Australia/Sydney 2026 (southern hemisphere): fall 04-05 03:00 -> 02:00; spring 10-04 02:00 -> 03:00.
    DstCase("sydney-fall-0230", "Australia/Sydney", "30 2 * * *",
            "2026-04-04T12:00+11:00", "2026-04-06T12:00+10:00", (
        "2026-04-05T02:30+11:00", "2026-04-06T02:30+10:00",
    )),
    DstCase("sydney-fall-30min", "Australia/Sydney", "*/30 * * * *",
            "2026-04-05T02:00+11:00", "2026-04-05T02:30+10:00", (
        "2026-04-05T02:30+11:00", "2026-04-05T02:00+10:00", "2026-04-05T02:30+10:00",
    )),
    DstCase("sydney-spring-0230", "Australia/Sydney", "30 2 * * *",
            "2026-10-03T12:00+10:00", "2026-10-05T12:00+11:00", (
        "2026-10-04T03:00+11:00", "2026-10-05T02:30+11:00",
    )),
    # Asia/Kolkata: +05:30 all year.
    DstCase("kolkata-daily", "Asia/Kolkata", "30 1 * * *",
            "2026-03-07T00:00+05:30", "2026-03-10T00:00+05:30", (
        "2026-03-07T01:30+05:30", "2026-03-08T01:30+05:30", "2026-03-09T01:30+05:30",
    )),
    DstCase("kolkata-hourly", "Asia/Kolkata", "0 * * * *",
            "2026-11-01T00:30+05:30", "2026-11-01T03:00+05:30", (
        "2026-11-01T01:00+05:30", "2026-11-01T02:00+05:30", "2026-11-01T03:00+05:30",
    )),
    # Australia/Lord_Howe, 30-minute shifts: fall 04-05 02:00 +11 -> 01:30; spring 10-04 02:00 -> 02:30 +11.
    DstCase("lordhowe-fall-0145", "Australia/Lord_Howe", "45 1 * * *",
            "2026-04-04T12:00+11:00", "2026-04-06T12:00+10:30", (
        "2026-04-05T01:45+11:00", "2026-04-06T01:45+10:30",
    )),
    DstCase("lordhowe-fall-30min", "Australia/Lord_Howe", "*/30 * * * *",
            "2026-04-05T01:00+11:00", "2026-04-05T02:00+10:30", (
        "2026-04-05T01:30+11:00", "2026-04-05T01:30+10:30", "2026-04-05T02:00+10:30",
    )),
    DstCase("lordhowe-spring-0215", "Australia/Lord_Howe", "15 2 * * *",
            "2026-10-03T12:00+10:30", "2026-10-05T12:00+11:00", (
        "2026-10-04T02:30+11:00", "2026-10-05T02:15+11:00",
    )),
    DstCase("lordhowe-spring-hourly", "Australia/Lord_Howe", "0 * * * *",
            "2026-10-04T00:30+10:30", "2026-10-04T04:00+11:00", (
        "2026-10-04T01:00+10:30", "2026-10-04T03:00+11:00", "2026-10-04T04:00+11:00",
    )),
    # America/Santiago skips midnight 09-06 (00:00 -04 -> 01:00 -03); falls back 04-05 00:00 -> 04-04 23:00
    DstCase("santiago-spring-midnight", "America/Santiago", "0 0 * * *",
            "2026-09-04T12:00-04:00", "2026-09-07T12:00-03:00", (
        "2026-09-05T00:00-04:00", "2026-09-06T01:00-03:00", "2026-09-07T00:00-03:00",
    )),
    DstCase("santiago-spring-daily-macro", "America/Santiago", "@daily",
            "2026-09-04T12:00-04:00", "2026-09-07T12:00-03:00", (
        "2026-09-05T00:00-04:00", "2026-09-06T01:00-03:00", "2026-09-07T00:00-03:00",
    )),
    DstCase("santiago-spring-hourly", "America/Santiago", "0 * * * *",
            "2026-09-05T22:30-04:00", "2026-09-06T02:00-03:00", (
        "2026-09-05T23:00-04:00", "2026-09-06T01:00-03:00", "2026-09-06T02:00-03:00",
    )),
    DstCase("santiago-fall-2330", "America/Santiago", "30 23 * * *",
            "2026-04-03T12:00-03:00", "2026-04-05T12:00-04:00", (
        "2026-04-03T23:30-03:00", "2026-04-04T23:30-03:00",
    )),
    # America/Havana repeats midnight 11-01 (01:00 -04 -> 00:00 -05); skips it 03-08 (00:00 -> 01:00 -04)
    DstCase("havana-fall-midnight", "America/Havana", "0 0 * * *",
            "2026-10-31T12:00-04:00", "2026-11-02T12:00-05:00", (
        "2026-11-01T00:00-04:00", "2026-11-02T00:00-05:00",
    )),
    DstCase("havana-spring-midnight", "America/Havana", "0 0 * * *",
            "2026-03-07T12:00-05:00", "2026-03-09T12:00-04:00", (
        "2026-03-08T01:00-04:00", "2026-03-09T00:00-04:00",
    )),
    # Pacific/Chatham, 45-minute offsets: spring 09-27 02:45 +12:45 -> 03:45 +13:45.
    DstCase("chatham-spring-0300", "Pacific/Chatham", "0 3 * * *",
            "2026-09-26T12:00+12:45", "2026-09-28T12:00+13:45", (
        "2026-09-27T03:45+13:45", "2026-09-28T03:00+13:45",
    )),
]  # fmt: skip


# -- issue 8: each bug's reproduction, and the rules docs/schedules.md now states ------------------------

LH, CHATHAM, PYONGYANG = "Australia/Lord_Howe", "Pacific/Chatham", "Asia/Pyongyang"
APIA, CASEY = "Pacific/Apia", "Antarctica/Casey"
ISSUE_8_CASES = [
    # A. A one-value range with a step is that value, in UTC too (cronsim read "5-5/15" as "from 5").
    DstCase("a-minute-5-5/15", "UTC", "5-5/15 * * * *", "2024-07-11T10:07Z", "2024-07-11T12:10Z", (
        "2024-07-11T11:05Z", "2024-07-11T12:05Z",
    )),
    DstCase("a-weekday-5-5/2", "UTC", "0 0 * * 5-5/2", "2026-05-01T00:00Z", "2026-05-16T00:00Z", (
        "2026-05-08T00:00Z", "2026-05-15T00:00Z",  # Fridays only, no Sundays
    )),
    DstCase("a-month-8-8/2", "UTC", "0 0 1 8-8/2 *", "2026-08-01T00:00Z", "2027-08-01T00:00Z", (
        "2027-08-01T00:00Z",  # not October or December
    )),
    # B. Real-time jobs keep every tick across 30-minute and other non-hour shifts.
    DstCase("b-lordhowe-spring-3h", LH, "0 */3 * * *", "2019-10-06T01:43+10:30", "2019-10-06T06:00+11:00", (
        "2019-10-06T03:00+11:00", "2019-10-06T06:00+11:00",
    )),
    DstCase("b-lordhowe-fall-41", LH, "41 * * * *", "2019-04-07T00:00+11:00", "2019-04-07T03:00+10:30", (
        "2019-04-07T00:41+11:00", "2019-04-07T01:41+11:00",
        "2019-04-07T01:41+10:30", "2019-04-07T02:41+10:30",
    )),
    DstCase("b-chatham-fall-15", CHATHAM, "*/15 3 * * *",
            "2022-04-03T02:00+13:45", "2022-04-03T05:00+12:45", (
        "2022-04-03T03:00+13:45", "2022-04-03T03:15+13:45", "2022-04-03T03:30+13:45",
        "2022-04-03T03:00+12:45", "2022-04-03T03:15+12:45",
        "2022-04-03T03:30+12:45", "2022-04-03T03:45+12:45",
    )),
    DstCase("b-pyongyang-2015-fold", PYONGYANG, "41 * * * *",
            "2015-08-14T22:00+09:00", "2015-08-15T00:50+08:30", (
        "2015-08-14T22:41+09:00", "2015-08-14T23:41+09:00",
        "2015-08-14T23:41+08:30", "2015-08-15T00:41+08:30",
    )),
    DstCase("b-pyongyang-2018-gap", PYONGYANG, "0 * * * *",
            "2018-05-04T22:30+08:30", "2018-05-05T01:00+09:00", (
        "2018-05-04T23:00+08:30", "2018-05-05T00:00+09:00", "2018-05-05T01:00+09:00",
    )),
    # C. Never a tick at or before the query (here: asked in the second pass of Chatham's repeated hour).
    DstCase("c-chatham-second-pass", CHATHAM, "*/30 3 * * *",
            "2022-04-03T02:51:14+12:45", "2022-04-03T04:00+12:45", (
        "2022-04-03T03:00+12:45", "2022-04-03T03:30+12:45",
    )),
    # D. A skipped midnight is not run by real-time jobs, and 01:00 is not a time "0 */6" names.
    DstCase("d-cairo-friday", "Africa/Cairo", "0 */6 * * 5",
            "2025-04-24T12:00+02:00", "2025-04-25T13:00+03:00", (
        "2025-04-25T06:00+03:00", "2025-04-25T12:00+03:00",
    )),
    DstCase("d-havana-sunday", "America/Havana", "0 */6 * * 0",
            "2026-03-07T12:00-05:00", "2026-03-08T13:00-04:00", (
        "2026-03-08T06:00-04:00", "2026-03-08T12:00-04:00",
    )),
    DstCase("d-sao-paulo-sunday", "America/Sao_Paulo", "0 */6 * * 0",
            "2018-11-03T12:00-03:00", "2018-11-04T13:00-02:00", (
        "2018-11-04T06:00-02:00", "2018-11-04T12:00-02:00",
    )),
    # A fixed time skipped by a gap that crosses midnight fires when the gap ends, on the next local day.
    DstCase("pyongyang-2018-fixed", PYONGYANG, "45 23 * * *",
            "2018-05-03T12:00+08:30", "2018-05-06T12:00+09:00", (
        "2018-05-03T23:45+08:30", "2018-05-05T00:00+09:00", "2018-05-05T23:45+09:00",
    )),
    # A 2-hour gap is still DST: the skipped fixed time fires when it ends.
    DstCase("troll-2h-gap", "Antarctica/Troll", "30 2 * * *", "2026-03-28T12:00Z", "2026-03-30T12:00+02:00", (
        "2026-03-29T03:00+02:00", "2026-03-30T02:30+02:00",
    )),
    # Changes of 3 hours or more are clock corrections (Debian): fixed-time jobs follow real time across them.
    DstCase("apia-2011-day-skipped", APIA, "0 9 * * *", "2011-12-28T12:00-10:00", "2012-01-01T12:00+14:00", (
        "2011-12-29T09:00-10:00", "2011-12-31T09:00+14:00", "2012-01-01T09:00+14:00",
    )),
    DstCase("apia-2011-midnight", APIA, "0 0 * * *", "2011-12-28T12:00-10:00", "2011-12-31T12:00+14:00", (
        "2011-12-29T00:00-10:00", "2011-12-31T00:00+14:00",
    )),
    DstCase("casey-2009-3h-gap", CASEY, "30 3 * * *", "2009-10-17T12:00Z", "2009-10-19T12:00Z", (
        "2009-10-19T03:30+11:00",
    )),
    DstCase("casey-2010-3h-fold", CASEY, "30 0 * * *", "2010-03-04T12:00Z", "2010-03-05T12:00Z", (
        "2010-03-05T00:30+11:00", "2010-03-05T00:30+08:00",
    )),
]  # fmt: skip


@pytest.mark.parametrize("case", DST_CASES + ISSUE_8_CASES, ids=[c.id for c in DST_CASES + ISSUE_8_CASES])
def test_dst(case: DstCase) -> None:
    schedule = parse_schedule(case.expr, case.zone)
    expected = [at(x) for x in case.expected]
    assert ticks_between(schedule, at(case.after), at(case.until), 100) == expected
    # The same answers one call at a time, from nothing remembered, as a restarted member would ask.
    for prev, tick in zip([at(case.after), *expected], expected, strict=False):
        assert fresh(schedule).next_after(prev) == tick
        assert fresh(schedule).next_after(tick - timedelta(microseconds=1)) == tick


YEAR = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
DST_ZONES = [
    "America/New_York",
    "Europe/London",
    "Australia/Sydney",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "America/Santiago",
    "America/Havana",
    "Pacific/Chatham",
]


@pytest.mark.parametrize("zone", DST_ZONES)
@pytest.mark.parametrize("expr", ["30 1 * * *", "30 2 * * *", "0 0 * * *", "0 30 1 * * *"])
def test_fixed_time_fires_once_every_local_day(zone: str, expr: str) -> None:
    """Debian cron: neither the repeated nor the skipped hour costs a fixed-time job a run, or adds one.
    (Once per local day holds in these zones; a gap across midnight can move a tick: pyongyang-2018.)"""
    tz = zone_of(zone)
    dates = [t.astimezone(tz).date() for t in ticks_between(parse_schedule(expr, zone), *YEAR, 1000)]
    assert len(dates) == len(set(dates))
    assert len(dates) in (364, 365)  # the zone's new year may fall either side of UTC's


@pytest.mark.parametrize("zone", ["America/New_York", "Australia/Sydney", "America/Santiago"])
def test_hourly_follows_real_time_all_year(zone: str) -> None:
    ticks = ticks_between(parse_schedule("0 * * * *", zone), *YEAR, 10_000)
    assert len(ticks) == 8760
    assert {b - a for a, b in itertools.pairwise(ticks)} == {timedelta(hours=1)}


# -- grammar ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("*/2 * * * * *", "2026-05-05T10:00:00.5Z", ["10:00:02", "10:00:04", "10:00:06"]),
        ("* * * * *", "2026-05-05T10:00:00Z", ["10:01:00", "10:02:00"]),
        ("0 0 * * *", "2026-05-05T10:00:00Z", ["2026-05-06 00:00:00", "2026-05-07 00:00:00"]),
        ("0 0 0 * * *", "2026-05-05T10:00:00Z", ["2026-05-06 00:00:00", "2026-05-07 00:00:00"]),
        (
            "5/15 * * * *",
            "2026-05-05T10:00:00Z",
            ["10:05:00", "10:20:00", "10:35:00", "10:50:00", "11:05:00"],
        ),
        (
            "0 8-17/3 * * *",
            "2026-05-05T10:00:00Z",
            ["11:00:00", "14:00:00", "17:00:00", "2026-05-06 08:00:00"],
        ),
        ("10,20 1 * * *", "2026-05-05T10:00:00Z", ["2026-05-06 01:10:00", "2026-05-06 01:20:00"]),
        ("0 9 * * MON-FRI", "2026-05-08T10:00:00Z", ["2026-05-11 09:00:00", "2026-05-12 09:00:00"]),  # Fri
        ("0 9 * * mon-fri", "2026-05-08T10:00:00Z", ["2026-05-11 09:00:00", "2026-05-12 09:00:00"]),
        ("0 0 * * 7", "2026-05-05T10:00:00Z", ["2026-05-10 00:00:00", "2026-05-17 00:00:00"]),  # 7 = Sunday
        ("0 0 1 JAN,jul *", "2026-05-05T10:00:00Z", ["2026-07-01 00:00:00", "2027-01-01 00:00:00"]),
        ("0 0 L * *", "2026-01-15T00:00:00Z", ["2026-01-31 00:00:00", "2026-02-28 00:00:00"]),
        ("0 0 LW * *", "2026-05-01T00:00:00Z", ["2026-05-29 00:00:00", "2026-06-30 00:00:00"]),
        ("0 0 * * 5L", "2026-05-01T00:00:00Z", ["2026-05-29 00:00:00", "2026-06-26 00:00:00"]),
        ("0 0 * * friL", "2026-05-01T00:00:00Z", ["2026-05-29 00:00:00", "2026-06-26 00:00:00"]),
        ("0 0 * * FRI#2", "2026-05-01T00:00:00Z", ["2026-05-08 00:00:00", "2026-06-12 00:00:00"]),
        ("0 0 0 ? * MON", "2026-05-05T10:00:00Z", ["2026-05-11 00:00:00", "2026-05-18 00:00:00"]),
        ("0 0 29 2 *", "2026-05-05T10:00:00Z", ["2028-02-29 00:00:00", "2032-02-29 00:00:00"]),
        # Vixie: day-of-month and day-of-week are ORed unless either starts with '*'...
        ("0 0 13 * FRI", "2026-03-01T00:00:00Z", ["2026-03-06 00:00:00", "2026-03-13 00:00:00"]),
        # ...and ANDed if one does: odd days that are Fridays.
        ("0 0 */2 * FRI", "2026-03-01T00:00:00Z", ["2026-03-13 00:00:00", "2026-03-27 00:00:00"]),
        ("  0   12 * * *  ", "2026-05-05T10:00:00Z", ["12:00:00", "2026-05-06 12:00:00"]),
        ("0\t12 * *\t*\n", "2026-05-05T10:00:00Z", ["12:00:00", "2026-05-06 12:00:00"]),  # tabs separate too
        # Neither day field starts with '*', so they are ORed: February 31st never comes, Sundays do.
        (
            "0 0 31 2 0",
            "2026-01-31T00:00:00Z",
            [f"2026-02-{d:02} 00:00:00" for d in (1, 8, 15, 22)] + ["2027-02-07 00:00:00"],
        ),
        # A day-of-week step runs to the end of the field, 7 (Sunday): MON/2 is Mon, Wed, Fri, Sun.
        (
            "0 0 * * MON/2",
            "2026-05-04T00:00:00Z",  # a Monday
            ["2026-05-06 00:00:00", "2026-05-08 00:00:00", "2026-05-10 00:00:00", "2026-05-11 00:00:00"],
        ),
        ("0 0 * * 6/1", "2026-05-04T00:00:00Z", ["2026-05-09 00:00:00", "2026-05-10 00:00:00"]),  # Sat, Sun
        ("0 0 * * */3", "2026-05-04T00:00:00Z", ["2026-05-06 00:00:00", "2026-05-09 00:00:00"]),  # 0,3,6
        ("0 0 * * 1-7/3", "2026-05-04T00:00:00Z", ["2026-05-07 00:00:00", "2026-05-10 00:00:00"]),  # 1,4,7
    ],
)
def test_grammar(expr: str, after: str, expected: list[str]) -> None:
    day = after[:10]
    want = [at((x if len(x) > 8 else f"{day} {x}") + "+00:00") for x in expected]
    assert ticks_between(parse_schedule(expr), at(after), datetime.max.replace(tzinfo=UTC), len(want)) == want


@pytest.mark.parametrize("macro", sorted(MACROS))
def test_macros_are_their_expansions(macro: str) -> None:
    t = at("2026-11-01T00:59:59-04:00")
    expansion = parse_schedule(MACROS[macro], NY)
    schedule = parse_schedule(macro.upper(), NY)
    assert schedule.expr == macro.upper()
    assert ticks_between(schedule, t, t + timedelta(days=400), 5) == ticks_between(
        expansion, t, t + timedelta(days=400), 5
    )


KNOWN_MACROS = ", ".join([*MACROS, "@every <duration>"])


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("* * * *", "expected 5 fields (minute hour day-of-month month day-of-week) or 6 "
                    "(second minute hour day-of-month month day-of-week), got 4"),
        ("0 0 * * * * *", "expected 5 fields (minute hour day-of-month month day-of-week) or 6 "
                          "(second minute hour day-of-month month day-of-week), got 7"),
        ("0 0 25 * * *", "field 3 (hour) value 25 out of range 0-23"),
        ("0 25 * * *", "field 2 (hour) value 25 out of range 0-23"),
        ("60 * * * *", "field 1 (minute) value 60 out of range 0-59"),
        ("60 * * * * *", "field 1 (second) value 60 out of range 0-59"),
        ("0 0 0 * *", "field 3 (day-of-month) value 0 out of range 1-31"),
        ("0 0 * 13 *", "field 4 (month) value 13 out of range 1-12"),
        ("0 0 * * 8", "field 5 (day-of-week) value 8 out of range 0-7"),
        ("0 0 * foo *", "field 4 (month) 'foo' is not a number or name"),
        ("0 0 * * FRIDAY", "field 5 (day-of-week) 'FRIDAY' is not a number or name"),
        ("x * * * *", "field 1 (minute) 'x' is not a number"),
        ("-1 * * * *", "field 1 (minute) is missing a value in '-1'"),
        ("1- * * * *", "field 1 (minute) is missing a value in '1-'"),
        ("5-3 * * * *", "field 1 (minute) range '5-3' is reversed (5 > 3)"),
        ("0 0 * * FRI-SUN", "field 5 (day-of-week) range 'FRI-SUN' is reversed (5 > 0)"),
        ("1,,2 * * * *", "field 1 (minute) has an empty list item in '1,,2'"),
        ("*/0 * * * *", "field 1 (minute) step '0' in '*/0' must be a number from 1 to 60"),
        ("*/61 * * * *", "field 1 (minute) step '61' in '*/61' must be a number from 1 to 60"),
        ("*/x * * * *", "field 1 (minute) step 'x' in '*/x' must be a number from 1 to 60"),
        ("? * * * *", "field 1 (minute) '?' is only allowed in day-of-month and day-of-week"),
        ("0 0 L * L", "field 5 (day-of-week) is missing a value in 'L'"),
        ("0 L * * *", "field 2 (hour) 'L' is not a number"),
        ("0 0 * * 1#6", "field 5 (day-of-week) '#' must be followed by an occurrence 1-5, got '1#6'"),
        ("0 0 * * 1#", "field 5 (day-of-week) '#' must be followed by an occurrence 1-5, got '1#'"),
        ("0 0 1#2 * *", "field 3 (day-of-month) '1#2' is not a number"),
        ("0 0 31 2 *", "field 3 (day-of-month) day 31 never occurs in the selected months"),
        ("0 0 0 30,31 2 *", "field 4 (day-of-month) day 30 never occurs in the selected months"),
        ("0 0 31 4,6,9,11 *", "field 3 (day-of-month) day 31 never occurs in the selected months"),
        ("٣ * * * *", "field 1 (minute) '٣' is not a number"),
        ("@fortnightly", f"unknown macro '@fortnightly' (known: {KNOWN_MACROS})"),
        ("@daily extra", f"unknown macro '@daily extra' (known: {KNOWN_MACROS})"),
        ("@every", "@every needs a duration, e.g. '@every 90s'"),
        ("@every 0s", "@every interval must be at least 1s, got '0s'"),
        ("@every 500ms", "@every interval must be at least 1s, got '500ms'"),
        ("@every 1.5s", "@every interval must be a whole number of seconds, got '1.5s' (1s500ms)"),
        ("@every 5x", "@every duration: unknown unit 'x' in '5x' (use ns, us, ms, s, m, h, d)"),
        ("@every -5s", "@every duration: must not be negative, got '-5s'"),
        ("@every 5400", "@every duration '5400' has no unit (write e.g. 5400s)"),  # as Go's ParseDuration
        ("@EVERY 90", "@every duration '90' has no unit (write e.g. 90s)"),
        ("0\u00a00 * * *", "contains U+00A0 (NO-BREAK SPACE); separate fields with spaces or tabs"),
        ("0 0\u2003* * *", "contains U+2003 (EM SPACE); separate fields with spaces or tabs"),
        ("0 0\n* * *", "contains U+000A; separate fields with spaces or tabs"),
        ("@every\u00a090s", "contains U+00A0 (NO-BREAK SPACE); separate fields with spaces or tabs"),
        ("CRON_TZ=UTC 0 0 * * *", "CRON_TZ= prefixes are not supported; set time_zone instead"),
        ("TZ=Europe/London 0 0 * * *", "TZ= prefixes are not supported; set time_zone instead"),
        ("1," * 200 + "1 * * * *", "must be at most 256 characters, got 409"),
    ],
)  # fmt: skip
def test_rejects_with_reason(expr: str, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_schedule(expr)
    assert info.value.field == "schedule"
    assert info.value.reason == reason


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "utc ", "../../etc/passwd", "/etc/localtime"])
def test_rejects_unknown_time_zone(zone: str) -> None:
    for expr in ("0 0 * * *", "@every 1h"):
        with pytest.raises(ValidationError) as info:
            parse_schedule(expr, zone)
        assert info.value.field == "time_zone"
        assert info.value.reason == f"unknown time zone {zone!r}"


def test_bad_schedule_is_reported_before_bad_time_zone() -> None:
    with pytest.raises(ValidationError) as info:
        parse_schedule("0 25 * * *", "Mars/Olympus_Mons")
    assert info.value.field == "schedule"


def test_parsed_once_and_shared() -> None:
    a = parse_schedule("*/5 * * * *", NY, anchor=at("2026-01-01T00:00Z"))
    assert a is parse_schedule("*/5 * * * *", NY)  # cron ignores the anchor, so every job shares one value
    assert isinstance(a, CronSchedule)
    assert (a.expr, a.time_zone) == ("*/5 * * * *", NY)
    assert a != parse_schedule("*/5 * * * *", "Europe/London")
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.expr = "* * * * *"  # type: ignore[misc]


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_schedule("* * * * *").next_after(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_schedule("@every 1m").next_after(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_schedule("@every 1m", anchor=datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("zone", "expr", "t", "expected"),
    [
        # fold=1 is meaningless on UTC and on unambiguous local times: it must not look like a repeated hour.
        ("UTC", "0 0 * * *", datetime(2020, 1, 1, fold=1, tzinfo=UTC), "2020-01-02T00:00Z"),
        (NY, "0 2 * * *", datetime(2026, 5, 5, 1, 0, fold=1, tzinfo=zone_of(NY)), "2026-05-05T02:00-04:00"),
        # On an ambiguous local time it is the second pass: 01:30 fired in the first.
        (
            NY,
            "30 1 * * *",
            datetime(2026, 11, 1, 1, 15, fold=1, tzinfo=zone_of(NY)),
            "2026-11-02T01:30-05:00",
        ),
        (
            NY,
            "30 1 * * *",
            datetime(2026, 11, 1, 1, 15, fold=0, tzinfo=zone_of(NY)),
            "2026-11-01T01:30-04:00",
        ),
    ],
)
def test_callers_fold_is_respected_only_where_it_means_something(
    zone: str, expr: str, t: datetime, expected: str
) -> None:
    assert parse_schedule(expr, zone).next_after(t) == at(expected)


def test_none_past_the_end_of_time() -> None:
    assert parse_schedule("0 0 1 1 *").next_after(datetime(9999, 6, 1, tzinfo=UTC)) is None
    assert parse_schedule("@every 1000d").next_after(datetime(9998, 1, 1, tzinfo=UTC)) is None


# -- @every -------------------------------------------------------------------------------------------------


def test_every_ticks_from_the_anchor() -> None:
    anchor = at("2026-05-05T10:00:00.750+02:00")  # truncated to whole seconds: 08:00:00Z
    s = parse_schedule("@every 90s", "Europe/Paris", anchor=anchor)
    assert isinstance(s, EverySchedule)
    assert (s.expr, s.time_zone, s.interval) == ("@every 90s", "Europe/Paris", timedelta(seconds=90))
    assert s.anchor == at("2026-05-05T08:00:00Z")
    assert s.next_after(anchor - timedelta(days=3)) == at("2026-05-05T08:01:30Z")  # k >= 1: never the anchor
    assert s.next_after(s.anchor) == at("2026-05-05T08:01:30Z")
    assert s.next_after(at("2026-05-05T08:01:29.999999Z")) == at("2026-05-05T08:01:30Z")
    assert s.next_after(at("2026-05-05T08:01:30Z")) == at("2026-05-05T08:03:00Z")
    assert s.next_after(at("2026-05-06T08:00:00Z")) == at("2026-05-06T08:01:30Z")


def test_every_is_the_same_on_every_member() -> None:
    anchor = at("2026-01-01T00:00:07Z")
    a = parse_schedule("@every 1h30m", anchor=anchor)
    b = parse_schedule(" @EVERY 5400s ", "Asia/Kolkata", anchor=anchor.astimezone(zone_of("Asia/Kolkata")))
    t = at("2026-03-08T06:59:59Z")
    assert a.next_after(t) == b.next_after(t) == at("2026-03-08T07:30:07Z")


@pytest.mark.parametrize("expr", ["@every 90s", "@EVERY 90s", "@Every 1m30s", "\t@every   90s\n"])
def test_every_is_case_insensitive_like_the_other_macros(expr: str) -> None:
    s = parse_schedule(expr)
    assert isinstance(s, EverySchedule)
    assert s.interval == timedelta(seconds=90)


def test_every_defaults_to_the_epoch_anchor() -> None:
    s = parse_schedule("@every 7m")
    assert isinstance(s, EverySchedule)
    assert s.anchor == EPOCH
    tick = s.next_after(at("2026-05-05T10:00:00Z"))
    assert tick is not None
    assert (tick - EPOCH) % timedelta(minutes=7) == timedelta(0)


def test_every_ignores_dst() -> None:
    s = parse_schedule("@every 1h", NY, anchor=at("2026-11-01T00:00-04:00"))
    ticks = ticks_between(s, at("2026-11-01T00:00-04:00"), at("2026-11-01T03:00-05:00"), 10)
    assert len(ticks) == 4
    assert {b - a for a, b in itertools.pairwise(ticks)} == {timedelta(hours=1)}


# -- catch-up helpers ---------------------------------------------------------------------------------------


def test_ticks_between_bounds() -> None:
    s = parse_schedule("*/10 * * * *")
    after, until = at("2026-05-05T10:00:00Z"), at("2026-05-05T11:00:00Z")
    assert ticks_between(s, after, until, 100) == [after + timedelta(minutes=m) for m in range(10, 61, 10)]
    assert ticks_between(s, after, until, 2) == [at("2026-05-05T10:10:00Z"), at("2026-05-05T10:20:00Z")]
    assert ticks_between(s, after, until, 0) == []
    assert ticks_between(s, until, after, 100) == []
    assert count_ticks(s, after, until, 100) == 6
    assert count_ticks(s, after, until, 4) == 4


def test_count_ticks_every_is_arithmetic() -> None:
    s = parse_schedule("@every 1s", anchor=at("2026-01-01T00:00:00Z"))
    after, until = at("2025-12-01T00:00:00Z"), at("2026-01-02T00:00:00Z")  # before the anchor: none there
    assert count_ticks(s, after, until, 10**9) == 86_400
    assert count_ticks(s, after, until, 10) == 10
    assert count_ticks(s, until, after, 10) == 0


def test_window_matches_fresh_answers_in_any_order() -> None:
    """The remembered ticks answer exactly as cronsim would: forwards, backwards, beyond the window."""
    s = parse_schedule("*/2 * * * * *", NY)
    start = at("2026-11-01T05:58:00Z")
    queries = [start + timedelta(seconds=n, microseconds=m) for n in range(0, 300, 3) for m in (0, 1)]
    for t in [*queries, *reversed(queries), *queries[::7], *queries]:
        assert s.next_after(t) == fresh(s).next_after(t)


# -- properties ---------------------------------------------------------------------------------------------

PROPERTY_ZONES = [
    "UTC",
    *DST_ZONES,
    "America/St_Johns",
    "Atlantic/Azores",
    "Asia/Beirut",
    "Africa/Casablanca",
    PYONGYANG,
    "Africa/Cairo",
    APIA,
    CASEY,
]
PROPERTY_EXPRS = [
    "30 1 * * *", "0 2 * * *", "*/15 * * * *", "0 * * * *", "*/2 * * * * *", "0 0 * * *", "15 30 2 * * *",
    "* 30 1 * * *", "*/7 0-3 * * *", "0 0,1,2,3 * * *", "45 2 * * SUN", "0 0 L * *", "0 12 * * 5L", "@hourly",
    "1-59/2 0-2 * * *", "*/5 23,0,1 * * *", "0 0 1 1 *", "*/20 * 1-3 * * *", "@every 7s", "@every 1h",
]  # fmt: skip
instants = st.datetimes(datetime(2020, 1, 1), datetime(2035, 1, 1), timezones=st.just(UTC))
# Most DST trouble is within hours of a transition: aim there too.
near_transitions = st.sampled_from([c.after for c in DST_CASES + ISSUE_8_CASES]).flatmap(
    lambda iso: st.integers(-6 * 3600, 6 * 3600).map(lambda s: at(iso) + timedelta(seconds=s))
)
# Callers may pass any aware datetime: local ones, with either fold, even imaginary wall times.
local_instants = st.datetimes(
    datetime(2020, 1, 1), datetime(2035, 1, 1), timezones=st.sampled_from([zone_of(z) for z in DST_ZONES])
)
when = st.one_of(
    instants,
    local_instants,
    near_transitions,
    near_transitions.map(lambda t: t + timedelta(microseconds=1)),
    near_transitions.map(lambda t: t.astimezone(zone_of(NY)).replace(fold=1)),
)
schedules = st.builds(
    lambda e, z, a: parse_schedule(e, z, anchor=a),
    st.sampled_from(PROPERTY_EXPRS),
    st.sampled_from(PROPERTY_ZONES),
    instants,
)


@settings(max_examples=300, deadline=None)
@given(schedules, when)
def test_next_after_is_strictly_later_whole_seconds_and_stateless(s: Schedule, t: datetime) -> None:
    tick = s.next_after(t)
    assert tick is not None
    assert tick > t
    assert tick.tzinfo is UTC
    assert tick.microsecond == 0
    assert fresh(s).next_after(t) == tick
    assert s.next_after(t) == tick  # asking again changes nothing


@settings(max_examples=200, deadline=None)
@given(schedules, when, st.floats(0, 1, exclude_max=True))
def test_no_tick_is_skipped(s: Schedule, t: datetime, frac: float) -> None:
    """Any instant between t and its next tick has that same next tick."""
    tick = s.next_after(t)
    assert tick is not None
    t = t.astimezone(UTC)  # aware arithmetic is wall-clock arithmetic (and drops fold): stay in UTC
    between = t + (tick - t) * frac
    assume(between < tick)
    assert fresh(s).next_after(between) == tick


@settings(max_examples=150, deadline=None)
@given(schedules, when, st.integers(1, 40))
def test_ticks_between_agrees_with_next_after(s: Schedule, t: datetime, n: int) -> None:
    chain = [t]
    for _ in range(n):
        nxt = fresh(s).next_after(chain[-1])
        assert nxt is not None
        assert nxt > chain[-1]  # strictly increasing
        chain.append(nxt)
    assert ticks_between(s, t, chain[-1], 1000) == chain[1:]
    assert ticks_between(s, t, chain[-1], n - 1) == chain[1:-1]
    assert count_ticks(s, t, chain[-1], 1000) == n
    assert count_ticks(s, t, chain[-1] - timedelta(microseconds=1), 1000) == n - 1


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([e for e in PROPERTY_EXPRS if not e.startswith("@every")]), instants)
def test_utc_is_plain_cronsim(expr: str, t: datetime) -> None:
    s = parse_schedule(expr)
    assert isinstance(s, CronSchedule)
    assert s.next_after(t) == next(CronSim(s.cron, t))


def field_text(lo: int, hi: int) -> st.SearchStrategy[str]:
    """Mostly-valid cron field text, with some out-of-range numbers and junk."""
    num = st.integers(lo - 1, hi + 1).map(str)
    atom = st.one_of(
        st.just("*"),
        num,
        st.tuples(num, num).map("-".join),
        st.sampled_from(["L", "LW", "5L", "1#2", "?", "MON", "x"]),
    )
    item = st.one_of(atom, st.tuples(atom, st.integers(0, 70)).map(lambda p: f"{p[0]}/{p[1]}"))
    return st.lists(item, min_size=1, max_size=3).map(",".join)


cron_texts = st.tuples(
    field_text(0, 59),
    field_text(0, 59),
    field_text(0, 23),
    field_text(1, 31),
    field_text(1, 12),
    field_text(0, 7),
).map(" ".join)


@settings(max_examples=400, deadline=None)
@given(cron_texts, st.booleans(), instants)
def test_any_expression_is_rejected_cleanly_or_works(text: str, six: bool, t: datetime) -> None:
    """Rejected: with a reason naming the field (never cronsim's own complaint), whatever the zone.
    Accepted: the next tick is later and, in UTC, a second the expression names."""
    expr = text if six else text.split(" ", 1)[1]
    try:
        s = parse_schedule(expr, NY)
    except ValidationError as e:
        assert e.field == "schedule"
        assert e.reason.startswith("field "), e.reason
        with pytest.raises(ValidationError) as utc:
            parse_schedule(expr)
        assert utc.value.reason == e.reason
    else:
        tick = s.next_after(t)
        assert tick is None or tick > t
        utc_tick = parse_schedule(expr).next_after(t)
        assert utc_tick is None or utc_tick > t
        if utc_tick is not None and not any(c in expr.upper() for c in "L#?MON"):  # the oracle's grammar
            assert oracle.parse(expr).matches(utc_tick.replace(tzinfo=None)), (expr, utc_tick)


@pytest.mark.parametrize(
    "expr", ["*/2 * * * * *", "0 30 2 * * *", "0 0 9 * * 1-5", "0 0 0 L * *", "0 0 0 * * 5#2"]
)
def test_cronsim_resumes_from_a_copy_of_its_parsed_expression(expr: str) -> None:
    """wallclock parses each expression once and starts every search from a copy of it, moved to the
    start: the copies iterate as freshly parsed CronSims and leave the parsed one as it was."""
    parsed = parse(expr)
    state = dict(vars(parsed))
    for start in (datetime(2026, 3, 8, 1, 59, 59), datetime(2026, 11, 1, 1, 30, 0, 9), datetime(2028, 2, 28)):
        copied, fresh_iter = _walls(parsed, start), CronSim(expr, start)
        assert [next(copied) for _ in range(5)] == [next(fresh_iter) for _ in range(5)]
    assert vars(parsed) == state
    assert isinstance(parsed.days, frozenset)  # and shared between expressions
    assert parsed.days is parse(expr.replace("0 ", "1 ", 1)).days


@settings(deadline=None, max_examples=200)
@given(
    st.sampled_from(["*/7 * * * * *", "30 2 * * *", "0 9 * * MON-FRI", "@every 90s", "17 */5 * * *"]),
    st.sampled_from(["UTC", "Europe/Paris", "America/New_York"]),
    st.integers(1_700_000_000_000, 1_800_000_000_000),
    st.integers(0, 3),
)
def test_next_after_ms_is_next_after_in_milliseconds(expr: str, zone: str, after_ms: int, steps: int) -> None:
    schedule = parse_schedule(expr, zone, anchor=datetime(2024, 1, 1, tzinfo=UTC))
    for _ in range(steps + 1):  # walking forward answers from the tick window too
        nxt = schedule.next_after(datetime.fromtimestamp(after_ms / 1000, UTC))
        expected = None if nxt is None else int(nxt.timestamp() * 1000)
        assert schedule.next_after_ms(after_ms) == expected
        if expected is None:
            break
        after_ms = expected + (after_ms % 3) - 1  # just before, on, or just after the tick
