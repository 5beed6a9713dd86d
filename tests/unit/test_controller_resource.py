"""DistributedCronJob -> Job, and a tick's Event or Job, without a cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from etcdcron.controller.resource import PAYLOAD_LIMIT, job_from_resource
from etcdcron.dispatch.k8s_objects import event_body, job_body
from etcdcron.errors import ValidationError
from etcdcron.firing import Firing
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


@pytest.mark.parametrize(
    ("policy", "text"),
    [
        (None, "constant:1s:3"),
        ({}, "constant:1s:3"),
        ({"backoff": "Drop"}, "drop"),
        ({"backoff": "Constant", "intervalSeconds": 5, "maxRetries": 10}, "constant:5s:10"),
        (
            {"backoff": "Exponential", "intervalSeconds": 2, "maxIntervalSeconds": 30, "maxRetries": 4},
            "exponential:2s:30s:4",
        ),
    ],
)
def test_the_failure_policy_is_the_library_s(policy: dict[str, Any] | None, text: str) -> None:
    spec = {} if policy is None else {"failurePolicy": policy}
    assert job_from_resource(resource(**spec), NOW).failure_policy.text() == text


@pytest.mark.parametrize(
    ("text", "ms"), [(None, None), ("", None), ("500ms", 500), ("PT30S", 30_000), ("1m", 60_000)]
)
def test_jitter_is_a_duration(text: str | None, ms: int | None) -> None:
    job = job_from_resource(resource(schedule="@hourly", **({} if text is None else {"jitter": text})), NOW)
    assert (None if job.jitter is None else job.jitter.total_seconds() * 1000) == ms


def test_default_target_is_an_event() -> None:
    assert Envelope.from_bytes(job_from_resource(resource(), NOW).payload).kind == "Event"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"schedule": "61 * * * *"}, "spec.schedule"),
        ({"timeZone": "No/Where"}, "spec.timeZone"),
        ({"startTime": "soon"}, "spec.startTime"),
        ({"failurePolicy": {"backoff": "Sometimes"}}, "spec.failurePolicy"),
        ({"jitter": "soon"}, "spec.jitter"),
        ({"jitter": "2h"}, "spec.jitter"),
        ({"schedule": "*/5 * * * * *", "jitter": "6s"}, "spec.jitter"),
        ({"failurePolicy": {"maxRetries": 101}}, "spec.failurePolicy"),
        (
            {"failurePolicy": {"backoff": "Exponential", "intervalSeconds": 10, "maxIntervalSeconds": 5}},
            "spec.failurePolicy",
        ),
    ],
)
def test_invalid_spec_names_the_resource_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        job_from_resource(resource(**spec), NOW)
    assert err.value.field == field


def test_a_payload_over_the_limit_names_spec_payload() -> None:
    job_from_resource(resource(payload="x" * (PAYLOAD_LIMIT - 2)), NOW)  # the quotes count
    with pytest.raises(ValidationError) as err:
        job_from_resource(resource(payload="x" * (PAYLOAD_LIMIT - 1)), NOW)
    assert err.value.field == "spec.payload"


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
