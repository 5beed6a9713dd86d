from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etcdcron.durations import format_duration, parse_duration, parse_expiry, parse_instant
from etcdcron.errors import ValidationError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("30m1h", timedelta(hours=1, minutes=30)),  # any order, as Go
        ("500ms", timedelta(milliseconds=500)),
        ("2h", timedelta(hours=2)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        ("1.1s", timedelta(seconds=1, milliseconds=100)),  # exact, not 1.0999...
        (".5s", timedelta(milliseconds=500)),
        ("1d", timedelta(days=1)),
        ("1d2h3m4s5ms6us", timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5, microseconds=6)),
        ("7µs", timedelta(microseconds=7)),  # U+00B5
        ("7μs", timedelta(microseconds=7)),  # U+03BC
        ("3000ns", timedelta(microseconds=3)),
        ("90", timedelta(seconds=90)),  # a bare integer is seconds
        ("0", timedelta(0)),  # zero parses; callers decide
        ("0s", timedelta(0)),
        ("  15m  ", timedelta(minutes=15)),
    ],
)
def test_parses(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "must not be empty (e.g. 90s, 1h30m, 500ms, PT90S)"),
        ("   ", "must not be empty (e.g. 90s, 1h30m, 500ms, PT90S)"),
        ("-5s", "must not be negative, got '-5s'"),
        ("1h 30m", "must not contain spaces, got '1h 30m' (write e.g. 1h30m)"),
        ("abc", "'abc' is not a duration: expected a number at 'abc' (e.g. 90s, 1h30m, 500ms)"),
        ("5x", "unknown unit 'x' in '5x' (use ns, us, ms, s, m, h, d)"),
        ("5H", "unknown unit 'H' in '5H' (use ns, us, ms, s, m, h, d)"),
        ("1e3s", "unknown unit 'e' in '1e3s' (use ns, us, ms, s, m, h, d)"),
        ("1.5", "missing unit after '1.5' in '1.5' (use ns, us, ms, s, m, h, d)"),
        ("1h30", "missing unit after '30' in '1h30' (use ns, us, ms, s, m, h, d)"),
        ("1..5s", "missing unit after '1.' in '1..5s' (use ns, us, ms, s, m, h, d)"),
        ("5s.", "'5s.' is not a duration: expected a number at '.' (e.g. 90s, 1h30m, 500ms)"),
        ("1ns", "'1ns' is not a whole number of microseconds"),
        ("99999999999d", "'99999999999d' is too large (at most 999999999 days)"),
        ("9" * 65, "must be at most 64 characters, got 65"),
    ],
)
def test_rejects_with_reason(text: str, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_duration(text, "retry.interval")
    assert info.value.field == "retry.interval"
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("td", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=2, hours=3), "2d3h"),
        (timedelta(milliseconds=1500), "1s500ms"),
        (timedelta(microseconds=1001), "1ms1us"),
        (timedelta(seconds=-90), "-1m30s"),
    ],
)
def test_formats(td: timedelta, text: str) -> None:
    assert format_duration(td) == text


@given(st.timedeltas(min_value=timedelta(0)))
def test_format_round_trips(td: timedelta) -> None:
    assert parse_duration(format_duration(td)) == td


