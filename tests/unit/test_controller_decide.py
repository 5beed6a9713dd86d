"""What the reconciler does with what etcd holds: the run state survives every path, maxRuns is a ceiling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from etcdcron.controller.decide import Action, decide
from etcdcron.controller.mirror import Record, Snapshot
from etcdcron.controller.resource import job_from_resource
from etcdcron.firing import Cursor, to_ms
from etcdcron.job import StoredJob

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
TICK = to_ms(NOW - timedelta(seconds=8))


def body(
    generation: int = 2, uid: str = "u-1", status: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "pulse",
            "namespace": "team-a",
            "uid": uid,
            "generation": generation,
            "creationTimestamp": "2026-11-28T11:00:00Z",
        },
        "spec": {"schedule": "*/2 * * * * *", **spec},
        "status": status or {},
    }


def stored(generation: int = 2, uid: str = "u-1", **spec: Any) -> StoredJob:
    return StoredJob(job_from_resource(body(generation, uid, **spec), NOW), "job-1", NOW - timedelta(hours=1))


def cursor(runs: int, job_id: str = "job-1") -> Cursor:
    return Cursor(job_id, TICK, runs, 1, "m:7", TICK + 3)


def record(generation: int = 2, uid: str = "u-1") -> Record:
    return Record(uid, generation, "job-1")


LIVE = Snapshot(stored(), cursor(5), record(), 10, 11, 10)
PARKED = Snapshot(None, cursor(5), record(3), 0, 11, 12)  # suspended at generation 3: spec gone, cursor kept
COMPLETE = Snapshot(None, cursor(6), record(2), 0, 13, 10)  # the member's final commit: spec gone


@pytest.mark.parametrize(
    ("resource", "snap", "action"),
    [
        (body(), LIVE, Action.KEEP),  # mirrored: nothing to write
        (body(3, suspend=True), LIVE, Action.PARK),  # suspend: out of the pool, cursor kept
        (body(3, suspend=True), PARKED, Action.KEEP),  # ...once
        (body(4), PARKED, Action.PUT),  # resume
        (body(1), LIVE, Action.STALE),  # an older generation never replaces a newer one
        (body(2, suspend=False), PARKED, Action.STALE),  # ...even while no spec is stored
        (body(maxRuns=6), COMPLETE, Action.KEEP),  # complete: never back into the pool
        (body(3, maxRuns=6, suspend=True), COMPLETE, Action.PARK),  # suspend after completion: record only
        (
            body(4, maxRuns=6),
            Snapshot(None, cursor(6), record(3), 0, 13, 14),
            Action.PARK,
        ),  # resume: still complete (records the generation)
        (body(3, maxRuns=6, schedule="* * * * * *"), COMPLETE, Action.PARK),  # an edit keeps the ceiling
        (body(3, maxRuns=9), COMPLETE, Action.PUT),  # a higher ceiling continues the count
        (body(3, schedule="61 * * * *"), LIVE, Action.PARK),  # invalid: stop firing, keep the cursor
        (body(2, uid="u-2"), LIVE, Action.PUT),  # same name, new resource: its own fresh job
        (body(status={"runCount": 7}), LIVE, Action.PUT),  # etcd restored behind status: raise the cursor
    ],
)
def test_actions(resource: dict[str, Any], snap: Snapshot, action: Action) -> None:
    assert decide(resource, snap, NOW).action is action


def test_resume_carries_the_run_state_exactly_and_skips_ticks_due_while_suspended() -> None:
    decision = decide(body(4), PARKED, NOW)
    assert decision.progress is not None
    assert (decision.progress.runs, decision.progress.missed) == (5, 1)
    assert decision.progress.last_tick_ms == to_ms(NOW)  # nothing due while suspended fires
    assert decision.progress.fired_ms == TICK + 3


def test_a_live_edit_carries_the_cursor_as_it_is() -> None:
    decision = decide(body(3, schedule="*/3 * * * * *"), LIVE, NOW)
    assert decision.action is Action.PUT and decision.progress is not None
    assert (decision.progress.runs, decision.progress.last_tick_ms) == (5, TICK)


def test_a_higher_max_runs_after_completion_numbers_on_from_the_last_run() -> None:
    decision = decide(body(3, maxRuns=9), COMPLETE, NOW)
    assert decision.progress is not None and decision.progress.runs == 6


def test_a_cursor_behind_status_is_raised_to_it() -> None:
    decision = decide(body(status={"runCount": 7, "lastScheduleTime": "2026-11-28T11:59:58Z"}), LIVE, NOW)
    assert decision.progress is not None and decision.progress.runs == 7
    assert decision.progress.last_tick_ms == to_ms(NOW - timedelta(seconds=2))


def test_a_new_resource_starts_afresh() -> None:
    decision = decide(body(1), Snapshot(), NOW)
    assert decision.action is Action.PUT and decision.progress is None


def test_start_time_still_holds_after_a_resume() -> None:
    snap = Snapshot(None, cursor(5), record(3), 0, 11, 12)
    later = "2026-11-28T13:00:00Z"
    decision = decide(body(4, startTime=later), snap, NOW)
    assert decision.progress is not None
    assert decision.progress.last_tick_ms == to_ms(datetime(2026, 11, 28, 13, tzinfo=UTC)) - 1


def test_a_rejected_template_is_not_retried_until_the_spec_changes() -> None:
    snap = Snapshot(None, None, Record("u-1", 2, "", rejected="422: restartPolicy"), 0, 0, 5)
    decision = decide(body(), snap, NOW)
    assert decision.action is Action.KEEP and decision.rejected == "422: restartPolicy"
    assert decide(body(3), snap, NOW).action is Action.PUT
