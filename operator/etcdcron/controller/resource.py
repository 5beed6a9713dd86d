"""DistributedCronJob <-> etcd-cron Job, and the resource's status: pure functions, tested without a cluster.

The etcd job's payload is an *envelope*: the resource's uid and generation (so mirroring is idempotent,
guarded by ``metadata.generation``), its dispatch target and the user's payload. Members decode it to
create the Event or Job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from etcdcron.errors import ValidationError
from etcdcron.firing import Cursor, first_after_ms, from_ms, next_tick_ms
from etcdcron.job import CatchUp, Job, StoredJob, format_time
from etcdcron.k8s_resource import Envelope, dispatched_name

DEFAULT_DEADLINE_SECONDS = 300
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
    envelope = Envelope(meta["uid"], int(meta.get("generation", 1)), target, spec.get("payload"))
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
        )
    except ValidationError as e:
        raise ValidationError(SPEC_FIELD.get(e.field, e.field), e.reason) from None


def mirrors(stored: StoredJob, body: dict[str, Any]) -> bool:
    """Whether the etcd job already mirrors this generation of this resource (mirroring is idempotent)."""
    try:
        envelope = Envelope.from_bytes(stored.job.payload)
    except (ValueError, KeyError):
        return False
    meta = body["metadata"]
    return envelope.uid == meta["uid"] and envelope.generation == int(meta.get("generation", 1))


# -- status -------------------------------------------------------------------------------------------------
def condition(
    kind: str,
    ok: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
    previous: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """A metav1.Condition whose lastTransitionTime moves only when its status flips."""
    status = "True" if ok else "False"
    since = format_time(now)
    for old in previous or []:
        if old.get("type") == kind and old.get("status") == status:
            since = old.get("lastTransitionTime", since)
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since,
    }


@dataclass(frozen=True, slots=True)
class Observed:
    """What the controller knows of a resource beyond its body: its etcd job and run state, if any."""

    stored: StoredJob | None
    cursor: Cursor | None
    invalid: ValidationError | None = None
    etcd_error: str | None = None


def desired_status(body: dict[str, Any], observed: Observed, now: datetime) -> dict[str, Any]:
    """The whole status a resource should show now (the caller writes only what differs)."""
    spec, meta = body.get("spec", {}), body["metadata"]
    old = body.get("status") or {}
    generation = int(meta.get("generation", 1))
    previous = old.get("conditions")
    cursor = observed.cursor
    runs = cursor.runs if cursor is not None else int(old.get("runCount") or 0)
    missed = cursor.missed if cursor is not None else int(old.get("missedRuns") or 0)
    max_runs = spec.get("maxRuns")
    suspended = bool(spec.get("suspend"))
    expiry = expires_at(body)
    expired = expiry is not None and now >= expiry
    # A job with max runs leaves etcd with its final firing: once this generation was mirrored, a vanished
    # job means it completed, even if our last status write missed its final runs.
    vanished = (
        max_runs is not None
        and observed.stored is None
        and observed.invalid is None
        and observed.etcd_error is None
        and not suspended
        and old.get("observedGeneration") == generation
    )
    complete = vanished or (max_runs is not None and runs >= int(max_runs))
    if vanished and max_runs is not None:
        runs = int(max_runs)
    # observedGeneration says "this generation is mirrored (or refused)": never claim it before that.
    settled = observed.stored is not None or observed.invalid is not None or suspended or complete or expired
    status: dict[str, Any] = {
        "observedGeneration": generation if settled else old.get("observedGeneration"),
        "runCount": runs,
        "missedRuns": missed,
        "remainingRuns": max(int(max_runs) - runs, 0) if max_runs is not None else None,
        "lastScheduleTime": old.get("lastScheduleTime"),
        "lastDispatched": old.get("lastDispatched"),
    }
    if cursor is not None and cursor.runs and cursor.last_tick_ms is not None:
        last = from_ms(cursor.last_tick_ms)
        status["lastScheduleTime"] = format_time(last)
        status["lastDispatched"] = {
            "kind": "Job" if "job" in (spec.get("target") or {}) else "Event",
            "name": dispatched_name(meta["name"], last),
            "scheduledTime": format_time(last),
        }
        if cursor.fired_ms is not None:
            status["lastDispatched"]["time"] = format_time(from_ms(cursor.fired_ms))
    nxt = None
    if observed.stored is not None and cursor is not None and not (suspended or complete or expired):
        stored = observed.stored
        ms = next_tick_ms(stored.schedule(), first_after_ms(stored, cursor), stored)
        nxt = format_time(from_ms(ms)) if ms is not None else None
    status["nextScheduleTime"] = nxt
    status["conditions"] = _conditions(
        observed, suspended, complete, expired, expiry, runs, max_runs, nxt, generation, now, previous
    )
    return status


def _conditions(
    observed: Observed,
    suspended: bool,
    complete: bool,
    expired: bool,
    expiry: datetime | None,
    runs: int,
    max_runs: int | None,
    nxt: str | None,
    generation: int,
    now: datetime,
    previous: list[dict[str, Any]] | None,
) -> list[dict[str, Any]]:
    invalid = observed.invalid
    problem = f"{invalid.field}: {invalid.reason}" if invalid is not None else ""
    if invalid is not None:
        ready = (False, "InvalidSchedule", problem)
    elif observed.etcd_error is not None:
        ready = (False, "EtcdUnavailable", observed.etcd_error)
    elif suspended:
        ready = (False, "Suspended", "spec.suspend is true")
    elif complete:
        ready = (False, "Complete", f"all {max_runs} runs fired")
    elif expired:
        ready = (False, "Expired", "ttlSeconds passed")
    elif observed.stored is None:
        ready = (False, "Pending", "not yet stored in etcd")
    else:
        ready = (True, "Scheduled", f"next tick at {nxt}" if nxt else "no further tick")
    expiry_text = format_time(expiry) if expiry is not None else ""

    def cond(kind: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
        return condition(kind, ok, reason, message, generation, now, previous)

    return [
        cond("Ready", *ready),
        cond("ScheduleValid", invalid is None, "Valid" if invalid is None else "Invalid", problem),
        cond(
            "Suspended",
            suspended,
            "Suspended" if suspended else "Active",
            "spec.suspend is true" if suspended else "",
        ),
        cond(
            "Complete",
            complete,
            "MaxRunsReached" if complete else "Running",
            f"{runs} of {max_runs} runs fired" if complete else "",
        ),
        cond(
            "Expired",
            expired,
            "TTLExpired" if expired else "Live",
            f"ttlSeconds passed at {expiry_text}" if expired else "",
        ),
    ]


def status_patch(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """Only the fields that change (a None value deletes the field in a merge patch)."""
    return {k: v for k, v in desired.items() if current.get(k) != v}


def utcnow() -> datetime:
    return datetime.now(UTC)
