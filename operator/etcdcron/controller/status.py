"""A DistributedCronJob's status, computed from what etcd holds: pure, table-tested.

Honest by construction: run counts and the last tick come from the cursor (the final cursor stays when a
job completes, so a completed resource shows its last run); counts never go down; ``nextScheduleTime`` is
never in the past when written. The recent firings and whether the latest one failed come from the job's
history in etcd, written by whichever member settled each firing, so a success dispatched by any member
clears a failure another one recorded. Writes are coalesced (at most one per ``interval`` while only
counters move); a change of meaning (a condition, the generation, a NEXT that passed, a failure that
appears, clears or changes cause) is written at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from etcdcron.controller.resource import expires_at
from etcdcron.errors import ValidationError
from etcdcron.firing import Cursor, HistoryEntry, first_after_ms, from_ms, next_tick_ms, to_ms
from etcdcron.job import StoredJob, format_time
from etcdcron.k8s_resource import dispatched_name

LEAD = timedelta(seconds=2)
"""NEXT is at least this far ahead when written, and rewritten this long before it comes."""
RECENT = 5
"""Settled firings shown in ``status.recent``."""
COUNTERS = frozenset(
    {
        "runCount",
        "missedRuns",
        "remainingRuns",
        "lastScheduleTime",
        "lastDispatched",
        "nextScheduleTime",
        "recent",
    }
)


@dataclass(frozen=True, slots=True)
class Observed:
    """What the controller knows of a resource beyond its body: its own etcd job and run state, if any."""

    stored: StoredJob | None
    cursor: Cursor | None
    mirrored: int = 0  # the generation etcd mirrors (0: none)
    invalid: ValidationError | None = None
    etcd_error: str | None = None
    rejected: str | None = None  # the API server refused the Job template (dry run)
    history: tuple[HistoryEntry, ...] | None = None  # settled firings of this version (None: not read)
    bad_entry: str | None = None  # an entry of this resource in etcd cannot be decoded: its key and why


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


def next_tick(
    stored: StoredJob, cursor: Cursor, now: datetime, interval: timedelta
) -> tuple[int | None, int]:
    """The NEXT to show and when to look again (ms).

    NEXT is the next tick at least ``LEAD`` away (one due sooner is being fired already), and the next look
    comes ``LEAD`` before it, or after ``interval``: so NEXT is never in the past, even when a look is late
    by up to ``LEAD``. A schedule that would need more than one look per ``interval`` shows the first tick
    after the next look instead (counters are coalesced, not written per tick)."""
    schedule = stored.schedule()
    now_ms, step, lead = to_ms(now), _ms(interval), _ms(LEAD)
    first = next_tick_ms(schedule, max(first_after_ms(stored, cursor), now_ms + lead), stored)
    if first is None:
        return None, now_ms + step
    if first - lead > now_ms + step:
        return first, now_ms + step
    following = next_tick_ms(schedule, first, stored)
    if following is not None and following - lead <= now_ms + step:
        return next_tick_ms(schedule, now_ms + step + lead, stored), now_ms + step
    return first, first - lead


def _ms(delta: timedelta) -> int:
    return int(delta / timedelta(milliseconds=1))


def _never_fires(stored: StoredJob, cursor: Cursor) -> str | None:
    """Why a job whose lifetime ends before its first tick never fires (None: it does, or it did)."""
    expiry = stored.expires_at
    if expiry is None or cursor.runs:
        return None
    first = stored.schedule().next_after(from_ms(first_after_ms(stored, cursor)))
    if first is not None and first < expiry:
        return None
    when = f"the first tick at {format_time(first)}" if first is not None else "any tick"
    return f"ttlSeconds ends at {format_time(expiry)}, before {when}: nothing will fire"


def desired_status(
    body: dict[str, Any], observed: Observed, now: datetime, interval: timedelta
) -> tuple[dict[str, Any], int]:
    """The whole status a resource should show now, and when (ms) to look again."""
    spec, meta = body.get("spec") or {}, body["metadata"]
    old = body.get("status") or {}
    generation = int(meta.get("generation", 1))
    cursor = observed.cursor
    if cursor is None and observed.stored is not None:
        cursor = Cursor(observed.stored.id)
    runs = max(cursor.runs if cursor else 0, int(old.get("runCount") or 0))
    missed = max(cursor.missed if cursor else 0, int(old.get("missedRuns") or 0))
    max_runs = spec.get("maxRuns")
    suspended = bool(spec.get("suspend"))
    complete = max_runs is not None and runs >= int(max_runs)
    expiry = expires_at(body)
    expired = expiry is not None and now >= expiry
    settled = observed.mirrored >= generation or observed.invalid is not None
    status: dict[str, Any] = {
        "observedGeneration": generation if settled else old.get("observedGeneration"),
        "runCount": runs,
        "missedRuns": missed,
        "remainingRuns": max(int(max_runs) - runs, 0) if max_runs is not None else None,
        "lastScheduleTime": old.get("lastScheduleTime"),
        "lastDispatched": old.get("lastDispatched"),
    }
    # A cursor written by a firing commit (it carries a commit id) says which tick fired last.
    if cursor is not None and cursor.commit and cursor.runs >= runs and cursor.last_tick_ms is not None:
        last = from_ms(cursor.last_tick_ms)
        status["lastScheduleTime"] = format_time(last)
        status["lastDispatched"] = {
            "kind": _kind(spec),
            "name": dispatched_name(meta["name"], last),
            "scheduledTime": format_time(last),
        }
        if cursor.fired_ms is not None:
            status["lastDispatched"]["time"] = format_time(from_ms(cursor.fired_ms))
    wake = to_ms(now) + int(interval / timedelta(milliseconds=1))
    if expiry is not None and not expired:
        wake = min(wake, to_ms(expiry))
    nxt, never = None, None
    active = observed.stored is not None and cursor is not None and observed.rejected is None
    if active and not (suspended or complete or expired):
        assert observed.stored is not None and cursor is not None
        ms, look = next_tick(observed.stored, cursor, now, interval)
        nxt, wake = (format_time(from_ms(ms)) if ms is not None else None), min(wake, look)
        never = _never_fires(observed.stored, cursor)
    status["nextScheduleTime"] = nxt
    if observed.history is not None:
        status["recent"] = [entry.document() for entry in observed.history[-RECENT:]]
        status["dispatchFailure"] = dispatch_failure(observed.history, _kind(spec))
    failed = status.get("dispatchFailure", old.get("dispatchFailure")) or {}
    failure = (str(failed.get("reason") or ""), str(failed.get("message") or ""))
    facts = _Facts(observed, suspended, complete, expired, expiry, runs, max_runs, nxt, never, failure)
    status["conditions"] = _conditions(facts, generation, now, old.get("conditions"))
    return status, wake


def _kind(spec: dict[str, Any]) -> str:
    return "Job" if "job" in (spec.get("target") or {}) else "Event"


def dispatch_failure(history: tuple[HistoryEntry, ...], kind: str) -> dict[str, Any] | None:
    """The latest failed firing (its failure policy gave up) unless a firing settled after it succeeded:
    ``reason`` (``JobCreateFailed``/``EventCreateFailed``), ``message`` (the error, the same for every tick
    that fails the same way, so the Ready condition and its Warning change only with the cause), and the
    firing's ``scheduledTime``, ``time`` and ``attempts``."""
    for entry in reversed(history):
        if entry.result == "success":
            return None
        if entry.result == "failed":
            tries = f"{entry.attempts} attempt" + ("s" if entry.attempts != 1 else "")
            error = entry.error or "the trigger failed"
            return {
                "reason": f"{kind}CreateFailed",
                "message": f"{error} ({tries})",
                "scheduledTime": format_time(from_ms(entry.scheduled_ms)),
                "time": format_time(from_ms(entry.fired_ms)),
                "attempts": entry.attempts,
            }
    return None


