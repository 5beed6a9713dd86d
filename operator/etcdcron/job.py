"""The Job model: what a user asks for, validated at construction so a bad job never reaches etcd.

Limits (stated once, enforced here):
- ``name``: a DNS-1123 subdomain: 1-253 characters of ``a-z``, ``0-9``, ``-`` and ``.``, starting and ending
  with a letter or digit.
- ``namespace`` (the tenant): a DNS-1123 label: 1-63 characters of ``a-z``, ``0-9`` and ``-``, starting and
  ending with a letter or digit (a Kubernetes namespace is always valid).
- ``type``: at most 253 printable characters; ``payload``: at most 256 KiB.
- ``ttl`` (a ``timedelta``) at least 1 s; ``max_runs`` at least 1; ``start_at`` time-zone aware;
  ``failure_policy``: 0-100 retries, intervals 0-24 h; ``catch_up_deadline`` at least 1 s.
- ``jitter`` (a ``timedelta``, millisecond resolution) 0-1 h, and at most the schedule's shortest interval
  between two ticks: checked exactly for ``@every``, and on the next 16 ticks for a cron expression (which
  catches every regular schedule, ``* * * * * *`` included). A larger jitter would only shift the job's
  ticks further, never drop or double one, but it spreads no better and makes a firing come after the
  next tick's nominal time.

Jitter: each tick of a job is due ``offset`` after its nominal time, where ``offset`` is in ``[0, jitter)``
and fixed per job (``jitter_offset_ms``: a hash of ``<namespace>/<name>``, like Jenkins' ``H``), so many
jobs on one schedule spread over the window and each always fires at the same point in it. A firing's
``scheduled`` time, its ``key``, the cursor and every catch-up rule use the nominal tick; only the moment
the tick fires (``Firing.due``) moves. Time zones and DST apply to the nominal tick.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from etcdcron.errors import ValidationError
from etcdcron.policy import Backoff, Delivery, FailurePolicy, Overlap
from etcdcron.schedule import EverySchedule, Schedule, parse_schedule

NAME_MAX = 253
NAMESPACE_MAX = 63
TYPE_MAX = 253
PAYLOAD_MAX = 256 * 1024
DEFAULT_NAMESPACE = "default"
DEFAULT_CATCH_UP_DEADLINE = timedelta(minutes=5)
JITTER_MAX = timedelta(hours=1)
JITTER_SAMPLE_TICKS = 16

_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class CatchUp(StrEnum):
    """What to do with ticks missed while no member could fire (crash, etcd outage)."""

    ALL = "all"  # fire every missed tick that is younger than the catch-up deadline
    LATEST = "latest"  # fire only the most recent missed tick
    NONE = "none"  # fire nothing missed; resume with the next tick


def _validate_dns(value: str, field_name: str, limit: int, pattern: re.Pattern[str], what: str) -> str:
    if not value:
        raise ValidationError(field_name, "must not be empty")
    if len(value) > limit:
        raise ValidationError(field_name, f"must be at most {limit} characters, got {len(value)}")
    if not pattern.fullmatch(value):
        raise ValidationError(
            field_name, f"{value!r} is not a {what}, starting and ending with a letter or digit)"
        )
    return value


def is_subdomain(text: str) -> bool:
    return _SUBDOMAIN.fullmatch(text) is not None


def is_label(text: str) -> bool:
    return _LABEL.fullmatch(text) is not None


def validate_name(name: str, field_name: str = "name") -> str:
    return _validate_dns(
        name, field_name, NAME_MAX, _SUBDOMAIN, "DNS-1123 subdomain (lowercase letters, digits, '-' and '.'"
    )


def validate_namespace(namespace: str, field_name: str = "namespace") -> str:
    return _validate_dns(
        namespace, field_name, NAMESPACE_MAX, _LABEL, "DNS-1123 label (lowercase letters, digits and '-'"
    )


def jitter_offset_ms(namespace: str, name: str, jitter_ms: int) -> int:
    """A job's fixed delay after each tick, in ``[0, jitter_ms)``: the same on every member and every run
    (blake2b, not Python's salted ``hash``), independent of the job's partition hash (own personalisation)."""
    if jitter_ms <= 0:
        return 0
    identity = f"{namespace}/{name}".encode()
    digest = hashlib.blake2b(identity, digest_size=8, person=b"etcdcron-jitter").digest()
    return int.from_bytes(digest, "big") % jitter_ms


def _validate_jitter(jitter: timedelta, schedule: Schedule, start: datetime | None) -> None:
    if not timedelta(0) <= jitter <= JITTER_MAX:
        raise ValidationError("jitter", f"must be between 0 and 1h, got {jitter}")
    if jitter % timedelta(milliseconds=1):
        raise ValidationError("jitter", f"must be a whole number of milliseconds, got {jitter}")
    if isinstance(schedule, EverySchedule):
        shortest = schedule.interval
    else:  # the next few ticks: cheap (the schedule's tick window is shared) and catches regular schedules
        t = start if start is not None else datetime.now(UTC)
        ticks: list[datetime] = []
        while len(ticks) < JITTER_SAMPLE_TICKS:
            nxt = schedule.next_after(t)
            if nxt is None:
                break
            ticks.append(nxt)
            t = nxt
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        if not gaps:
            return
        shortest = min(gaps)
    if jitter > shortest:
        raise ValidationError(
            "jitter",
            f"must be at most the schedule's shortest interval between ticks ({shortest}), got {jitter}",
        )


@dataclass(frozen=True, slots=True)
class Job:
    """A cron job as a user defines it. Constructing one validates every field."""

    name: str
    schedule: str
    namespace: str = DEFAULT_NAMESPACE
    type: str = ""
    payload: bytes = b""
    time_zone: str = "UTC"
    ttl: timedelta | None = None
    start_at: datetime | None = None
    max_runs: int | None = None
    catch_up: CatchUp = CatchUp.ALL
    catch_up_deadline: timedelta = DEFAULT_CATCH_UP_DEADLINE
    failure_policy: FailurePolicy = field(default_factory=FailurePolicy)
    delivery: Delivery = Delivery.AT_LEAST_ONCE
    jitter: timedelta | None = None  # spread: each tick fires a fixed offset in [0, jitter) after it
    overlap: Overlap = Overlap.ALLOW  # a tick while an earlier firing is still being delivered

    def __post_init__(self) -> None:
        validate_name(self.name)
        validate_namespace(self.namespace)
        if len(self.type) > TYPE_MAX or not self.type.isprintable():
            raise ValidationError("type", f"must be at most {TYPE_MAX} printable characters")
        if not isinstance(self.payload, bytes):
            raise ValidationError("payload", "must be bytes")
        if len(self.payload) > PAYLOAD_MAX:
            raise ValidationError("payload", f"must be at most {PAYLOAD_MAX} bytes, got {len(self.payload)}")
        if self.ttl is not None and self.ttl < timedelta(seconds=1):
            raise ValidationError("ttl", f"must be at least 1s, got {self.ttl}")
        if self.start_at is not None and self.start_at.tzinfo is None:
            raise ValidationError("start_at", "must carry a time zone (e.g. 2026-01-01T00:00:00Z)")
        if self.max_runs is not None and self.max_runs < 1:
            raise ValidationError("max_runs", f"must be at least 1, got {self.max_runs}")
        try:
            object.__setattr__(self, "catch_up", CatchUp(self.catch_up))
        except ValueError:
            raise ValidationError(
                "catch_up", f"must be one of all, latest, none; got {self.catch_up!r}"
            ) from None
        try:
            object.__setattr__(self, "delivery", Delivery(self.delivery))
        except ValueError:
            raise ValidationError(
                "delivery", f"must be at-least-once or at-most-once; got {self.delivery!r}"
            ) from None
        try:
            object.__setattr__(self, "overlap", Overlap(self.overlap))
        except ValueError:
            raise ValidationError("overlap", f"must be allow, skip or wait; got {self.overlap!r}") from None
        if not isinstance(self.failure_policy, FailurePolicy):
            raise ValidationError("failure_policy", "must be a FailurePolicy")
        if self.catch_up_deadline < timedelta(seconds=1):
            raise ValidationError("catch_up_deadline", f"must be at least 1s, got {self.catch_up_deadline}")
        schedule = parse_schedule(self.schedule, self.time_zone)  # raises naming schedule/time_zone
        if self.jitter is not None:
            _validate_jitter(self.jitter, schedule, self.start_at)

    @classmethod
    def trusted(cls, **fields: Any) -> Job:
        """A Job decoded from etcd, validated when it was added: skip the per-field checks (a fifth of a
        member's start-up CPU at 1M jobs). Its schedule is still parsed, hence checked, when loaded."""
        job = object.__new__(cls)
        for name in cls.__dataclass_fields__:
            object.__setattr__(job, name, fields[name])
        return job


@dataclass(frozen=True, slots=True)
class StoredJob:
    """A job as stored: the user's Job plus the identity etcd-cron gave this version of it."""

    job: Job
    id: str  # fresh per version: a re-added job starts afresh
    created_at: datetime
    lease: int = 0  # the TTL lease the job's keys are bound to (0: no TTL)
    # Each tick is due this long after its nominal time (jitter); computed once here, read on every tick.
    offset_ms: int = field(default=0, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        j = self.job
        if j.jitter:
            object.__setattr__(self, "offset_ms", jitter_offset_ms(j.namespace, j.name, _ms(j.jitter)))

    @property
    def anchor(self) -> datetime:
        """Where ticks start: the delayed start if any, else the moment the job was added."""
        return self.job.start_at if self.job.start_at is not None else self.created_at

    @property
    def expires_at(self) -> datetime | None:
        return None if self.job.ttl is None else self.created_at + self.job.ttl

    def schedule(self) -> Schedule:
        return parse_schedule(self.job.schedule, self.job.time_zone, anchor=self.anchor)

    # -- wire format --------------------------------------------------------------------------------------
    def to_json(self) -> bytes:
        j = self.job
        doc: dict[str, Any] = {
            "id": self.id,
            "created": _iso(self.created_at),
            "namespace": j.namespace,
            "name": j.name,
            "schedule": j.schedule,
            "timeZone": j.time_zone,
            "type": j.type,
            "payload": base64.b64encode(j.payload).decode(),
            "catchUp": j.catch_up.value,
            "catchUpDeadlineMs": _ms(j.catch_up_deadline),
            "delivery": j.delivery.value,
            "failurePolicy": failure_policy_document(j.failure_policy),
        }
        if self.lease:
            doc["lease"] = self.lease
        if j.ttl is not None:
            doc["ttlMs"] = _ms(j.ttl)
        if j.start_at is not None:
            doc["startAt"] = _iso(j.start_at)
        if j.max_runs is not None:
            doc["maxRuns"] = j.max_runs
        if j.jitter is not None:
            doc["jitterMs"] = _ms(j.jitter)
        if j.overlap is not Overlap.ALLOW:
            doc["overlap"] = j.overlap.value
        return json.dumps(doc, separators=(",", ":")).encode()


def failure_policy_document(policy: FailurePolicy) -> dict[str, Any]:
    return {
        "backoff": policy.backoff.value,
        "intervalMs": _ms(policy.interval),
        "maxIntervalMs": _ms(policy.max_interval),
        "maxRetries": policy.max_retries,
    }


@functools.lru_cache(maxsize=256)
def failure_policy_of(
    backoff: str, interval_ms: int, max_interval_ms: int, max_retries: int
) -> FailurePolicy:
    """Shared policy values for the many jobs that store the same one (raises ValidationError)."""
    return FailurePolicy(Backoff(backoff), ms_delta(interval_ms), max_retries, ms_delta(max_interval_ms))


def _ms(td: timedelta) -> int:
    return round(td.total_seconds() * 1000)


@functools.lru_cache(maxsize=1024)
def ms_delta(ms: int) -> timedelta:
    return timedelta(milliseconds=ms)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_time(t: datetime) -> str:
    """RFC 3339, UTC, milliseconds: the one time format of every output."""
    return _iso(t)
