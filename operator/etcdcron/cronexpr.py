"""Cron expressions: validated with precise messages, and rewritten into the exact form cronsim reads.

The grammar is in docs/schedules.md. Validation here is stricter than cronsim's, so "parsed" means "cronsim
will not raise". The rewrite spells every stepped item out as its list of values (``5-5/15`` is ``5``):
cronsim reads a one-value range with a step as "from that value", so it must never see one.
"""

from __future__ import annotations

import unicodedata
from typing import NamedTuple

from etcdcron.errors import ValidationError

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

_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # a February 29th exists in some years
_ENDS = " \t\r\n"  # stripped from both ends: YAML block scalars leave a newline


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


def bad(reason: str) -> ValidationError:
    return ValidationError("schedule", reason)


def clean(expr: str) -> str:
    """The expression without surrounding blanks; rejects whitespace other than spaces and tabs inside.

    A no-break space pasted from a web page looks like a space but is not one to Vixie cron: rather than
    guess, say which character it is.
    """
    text = expr.strip(_ENDS)
    for ch in text:
        if ch.isspace() and ch not in " \t":
            name = unicodedata.name(ch, "")
            raise bad(
                f"contains U+{ord(ch):04X}{f' ({name})' if name else ''}; separate fields with spaces or tabs"
            )
    return text


def canonical(text: str) -> tuple[str, bool]:
    """Validate a cleaned cron expression or macro: its 6-field form for cronsim, and whether it is
    fixed-time (neither the minute nor the hour field starts with ``*``)."""
    if not text:
        raise bad("must not be empty")
    if len(text) > MAX_EXPR_LEN:
        raise bad(f"must be at most {MAX_EXPR_LEN} characters, got {len(text)}")
    prefix = text.split("=", 1)[0].upper()
    if "=" in text and prefix in ("CRON_TZ", "TZ"):
        raise bad(f"{prefix}= prefixes are not supported; set time_zone instead")
    if text.startswith("@"):
        macro = MACROS.get(text.lower())
        if macro is None:
            raise bad(f"unknown macro {text!r} (known: {', '.join(MACROS)}, @every <duration>)")
        text = macro
    parts = text.split()
    if len(parts) not in (5, 6):
        raise bad(
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
            where = f"field {len(parts) - 2} (day-of-month)"
            raise bad(f"{where} day {first_day} never occurs in the selected months")
    fixed_time = not parts[-5].startswith("*") and not parts[-4].startswith("*")
    return " ".join(canon), fixed_time


def _parse_field(text: str, pos: int, spec: _Field) -> tuple[str, frozenset[int] | None]:
    """One field: its cronsim form, and the plain numbers it selects (None if it uses L, LW or #)."""
    where = f"field {pos} ({spec.name})"
    if text == "?":
        if spec.name not in ("day-of-month", "day-of-week"):
            raise bad(f"{where} '?' is only allowed in day-of-month and day-of-week")
        text = "*"
    canon: list[str] = []
    values: set[int] | None = set()
    for item in text.split(","):
        if not item:
            raise bad(f"{where} has an empty list item in {text!r}")
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
            raise bad(f"{where} '#' must be followed by an occurrence 1-5, got {item!r}")
        return f"{_value(day, item, where, spec)}#{int(nth)}", None
    if spec.name == "day-of-week" and upper.endswith("L"):
        return f"{_value(item[:-1], item, where, spec)}L", None
    base, slash, step_text = item.partition("/")
    if base == "*":
        lo, hi = spec.lo, spec.hi
    elif "-" in base:
        first, _, last = base.partition("-")
        lo, hi = _value(first, item, where, spec), _value(last, item, where, spec)
        if hi < lo:
            raise bad(f"{where} range {base!r} is reversed ({lo} > {hi})")
    else:
        lo = _value(base, item, where, spec)
        hi = spec.hi if slash else lo  # "5/15" means from 5 to the end of the field, every 15
    step = 1
    if slash:
        span = spec.hi - spec.lo + 1
        if not (_is_uint(step_text) and 1 <= int(step_text) <= span):
            raise bad(f"{where} step {step_text!r} in {item!r} must be a number from 1 to {span}")
        step = int(step_text)
    values = range(lo, hi + 1, step)
    if base == "*":  # kept as written: a leading '*' is what makes the day fields AND (cronsim reads it too)
        canon = "*" if step == 1 else f"*/{step}"
    elif step == 1:
        canon = f"{lo}-{hi}" if hi > lo else str(lo)
    else:
        canon = ",".join(map(str, values))
    return canon, frozenset(values)


def _value(token: str, item: str, where: str, spec: _Field) -> int:
    if token.upper() in spec.names:
        return spec.lo + spec.names.index(token.upper())
    if not token:
        raise bad(f"{where} is missing a value in {item!r}")
    if not _is_uint(token):
        raise bad(f"{where} {token!r} is not a number{' or name' if spec.names else ''}")
    value = int(token)
    if not spec.lo <= value <= spec.hi:
        raise bad(f"{where} value {value} out of range {spec.lo}-{spec.hi}")
    return value


def _is_uint(s: str) -> bool:
    return s.isascii() and s.isdigit()
