"""Go-style durations ("90s", "1h30m", "500ms", "1.5h", plus "1d" = 24h) as exact ``timedelta`` values.

Pure and exact: decimal fractions are computed with ``Fraction`` so "1.1s" is 1.1 s, not 1.0999... s, and a
value that is not a whole number of microseconds (``timedelta``'s resolution) is rejected rather than rounded.
"""

from __future__ import annotations

import re
from datetime import timedelta
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
    """Parse a non-negative Go-style duration; a bare integer means seconds. Zero is allowed: callers decide.

    Raises ``ValidationError(field, reason)`` naming the offending part.
    """
    s = text.strip()
    if not s:
        raise ValidationError(field, "must not be empty (e.g. 90s, 1h30m, 500ms)")
    if len(s) > _MAX_LEN:
        raise ValidationError(field, f"must be at most {_MAX_LEN} characters, got {len(s)}")
    if s.startswith("-"):
        raise ValidationError(field, f"must not be negative, got {text!r}")
    if any(ch.isspace() for ch in s):
        raise ValidationError(field, f"must not contain spaces, got {text!r} (write e.g. 1h30m)")
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
