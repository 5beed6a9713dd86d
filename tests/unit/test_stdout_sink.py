"""The stdout sink's fast line encoder writes exactly what ``json.dumps(firing_record(...))`` writes."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from etcdcron.dispatch.stdout import LineEncoder, StdoutSink, firing_record
from etcdcron.firing import BACKFILL, MANUAL, Firing
from etcdcron.job import Job, StoredJob

T0 = datetime(2026, 11, 29, 1, 2, 3, 456000, tzinfo=UTC)


def firing(**overrides: object) -> Firing:
    job_fields = {k: overrides.pop(k) for k in ("name", "namespace", "payload", "type") if k in overrides}
    job = Job(**{"name": "report", "schedule": "* * * * * *", **job_fields})  # type: ignore[arg-type]
    stored = StoredJob(job, str(overrides.pop("job_id", "id-1")), T0)
    fields: dict[str, object] = {
        "scheduled": T0,
        "fired": T0 + timedelta(milliseconds=7),
        "run": 3,
        "member": "m-1",
        "last": False,
        **overrides,
    }
    return Firing(stored, **fields)  # type: ignore[arg-type]


CASES = {
    "plain": firing(),
    "whole second": firing(scheduled=T0.replace(microsecond=0), fired=T0.replace(microsecond=0)),
    "fired a second later": firing(fired=T0 + timedelta(seconds=1, milliseconds=999)),
    "unicode and quotes": firing(name="r.e-1", namespace="t-2", payload='{"a": "\u00fc\n\\"}'.encode()),
    "binary payload": firing(payload=b"\xff\x00\x01"),
    "empty payload": firing(payload=b""),
    "custom type": firing(type="tenant.billing"),
    "member with quote": firing(member='m"1'),
    "run zero": firing(run=0),
    "retry": firing(attempt=2),
    "redelivery": firing(redelivery=True),
    "manual": firing(kind=MANUAL, token="tok-1", run=0, payload_override=b"now"),
    "backfill": firing(kind=BACKFILL),
    "not UTC": firing(fired=T0.astimezone(timezone(timedelta(hours=5, minutes=30)))),
    "epoch": firing(scheduled=datetime(1970, 1, 1, tzinfo=UTC), fired=datetime(1970, 1, 1, tzinfo=UTC)),
}


@pytest.mark.parametrize("case", CASES)
def test_line_is_json_dumps_of_the_record(case: str) -> None:
    f = CASES[case]
    encoder = LineEncoder()
    expected = json.dumps(firing_record(f), separators=(",", ":")) + "\n"
    assert encoder.line(f) == expected
    assert encoder.line(f) == expected  # from the caches too
    assert json.loads(encoder.line(f)) == firing_record(f)


def test_cached_parts_follow_the_job_version_and_the_second() -> None:
    encoder = LineEncoder()
    for i in range(3):
        f = firing(job_id=f"id-{i}", payload=f"p{i}".encode(), scheduled=T0 + timedelta(seconds=i))
        assert encoder.line(f) == json.dumps(firing_record(f), separators=(",", ":")) + "\n"


def test_sink_writes_and_flushes_one_line_per_firing() -> None:
    stream = io.StringIO()
    sink = StdoutSink(stream)
    asyncio.run(sink(CASES["plain"]))
    asyncio.run(sink(CASES["manual"]))
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["key"] for line in lines] == [CASES["plain"].key, CASES["manual"].key]
