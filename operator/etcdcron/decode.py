"""The one decode boundary for everything read from etcd: stored jobs, cursors, member and partition keys.

Data in etcd is untrusted input: anyone with access to the prefix can write a stray key, a value that is
not JSON, a field of the wrong type, or a valid job's JSON under another job's key. Every such entry raises
``BadEntryError`` naming the key and the reason; callers skip it, report it once per version and never
delete it. Nothing else in the package calls ``json.loads`` on stored data.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from datetime import datetime, timedelta
from typing import Any

from etcdcron.errors import EtcdCronError, ValidationError
from etcdcron.firing import (
    BACKFILL,
    ERROR_LENGTH,
    MANUAL,
    SCHEDULED,
    Cursor,
    HistoryEntry,
    InFlight,
    RunRequest,
)
from etcdcron.job import (
    JITTER_MAX,
    NAME_MAX,
    NAMESPACE_MAX,
    PAYLOAD_MAX,
    CatchUp,
    Job,
    StoredJob,
    failure_policy_of,
    is_label,
    is_subdomain,
    ms_delta,
)
from etcdcron.keys import JobRef, Keys, partition_of
from etcdcron.policy import Delivery, FailurePolicy, Overlap


class BadEntryError(EtcdCronError):
    """An entry in etcd that cannot be used: ``key`` is where it is, ``reason`` why."""

    def __init__(self, key: bytes, reason: str) -> None:
        super().__init__(f"bad entry {key_text(key)}: {reason}")
        self.key = key
        self.reason = reason


def key_text(key: bytes) -> str:
    """A key as people read it, even when it is not UTF-8."""
    return key.decode("utf-8", "backslashreplace")


class _Bad(Exception):
    """A field-level problem, turned into ``BadEntryError`` at the boundary."""


def job_ref(keys: Keys, key: bytes) -> JobRef:
    """The job a spec key names: ``P/jobs/<pppp>/<tenant>/<name>``, in the partition its name hashes to."""
    root = keys.jobs_root()
    if not key.startswith(root):
        raise BadEntryError(key, f"not under {key_text(root)}")
    try:
        rest = key[len(root) :].decode()
    except UnicodeDecodeError:
        raise BadEntryError(key, "key is not UTF-8") from None
    parts = rest.split("/")
    if len(parts) != 3:
        raise BadEntryError(key, "key is not <partition>/<namespace>/<name>")
    segment, tenant, name = parts
    if len(segment) != 4 or not segment.isascii() or not segment.isdigit():
        raise BadEntryError(key, f"partition segment {segment!r} is not 4 digits")
    if not (len(tenant) <= NAMESPACE_MAX and is_label(tenant)):
        raise BadEntryError(key, f"namespace {tenant!r} is not a DNS-1123 label")
    if not (len(name) <= NAME_MAX and is_subdomain(name)):
        raise BadEntryError(key, f"name {name!r} is not a DNS-1123 subdomain")
    partition = int(segment)
    expected = partition_of(tenant, name, keys.partitions)
    if partition != expected:
        raise BadEntryError(key, f"job {tenant}/{name} belongs in partition {expected:04d}, not {segment}")
    return JobRef(tenant, name, partition)


def decode_job(keys: Keys, key: bytes, value: bytes) -> tuple[JobRef, StoredJob]:
    """A stored job spec, checked against its key (a job copied to another key is a bad entry)."""
    ref = job_ref(keys, key)
    doc = _object(key, value)
    try:
        stored = _stored_job(doc)
    except _Bad as e:
        raise BadEntryError(key, str(e)) from None
    except ValidationError as e:
        raise BadEntryError(key, f"{e.field}: {e.reason}") from None
    job = stored.job
    if (job.namespace, job.name) != (ref.tenant, ref.name):
        raise BadEntryError(key, f"holds job {job.namespace}/{job.name}, not {ref.tenant}/{ref.name}")
    return ref, stored


def decode_spec(key: bytes, value: bytes) -> StoredJob:
    """A stored job spec without checking it against its key (the caller read it by name)."""
    doc = _object(key, value)
    try:
        return _stored_job(doc)
    except _Bad as e:
        raise BadEntryError(key, str(e)) from None
    except ValidationError as e:
        raise BadEntryError(key, f"{e.field}: {e.reason}") from None


def decode_cursor(key: bytes, value: bytes) -> Cursor:
    """A job's run state (written only by firing commits, but read as untrusted all the same)."""
    doc = _object(key, value)
    try:
        last, fired = _opt_int(doc, "lastTickMs"), _opt_int(doc, "firedMs")
        return Cursor(
            _str(doc, "jobId"),
            last,
            _int(doc, "runs", 0, lo=0),
            _int(doc, "missed", 0, lo=0),
            _str(doc, "commit", ""),
            fired,
        )
    except _Bad as e:
        raise BadEntryError(key, str(e)) from None


