from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etcdcron.durations import format_duration, parse_duration
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
        ("", "must not be empty (e.g. 90s, 1h30m, 500ms)"),
        ("   ", "must not be empty (e.g. 90s, 1h30m, 500ms)"),
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