@dataclass(frozen=True, slots=True)
class _Facts:
    observed: Observed
    suspended: bool
    complete: bool
    expired: bool
    expiry: datetime | None
    runs: int
    max_runs: int | None
    nxt: str | None
    never: str | None
    dispatch_failure: tuple[str, str] = ("", "")  # reason, message: the latest firing failed


def _ready(f: _Facts) -> tuple[bool, str, str]:
    invalid = f.observed.invalid
    if invalid is not None:
        return False, "InvalidSpec", f"{invalid.field}: {invalid.reason}"
    if f.observed.rejected is not None:
        return False, "JobRejected", f.observed.rejected
    if f.observed.etcd_error is not None:
        return False, "EtcdUnavailable", f.observed.etcd_error
    if f.observed.bad_entry is not None:
        return False, "BadEtcdEntry", f.observed.bad_entry
    if f.dispatch_failure[1]:
        return False, f.dispatch_failure[0] or "JobCreateFailed", f.dispatch_failure[1]
    if f.suspended:
        return False, "Suspended", "spec.suspend is true"
    if f.complete:
        return False, "Complete", f"all {f.max_runs} runs fired"
    if f.expired:
        return False, "Expired", "ttlSeconds passed"
    if f.observed.stored is None:
        return False, "Pending", "not yet stored in etcd"
    if f.never is not None:
        return False, "NeverFires", f.never
    # No tick time in the message: a condition changes when its meaning does, not on every tick.
    return True, "Scheduled", "firing on schedule" if f.nxt else "no further tick"