def cursor_for(stored: StoredJob, key: bytes, value: bytes | None) -> Cursor:
    """The stored cursor if it belongs to this version of the job, else a fresh one."""
    cursor = None if value is None else stored_cursor(stored, key, value)
    return Cursor(stored.id) if cursor is None else cursor


def stored_cursor(stored: StoredJob, key: bytes, value: bytes) -> Cursor | None:
    """The stored cursor if it belongs to this version of the job (None: a fresh one is due)."""
    cursor = decode_cursor(key, value)
    return cursor if cursor.job_id == stored.id else None


def decode_inflight(key: bytes, value: bytes) -> InFlight:
    doc = _object(key, value)
    try:
        kind = _str(doc, "kind", SCHEDULED)
        if kind not in (SCHEDULED, MANUAL, BACKFILL):
            raise _Bad(f"kind: {kind!r} is not scheduled, manual or backfill")
        payload = doc.get("payload")
        spec = doc.get("spec")
        return InFlight(
            _str(doc, "jobId"),
            _int(doc, "tickMs", lo=0),
            _int(doc, "run", lo=0),
            kind,
            _str(doc, "token", ""),
            _int(doc, "attempts", 0, lo=0),
            _int(doc, "nextAttemptMs", 0, lo=0),
            _bool(doc, "parked", False),
            None if payload is None else _base64(_str(doc, "payload"), "payload"),
            None if spec is None else _str(doc, "spec").encode(),
        )
    except _Bad as e:
        raise BadEntryError(key, str(e)) from None


def decode_request(key: bytes, value: bytes) -> RunRequest:
    doc = _object(key, value)
    try:
        payload = doc.get("payload")
        kind = _str(doc, "kind", MANUAL)
        if kind not in (MANUAL, BACKFILL):
            raise _Bad(f"kind: {kind!r} is not manual or backfill")
        rate = doc.get("rate", 0.0)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or rate < 0:
            raise _Bad("rate: expected a number of ticks a second")
        return RunRequest(
            _str(doc, "token"),
            _int(doc, "requestedMs", 0, lo=0),
            None if payload is None else _base64(_str(doc, "payload"), "payload"),
            _bool(doc, "done", False),
            _str(doc, "member", ""),
            kind,
            _int(doc, "fromMs", 0, lo=0),
            _int(doc, "toMs", 0, lo=0),
            float(rate),
            _int(doc, "doneUntilMs", 0, lo=0),
        )
    except _Bad as e:
        raise BadEntryError(key, str(e)) from None


def decode_history(key: bytes, value: bytes) -> tuple[str, list[HistoryEntry]]:
    """(job id, entries) of a job's history."""
    doc = _object(key, value)
    try:
        rows = doc.get("entries")
        if not isinstance(rows, list):
            raise _Bad("entries: expected a list")
        entries = []
        for row in rows:
            if not (isinstance(row, list) and len(row) in (7, 8)):
                raise _Bad("entries: each entry is a list of 7 or 8 values")
            ints = (row[0], row[1], row[3], row[5])
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints):
                raise _Bad("entries: times, run and attempts must be integers")
            if not all(isinstance(v, str) for v in (row[2], row[4], row[6], *row[7:])):
                raise _Bad("entries: member, result, kind and error must be strings")
            error = row[7][:ERROR_LENGTH] if len(row) == 8 else ""
            entries.append(HistoryEntry(row[0], row[1], row[2], row[3], row[4], row[5], row[6], error))
        return _str(doc, "jobId"), entries
    except _Bad as e:
        raise BadEntryError(key, str(e)) from None


