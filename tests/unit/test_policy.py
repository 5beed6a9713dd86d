"""Failure policies and delivery records: parsing, backoff, and the stored forms' round trips."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from etcdcron.decode import BadEntryError, decode_history, decode_inflight, decode_request
from etcdcron.errors import ValidationError
from etcdcron.firing import (
    BACKFILL,
    ERROR_LENGTH,
    MANUAL,
    HistoryEntry,
    InFlight,
    RunRequest,
    error_text,
    history_json,
)
from etcdcron.policy import Backoff, FailurePolicy

S = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("drop", FailurePolicy.drop()),
        ("constant:1s:3", FailurePolicy.constant(S, 3)),
        ("CONSTANT:500ms:0", FailurePolicy.constant(S / 2, 0)),
        ("exponential:1s:1m:5", FailurePolicy.exponential(S, 60 * S, 5)),
        ("exponential:PT2S:PT1M:10", FailurePolicy.exponential(2 * S, 60 * S, 10)),
    ],
)
def test_parse_and_text_round_trip(text: str, policy: FailurePolicy) -> None:
    assert FailurePolicy.parse(text) == policy
    assert FailurePolicy.parse(policy.text()) == policy


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("sometimes", "is not drop, constant:INTERVAL:MAX"),
        ("constant:1s", "is not drop"),
        ("constant:soon:3", "'constant:soon:3'"),
        ("constant:1s:-1", "is not a number of retries"),
        ("constant:1s:101", "retries must be between 0 and 100"),
        ("exponential:1m:1s:3", "max interval must be between the interval and 24h"),
        ("drop:1s", "is not drop"),
    ],
)
def test_bad_policies_name_the_field(text: str, reason: str) -> None:
    with pytest.raises(ValidationError) as err:
        FailurePolicy.parse(text)
    assert err.value.field == "failure_policy" and reason in err.value.reason, err.value.reason


def test_backoff() -> None:
    assert [FailurePolicy.constant(S, 3).delay(n) for n in (1, 3, 4)] == [S, S, None]
    exponential = FailurePolicy.exponential(S, 5 * S, 10)
    assert [exponential.delay(n) for n in (1, 2, 3, 4, 10, 11)] == [S, 2 * S, 4 * S, 5 * S, 5 * S, None]
    assert FailurePolicy.drop().delay(1) is None
    assert FailurePolicy().backoff is Backoff.CONSTANT and FailurePolicy().max_retries == 3


@pytest.mark.parametrize(
    "record",
    [
        InFlight("id", 1000, 3),
        InFlight("id", 1000, 0, MANUAL, "tok", 2, 5000, True, b"\x00payload"),
        InFlight("id", 1000, 0, BACKFILL),
        InFlight("id", 1000, 7, spec=b'{"a": 1}'),
    ],
)
def test_in_flight_records_round_trip(record: InFlight) -> None:
    assert decode_inflight(b"k", record.to_json()) == record


def test_tags_keep_kinds_apart() -> None:
    assert [
        InFlight("i", 5, 1).tag,
        InFlight("i", 5, 0, BACKFILL).tag,
        InFlight("i", 5, 0, MANUAL, "x").tag,
    ] == [
        "t5",
        "b5",
        "mx",
    ]


def test_requests_and_history_round_trip() -> None:
    manual = RunRequest("tok", 10, b"p", True, "m")
    backfill = RunRequest("backfill-1-2", 10, None, False, "", BACKFILL, 1, 2, 2.5, 0)
    assert [decode_request(b"k", r.to_json()) for r in (manual, backfill)] == [manual, backfill]
    entries = [
        HistoryEntry(1, 2, "m", 3, "success", 1),
        HistoryEntry(4, 5, "n", 0, "failed", 3, MANUAL, "403 Forbidden: no"),
    ]
    assert decode_history(b"k", history_json("id", entries)) == ("id", entries)
    assert b"403" in history_json("id", entries) and history_json("id", entries[:1]).count(b",") == 7


def test_a_history_entry_keeps_a_bounded_one_line_error() -> None:
    assert error_text(None) == ""
    assert error_text(ValueError("two\n  lines")) == "two lines"
    assert error_text(RuntimeError()) == "RuntimeError"
    long = error_text(ValueError("x" * 10_000))
    assert len(long) == ERROR_LENGTH and long.endswith("...")


@pytest.mark.parametrize(
    "value",
    [
        b'{"jobId": "i", "entries": [[1, 2, "m", 3, "failed", 1, "scheduled", 7]]}',
        b'{"jobId": "i", "entries": [[1, 2, "m", 3, "failed", 1]]}',
    ],
)
def test_bad_history_entries(value: bytes) -> None:
    with pytest.raises(BadEntryError, match="entries"):
        decode_history(b"k", value)


async def test_a_final_error_fails_at_once_and_others_do_not() -> None:
    from etcdcron.dispatch import FinalError, TriggerFailed, attempt

    async def refuse(_: object) -> None:
        raise FinalError("422 Unprocessable Entity")

    async def fail(_: object) -> None:
        raise TriggerFailed("503")

    firing: Any = None
    assert (await attempt(firing, refuse)).final
    assert not (await attempt(firing, fail)).final


@pytest.mark.parametrize(
    "value",
    [
        b'{"jobId": "i", "tickMs": "5", "run": 1}',
        b'{"jobId": "i", "tickMs": 5, "run": 1, "kind": "x"}',
        b"[]",
    ],
)
def test_bad_in_flight_records(value: bytes) -> None:
    with pytest.raises(BadEntryError):
        decode_inflight(b"k", value)
