"""DistributedCronJob -> etcd-cron Job: pure, tested without a cluster.

The etcd job's payload is an *envelope*: the resource's uid and generation (so mirroring is idempotent,
guarded by ``metadata.generation``), its dispatch target and the user's payload. Members decode it to
create the Event or Job.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from etcdcron.durations import parse_duration
from etcdcron.errors import ValidationError
from etcdcron.job import CatchUp, Job
from etcdcron.k8s_resource import Envelope
from etcdcron.policy import FailurePolicy

DEFAULT_DEADLINE_SECONDS = 300
PAYLOAD_LIMIT = 192 * 1024
"""spec.payload as compact JSON, at most: it travels as an annotation of every Event and Job (all annotations
of an object share 256 KiB), and ``kubectl apply`` copies it into its own last-applied annotation."""
_CATCH_UP = {"All": CatchUp.ALL, "Latest": CatchUp.LATEST, "None": CatchUp.NONE}
# Library field -> the resource's field, so a condition message names what the user wrote.
SPEC_FIELD = {
    "schedule": "spec.schedule",
    "time_zone": "spec.timeZone",
    "start_at": "spec.startTime",
    "ttl": "spec.ttlSeconds",
    "max_runs": "spec.maxRuns",
    "type": "spec.type",
    "payload": "spec.payload",
    "catch_up_deadline": "spec.startingDeadlineSeconds",
    "failure_policy": "spec.failurePolicy",
    "jitter": "spec.jitter",
    "name": "metadata.name",
    "namespace": "metadata.namespace",
}


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def expires_at(body: dict[str, Any]) -> datetime | None:
    ttl = body.get("spec", {}).get("ttlSeconds")
    if ttl is None:
        return None
    return parse_time(body["metadata"]["creationTimestamp"]) + timedelta(seconds=int(ttl))


def job_from_resource(body: dict[str, Any], now: datetime) -> Job:
    """The etcd-cron Job mirroring a resource; a ValidationError names the resource's field."""
    meta, spec = body["metadata"], body.get("spec", {})
    target = spec.get("target") or {"event": {"reason": "Fired"}}
    payload = spec.get("payload")
    size = len(json.dumps(payload, separators=(",", ":")).encode())
    if size > PAYLOAD_LIMIT:
        raise ValidationError(
            "spec.payload", f"must be at most {PAYLOAD_LIMIT} bytes as compact JSON, got {size}"
        )
    envelope = Envelope(meta["uid"], int(meta.get("generation", 1)), target, payload)
    ttl = None
    expiry = expires_at(body)
    if expiry is not None:
        ttl = timedelta(seconds=max(1, math.ceil((expiry - now).total_seconds())))
    start = spec.get("startTime")
    try:
        start_at = parse_time(start) if start else None
    except ValueError:
        raise ValidationError("spec.startTime", f"{start!r} is not an RFC 3339 time") from None
    deadline = int(spec.get("startingDeadlineSeconds", DEFAULT_DEADLINE_SECONDS))
    try:
        jitter = parse_duration(str(spec["jitter"]), "jitter") if spec.get("jitter") else None
        return Job(
            name=meta["name"],
            namespace=meta["namespace"],
            schedule=spec.get("schedule", ""),
            time_zone=spec.get("timeZone") or "UTC",
            type=spec.get("type") or "",
            payload=envelope.to_bytes(),
            ttl=ttl,
            start_at=start_at,
            max_runs=spec.get("maxRuns"),
            catch_up=_CATCH_UP.get(spec.get("catchUp", "All"), CatchUp.ALL),
            catch_up_deadline=timedelta(seconds=deadline),
            failure_policy=failure_policy(spec.get("failurePolicy") or {}),
            jitter=jitter,
        )
    except ValidationError as e:
        raise ValidationError(SPEC_FIELD.get(e.field, e.field), e.reason) from None


def failure_policy(spec: dict[str, Any]) -> FailurePolicy:
    """``spec.failurePolicy``: ``backoff`` Drop | Constant (default) | Exponential, ``maxRetries`` (3),
    ``intervalSeconds`` (1) and, for Exponential, ``maxIntervalSeconds`` (60)."""
    backoff = str(spec.get("backoff", "Constant"))
    retries = int(spec.get("maxRetries", 3))
    interval = timedelta(seconds=int(spec.get("intervalSeconds", 1)))
    if backoff == "Drop":
        return FailurePolicy.drop()
    if backoff == "Exponential":
        most = timedelta(seconds=int(spec.get("maxIntervalSeconds", 60)))
        return FailurePolicy.exponential(interval, most, retries)
    if backoff == "Constant":
        return FailurePolicy.constant(interval, retries)
    raise ValidationError("failure_policy", f"backoff must be Drop, Constant or Exponential, got {backoff!r}")


def utcnow() -> datetime:
    return datetime.now(UTC)
