"""Run now and backfill annotations read into requests (pure), and the names of what they create."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from etcdcron.controller.requests import backfill_request, not_firing, trigger_request
from etcdcron.dispatch.k8s_objects import event_body, job_body, object_name
from etcdcron.errors import ValidationError
from etcdcron.firing import BACKFILL, MANUAL, Firing
from etcdcron.job import Job, StoredJob
from etcdcron.k8s_resource import Envelope, backfill_name, dispatched_name, manual_name

T = datetime(2026, 11, 28, 3, 30, tzinfo=UTC)


def test_a_trigger_token_and_its_payload() -> None:
    assert trigger_request({}) is None
    plain = trigger_request({"etcdcron.io/trigger": "run-1"})
    assert plain is not None and (plain.token, plain.payload) == ("run-1", None)
    json_payload = trigger_request({"etcdcron.io/trigger": "t", "etcdcron.io/trigger-payload": '{"a": [1]}'})
    assert json_payload is not None and json_payload.payload == b'{"a":[1]}'
    text = trigger_request({"etcdcron.io/trigger": "t", "etcdcron.io/trigger-payload": "hello there"})
    assert text is not None and text.payload == b'"hello there"'


@pytest.mark.parametrize(
    ("annotations", "field", "reason"),
    [
        ({"etcdcron.io/trigger": "two words"}, "etcdcron.io/trigger", "is not 1-63 letters"),
        ({"etcdcron.io/trigger": ""}, "etcdcron.io/trigger", "is not 1-63 letters"),
        ({"etcdcron.io/trigger": "x" * 64}, "etcdcron.io/trigger", "is not 1-63 letters"),
        (
            {"etcdcron.io/trigger": "t", "etcdcron.io/trigger-payload": '"' + "x" * 200_000 + '"'},
            "etcdcron.io/trigger-payload",
            "must be at most 196608 bytes",
        ),
    ],
)
def test_bad_trigger_annotations_name_the_annotation(
    annotations: dict[str, str], field: str, reason: str
) -> None:
    with pytest.raises(ValidationError) as e:
        trigger_request(annotations)
    assert e.value.field == field and reason in e.value.reason


def test_a_backfill_range() -> None:
    assert backfill_request({}) is None
    r = backfill_request({"etcdcron.io/backfill": "2026-01-01T00:00:00Z/2026-01-01T02:00:00+01:00"})
    assert r is not None and (r.start, r.end) == (
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1, 1, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("yesterday/today", "is not an RFC 3339 time"),
        ("2026-01-01T00:00:00Z", "is not <from>/<to>"),
        ("2026-01-01T00:00:00Z/2026-01-02T00:00:00Z/x", "is not <from>/<to>"),
        ("2026-01-01T00:00:00/2026-01-02T00:00:00Z", "needs a UTC offset"),
        ("2026-01-02T00:00:00Z/2026-01-01T00:00:00Z", "<to> must be after <from>"),
        ("2026-01-01T00:00:00Z/2026-01-01T00:00:00Z", "<to> must be after <from>"),
    ],
)
def test_bad_backfill_values_name_the_annotation(value: str, reason: str) -> None:
    with pytest.raises(ValidationError) as e:
        backfill_request({"etcdcron.io/backfill": value})
    assert e.value.field == "etcdcron.io/backfill" and reason in e.value.reason


def ready(reason: str) -> dict[str, Any]:
    return {"conditions": [{"type": "Ready", "status": "False", "reason": reason, "message": "m"}]}


@pytest.mark.parametrize(
    ("spec", "status", "why"),
    [
        ({}, {}, None),
        ({}, ready("Pending"), None),
        ({}, ready("EtcdUnavailable"), None),
        ({"suspend": True}, {}, "spec.suspend is true"),
        ({"maxRuns": 2}, {"runCount": 2}, "all 2 runs fired"),
        ({}, ready("InvalidSpec"), "InvalidSpec: m"),
        ({}, ready("Complete"), "Complete: m"),
    ],
)
def test_a_request_is_refused_only_when_the_job_is_out_of_the_pool(
    spec: dict[str, Any], status: dict[str, Any], why: str | None
) -> None:
    assert not_firing({"spec": spec, "status": status}) == why


def firing(kind: str, token: str = "") -> Firing:
    stored = StoredJob(Job(name="report", schedule="* * * * *", payload=b"{}"), "id", T)
    return Firing(stored, T, T, 0 if kind != "scheduled" else 3, "m", False, kind, token)


def test_each_kind_of_firing_has_its_own_object_name_within_63_characters() -> None:
    name = "r" * 52
    assert len(dispatched_name(name, T)) == 63
    assert len(manual_name(name, "uid", "t" * 63)) == 63
    assert len(backfill_name(name, datetime(9999, 12, 31, tzinfo=UTC))) <= 63
    assert (
        backfill_name("report", T) == f"report-b{int(T.timestamp()):d}"
        or backfill_name("report", T)[7] == "b"
    )
    assert int(backfill_name("report", T)[8:], 36) == int(T.timestamp())
    names = {object_name(firing("scheduled"), "u"), object_name(firing(MANUAL, "a"), "u")}
    names |= {object_name(firing(MANUAL, "b"), "u"), object_name(firing(BACKFILL), "u")}
    assert len(names) == 4
    assert object_name(firing(MANUAL, "a"), "u") != object_name(firing(MANUAL, "a"), "other-uid")


def test_a_run_now_firing_carries_its_token_kind_and_payload() -> None:
    envelope = Envelope(
        "u", 1, {"job": {"template": {"spec": {"template": {"spec": {"containers": [{}]}}}}}}, 1
    )
    manual = Firing(
        firing(MANUAL, "tok").job, T, T, 0, "m", False, MANUAL, "tok", payload_override=b'{"x":2}'
    )
    job = job_body(manual, envelope)
    notes = job["metadata"]["annotations"]
    assert notes["etcdcron.io/kind"] == "manual" and notes["etcdcron.io/trigger"] == "tok"
    assert notes["etcdcron.io/payload"] == '{"x":2}' and notes["etcdcron.io/run"] == "0"
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ETCDCRON_KIND"] == "manual" and env["ETCDCRON_PAYLOAD"] == '{"x":2}'
    event = event_body(firing(BACKFILL), Envelope("u", 1, {"event": {}}, 1), "m")
    assert event["metadata"]["annotations"]["etcdcron.io/kind"] == "backfill"
    assert event["message"].startswith("backfilled tick 2026-11-28T03:30:00.000Z")
    assert (
        "etcdcron.io/kind"
        not in event_body(firing("scheduled"), Envelope("u", 1, {"event": {}}, 1), "m")["metadata"][
            "annotations"
        ]
    )
