"""What the reconciler should do to make etcd mirror a resource: a pure decision, table-tested.

The run state is the cursor: the reconciler never rebuilds it from status. A job that leaves the pool
(suspended, complete, invalid spec) loses only its spec; its cursor stays as it is, so a resume or an edit
carries runs, missed ticks and the last tick exactly. ``maxRuns`` is a ceiling on every path: a job whose
runs reached it is never put back. ``status.runCount`` is written only from cursors, so it is a lower bound
of the runs: a cursor found below it (an etcd restored from an older backup, or lost) is raised to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from etcdcron.controller.mirror import Snapshot
from etcdcron.controller.resource import job_from_resource, parse_time
from etcdcron.errors import ValidationError
from etcdcron.firing import Cursor, to_ms
from etcdcron.job import Job, StoredJob
from etcdcron.k8s_resource import Envelope


class Action(StrEnum):
    KEEP = "keep"  # etcd already mirrors this generation
    PUT = "put"  # store a new version of the job, carrying ``progress``
    PARK = "park"  # take the job out of the pool, keep its cursor
    STALE = "stale"  # the body is older than what etcd mirrors: never write it


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    why: str
    job: Job | None = None
    progress: Cursor | None = None
    invalid: ValidationError | None = None
    rejected: str = ""  # the API server refused this generation's Job template


def envelope_of(stored: StoredJob | None) -> Envelope | None:
    if stored is None:
        return None
    try:
        return Envelope.from_bytes(stored.job.payload)
    except (ValueError, KeyError, TypeError):
        return None


def own_state(body: dict[str, Any], snap: Snapshot) -> tuple[StoredJob | None, Cursor | None, int]:
    """This resource's stored job, its cursor and the generation etcd mirrors (0: none), ignoring state
    left by another resource of the same name (deleted and re-created: another uid)."""
    uid = body["metadata"]["uid"]
    record = snap.record if snap.record is not None and snap.record.uid == uid else None
    envelope = envelope_of(snap.stored)
    stored = snap.stored if envelope is not None and envelope.uid == uid else None
    job_id = stored.id if stored is not None else (record.job_id if record is not None else None)
    cursor = snap.cursor if snap.cursor is not None and snap.cursor.job_id == job_id else None
    generation = max(
        envelope.generation if stored is not None and envelope is not None else 0,
        record.generation if record is not None else 0,
    )
    return stored, cursor, generation


def decide(body: dict[str, Any], snap: Snapshot, now: datetime) -> Decision:
    meta, spec = body["metadata"], body.get("spec") or {}
    status = body.get("status") or {}
    generation = int(meta.get("generation", 1))
    stored, cursor, mirrored = own_state(body, snap)
    if mirrored > generation:
        return Decision(Action.STALE, f"etcd mirrors generation {mirrored}, newer than {generation}")
    floor = int(status.get("runCount") or 0)
    runs = max(cursor.runs if cursor is not None else 0, floor)
    in_sync = mirrored == generation
    behind = (cursor.runs if cursor is not None else 0) < floor
    try:
        job = job_from_resource(body, now)
    except ValidationError as e:
        if stored is None and in_sync:
            return Decision(Action.KEEP, "invalid, not in the pool", invalid=e)
        return Decision(Action.PARK, "invalid spec", invalid=e)
    record = snap.record if snap.record is not None and snap.record.uid == meta["uid"] else None
    if stored is None and in_sync and record is not None and record.rejected:
        return Decision(Action.KEEP, "Job template rejected", rejected=record.rejected)
    max_runs = spec.get("maxRuns")
    if spec.get("suspend") or (max_runs is not None and runs >= int(max_runs)):
        why = "suspended" if spec.get("suspend") else f"all {max_runs} runs fired"
        if stored is None and in_sync:
            return Decision(Action.KEEP, why)
        return Decision(Action.PARK, why)
    if stored is not None and in_sync and not behind:
        return Decision(Action.KEEP, "mirrored")
    why = "run state behind status" if in_sync and stored else "new generation" if stored else "into the pool"
    return Decision(Action.PUT, why, job, _progress(job, stored, cursor, runs, status, now))


def _progress(
    job: Job,
    stored: StoredJob | None,
    cursor: Cursor | None,
    runs: int,
    status: dict[str, Any],
    now: datetime,
) -> Cursor | None:
    """The run state a new version starts from: the cursor exactly for a live edit; ticks due while the job
    was out of the pool (suspended, invalid, complete) are skipped, not caught up."""
    if cursor is None and runs == 0:
        return None  # never fired: a fresh start (ticks from creation or startTime)
    last = cursor.last_tick_ms if cursor is not None else None
    missed = cursor.missed if cursor is not None else int(status.get("missedRuns") or 0)
    fired = cursor.fired_ms if cursor is not None else None
    if cursor is None or cursor.runs < runs:  # lost or restored from an older backup: never fire a run again
        seen = status.get("lastScheduleTime")
        last = max(last or 0, to_ms(parse_time(seen)) if seen else 0) or None
    if stored is None:
        skip_to = to_ms(now)
        if job.start_at is not None:
            skip_to = max(skip_to, to_ms(job.start_at) - 1)
        last = max(last or 0, skip_to)
    return Cursor("", last, runs, missed, "", fired)
