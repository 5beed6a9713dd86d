"""DistributedCronJob -> Job and -> status, without a cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from etcdcron.controller.resource import (
    Observed,
    desired_status,
    job_from_resource,
    mirrors,
    status_patch,
)
from etcdcron.dispatch.kubernetes import event_body, job_body
from etcdcron.errors import ValidationError
from etcdcron.firing import Cursor, Firing, to_ms
from etcdcron.job import CatchUp, StoredJob
from etcdcron.k8s_resource import Envelope, dispatched_name

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


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


def test_job_mirrors_every_field() -> None:
    body = resource(
        timeZone="Europe/Paris",
        startTime="2026-12-01T00:00:00Z",
        ttlSeconds=3600,
        maxRuns=5,
        catchUp="Latest",
        startingDeadlineSeconds=30,
        type="t",
        payload={"a": [1]},
        target={"job": {"template": {"spec": {}}}},
    )
    job = job_from_resource(body, NOW)
    assert (job.name, job.namespace, job.schedule, job.time_zone) == (
        "report",
        "team-a",
        "*/10 * * * * *",
        "Europe/Paris",
    )
    assert job.start_at == datetime(2026, 12, 1, tzinfo=UTC)
    assert job.ttl == timedelta(seconds=3540)  # counted from the resource's creation, not from now
    assert (
        job.max_runs == 5
        and job.catch_up is CatchUp.LATEST
        and job.catch_up_deadline == timedelta(seconds=30)
    )
    envelope = Envelope.from_bytes(job.payload)
    assert envelope.uid == "u-1" and envelope.generation == 2 and envelope.payload == {"a": [1]}
    assert envelope.kind == "Job"


def test_default_target_is_an_event() -> None:
    assert Envelope.from_bytes(job_from_resource(resource(), NOW).payload).kind == "Event"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"schedule": "61 * * * *"}, "spec.schedule"),
        ({"timeZone": "No/Where"}, "spec.timeZone"),
        ({"startTime": "soon"}, "spec.startTime"),
    ],
)
def test_invalid_spec_names_the_resource_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        job_from_resource(resource(**spec), NOW)
    assert err.value.field == field


def test_mirroring_is_guarded_by_generation() -> None:
    body = resource()
    stored = StoredJob(job_from_resource(body, NOW), "id", NOW)
    assert mirrors(stored, body)
    body["metadata"]["generation"] = 3
    assert not mirrors(stored, body)


def test_status_of_a_running_job() -> None:
    body = resource(maxRuns=10)
    stored = StoredJob(job_from_resource(body, NOW), "id", NOW)
    cursor = Cursor("id", to_ms(NOW + timedelta(seconds=20)), runs=3, missed=1)
    status = desired_status(body, Observed(stored, cursor), NOW + timedelta(seconds=21))
    assert status["runCount"] == 3 and status["remainingRuns"] == 7 and status["missedRuns"] == 1
    assert status["lastScheduleTime"] == "2026-11-28T12:00:20.000Z"
    assert status["nextScheduleTime"] == "2026-11-28T12:00:30.000Z"
    assert status["lastDispatched"] == {
        "kind": "Event",
        "name": f"report-{int((NOW + timedelta(seconds=20)).timestamp())}",
        "scheduledTime": "2026-11-28T12:00:20.000Z",
    }
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["Complete"]["status"] == "False"
    assert status["observedGeneration"] == 2


def test_a_vanished_max_runs_job_is_complete() -> None:
    body = resource(maxRuns=3)
    body["status"] = {"observedGeneration": 2, "runCount": 2}
    status = desired_status(body, Observed(None, None), NOW)
    conds = {c["type"]: c["status"] for c in status["conditions"]}
    assert conds["Complete"] == "True" and status["runCount"] == 3 and status["nextScheduleTime"] is None


def test_not_yet_mirrored_is_pending_not_complete() -> None:
    status = desired_status(resource(maxRuns=3), Observed(None, None), NOW)
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Complete"]["status"] == "False" and conds["Ready"]["reason"] == "Pending"
    assert status["observedGeneration"] is None


def test_conditions_keep_their_transition_time_and_patches_are_minimal() -> None:
    body = resource()
    stored = StoredJob(job_from_resource(body, NOW), "id", NOW)
    first = desired_status(body, Observed(stored, Cursor("id")), NOW)
    body["status"] = first
    later = desired_status(body, Observed(stored, Cursor("id")), NOW + timedelta(minutes=5))
    assert later["conditions"] == first["conditions"]
    assert status_patch(first, later) == {}


def test_invalid_schedule_condition() -> None:
    status = desired_status(
        resource(), Observed(None, None, invalid=ValidationError("spec.schedule", "bad")), NOW
    )
    conds = {c["type"]: c for c in status["conditions"]}
    assert (
        conds["ScheduleValid"]["status"] == "False"
        and conds["ScheduleValid"]["message"] == "spec.schedule: bad"
    )
    assert conds["Ready"]["status"] == "False"


def test_dispatched_objects_carry_the_firing() -> None:
    body = resource(
        type="t",
        payload={"k": "v"},
        target={
            "job": {
                "template": {
                    "metadata": {"labels": {"app": "x"}},
                    "spec": {
                        "template": {
                            "spec": {
                                "containers": [
                                    {"name": "c", "image": "i", "env": [{"name": "A", "value": "1"}]}
                                ]
                            }
                        }
                    },
                }
            }
        },
    )
    stored = StoredJob(job_from_resource(body, NOW), "id", NOW)
    firing = Firing(stored, NOW, NOW, 4, "m1", False)
    envelope = Envelope.from_bytes(stored.job.payload)
    job = job_body(firing, envelope)
    assert job["metadata"]["name"] == dispatched_name("report", NOW) == f"report-{int(NOW.timestamp())}"
    assert job["metadata"]["namespace"] == "team-a"
    assert job["metadata"]["labels"] == {"app": "x", "etcdcron.io/job": "report"}
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["A"] == "1" and env["ETCDCRON_RUN"] == "4" and env["ETCDCRON_PAYLOAD"] == '{"k":"v"}'
    assert env["ETCDCRON_SCHEDULED_TIME"] == "2026-11-28T12:00:00.000Z"
    event = event_body(firing, Envelope("u-1", 2, {"event": {"reason": "Tick"}}, None), "m1")
    assert event["reason"] == "Tick" and event["involvedObject"]["uid"] == "u-1"
    assert event["metadata"]["annotations"]["etcdcron.io/scheduled-time"] == "2026-11-28T12:00:00.000Z"
