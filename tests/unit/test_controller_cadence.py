"""When the status writer looks at a resource: a bounded write rate, the final run written promptly, a
takeover spread out, and what on the watch counts as a change of meaning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from etcdcron.controller import cadence
from etcdcron.controller.resource import job_from_resource
from etcdcron.controller.status import Observed, desired_status
from etcdcron.firing import Cursor, to_ms
from etcdcron.job import StoredJob

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


def resource(**spec: Any) -> dict[str, Any]:
    meta = {
        "name": "r",
        "namespace": "ns",
        "uid": "u",
        "generation": 1,
        "creationTimestamp": "2026-11-28T11:59:00Z",
    }
    return {"metadata": meta, "spec": {"schedule": "*/10 * * * * *", **spec}}


def stored_of(body: dict[str, Any]) -> StoredJob:
    return StoredJob(job_from_resource(body, NOW), "id", NOW - timedelta(minutes=1))


@pytest.mark.parametrize(
    ("resources", "seconds"),
    [(0, 5), (1, 5), (800, 5), (1000, 6.25), (5000, 31.25), (10_000, 62.5)],
)
def test_refresh_interval_keeps_routine_looks_within_the_share_of_the_rate(
    resources: int, seconds: float
) -> None:
    interval = cadence.refresh_interval(resources)
    assert interval == timedelta(seconds=seconds)
    assert resources / interval.total_seconds() <= cadence.RATE * cadence.SHARE


@pytest.mark.parametrize("resources", [1, 1000, 10_000])
def test_at_most_one_look_per_tick_and_never_more_than_the_interval_allows(resources: int) -> None:
    """Walk one resource's looks for 10 minutes, as the writer schedules them: one write per tick at most
    (*/10), at most one per interval, and the NEXT written is never in the past before the next look."""
    body = resource()
    stored, interval = stored_of(body), cadence.refresh_interval(resources)
    now, looks, ticks_fired = NOW, 0, 0
    while now < NOW + timedelta(minutes=10):
        ticks_fired = (to_ms(now) - to_ms(NOW)) // 10_000
        cursor = Cursor("id", to_ms(NOW) + ticks_fired * 10_000, runs=ticks_fired, commit="m:1")
        status, wake = desired_status(body, Observed(stored, cursor, 1), now, interval)
        wake = cadence.next_look_ms(status, wake, now, interval, None)
        looks += 1
        nxt = datetime.fromisoformat(status["nextScheduleTime"].replace("Z", "+00:00"))
        later = datetime.fromtimestamp(wake / 1000, UTC)
        assert nxt >= later, (now, nxt, later)  # still ahead at the next look
        assert later > now
        now = later
    assert looks <= 60 + 1  # 600 s of */10: one per tick
    assert looks <= 600 / max(interval.total_seconds(), 10) + 1


@pytest.mark.parametrize(
    ("max_runs", "runs", "before_s", "expected_s"),
    [
        (None, 3, 100, None),  # no maxRuns: nothing to complete
        (4, 3, 100, 10.6),  # the final run is the next tick (12:00:10): look 600 ms after it
        (6, 3, 100, 30.6),  # three more ticks: the third, at 12:00:30
        (6, 3, 25, None),  # ... not before the routine look at +25 s: that one will do
        (3, 3, 100, None),  # already complete
    ],
)
def test_completion_look(max_runs: int | None, runs: int, before_s: float, expected_s: float | None) -> None:
    body = resource(maxRuns=max_runs) if max_runs else resource()
    cursor = Cursor("id", to_ms(NOW), runs=runs, commit="m:1")
    got = cadence.completion_look_ms(stored_of(body), cursor, max_runs, to_ms(NOW) + int(before_s * 1000))
    assert got == (None if expected_s is None else to_ms(NOW) + int(expected_s * 1000))


@pytest.mark.parametrize(
    ("status", "expected_s"),
    [
        ({}, 0),  # never written: at once
        ({"nextScheduleTime": "2026-11-28T12:01:00.000Z"}, 0),  # no conditions: never written by us
        ({"nextScheduleTime": "2026-11-28T12:01:00.000Z", "conditions": [{}]}, 20),  # within the spread
        ({"nextScheduleTime": "2026-11-28T12:00:10.000Z", "conditions": [{}]}, 8),  # before NEXT - LEAD
        ({"nextScheduleTime": "2026-11-28T11:00:00.000Z", "conditions": [{}]}, 0),  # NEXT passed: at once
    ],
)
def test_first_look_of_a_takeover(status: dict[str, Any], expected_s: float) -> None:
    assert cadence.first_look_ms(status, NOW, spread_ms=20_000) == to_ms(NOW) + int(expected_s * 1000)


def test_meaning_changes_with_generation_deletion_and_dispatch_failure_only() -> None:
    body = resource()
    base = cadence.meaning(body)
    counters = {**body, "status": {"runCount": 7, "nextScheduleTime": "2026-11-28T12:00:10.000Z"}}
    assert cadence.meaning(counters) == base
    newer = {**body, "metadata": {**body["metadata"], "generation": 2}}
    deleting = {**body, "metadata": {**body["metadata"], "deletionTimestamp": "2026-11-28T12:00:00Z"}}
    failing = {**body, "status": {"dispatchFailure": {"message": "quota"}}}
    assert len({base, cadence.meaning(newer), cadence.meaning(deleting), cadence.meaning(failing)}) == 4


@pytest.mark.parametrize(
    ("shown", "wake_s", "expiry_s", "expected_s"),
    [
        ("2026-11-28T12:00:30.000Z", 5, None, 28),  # NEXT beyond the interval: just before it, not at +5
        ("2026-11-28T12:05:00.000Z", 5, None, 60),  # ... but at least every LONGEST
        ("2026-11-28T12:00:30.000Z", 5, 20, 20),  # ... and at the expiry
        ("2026-11-28T12:00:05.000Z", 3, None, 3),  # NEXT about to come: as desired_status asked
        (None, 5, None, 60),  # nothing will fire (suspended, complete): every LONGEST
        ("2026-11-28T12:00:06.000Z", 5, None, 5),  # a fast schedule: every interval
    ],
)
def test_next_look(shown: str | None, wake_s: float, expiry_s: float | None, expected_s: float) -> None:
    status = {"nextScheduleTime": shown} if shown else {}
    expiry = NOW + timedelta(seconds=expiry_s) if expiry_s is not None else None
    wake = to_ms(NOW) + int(wake_s * 1000)
    got = cadence.next_look_ms(status, wake, NOW, timedelta(seconds=5), expiry)
    assert got == to_ms(NOW) + int(expected_s * 1000)
