"""The catch-up rule and the cursor, without etcd."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from etcdcron.firing import MANUAL, MAX_TICKS_PER_COMMIT, Cursor, InFlight, first_after_ms, plan, to_ms
from etcdcron.job import CatchUp, Job, StoredJob

T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


def stored(**kwargs: object) -> StoredJob:
    job = Job(name="j", schedule=str(kwargs.pop("schedule", "* * * * * *")), **kwargs)  # type: ignore[arg-type]
    return StoredJob(job, "id1", T0)


def ms(seconds: float) -> int:
    return to_ms(T0) + int(seconds * 1000)


def test_on_time_tick_fires() -> None:
    job = stored()
    p = plan(job, job.schedule(), Cursor("id1", ms(10)), ms(11.01))
    assert p.fire == (ms(11),) and p.missed == 0 and p.last_tick_ms == ms(11) and p.next_ms == ms(12)


def test_a_tick_at_the_start_fires_and_none_before() -> None:
    job = stored()
    assert first_after_ms(job, Cursor("id1")) == ms(0) - 1
    p = plan(job, job.schedule(), Cursor("id1"), ms(0.002))
    assert p.fire == (ms(0),)


def test_all_fires_missed_ticks_within_the_deadline() -> None:
    job = stored(catch_up_deadline=timedelta(seconds=5))
    p = plan(job, job.schedule(), Cursor("id1", ms(0)), ms(10.5))
    assert p.fire == tuple(ms(s) for s in range(6, 11))  # 6..10 are within 5 s of 10.5
    assert p.missed == 5  # 1..5 are older than the deadline


def test_latest_fires_only_the_newest_due_tick() -> None:
    job = stored(catch_up=CatchUp.LATEST)
    p = plan(job, job.schedule(), Cursor("id1", ms(0)), ms(10.5))
    assert p.fire == (ms(10),) and p.missed == 9 and p.last_tick_ms == ms(10)


def test_latest_fires_a_single_old_tick_however_late() -> None:
    job = stored(schedule="0 0 * * *", catch_up=CatchUp.LATEST)
    p = plan(job, job.schedule(), Cursor("id1", to_ms(T0 - timedelta(days=1, hours=12))), ms(3600 * 6))
    assert p.fire == (to_ms(T0 - timedelta(hours=12)),) and p.missed == 0


def test_none_fires_only_on_time_ticks() -> None:
    job = stored(catch_up=CatchUp.NONE)
    p = plan(job, job.schedule(), Cursor("id1", ms(0)), ms(10.5))
    assert p.fire == (ms(10),) and p.missed == 9


def test_max_runs_caps_the_plan() -> None:
    job = stored(max_runs=3)
    p = plan(job, job.schedule(), Cursor("id1", ms(0), runs=1), ms(10.5))
    assert p.fire == (ms(1), ms(2)) and p.next_ms is None
    done = plan(job, job.schedule(), Cursor("id1", ms(2), runs=3), ms(20))
    assert done.fire == () and done.next_ms is None


def test_ttl_stops_ticks() -> None:
    job = stored(ttl=timedelta(seconds=3))
    p = plan(job, job.schedule(), Cursor("id1", ms(1)), ms(10))
    assert p.fire == (ms(2),) and p.next_ms is None  # the tick at exactly the expiry does not fire


def test_a_long_backlog_is_committed_in_slices() -> None:
    job = stored(catch_up_deadline=timedelta(hours=1))
    p = plan(job, job.schedule(), Cursor("id1", ms(0)), ms(1000))
    assert len(p.fire) == MAX_TICKS_PER_COMMIT and p.next_ms == ms(MAX_TICKS_PER_COMMIT + 1)


def _dumps(doc: dict[str, object]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "cursor",
    [
        Cursor("a1b2"),
        Cursor("a1b2", 1764400000000, 12, 3, "m-1:ab12cd34:7", 1764400000005),
        Cursor('quo"te\\back/slash', None, 0, 0, "", None),
        Cursor("ünïcödé-\u2028-\x00-\U0001f600", 0, 2**63, 1, "c\n", 0),
    ],
)
def test_a_cursor_is_written_as_json_dumps_would(cursor: Cursor) -> None:
    expected = {
        "jobId": cursor.job_id,
        "lastTickMs": cursor.last_tick_ms,
        "runs": cursor.runs,
        "missed": cursor.missed,
        "commit": cursor.commit,
        "firedMs": cursor.fired_ms,
    }
    assert cursor.to_json() == _dumps(expected)
    assert json.loads(cursor.to_json()) == expected


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (InFlight("a1b2", 1764400000000, 7), {"jobId": "a1b2", "tickMs": 1764400000000, "run": 7}),
        (InFlight('q"\u00e9\U0001f600', 0, 0), {"jobId": 'q"\u00e9\U0001f600', "tickMs": 0, "run": 0}),
        (
            InFlight("a", 5, 1, attempts=2, next_attempt_ms=9),
            {"jobId": "a", "tickMs": 5, "run": 1, "attempts": 2, "nextAttemptMs": 9},
        ),
        (InFlight("a", 5, 1, parked=True), {"jobId": "a", "tickMs": 5, "run": 1, "parked": True}),
        (InFlight("a", 5, 1, spec=b'{"x":1}'), {"jobId": "a", "tickMs": 5, "run": 1, "spec": '{"x":1}'}),
        (
            InFlight("a", 5, 0, MANUAL, "tok", payload=b"\x00\xff"),
            {"jobId": "a", "tickMs": 5, "run": 0, "kind": MANUAL, "token": "tok", "payload": "AP8="},
        ),
    ],
)
def test_an_inflight_record_is_written_as_json_dumps_would(
    record: InFlight, expected: dict[str, object]
) -> None:
    assert record.to_json() == _dumps(expected)