def member_id(keys: Keys, key: bytes) -> str:
    root = keys.members_root()
    try:
        member = key[len(root) :].decode()
    except UnicodeDecodeError:
        raise BadEntryError(key, "member key is not UTF-8") from None
    if not member or "/" in member:
        raise BadEntryError(key, "not P/members/<member-id>")
    return member


def member_assignment(value: bytes) -> str:
    """The partition assignment a member key's value advertises ("" if none: a member of an earlier version,
    or a value that is not ours to judge: either way plain rendezvous is the safe common ground)."""
    try:
        doc = json.loads(value)
    except (UnicodeDecodeError, ValueError):
        return ""
    assignment = doc.get("assignment", "") if isinstance(doc, dict) else ""
    return assignment if isinstance(assignment, str) else ""


def partition_number(keys: Keys, key: bytes) -> int:
    segment = key[len(keys.partitions_root()) :]
    if len(segment) != 4 or not segment.isdigit() or int(segment) >= keys.partitions:
        raise BadEntryError(key, f"not P/partitions/<0000-{keys.partitions - 1:04d}>")
    return int(segment)


# -- field decoding --------------------------------------------------------------------------------------
_decode_text = json.JSONDecoder().decode


def _object(key: bytes, value: bytes) -> dict[str, Any]:
    try:
        try:  # what we write is UTF-8: skip json.loads' encoding detection (a member loads 1M of these)
            doc = _decode_text(value.decode())
        except ValueError:  # a BOM, another UTF encoding JSON allows, or bad: exactly as json.loads says
            doc = json.loads(value)
    except (UnicodeDecodeError, ValueError) as e:
        raise BadEntryError(key, f"value is not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise BadEntryError(key, f"value is a JSON {type(doc).__name__}, not an object")
    return doc


_MISSING: Any = object()
_JITTER_MAX_MS = JITTER_MAX // timedelta(milliseconds=1)


def _get(doc: dict[str, Any], name: str, default: Any) -> Any:
    value = doc.get(name, default)
    if value is _MISSING:
        raise _Bad(f"{name}: missing")
    return value


# _str and _int run ~20 times per job a member loads: the common case (the exact type) is tested first.
def _str(doc: dict[str, Any], name: str, default: Any = _MISSING) -> str:
    value = doc.get(name, default)
    if value.__class__ is str:
        return value
    if value is _MISSING:
        raise _Bad(f"{name}: missing")
    if not isinstance(value, str):
        raise _Bad(f"{name}: expected a string, got {type(value).__name__}")
    return value


def _int(doc: dict[str, Any], name: str, default: Any = _MISSING, *, lo: int | None = None) -> int:
    value = doc.get(name, default)
    if value.__class__ is not int:
        if value is _MISSING:
            raise _Bad(f"{name}: missing")
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"{name}: expected an integer, got {type(value).__name__}")
    if lo is not None and value < lo:
        raise _Bad(f"{name}: must be at least {lo}, got {value}")
    return value


def _bool(doc: dict[str, Any], name: str, default: Any = _MISSING) -> bool:
    value = _get(doc, name, default)
    if not isinstance(value, bool):
        raise _Bad(f"{name}: expected true or false, got {type(value).__name__}")
    return value


