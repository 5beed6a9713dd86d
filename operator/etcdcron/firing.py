"""Run state and firings as values, and the pure rule that decides which due ticks fire (catch-up policy).

Times here are integer milliseconds since the Unix epoch: the timer queue compares millions of them.

Jitter: a job's ticks stay *nominal* everywhere (cursor, ``Firing.scheduled``, ``Firing.key``, catch-up); a
tick is *due* ``StoredJob.offset_ms`` after its nominal time, and only "is it due yet" and the moment the
timer queue waits for (``next_tick_ms``, ``Plan.next_ms``) use the due time. Without jitter the two agree.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring_ascii as _json_str

from etcdcron.job import CatchUp, StoredJob, format_time
from etcdcron.schedule import Schedule

MISFIRE_THRESHOLD_MS = 1_000
"""A tick fired later than this counts as missed under the ``latest`` and ``none`` policies."""

MAX_COUNTED_MISSES = 10_000
"""Counting missed ticks walks the schedule; past this many the count stops (an every-second job that was
down for days must not stall its member)."""

MAX_TICKS_PER_COMMIT = 100
"""A job far behind catches up in commits of at most this many ticks, so one job cannot hog a batch."""


def _json_int(value: int | None) -> str:
    return "null" if value is None else str(int(value))


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
        """What ``json.dumps(..., separators=(",", ":"))`` gives, built directly (5x cheaper: every
        firing commit writes one; byte-identical, table-tested)."""
        return (
            f'{{"jobId":{_json_str(self.job_id)},"lastTickMs":{_json_int(self.last_tick_ms)},'
            f'"runs":{_json_int(self.runs)},"missed":{_json_int(self.missed)},'
            f'"commit":{_json_str(self.commit)},"firedMs":{_json_int(self.fired_ms)}}}'
        ).encode()


SCHEDULED = "scheduled"
MANUAL = "manual"
BACKFILL = "backfill"


@dataclass(frozen=True, slots=True)
class Firing:
    """One tick of one job. ``key`` is stable across retries, re-deliveries and members: use it to dedupe.

    A run-now firing (``kind`` manual) carries the request's ``token`` (its key ends in ``manual/<token>``)
    and is not counted as a run (``run`` 0); ``payload`` overrides the job's payload when the request gave
    one. ``attempt`` counts failed deliveries of this firing plus one; ``redelivery`` marks a firing found
    unsettled by a member taking over (at-least-once): its earlier delivery may have succeeded.
    """

    job: StoredJob
    scheduled: datetime
    fired: datetime
    run: int
    member: str
    last: bool  # the job's final run (max runs reached): it is removed with this firing
    kind: str = SCHEDULED
    token: str = ""
    attempt: int = 1
    payload_override: bytes | None = None
    redelivery: bool = False  # found unsettled after a crash or takeover: it may have been delivered before

    @property
    def due(self) -> datetime:
        """When this tick fires: ``scheduled`` plus the job's jitter offset (equal without jitter, and for a
        run-now firing, which is due when requested)."""
        offset = self.job.offset_ms if self.kind != MANUAL else 0
        return self.scheduled + timedelta(milliseconds=offset) if offset else self.scheduled

    @property
    def key(self) -> str:
        j = self.job.job
        if self.kind == MANUAL:
            return f"{j.namespace}/{j.name}/{self.job.id}/manual/{self.token}"
        return f"{j.namespace}/{j.name}/{self.job.id}/{to_ms(self.scheduled)}"

    @property
    def payload(self) -> bytes:
        return self.job.job.payload if self.payload_override is None else self.payload_override

    def attempted(self, fired: datetime, attempt: int) -> Firing:
        """This firing as handed to the trigger at ``fired``, for the ``attempt``-th time (a tick's hot
        path: ``dataclasses.replace`` costs four times as much)."""
        return Firing(
            self.job,
            self.scheduled,
            fired,
            self.run,
            self.member,
            self.last,
            self.kind,
            self.token,
            attempt,
            self.payload_override,
            self.redelivery,
        )


@dataclass(frozen=True, slots=True)
class InFlight:
    """A firing whose delivery is not settled: committed and unacknowledged (at-least-once), retrying
    after a failure, or parked as undeliverable. Stored under ``P/inflight/...`` so a takeover goes on."""

    job_id: str
    tick_ms: int
    run: int
    kind: str = SCHEDULED
    token: str = ""
    attempts: int = 0  # deliveries tried so far
    next_attempt_ms: int = 0  # not before this (a retry's backoff)
    parked: bool = False  # the trigger answered undeliverable: wait for a consumer
    payload: bytes | None = None  # a run-now request's own payload
    spec: bytes | None = None  # the job's stored JSON, kept with a final run's firing (its spec is deleted)

    @property
    def tag(self) -> str:
        if self.kind == MANUAL:
            return f"m{self.token}"
        return f"b{self.tick_ms}" if self.kind == BACKFILL else f"t{self.tick_ms}"

    def to_json(self) -> bytes:
        plain = self.kind == SCHEDULED and not self.attempts and not self.parked
        if plain and self.payload is None and self.spec is None:
            # a scheduled firing's record, written by every at-least-once commit: built directly
            return (
                f'{{"jobId":{_json_str(self.job_id)},"tickMs":{_json_int(self.tick_ms)},'
                f'"run":{_json_int(self.run)}}}'
            ).encode()
        doc: dict[str, object] = {"jobId": self.job_id, "tickMs": self.tick_ms, "run": self.run}
        if self.kind != SCHEDULED:
            doc["kind"], doc["token"] = self.kind, self.token
        if self.attempts:
            doc["attempts"], doc["nextAttemptMs"] = self.attempts, self.next_attempt_ms
        if self.parked:
            doc["parked"] = True
        if self.payload is not None:
            doc["payload"] = base64.b64encode(self.payload).decode()
        if self.spec is not None:
            doc["spec"] = self.spec.decode()
        return json.dumps(doc, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One settled firing, as ``etcdcron history`` shows it."""

    scheduled_ms: int
    fired_ms: int
    member: str
    run: int
    result: str  # success | failed | undeliverable
    attempts: int
    kind: str = SCHEDULED
    error: str = ""  # why the last attempt failed (a failed firing), at most ERROR_LENGTH characters

    def document(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "scheduled": format_time(from_ms(self.scheduled_ms)),
            "fired": format_time(from_ms(self.fired_ms)),
            "member": self.member,
            "run": self.run,
            "result": self.result,
            "attempts": self.attempts,
            "kind": self.kind,
        }
        if self.error:
            doc["error"] = self.error
        return doc


