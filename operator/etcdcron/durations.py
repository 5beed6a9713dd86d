"""Durations and instants as users write them, parsed exactly (pure).

- Go-style durations: "90s", "1h30m", "500ms", "1.5h", plus "1d" = 24 h; a bare integer is seconds.
- ISO 8601 durations: "PT90S", "PT1H30M", "P1DT2H", "P2W", "PT0.5S" (a day is 24 h, a week 7 days: the
  pool counts real time). Years and months ("P1Y", "P1M") are rejected: their length is not fixed, and a
  TTL or delay that silently meant 30 days would be wrong in most months. ("PT1M" is one minute.)
- RFC 3339 instants: "2026-12-01T09:00:00Z", with a UTC offset or Z (``parse_instant``).

Decimal fractions are computed with ``Fraction`` so "1.1s" is 1.1 s, not 1.0999... s, and a value that is not
a whole number of microseconds (``timedelta``'s resolution) is rejected rather than rounded.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from fractions import Fraction

from etcdcron.errors import ValidationError

_UNIT_US: dict[str, Fraction] = {
    "ns": Fraction(1, 1000),
    "us": Fraction(1),
    "µs": Fraction(1),  # U+00B5 MICRO SIGN, as Go accepts
    "μs": Fraction(1),  # U+03BC GREEK SMALL LETTER MU, as Go accepts
    "ms": Fraction(1000),
    "s": Fraction(1_000_000),
    "m": Fraction(60_000_000),
    "h": Fraction(3_600_000_000),
    "d": Fraction(86_400_000_000),
}
_MAX_LEN = 64  # far above any sensible duration; bounds the exact-arithmetic work on hostile input
_UNITS_HELP = "ns, us, ms, s, m, h, d"
_TERM = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([^0-9.]*)")
_FORMAT_UNITS = (
    ("d", 86_400_000_000),
    ("h", 3_600_000_000),
    ("m", 60_000_000),
    ("s", 1_000_000),
    ("ms", 1000),
)


def parse_duration(text: str, field: str = "duration") -> timedelta:
    """Parse a non-negative Go-style ("1h30m") or ISO 8601 ("PT1H30M") duration; a bare integer means
    seconds. Zero is allowed: callers decide.

    Raises ``ValidationError(field, reason)`` naming the offending part.
    """
    s = text.strip()
    if not s:
        raise ValidationError(field, "must not be empty (e.g. 90s, 1h30m, 500ms, PT90S)")
    if len(s) > _MAX_LEN:
        raise ValidationError(field, f"must be at most {_MAX_LEN} characters, got {len(s)}")
    if s.startswith("-"):
        raise ValidationError(field, f"must not be negative, got {text!r}")
    if any(ch.isspace() for ch in s):
        raise ValidationError(field, f"must not contain spaces, got {text!r} (write e.g. 1h30m)")
    if s.startswith("P"):
        return _iso_duration(s, text, field)
    if s.isascii() and s.isdigit():
        return _to_timedelta(Fraction(int(s)) * _UNIT_US["s"], text, field)
    total = Fraction(0)
    pos = 0
    while pos < len(s):
        m = _TERM.match(s, pos)
        if m is None:
            raise ValidationError(
                field,
                f"{text!r} is not a duration: expected a number at {s[pos:]!r} (e.g. 90s, 1h30m, 500ms)",
            )
        number, unit = m.groups()
        if not unit:
            raise ValidationError(field, f"missing unit after {number!r} in {text!r} (use {_UNITS_HELP})")
        if unit not in _UNIT_US:
            raise ValidationError(field, f"unknown unit {unit!r} in {text!r} (use {_UNITS_HELP})")
        total += Fraction(number) * _UNIT_US[unit]
        pos = m.end()
    return _to_timedelta(total, text, field)


_ISO_NUMBER = r"[0-9]+(?:[.,][0-9]+)?"
_ISO = re.compile(
    rf"P(?:(?P<Y>{_ISO_NUMBER})Y)?(?:(?P<M>{_ISO_NUMBER})M)?(?:(?P<W>{_ISO_NUMBER})W)?(?:(?P<D>{_ISO_NUMBER})D)?"
    rf"(?:T(?:(?P<h>{_ISO_NUMBER})H)?(?:(?P<m>{_ISO_NUMBER})M)?(?:(?P<s>{_ISO_NUMBER})S)?)?"
)
_ISO_US = {
    "W": 7 * _UNIT_US["d"],
    "D": _UNIT_US["d"],
    "h": _UNIT_US["h"],
    "m": _UNIT_US["m"],
    "s": _UNIT_US["s"],
}
_ISO_HELP = "e.g. PT90S, PT1H30M, P1DT2H, P2W"


def _iso_duration(s: str, text: str, field: str) -> timedelta:
    """ISO 8601 ``PnWnDTnHnMnS`` (weeks may be combined with days, as ISO 8601-2 allows); only the last
    component may have a fraction, written with '.' or ','."""
    m = _ISO.fullmatch(s)
    if m is None or s in ("P", "PT") or s.endswith("T"):
        raise ValidationError(field, f"{text!r} is not an ISO 8601 duration ({_ISO_HELP})")
    if m["Y"] is not None or m["M"] is not None:
        unit = "years" if m["Y"] is not None else "months"
        raise ValidationError(
            field,
            f"{text!r}: {unit} have no fixed length; use days or weeks (e.g. P30D, P4W; PT1M is a minute)",
        )
    given = [(name, value) for name, value in m.groupdict().items() if value is not None]
    total = Fraction(0)
    for i, (name, value) in enumerate(given):
        number = value.replace(",", ".")
        if "." in number and i != len(given) - 1:
            raise ValidationError(field, f"{text!r}: only the last component may have a fraction")
        total += Fraction(number) * _ISO_US[name]
    return _to_timedelta(total, text, field)


def parse_instant(text: str, field: str = "time") -> datetime:
    """An RFC 3339 instant with a UTC offset or Z ("2026-12-01T09:00:00Z"), time-zone aware."""
    s = text.strip()
    try:
        t = datetime.fromisoformat(s.replace("z", "Z"))
    except ValueError:
        raise ValidationError(
            field, f"{text!r} is not an RFC 3339 time (e.g. 2026-12-01T09:00:00Z)"
        ) from None
    if t.tzinfo is None:
        raise ValidationError(field, f"{text!r} needs a UTC offset or Z, e.g. 2026-12-01T09:00:00Z")
    return t


def looks_like_instant(text: str) -> bool:
    """A date first ("2026-..."): read as an RFC 3339 instant, not a duration (no duration starts so)."""
    return re.match(r"\s*[0-9]{4}-", text) is not None


def parse_expiry(text: str, now: datetime, field: str = "ttl") -> timedelta:
    """A TTL as a duration, or as the RFC 3339 instant it ends at (after ``now``): the time left until it."""
    if not looks_like_instant(text):
        return parse_duration(text, field)
    at = parse_instant(text, field)
    if at <= now:
        raise ValidationError(field, f"{text!r} is not in the future")
    return at - now


def _to_timedelta(micros: Fraction, text: str, field: str) -> timedelta:
    if micros.denominator != 1:
        raise ValidationError(field, f"{text!r} is not a whole number of microseconds")
    try:
        return timedelta(microseconds=int(micros))
    except OverflowError:
        raise ValidationError(field, f"{text!r} is too large (at most {timedelta.max.days} days)") from None


def format_duration(td: timedelta) -> str:
    """The shortest string ``parse_duration`` reads back as ``td`` (e.g. "1h30m", "1s500ms", "0s")."""
    if td < timedelta(0):
        return "-" + format_duration(-td)
    rest = td // timedelta(microseconds=1)
    if rest == 0:
        return "0s"
    parts: list[str] = []
    for unit, size in _FORMAT_UNITS:
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    if rest:
        parts.append(f"{rest}us")
    return "".join(parts)
