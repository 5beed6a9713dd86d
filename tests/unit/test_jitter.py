"""Jitter: a fixed, deterministic offset per job; due time shifted, nominal ticks kept. Pure, no etcd."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from etcdcron.decode import BadEntryError, decode_job
from etcdcron.errors import ValidationError
from etcdcron.firing import Cursor, Firing, next_scheduled_ms, next_tick_ms, plan, to_ms
from etcdcron.job import CatchUp, Job, StoredJob, jitter_offset_ms
from etcdcron.keys import Keys

T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
KEYS = Keys("/p")


def stored(jitter: timedelta | None = timedelta(seconds=1), **kwargs: object) -> StoredJob:
    schedule = str(kwargs.pop("schedule", "* * * * * *"))
    job = Job(name="j", schedule=schedule, jitter=jitter, **kwargs)  # type: ignore[arg-type]
    return StoredJob(job, "id1", T0)


def ms(seconds: float) -> int:
    return to_ms(T0) + int(seconds * 1000)


OFFSET = jitter_offset_ms("default", "j", 1000)


def test_the_offset_is_pinned_across_versions_and_machines() -> None:
    # A change of hash would move every jittered job's firing moment on upgrade: these values are a contract.
    assert (OFFSET, jitter_offset_ms("default", "job0", 1000), jitter_offset_ms("t", "x", 3_600_000)) == (
        659,
        616,
        1_209_764,
    )
    assert stored().offset_ms == OFFSET


@pytest.mark.parametrize("jitter", [None, timedelta(0)])
def test_no_jitter_no_offset(jitter: timedelta | None) -> None:
    job = stored(jitter)
    assert job.offset_ms == 0
    assert next_tick_ms(job.schedule(), ms(0), job) == next_scheduled_ms(job.schedule(), ms(0), job) == ms(1)


def test_offsets_spread_evenly_over_the_window() -> None:
    offsets = [jitter_offset_ms("bench", f"tput-{i:07d}", 1000) for i in range(3000)]
    assert all(0 <= o < 1000 for o in offsets)
    slots = Counter(o // 100 for o in offsets)
    assert len(slots) == 10 and all(200 <= n <= 400 for n in slots.values()), slots  # 300 each, ideally


def test_the_offset_depends_on_namespace_and_name_only() -> None:
    a = StoredJob(Job(name="j", schedule="@hourly", jitter=timedelta(minutes=10)), "v1", T0)
    b = StoredJob(
        Job(name="j", schedule="@daily", jitter=timedelta(minutes=10)), "v2", T0 + timedelta(days=1)
    )
    other = StoredJob(
        Job(name="j", schedule="@hourly", namespace="b", jitter=timedelta(minutes=10)), "v1", T0
    )
    assert a.offset_ms == b.offset_ms != other.offset_ms


def test_a_tick_is_due_offset_after_its_nominal_time_and_stays_nominal() -> None:
    job = stored()
    schedule = job.schedule()
    cursor = Cursor("id1", ms(10))
    assert next_scheduled_ms(schedule, ms(10), job) == ms(11)
    assert next_tick_ms(schedule, ms(10), job) == ms(11) + OFFSET  # the timer queue waits for this
    early = plan(job, schedule, cursor, ms(11) + OFFSET - 1)
    assert early.fire == () and early.next_ms == ms(11) + OFFSET
    due = plan(job, schedule, cursor, ms(11) + OFFSET)
    assert due.fire == (ms(11),) and due.last_tick_ms == ms(11)  # the cursor keeps the nominal tick
    assert due.next_ms == ms(12) + OFFSET


def test_a_firing_reports_the_nominal_tick_and_its_due_time() -> None:
    job = stored()
    firing = Firing(job, T0, T0, 1, "m", False)
    assert firing.due == T0 + timedelta(milliseconds=OFFSET)
    assert firing.key == f"default/j/id1/{ms(0)}"  # de-duplication keys on the nominal tick
    assert Firing(stored(None), T0, T0, 1, "m", False).due == T0


def test_catch_up_none_judges_lateness_from_the_due_time() -> None:
    job = stored(catch_up=CatchUp.NONE)
    on_time = plan(job, job.schedule(), Cursor("id1", ms(10)), ms(11) + OFFSET + 900)
    assert on_time.fire == (ms(11),) and on_time.missed == 0
    late = plan(job, job.schedule(), Cursor("id1", ms(10)), ms(13) + OFFSET + 10)
    assert late.fire == (ms(13),) and late.missed == 2


def test_a_tick_due_after_the_ttl_does_not_fire() -> None:
    job = stored(ttl=timedelta(seconds=5))  # the job's keys go at T0 + 5 s
    schedule = job.schedule()
    assert next_tick_ms(schedule, ms(3), job) == ms(4) + OFFSET  # due at 4.659 s < 5 s
    assert next_tick_ms(schedule, ms(4), job) is None  # nominal 5 s: due 5.659 s, after expiry
    p = plan(job, schedule, Cursor("id1", ms(3)), ms(20))
    assert p.fire == (ms(4),) and p.next_ms is None


@pytest.mark.parametrize(
    ("schedule", "jitter", "reason"),
    [
        ("@daily", timedelta(seconds=-1), "must be between 0 and 1h, got -1 day, 23:59:59"),
        ("@daily", timedelta(hours=1, milliseconds=1), "must be between 0 and 1h, got 1:00:00.001000"),
        (
            "@daily",
            timedelta(microseconds=1500),
            "must be a whole number of milliseconds, got 0:00:00.001500",
        ),
        (
            "@every 10s",
            timedelta(seconds=11),
            "must be at most the schedule's shortest interval between ticks",
        ),
        ("* * * * * *", timedelta(milliseconds=1001), "must be at most the schedule's shortest interval"),
        ("*/5 * * * * *", timedelta(seconds=6), "shortest interval between ticks (0:00:05)"),
        ("0 0,30 * * * *", timedelta(minutes=31), "shortest interval between ticks (0:30:00)"),
        ("0 0,20 9 * * *", timedelta(minutes=21), "shortest interval between ticks (0:20:00)"),  # daily pair
    ],
)
def test_jitter_is_validated(schedule: str, jitter: timedelta, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        Job(name="j", schedule=schedule, jitter=jitter)
    assert info.value.field == "jitter" and reason in info.value.reason, info.value.reason


@pytest.mark.parametrize(
    ("schedule", "jitter"),
    [
        ("* * * * * *", timedelta(seconds=1)),  # offsets < 1 s: every second of the window is used
        ("@every 10s", timedelta(seconds=10)),
        ("*/5 * * * * *", timedelta(seconds=5)),
        ("0 0,30 * * * *", timedelta(minutes=30)),
        ("@daily", timedelta(hours=1)),
        ("@hourly", timedelta(0)),
    ],
)
def test_jitter_up_to_the_shortest_interval_is_allowed(schedule: str, jitter: timedelta) -> None:
    assert Job(name="j", schedule=schedule, jitter=jitter).jitter == jitter


def test_jitter_is_stored_and_decoded() -> None:
    job = stored(timedelta(milliseconds=750))
    doc = json.loads(job.to_json())
    assert doc["jitterMs"] == 750
    _, back = decode_job(KEYS, KEYS.job(KEYS.ref("default", "j")), job.to_json())
    assert back == job and back.offset_ms == job.offset_ms == jitter_offset_ms("default", "j", 750)
    assert "jitterMs" not in json.loads(stored(None).to_json())  # older specs stay byte-identical


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1s", "jitterMs: expected an integer, got str"),
        (-1, "jitterMs: must be at least 0, got -1"),
        (3_600_001, "jitterMs: must be at most 3600000, got 3600001"),
        (True, "jitterMs: expected an integer, got bool"),
    ],
)
def test_a_bad_stored_jitter_is_a_bad_entry(value: object, reason: str) -> None:
    doc = json.loads(stored().to_json())
    doc["jitterMs"] = value
    with pytest.raises(BadEntryError) as info:
        decode_job(KEYS, KEYS.job(KEYS.ref("default", "j")), json.dumps(doc).encode())
    assert info.value.reason == reason
