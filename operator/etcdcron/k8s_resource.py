"""The DistributedCronJob vocabulary shared by the controller (which writes jobs) and the Kubernetes
dispatcher (which fires them): API names, labels, annotations, the envelope a stored job carries, and how a
tick's Event or Job is named. Pure; both layers import it, neither imports the other.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

GROUP = "etcdcron.io"
VERSION = "v1alpha1"
PLURAL = "distributedcronjobs"
KIND = "DistributedCronJob"
API_VERSION = f"{GROUP}/{VERSION}"

LABEL_JOB = "etcdcron.io/job"
ANNOTATION_SCHEDULED = "etcdcron.io/scheduled-time"
ANNOTATION_RUN = "etcdcron.io/run"
ANNOTATION_TYPE = "etcdcron.io/type"
ANNOTATION_PAYLOAD = "etcdcron.io/payload"
ANNOTATION_KIND = "etcdcron.io/kind"  # on a run-now or backfill firing's object: manual | backfill
ANNOTATION_TRIGGER = "etcdcron.io/trigger"  # on a resource: run now, once per value (the request token)
ANNOTATION_TRIGGER_PAYLOAD = "etcdcron.io/trigger-payload"  # that run's payload instead of spec.payload
ANNOTATION_BACKFILL = "etcdcron.io/backfill"  # on a resource: <from>/<to>, fire every tick between once
REPORTING_COMPONENT = "etcdcron.io/operator"
EVENT_SOURCE = "etcdcron-operator"


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a member needs to dispatch a firing of a resource (the stored job's payload)."""

    uid: str
    generation: int
    target: dict[str, Any]
    payload: Any

    def to_bytes(self) -> bytes:
        doc = {"uid": self.uid, "generation": self.generation, "target": self.target, "payload": self.payload}
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        doc = json.loads(raw)
        return cls(doc["uid"], int(doc["generation"]), doc["target"], doc.get("payload"))

    @property
    def kind(self) -> str:
        return "Job" if "job" in self.target else "Event"


def dispatched_name(resource: str, scheduled: datetime) -> str:
    """The Event or Job of one tick, named from the firing's identity so a retry finds it already there."""
    return f"{resource}-{int(scheduled.timestamp())}"


def manual_name(resource: str, uid: str, token: str) -> str:
    """The Event or Job of a run-now request: ``m`` and 9 hex digits of the resource's uid and the token,
    so it fits where a tick's 10 digits do and never equals a tick's name."""
    return f"{resource}-m{hashlib.sha256(f'{uid}/{token}'.encode()).hexdigest()[:9]}"


def backfill_name(resource: str, scheduled: datetime) -> str:
    """The Event or Job of a backfilled tick: ``b`` and the tick's unix seconds in base 36 (one object per
    tick however many backfills cover it, apart from the one the tick made when it came due)."""
    seconds, digits = int(scheduled.timestamp()), ""
    while True:
        seconds, digit = divmod(seconds, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
        if not seconds:
            return f"{resource}-b{digits}"


def api_error(error: Any) -> str:
    """A Kubernetes API error (``ApiException``) in one line: status, reason and the API server's own
    message, field by field when it gives causes (no header dump)."""
    head = f"{getattr(error, 'status', '?')} {getattr(error, 'reason', '')}".strip()
    detail = api_detail(error)
    return f"{head}: {detail}" if detail else head


def api_detail(error: Any) -> str:
    """What the API server says is wrong, without the object's name: the same for every tick."""
    try:
        doc = json.loads(getattr(error, "body", None) or "{}")
    except (ValueError, TypeError):
        return ""
    if not isinstance(doc, dict):
        return ""
    causes = (doc.get("details") or {}).get("causes") or []
    parts = [
        f"{c['field']}: {c.get('message', '')}" if c.get("field") else c.get("message", "") for c in causes
    ]
    return "; ".join(p for p in parts if p) or str(doc.get("message", ""))