def _conditions(
    f: _Facts, generation: int, now: datetime, previous: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    invalid = f.observed.invalid
    problem = f"{invalid.field}: {invalid.reason}" if invalid is not None else ""
    expiry_text = format_time(f.expiry) if f.expiry is not None else ""

    def cond(kind: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
        return condition(kind, ok, reason, message, generation, now, previous)

    return [
        cond("Ready", *_ready(f)),
        cond("ScheduleValid", invalid is None, "Valid" if invalid is None else "Invalid", problem),
        cond(
            "Suspended",
            f.suspended,
            *(("Suspended", "spec.suspend is true") if f.suspended else ("Active", "")),
        ),
        cond(
            "Complete",
            f.complete,
            *(("MaxRunsReached", f"{f.runs} of {f.max_runs} runs fired") if f.complete else ("Running", "")),
        ),
        cond(
            "Expired",
            f.expired,
            *(("TTLExpired", f"ttlSeconds passed at {expiry_text}") if f.expired else ("Live", "")),
        ),
    ]


def status_patch(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """Only the fields that change (a None value deletes the field in a merge patch)."""
    return {k: v for k, v in desired.items() if current.get(k) != v}


def urgent(current: dict[str, Any], patch: dict[str, Any], now: datetime) -> bool:
    """Whether a patch changes what the resource means (write now) rather than only counters (coalesce);
    a NEXT that has come, or comes within ``LEAD``, would be a wrong value standing, so it is urgent too."""
    if set(patch) - COUNTERS - {"dispatchFailure"}:
        return True
    if "dispatchFailure" in patch and not _same_failure(
        current.get("dispatchFailure"), patch["dispatchFailure"]
    ):
        return True
    shown = current.get("nextScheduleTime")
    return shown is not None and "nextScheduleTime" in patch and str(shown) <= format_time(now + LEAD)


def _same_failure(old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
    """Another tick failing the same way is a counter (coalesced); a failure that appears, clears or
    changes cause is a change of meaning."""
    if old is None or new is None:
        return old is new
    return (old.get("reason"), old.get("message")) == (new.get("reason"), new.get("message"))
