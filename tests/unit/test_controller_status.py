"""A resource's status from what etcd holds: honest counts, the final run shown, NEXT never in the past."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from etcdcron.controller.resource import job_from_resource
from etcdcron.controller.status import RECENT, Observed, desired_status, next_tick, status_patch, urgent
from etcdcron.errors import ValidationError
from etcdcron.firing import Cursor, HistoryEntry, from_ms, to_ms
from etcdcron.job import StoredJob, format_time

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
EVERY = timedelta(seconds=5)


def resource(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "report",
            "namespace": "team-a",
            "uid": "u-1",
            "generation": 2,
            "creationTimestamp": "2026-11-28T11:59:00Z",
        },
        "spec": {"schedule": "*/10 * * * * *", **spec},
    }


def stored_of(body: dict[str, Any], created: datetime = NOW) -> StoredJob:
    return StoredJob(job_from_resource(body, NOW), "id", created)


def status_of(body: dict[str, Any], observed: Observed, now: datetime = NOW) -> dict[str, Any]:
    return desired_status(body, observed, now, EVERY)[0]


def conds(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_status_of_a_running_job() -> None:
    body = resource(maxRuns=10)
    cursor = Cursor("id", to_ms(NOW + timedelta(seconds=20)), runs=3, missed=1, commit="m:1")
    status = status_of(body, Observed(stored_of(body), cursor, 2), NOW + timedelta(seconds=21))
    assert status["runCount"] == 3 and status["remainingRuns"] == 7 and status["missedRuns"] == 1
    assert status["lastScheduleTime"] == "2026-11-28T12:00:20.000Z"
    assert status["nextScheduleTime"] == "2026-11-28T12:00:30.000Z"
    assert status["lastDispatched"] == {
        "kind": "Event",
        "name": f"report-{int((NOW + timedelta(seconds=20)).timestamp())}",
        "scheduledTime": "2026-11-28T12:00:20.000Z",
    }
    assert conds(status)["Ready"]["status"] == "True" and conds(status)["Complete"]["status"] == "False"
    assert status["observedGeneration"] == 2


def test_a_completed_job_shows_its_final_run_from_the_final_cursor() -> None:
    body = resource(maxRuns=3)
    body["status"] = {"observedGeneration": 2, "runCount": 2, "lastScheduleTime": "2026-11-28T12:00:10.000Z"}
    final = Cursor("id", to_ms(NOW + timedelta(seconds=20)), runs=3, commit="m:9")
    status = status_of(body, Observed(None, final, 2), NOW + timedelta(seconds=21))
    assert conds(status)["Complete"]["status"] == "True" and conds(status)["Ready"]["reason"] == "Complete"
    assert status["runCount"] == 3 and status["remainingRuns"] == 0 and status["nextScheduleTime"] is None
    assert status["lastScheduleTime"] == "2026-11-28T12:00:20.000Z"
    assert status["lastDispatched"]["scheduledTime"] == "2026-11-28T12:00:20.000Z"


def test_counts_never_go_down_and_a_reconciler_written_cursor_keeps_last() -> None:
    body = resource()
    body["status"] = {"runCount": 5, "missedRuns": 2, "lastScheduleTime": "2026-11-28T11:59:50.000Z"}
    carried = Cursor("id", to_ms(NOW), runs=4, missed=0)  # no commit id: written by the reconciler
    status = status_of(body, Observed(stored_of(body), carried, 2))
    assert status["runCount"] == 5 and status["missedRuns"] == 2
    assert status["lastScheduleTime"] == "2026-11-28T11:59:50.000Z"


def test_not_yet_mirrored_is_pending_not_complete() -> None:
    status = status_of(resource(maxRuns=3), Observed(None, None))
    assert conds(status)["Complete"]["status"] == "False" and conds(status)["Ready"]["reason"] == "Pending"
    assert status["observedGeneration"] is None


def test_conditions_keep_their_transition_time_and_patches_are_minimal() -> None:
    body = resource(schedule="@daily")
    observed = Observed(stored_of(body), Cursor("id"), 2)
    first = status_of(body, observed)
    body["status"] = first
    later = status_of(body, observed, NOW + timedelta(minutes=5))
    assert later["conditions"] == first["conditions"]
    assert status_patch(first, later) == {}


@pytest.mark.parametrize(
    ("observed", "reason", "message"),
    [
        (
            Observed(None, None, invalid=ValidationError("spec.schedule", "bad")),
            "InvalidSpec",
            "spec.schedule: bad",
        ),
        (
            Observed(None, None, 2, rejected="422 Unprocessable Entity: x"),
            "JobRejected",
            "422 Unprocessable Entity: x",
        ),
        (Observed(None, None, etcd_error="timeout"), "EtcdUnavailable", "timeout"),
    ],
)
def test_ready_false_says_why(observed: Observed, reason: str, message: str) -> None:
    status = status_of(resource(), observed)
    assert conds(status)["Ready"]["status"] == "False"
    assert conds(status)["Ready"]["reason"] == reason and conds(status)["Ready"]["message"] == message


def test_ttl_ending_before_the_first_tick_never_fires() -> None:
    body = resource(schedule="@every 30s", startTime="2027-01-04T08:00:00Z", ttlSeconds=3600)
    status = status_of(body, Observed(stored_of(body), None, 2))
    ready = conds(status)["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "NeverFires"
    assert "before the first tick at 2027-01-04T08:00:30.000Z" in ready["message"]


@pytest.mark.parametrize(
    ("schedule", "now_s", "shown_s", "wake_s"),
    [
        # every 10 s: the next tick, looked at again two seconds (LEAD) before it comes
        ("*/10 * * * * *", 1, 10, 6),
        ("*/10 * * * * *", 7, 10, 8),
        # within LEAD of a tick: that one is being fired, show the one after
        ("*/10 * * * * *", 9.5, 20, 14.5),
        # every second: more than one look per 5 s, so the first tick LEAD after the next look
        ("* * * * * *", 1, 9, 6),
        # every 3 s: the next tick, looked at again LEAD before it
        ("*/3 * * * * *", 1, 6, 4),
        # daily: the next tick, look again at the refresh interval
        ("@daily", 1, 43200, 6),
    ],
)
def test_next_is_never_in_the_past_before_the_next_look(
    schedule: str, now_s: float, shown_s: float, wake_s: float
) -> None:
    body = resource(schedule=schedule)
    stored = stored_of(body)
    now = NOW + timedelta(seconds=now_s)
    shown, wake = next_tick(stored, Cursor("id", to_ms(NOW), 1), now, EVERY)
    assert (shown, wake) == (to_ms(NOW + timedelta(seconds=shown_s)), to_ms(NOW + timedelta(seconds=wake_s)))
    assert shown - wake >= 2000  # still LEAD ahead when we look again


def test_meaning_is_urgent_counters_are_not() -> None:
    current = {"runCount": 1, "nextScheduleTime": "2026-11-28T12:00:10.000Z", "conditions": []}
    assert not urgent(current, {"runCount": 2, "nextScheduleTime": "2026-11-28T12:00:20.000Z"}, NOW)
    assert urgent(current, {"conditions": [{"type": "Ready"}]}, NOW)
    later = NOW + timedelta(seconds=11)  # the NEXT shown has passed: a wrong value standing
    assert urgent(current, {"nextScheduleTime": "2026-11-28T12:00:20.000Z"}, later)
    soon = NOW + timedelta(seconds=8.5)  # ... or is about to (within LEAD), before a write could land
    assert urgent(current, {"nextScheduleTime": "2026-11-28T12:00:20.000Z"}, soon)


def test_a_job_the_api_server_refused_at_a_tick_makes_ready_false() -> None:
    body = resource()
    body["status"] = {
        "dispatchFailure": {"reason": "JobCreateFailed", "message": "creating a Job failed: 403"}
    }
    ready = conds(status_of(body, Observed(stored_of(body), Cursor("id"), 2)))["Ready"]
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False",
        "JobCreateFailed",
        "creating a Job failed: 403",
    )


def entry(
    second: int, result: str, error: str = "", attempts: int = 1, kind: str = "scheduled"
) -> HistoryEntry:
    tick = to_ms(NOW) + second * 1000
    run = 0 if kind != "scheduled" else second
    return HistoryEntry(tick, tick + 5, "op-a", run, result, attempts, kind, error)


REFUSED = "the API server refused the Job: 403 Forbidden: Jobs are frozen here"


@pytest.mark.parametrize(
    ("history", "failure"),
    [
        ((), None),
        ((entry(1, "success"),), None),
        ((entry(1, "failed", REFUSED),), f"{REFUSED} (1 attempt)"),
        ((entry(1, "success"), entry(2, "failed", "503", 4)), "503 (4 attempts)"),
        ((entry(1, "failed", REFUSED), entry(2, "success")), None),  # a later success clears it
        ((entry(1, "failed", REFUSED), entry(2, "undeliverable")), f"{REFUSED} (1 attempt)"),
        ((entry(1, "failed"),), "the trigger failed (1 attempt)"),
    ],
)
def test_the_latest_settled_firing_says_whether_delivery_fails(
    history: tuple[HistoryEntry, ...], failure: str | None
) -> None:
    body = resource(target={"job": {"template": {"spec": {}}}})
    status = status_of(body, Observed(stored_of(body), Cursor("id"), 2, history=history))
    ready = conds(status)["Ready"]
    if failure is None:
        assert status["dispatchFailure"] is None and ready["status"] == "True"
        return
    failed = history[-1] if history[-1].result == "failed" else history[-2]
    assert status["dispatchFailure"] == {
        "reason": "JobCreateFailed",
        "message": failure,
        "scheduledTime": format_time(from_ms(failed.scheduled_ms)),
        "time": format_time(from_ms(failed.fired_ms)),
        "attempts": failed.attempts,
    }
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "JobCreateFailed", failure)


def test_an_event_target_fails_as_event_create_failed() -> None:
    body = resource()
    status = status_of(body, Observed(stored_of(body), Cursor("id"), 2, history=(entry(1, "failed", "500"),)))
    assert conds(status)["Ready"]["reason"] == status["dispatchFailure"]["reason"] == "EventCreateFailed"


def test_recent_shows_the_last_five_settled_firings_oldest_first() -> None:
    body = resource()
    history = (*tuple(entry(i, "success") for i in range(1, 8)), entry(9, "failed", "boom", 2, "manual"))
    status = status_of(body, Observed(stored_of(body), Cursor("id"), 2, history=history))
    assert len(status["recent"]) == RECENT == 5
    assert [r["run"] for r in status["recent"]] == [4, 5, 6, 7, 0]
    assert status["recent"][-1] == {
        "scheduled": "2026-11-28T12:00:09.000Z",
        "fired": "2026-11-28T12:00:09.005Z",
        "member": "op-a",
        "run": 0,
        "result": "failed",
        "attempts": 2,
        "kind": "manual",
        "error": "boom",
    }
    assert "error" not in status["recent"][0]


def test_without_a_history_read_recent_and_failure_stay_as_shown() -> None:
    body = resource()
    body["status"] = {
        "recent": [{"run": 1}],
        "dispatchFailure": {"reason": "JobCreateFailed", "message": "x"},
    }
    status = status_of(body, Observed(None, None, etcd_error="down"))
    assert "recent" not in status and "dispatchFailure" not in status
    assert conds(status)["Ready"]["reason"] == "EtcdUnavailable"
    patch = status_patch(body["status"], status)
    assert "recent" not in patch and "dispatchFailure" not in patch


def test_a_failure_is_urgent_when_it_appears_clears_or_changes_cause_not_per_tick() -> None:
    first = {"reason": "JobCreateFailed", "message": "403 (1 attempt)", "scheduledTime": "a", "time": "a"}
    again = {**first, "scheduledTime": "b", "time": "b"}
    other = {**first, "message": "500 (4 attempts)"}
    assert urgent({}, {"dispatchFailure": first}, NOW)
    assert not urgent({"dispatchFailure": first}, {"dispatchFailure": again, "recent": []}, NOW)
    assert urgent({"dispatchFailure": first}, {"dispatchFailure": other}, NOW)
    assert urgent({"dispatchFailure": first}, {"dispatchFailure": None}, NOW)


def test_an_entry_etcd_cannot_decode_makes_ready_false_naming_it() -> None:
    body = resource()
    bad = "bad entry /operator/cursors/0042/team-a/report: not JSON"
    ready = conds(status_of(body, Observed(None, None, bad_entry=bad)))["Ready"]
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "BadEtcdEntry", bad)
