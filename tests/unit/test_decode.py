"""The decode boundary: every hostile entry found in etcd becomes one BadEntryError naming key and reason."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from etcdcron.decode import (
    BadEntryError,
    cursor_for,
    decode_cursor,
    decode_job,
    member_assignment,
    member_id,
    partition_number,
)
from etcdcron.firing import Cursor
from etcdcron.job import CatchUp, Job, StoredJob
from etcdcron.keys import Keys
from etcdcron.policy import Delivery, FailurePolicy, Overlap

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEYS = Keys("/p")
GOOD = StoredJob(
    Job(
        name="x",
        schedule="@every 5s",
        namespace="t",
        type="ty",
        payload=b"\x00\xff",
        ttl=timedelta(hours=1),
        start_at=T0,
        max_runs=4,
        catch_up=CatchUp.NONE,
    ),
    "abc",
    T0,
    lease=42,
)
GOOD_KEY = KEYS.job(KEYS.ref("t", "x"))
POLICY = {"backoff": "constant", "intervalMs": 1000, "maxIntervalMs": 60000, "maxRetries": 3}


def with_fields(**changes: object) -> bytes:
    doc = json.loads(GOOD.to_json())
    doc.update(changes)
    return json.dumps(doc).encode()


def test_a_stored_job_round_trips() -> None:
    ref, stored = decode_job(KEYS, GOOD_KEY, GOOD.to_json())
    assert stored == GOOD and (ref.tenant, ref.name) == ("t", "x")


def test_jobs_stored_by_earlier_versions_still_decode() -> None:
    doc = json.loads(GOOD.to_json())
    del doc["failurePolicy"], doc["delivery"]
    doc |= {"retries": 5, "retryIntervalMs": 200}
    _, stored = decode_job(KEYS, GOOD_KEY, json.dumps(doc).encode())
    assert stored.job.failure_policy == FailurePolicy.constant(timedelta(milliseconds=200), 5)
    assert stored.job.delivery is Delivery.AT_LEAST_ONCE


@pytest.mark.parametrize("overlap", list(Overlap))
def test_overlap_round_trips_and_is_stored_only_when_not_the_default(overlap: Overlap) -> None:
    stored = StoredJob(replace(GOOD.job, overlap=overlap), GOOD.id, GOOD.created_at)
    assert ("overlap" in json.loads(stored.to_json())) is (overlap is not Overlap.ALLOW)
    assert decode_job(KEYS, GOOD_KEY, stored.to_json())[1].job.overlap is overlap


def test_a_cursor_of_another_version_is_ignored() -> None:
    old = Cursor("old-id", 5, runs=7).to_json()
    assert cursor_for(GOOD, b"k", old) == Cursor("abc")
    assert cursor_for(GOOD, b"k", Cursor("abc", 5, 7, 1).to_json()) == Cursor("abc", 5, 7, 1)
    assert cursor_for(GOOD, b"k", None) == Cursor("abc")


OTHER_PARTITION = f"/p/jobs/{(KEYS.ref('t', 'x').partition + 1) % 256:04d}/t/x".encode()
BAD_JOBS = [
    (b"/p/jobs/stray", GOOD.to_json(), "not <partition>/<namespace>/<name>"),
    (b"/p/jobs/00x7/t/x", GOOD.to_json(), "not 4 digits"),
    (b"/p/jobs/0001/t/", GOOD.to_json(), "name ''"),
    (b"/p/jobs/0001/t/a/b", GOOD.to_json(), "not <partition>/<namespace>/<name>"),
    (b"/p/jobs/0001/t/\xff", GOOD.to_json(), "not UTF-8"),
    (b"/p/jobs/0001/T/x", GOOD.to_json(), "not a DNS-1123 label"),
    (OTHER_PARTITION, GOOD.to_json(), "belongs in partition"),
    (GOOD_KEY, b"\xff\xfe", "not JSON"),
    (GOOD_KEY, b"{", "not JSON"),
    (GOOD_KEY, b"[1, 2]", "a JSON list, not an object"),
    (GOOD_KEY, b"null", "a JSON NoneType, not an object"),
    (GOOD_KEY, with_fields(failurePolicy=POLICY | {"maxRetries": "3"}), "maxRetries: expected an integer"),
    (GOOD_KEY, with_fields(failurePolicy=POLICY | {"maxRetries": True}), "maxRetries: expected an integer"),
    (GOOD_KEY, with_fields(failurePolicy=POLICY | {"maxRetries": 1000}), "failure_policy: retries must be"),
    (GOOD_KEY, with_fields(failurePolicy=POLICY | {"backoff": "linear"}), "'linear' is not drop"),
    (GOOD_KEY, with_fields(failurePolicy="drop"), "failurePolicy: expected an object"),
    (GOOD_KEY, with_fields(delivery="twice"), "delivery: 'twice' is not at-least-once"),
    (GOOD_KEY, with_fields(overlap="queue"), "overlap: 'queue' is not allow, skip or wait"),
    (GOOD_KEY, with_fields(overlap=1), "overlap: expected a string, got int"),
    (GOOD_KEY, with_fields(schedule=["@daily"]), "schedule: expected a string, got list"),
    (GOOD_KEY, with_fields(schedule=5), "schedule: expected a string, got int"),
    (GOOD_KEY, with_fields(payload="***"), "payload: not base64"),
    (GOOD_KEY, with_fields(maxRuns=0), "maxRuns: must be at least 1"),
    (GOOD_KEY, with_fields(created="yesterday"), "created: 'yesterday' is not an RFC 3339 time"),
    (GOOD_KEY, with_fields(startAt="2026-01-01T00:00:00"), "has no UTC offset"),
    (GOOD_KEY, with_fields(catchUp="some"), "catchUp: 'some' is not all, latest or none"),
    (GOOD_KEY, with_fields(ttlMs=10), "ttlMs: must be at least 1000"),
    (GOOD_KEY, with_fields(id=None), "id: expected a string, got NoneType"),
    (GOOD_KEY, with_fields(name="y"), "holds job t/y, not t/x"),
    (GOOD_KEY, with_fields(namespace="u"), "holds job u/x, not t/x"),
]


@pytest.mark.parametrize(("key", "value", "reason"), BAD_JOBS)
def test_bad_job_entries_name_key_and_reason(key: bytes, value: bytes, reason: str) -> None:
    with pytest.raises(BadEntryError) as err:
        decode_job(KEYS, key, value)
    assert err.value.key == key
    assert reason in err.value.reason, err.value.reason
    assert key.decode("utf-8", "backslashreplace") in str(err.value)


def test_a_missing_field_is_named() -> None:
    doc = json.loads(GOOD.to_json())
    del doc["schedule"]
    with pytest.raises(BadEntryError, match="schedule: missing"):
        decode_job(KEYS, GOOD_KEY, json.dumps(doc).encode())


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"[]", "not an object"),
        (b'{"jobId": 1}', "jobId: expected a string"),
        (b'{"jobId": "a", "runs": -1}', "runs: must be at least 0"),
        (b'{"jobId": "a", "lastTickMs": "5"}', "lastTickMs: expected an integer"),
    ],
)
def test_bad_cursors(value: bytes, reason: str) -> None:
    with pytest.raises(BadEntryError, match=reason):
        decode_cursor(b"/p/cursors/0001/t/x", value)


def test_member_and_partition_keys() -> None:
    assert member_id(KEYS, b"/p/members/m-1") == "m-1"
    assert partition_number(KEYS, b"/p/partitions/0255") == 255
    for bad in (b"/p/members/\xff", b"/p/members/", b"/p/members/a/b"):
        with pytest.raises(BadEntryError):
            member_id(KEYS, bad)
    for bad in (b"/p/partitions/0256", b"/p/partitions/xyz", b"/p/partitions/12"):
        with pytest.raises(BadEntryError):
            partition_number(KEYS, bad)


@pytest.mark.parametrize(
    ("value", "assignment"),
    [
        (b'{"id": "m", "pid": 1, "host": "h", "assignment": "balanced"}', "balanced"),
        (b'{"id": "m", "pid": 1, "host": "h"}', ""),  # a member of an earlier version
        (b'{"assignment": 3}', ""),
        (b"[1]", ""),
        (b"\xff", ""),
        (b"", ""),
    ],
)
def test_a_member_key_says_which_assignment_it_computes(value: bytes, assignment: str) -> None:
    assert member_assignment(value) == assignment