@given(
    st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["us", "ms", "s", "m", "h", "d"])), min_size=1)
)
def test_terms_add_up(terms: list[tuple[int, str]]) -> None:
    unit = {
        "us": timedelta(microseconds=1),
        "ms": timedelta(milliseconds=1),
        "s": timedelta(seconds=1),
        "m": timedelta(minutes=1),
        "h": timedelta(hours=1),
        "d": timedelta(days=1),
    }
    text = "".join(f"{n}{u}" for n, u in terms)
    if len(text) <= 64:
        assert parse_duration(text) == sum((n * unit[u] for n, u in terms), timedelta(0))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT90S", timedelta(seconds=90)),
        ("PT1H30M", timedelta(hours=1, minutes=30)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("P2W", timedelta(weeks=2)),
        ("P1W2D", timedelta(days=9)),  # ISO 8601-2 allows weeks with days
        ("PT0.5S", timedelta(milliseconds=500)),
        ("PT0,5S", timedelta(milliseconds=500)),  # ISO's preferred decimal sign
        ("PT1.5H", timedelta(hours=1, minutes=30)),  # a fraction on the last component
        ("PT1M", timedelta(minutes=1)),  # after T, M is minutes
        ("P1D", timedelta(days=1)),  # a day is 24 h of real time
        ("PT36H", timedelta(hours=36)),  # no carry-over rules
        ("P0D", timedelta(0)),
        ("PT0S", timedelta(0)),
        ("PT0.000001S", timedelta(microseconds=1)),
        ("  PT5S ", timedelta(seconds=5)),
    ],
)
def test_parses_iso_8601(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("P1M", "'P1M': months have no fixed length; use days or weeks (e.g. P30D, P4W; PT1M is a minute)"),
        ("P1Y", "'P1Y': years have no fixed length; use days or weeks (e.g. P30D, P4W; PT1M is a minute)"),
        (
            "P1Y2DT3H",
            "'P1Y2DT3H': years have no fixed length; use days or weeks (e.g. P30D, P4W; PT1M is a minute)",
        ),
        ("P", "'P' is not an ISO 8601 duration (e.g. PT90S, PT1H30M, P1DT2H, P2W)"),
        ("PT", "'PT' is not an ISO 8601 duration (e.g. PT90S, PT1H30M, P1DT2H, P2W)"),
        ("P1DT", "'P1DT' is not an ISO 8601 duration (e.g. PT90S, PT1H30M, P1DT2H, P2W)"),
        ("P1H", "'P1H' is not an ISO 8601 duration (e.g. PT90S, PT1H30M, P1DT2H, P2W)"),  # hours need T
        ("PT1D", "'PT1D' is not an ISO 8601 duration (e.g. PT90S, PT1H30M, P1DT2H, P2W)"),
        ("PT1S2M", "'PT1S2M' is not an ISO 8601 duration (e.g. PT90S, PT1H30M, P1DT2H, P2W)"),  # order
        ("PT-1S", "'PT-1S' is not an ISO 8601 duration (e.g. PT90S, PT1H30M, P1DT2H, P2W)"),
        ("-PT1S", "must not be negative, got '-PT1S'"),
        ("PT1.5H30M", "'PT1.5H30M': only the last component may have a fraction"),
        ("PT0.0000001S", "'PT0.0000001S' is not a whole number of microseconds"),
        ("pt1s", "'pt1s' is not a duration: expected a number at 'pt1s' (e.g. 90s, 1h30m, 500ms)"),
    ],
)
def test_rejects_iso_8601_with_reason(text: str, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_duration(text, "ttl")
    assert (info.value.field, info.value.reason) == ("ttl", reason)


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10_000)))
def test_iso_seconds_agree_with_go_seconds(td: timedelta) -> None:
    seconds, micros = divmod(td // timedelta(microseconds=1), 1_000_000)
    text = f"{seconds}.{micros:06d}"
    assert parse_duration(f"PT{text}S") == parse_duration(f"{text}s") == td


NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T09:00:00Z", datetime(2026, 12, 1, 9, tzinfo=UTC)),
        ("2026-12-01T09:00:00.250z", datetime(2026, 12, 1, 9, 0, 0, 250_000, tzinfo=UTC)),
        ("2026-12-01T10:00:00+01:00", datetime(2026, 12, 1, 9, tzinfo=UTC)),
        ("2026-12-01 09:00:00+00:00", datetime(2026, 12, 1, 9, tzinfo=UTC)),  # RFC 3339 allows a space
    ],
)
def test_parses_instants(text: str, expected: datetime) -> None:
    t = parse_instant(text)
    assert t == expected and t.tzinfo is not None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2026-12-01T09:00:00", "'2026-12-01T09:00:00' needs a UTC offset or Z, e.g. 2026-12-01T09:00:00Z"),
        ("2026-12-01", "'2026-12-01' needs a UTC offset or Z, e.g. 2026-12-01T09:00:00Z"),
        ("tomorrow", "'tomorrow' is not an RFC 3339 time (e.g. 2026-12-01T09:00:00Z)"),
        (
            "2026-13-01T00:00:00Z",
            "'2026-13-01T00:00:00Z' is not an RFC 3339 time (e.g. 2026-12-01T09:00:00Z)",
        ),
    ],
)
def test_rejects_instants_with_reason(text: str, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_instant(text, "start_at")
    assert (info.value.field, info.value.reason) == ("start_at", reason)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h", timedelta(hours=1)),  # Go
        ("PT1H", timedelta(hours=1)),  # ISO 8601
        ("3600", timedelta(hours=1)),  # bare seconds
        ("2026-11-28T13:00:00Z", timedelta(hours=1)),  # an expiry instant: the time left until it
        ("2026-11-28T14:00:00+01:00", timedelta(hours=1)),
    ],
)
def test_expiry_is_a_duration_or_an_instant(text: str, expected: timedelta) -> None:
    assert parse_expiry(text, NOW) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2026-11-28T12:00:00Z", "'2026-11-28T12:00:00Z' is not in the future"),
        ("2026-11-28T11:00:00Z", "'2026-11-28T11:00:00Z' is not in the future"),
        ("2026-11-28T13:00:00", "'2026-11-28T13:00:00' needs a UTC offset or Z, e.g. 2026-12-01T09:00:00Z"),
        ("P1M", "'P1M': months have no fixed length; use days or weeks (e.g. P30D, P4W; PT1M is a minute)"),
    ],
)
def test_expiry_rejects_with_reason(text: str, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_expiry(text, NOW)
    assert (info.value.field, info.value.reason) == ("ttl", reason)


def test_expiry_instant_keeps_its_offset_meaningful() -> None:
    tokyo = timezone(timedelta(hours=9))
    assert parse_expiry(datetime(2026, 11, 28, 22, tzinfo=tokyo).isoformat(), NOW) == timedelta(hours=1)