def _base64(text: str, name: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _Bad(f"{name}: not base64") from None


def _opt_int(doc: dict[str, Any], name: str) -> int | None:
    return None if doc.get(name) is None else _int(doc, name)


def _time(doc: dict[str, Any], name: str) -> datetime:
    text = _str(doc, name)
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise _Bad(f"{name}: {text!r} is not an RFC 3339 time") from None
    if t.tzinfo is None:
        raise _Bad(f"{name}: {text!r} has no UTC offset")
    return t


def _ms(doc: dict[str, Any], name: str, default: Any = _MISSING, *, lo: int = 0) -> timedelta:
    return ms_delta(_int(doc, name, default, lo=lo))


def _failure_policy(doc: dict[str, Any]) -> FailurePolicy:
    """``failurePolicy``, or the ``retries``/``retryIntervalMs`` of jobs stored by earlier versions."""
    if "failurePolicy" not in doc:
        retries, interval = _int(doc, "retries", 3), _int(doc, "retryIntervalMs", 1000)
        return failure_policy_of("constant", interval, max(interval, 60_000), retries)
    policy = doc["failurePolicy"]
    if not isinstance(policy, dict):
        raise _Bad(f"failurePolicy: expected an object, got {type(policy).__name__}")
    backoff = _str(policy, "backoff")
    if backoff not in ("drop", "constant", "exponential"):
        raise _Bad(f"failurePolicy.backoff: {backoff!r} is not drop, constant or exponential")
    try:
        return failure_policy_of(
            backoff,
            _int(policy, "intervalMs", lo=0),
            _int(policy, "maxIntervalMs", lo=0),
            _int(policy, "maxRetries", lo=0),
        )
    except _Bad as e:
        raise _Bad(f"failurePolicy.{e}") from None


_DELIVERIES = {d.value: d for d in Delivery}
_CATCH_UPS = {c.value: c for c in CatchUp}


def _delivery(doc: dict[str, Any]) -> Delivery:
    text = _str(doc, "delivery", "at-least-once")
    delivery = _DELIVERIES.get(text)
    if delivery is None:
        raise _Bad(f"delivery: {text!r} is not at-least-once or at-most-once")
    return delivery


def _overlap(doc: dict[str, Any]) -> Overlap:
    text = _str(doc, "overlap", "allow")
    try:
        return Overlap(text)
    except ValueError:
        raise _Bad(f"overlap: {text!r} is not allow, skip or wait") from None


def _stored_job(doc: dict[str, Any]) -> StoredJob:
    """Types and limits checked field by field (cheaply: a member decodes a million of these at start)."""
    payload_text = _str(doc, "payload", "")
    payload = _base64(payload_text, "payload") if payload_text else b""
    if len(payload) > PAYLOAD_MAX:
        raise _Bad(f"payload: more than {PAYLOAD_MAX} bytes")
    catch_up_text = _str(doc, "catchUp", "all")
    catch_up = _CATCH_UPS.get(catch_up_text)
    if catch_up is None:
        raise _Bad(f"catchUp: {catch_up_text!r} is not all, latest or none")
    max_runs = None if doc.get("maxRuns") is None else _int(doc, "maxRuns", lo=1)
    jitter = None if doc.get("jitterMs") is None else _ms(doc, "jitterMs")
    if jitter is not None and jitter > JITTER_MAX:
        raise _Bad(f"jitterMs: must be at most {_JITTER_MAX_MS}, got {doc['jitterMs']}")
    job = Job.trusted(
        name=_str(doc, "name"),
        schedule=sys.intern(_str(doc, "schedule")),
        namespace=sys.intern(_str(doc, "namespace")),
        type=sys.intern(_str(doc, "type", "")),
        payload=payload,
        time_zone=sys.intern(_str(doc, "timeZone", "UTC")),
        ttl=_ms(doc, "ttlMs", lo=1000) if doc.get("ttlMs") is not None else None,
        start_at=_time(doc, "startAt") if doc.get("startAt") is not None else None,
        max_runs=max_runs,
        catch_up=catch_up,
        catch_up_deadline=_ms(doc, "catchUpDeadlineMs", 300_000, lo=1000),
        failure_policy=_failure_policy(doc),
        delivery=_delivery(doc),
        jitter=jitter,
        overlap=_overlap(doc),
    )
    return StoredJob(job, _str(doc, "id"), _time(doc, "created"), _int(doc, "lease", 0, lo=0))