@dataclass(frozen=True, slots=True)
class RunRequest:
    """A run-now request (fire the job once for ``token``) or a backfill (fire every tick of the schedule in
    ``(from_ms, to_ms]`` once, ``rate`` ticks a second; ``done_until_ms`` is how far it got). Kept, marked
    ``done``, so a token or a range never fires twice."""

    token: str
    requested_ms: int
    payload: bytes | None = None
    done: bool = False
    member: str = ""
    kind: str = MANUAL
    from_ms: int = 0
    to_ms: int = 0
    rate: float = 0.0
    done_until_ms: int = 0

    def to_json(self) -> bytes:
        doc: dict[str, object] = {"token": self.token, "requestedMs": self.requested_ms, "done": self.done}
        if self.payload is not None:
            doc["payload"] = base64.b64encode(self.payload).decode()
        if self.member:
            doc["member"] = self.member
        if self.kind == BACKFILL:
            doc |= {"kind": BACKFILL, "fromMs": self.from_ms, "toMs": self.to_ms, "rate": self.rate}
            doc["doneUntilMs"] = self.done_until_ms
        return json.dumps(doc, separators=(",", ":")).encode()


HISTORY_LENGTH = 20
"""Settled firings kept per job (``etcdcron history``, the operator's ``status.recent``)."""


ERROR_LENGTH = 512
"""A failed firing's error is kept in its history entry up to this many characters."""


def error_text(error: BaseException | None) -> str:
    """What a history entry keeps of a trigger's error: one line, bounded."""
    if error is None:
        return ""
    text = " ".join((str(error) or type(error).__name__).split())
    return text if len(text) <= ERROR_LENGTH else text[: ERROR_LENGTH - 3] + "..."


def history_json(job_id: str, entries: list[HistoryEntry]) -> bytes:
    rows: list[list[object]] = []
    for e in entries:
        row: list[object] = [e.scheduled_ms, e.fired_ms, e.member, e.run, e.result, e.attempts, e.kind]
        rows.append([*row, e.error] if e.error else row)
    return json.dumps({"jobId": job_id, "entries": rows}, separators=(",", ":")).encode()


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
    return first_tick_after_ms(job)


def first_tick_after_ms(job: StoredJob) -> int:
    """``first_after_ms`` of a job that has no cursor yet."""
    return to_ms(job.anchor) - 1  # a cron tick at exactly the start time fires


def next_scheduled_ms(schedule: Schedule, after_ms: int, job: StoredJob) -> int | None:
    """The next nominal tick after ``after_ms`` (nominal) that the job may still fire: None if there is none
    that comes due before the job expires (its keys go with its TTL lease)."""
    ms = schedule.next_after_ms(after_ms)
    if ms is None:
        return None
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
