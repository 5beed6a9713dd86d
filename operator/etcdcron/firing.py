"""Run state and firings as values, and the pure rule that decides which due ticks fire (catch-up policy).

Times here are integer milliseconds since the Unix epoch: the timer queue compares millions of them.

Jitter: a job's ticks stay *nominal* everywhere (cursor, ``Firing.scheduled``, ``Firing.key``, catch-up); a
tick is *due* ``StoredJob.offset_ms`` after its nominal time, and only "is it due yet" and the moment the
timer queue waits for (``next_tick_ms``, ``Plan.next_ms``) use the due time. Without jitter the two agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from etcdcron.job import CatchUp, StoredJob
from etcdcron.schedule import Schedule

MISFIRE_THRESHOLD_MS = 1_000
"""A tick fired later than this counts as missed under the ``latest`` and ``none`` policies."""

MAX_COUNTED_MISSES = 10_000
"""Counting missed ticks walks the schedule; past this many the count stops (an every-second job that was
down for days must not stall its member)."""

MAX_TICKS_PER_COMMIT = 100
"""A job far behind catches up in commits of at most this many ticks, so one job cannot hog a batch."""


def to_ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(frozen=True, slots=True)
class Cursor:
    """A job's run state, moved only by fenced firing commits.

    Tied to a job id, so a new version of the job starts afresh. Two members planning the same ticks compute
    equal states; ``commit`` tells whose commit landed after a refused or unanswered transaction.
    """

    job_id: str
    last_tick_ms: int | None = None  # the latest tick committed (fired or counted missed)
    runs: int = 0
    missed: int = 0
    commit: str = ""  # who wrote it: unique per commit attempt, so a member can tell its own commit apart
    fired_ms: int | None = None  # when the latest tick was fired (its commit was planned)

    def to_json(self) -> bytes:
        doc = {
            "jobId": self.job_id,
            "lastTickMs": self.last_tick_ms,
            "runs": self.runs,
            "missed": self.missed,
            "commit": self.commit,
            "firedMs": self.fired_ms,
        }
        return json.dumps(doc, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Firing:
    """One tick of one job, fired once. ``key`` is stable across retries and members: use it to dedupe."""

    job: StoredJob
    scheduled: datetime
    fired: datetime
    run: int
    member: str
    last: bool  # the job's final run (max runs reached): it is removed with this firing

    @property
    def due(self) -> datetime:
        """When this tick fires: ``scheduled`` plus the job's jitter offset (equal without jitter)."""
        offset = self.job.offset_ms
        return self.scheduled + timedelta(milliseconds=offset) if offset else self.scheduled

    @property
    def key(self) -> str:
        j = self.job.job
        return f"{j.namespace}/{j.name}/{self.job.id}/{to_ms(self.scheduled)}"


@dataclass(frozen=True, slots=True)
class Plan:
    """What to commit for one job now: ticks to fire, ticks given up, where the cursor lands, what's next."""

    fire: tuple[int, ...]
    missed: int
    last_tick_ms: int | None
    next_ms: int | None  # when the next tick comes due, to wait for after this commit (None: job done)


def first_after_ms(job: StoredJob, cursor: Cursor) -> int:
    """Ticks strictly after this instant are still owed to the job."""
    if cursor.last_tick_ms is not None:
        return cursor.last_tick_ms
    return to_ms(job.anchor) - 1  # a cron tick at exactly the start time fires


def next_scheduled_ms(schedule: Schedule, after_ms: int, job: StoredJob) -> int | None:
    """The next nominal tick after ``after_ms`` (nominal) that the job may still fire: None if there is none
    that comes due before the job expires (its keys go with its TTL lease)."""
    nxt = schedule.next_after(from_ms(after_ms))
    if nxt is None:
        return None
    ms = to_ms(nxt)
    expires = job.expires_at
    if expires is not None and ms + job.offset_ms >= to_ms(expires):
        return None
    return ms


def next_tick_ms(schedule: Schedule, after_ms: int, job: StoredJob) -> int | None:
    """When the next tick after ``after_ms`` (nominal) comes due: the moment the timer queue waits for."""
    ms = next_scheduled_ms(schedule, after_ms, job)
    return None if ms is None else ms + job.offset_ms


def plan(job: StoredJob, schedule: Schedule, cursor: Cursor, now_ms: int) -> Plan:
    """Decide which due ticks (due time ``<= now_ms``) fire, by the job's catch-up policy.

    ``all`` fires every due tick younger than the catch-up deadline and counts older ones missed; ``latest``
    fires the newest due tick; ``none`` fires a due tick only if it is on time (within the misfire threshold).
    Jitter shifts the clock, not the ticks: the rule runs on nominal ticks as of ``now_ms - offset``.
    """
    spec = job.job
    offset = job.offset_ms
    now_ms -= offset
    after = first_after_ms(job, cursor)
    runs_left = None if spec.max_runs is None else spec.max_runs - cursor.runs
    if runs_left is not None and runs_left <= 0:
        return Plan((), 0, cursor.last_tick_ms, None)
    missed = 0
    if spec.catch_up is CatchUp.ALL:
        horizon = now_ms - int(spec.catch_up_deadline / timedelta(milliseconds=1))
    else:
        horizon = now_ms - MISFIRE_THRESHOLD_MS
    # Skip (and count) ticks older than the horizon without materialising them all.
    tick = next_scheduled_ms(schedule, after, job)
    while tick is not None and tick < horizon:
        if spec.catch_up is CatchUp.LATEST:
            following = next_scheduled_ms(schedule, tick, job)
            if following is None or following > now_ms:
                break  # the newest due tick: ``latest`` fires it however late
        missed += 1
        after = tick
        if missed >= MAX_COUNTED_MISSES:
            after = max(after, horizon - 1)
            tick = next_scheduled_ms(schedule, after, job)
            break
        tick = next_scheduled_ms(schedule, tick, job)
    fire: list[int] = []
    while tick is not None and tick <= now_ms and len(fire) < MAX_TICKS_PER_COMMIT:
        if runs_left is not None and len(fire) >= runs_left:
            break
        fire.append(tick)
        after = tick
        tick = next_scheduled_ms(schedule, tick, job)
    if spec.catch_up is CatchUp.LATEST and len(fire) > 1:
        missed += len(fire) - 1
        fire = fire[-1:]
    done = runs_left is not None and len(fire) >= runs_left
    last = after if (fire or missed) else cursor.last_tick_ms
    return Plan(tuple(fire), missed, last, None if done or tick is None else tick + offset)
