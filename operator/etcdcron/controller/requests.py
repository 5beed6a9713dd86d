"""Run now and backfill from kubectl: the ``etcdcron.io/trigger`` and ``etcdcron.io/backfill`` annotations of
a DistributedCronJob become the library's run-now and backfill requests (``runs.py``).

The request's key in etcd is named by the token (or the range), so a value fires once however often it is
applied, and whatever restarts or changes leader meanwhile: a handler that runs again finds it requested.
``serve`` looks at every watch event of a resource (kopf leaves annotations under its own storage prefix,
``etcdcron.io/``, out of the diffs its change handlers see) and asks etcd only for a value it has not
served yet in this reconciler's life: a new leader asks once more per annotated resource, and etcd says
"requested before". Parsing is pure (table-tested); ``submit`` talks to etcd and records a Warning for a
value it cannot take.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from etcdcron.controller.looks import warn
from etcdcron.controller.reconcile import Context
from etcdcron.controller.resource import PAYLOAD_LIMIT
from etcdcron.durations import parse_instant
from etcdcron.errors import EtcdUnavailableError, JobNotFoundError, ValidationError
from etcdcron.k8s_resource import (
    ANNOTATION_BACKFILL,
    ANNOTATION_TRIGGER,
    ANNOTATION_TRIGGER_PAYLOAD,
)
from etcdcron.runs import TOKEN, Runs

log = logging.getLogger(__name__)
BACKFILL_RATE = 10.0
"""Ticks a second a backfill fires at (the library's default)."""
NOT_FIRING = frozenset({"Complete", "InvalidSpec", "JobRejected", "Expired"})
"""Ready reasons of a resource whose job is out of the pool: a request cannot be served, so it is refused."""


class NotInEtcdYet(Exception):
    """The resource's job is not stored yet (being mirrored): try again shortly."""


@dataclass(frozen=True, slots=True)
class Request:
    """One annotation's ask: run now (``token``, ``payload``) or backfill (``start``..``end``)."""

    annotation: str
    value: str
    token: str = ""
    payload: bytes | None = None
    start: datetime | None = None
    end: datetime | None = None

    @property
    def rejected_reason(self) -> str:
        return "TriggerRejected" if self.annotation == ANNOTATION_TRIGGER else "BackfillRejected"


def trigger_request(annotations: dict[str, str]) -> Request | None:
    """``etcdcron.io/trigger: <token>`` (and ``etcdcron.io/trigger-payload``: JSON, else plain text);
    None without the annotation. A ValidationError names the annotation."""
    token = annotations.get(ANNOTATION_TRIGGER)
    if token is None:
        return None
    if not TOKEN.fullmatch(token):
        raise ValidationError(
            ANNOTATION_TRIGGER,
            f"{token!r} is not 1-63 letters, digits, '-', '_' or '.' (starting alphanumeric)",
        )
    payload = None
    text = annotations.get(ANNOTATION_TRIGGER_PAYLOAD)
    if text is not None:
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        payload = json.dumps(value, separators=(",", ":")).encode()
        if len(payload) > PAYLOAD_LIMIT:
            raise ValidationError(
                ANNOTATION_TRIGGER_PAYLOAD,
                f"must be at most {PAYLOAD_LIMIT} bytes as JSON, got {len(payload)}",
            )
    return Request(ANNOTATION_TRIGGER, token, token=token, payload=payload)


def backfill_request(annotations: dict[str, str]) -> Request | None:
    """``etcdcron.io/backfill: <from>/<to>``, two RFC 3339 instants (an ISO 8601 interval), from before to;
    every tick in between, both ends included, fires once. None without the annotation."""
    text = annotations.get(ANNOTATION_BACKFILL)
    if text is None:
        return None
    usage = "<from>/<to>, two RFC 3339 times such as 2026-01-01T00:00:00Z/2026-01-02T00:00:00Z"
    parts = text.split("/")
    if len(parts) != 2:
        raise ValidationError(ANNOTATION_BACKFILL, f"{text!r} is not {usage}")
    try:
        start, end = (parse_instant(part, ANNOTATION_BACKFILL) for part in parts)
    except ValidationError as e:
        raise ValidationError(ANNOTATION_BACKFILL, f"{e.reason}; expected {usage}") from None
    if not start < end:
        raise ValidationError(ANNOTATION_BACKFILL, f"{text!r}: <to> must be after <from>")
    return Request(ANNOTATION_BACKFILL, text, start=start, end=end)


def not_firing(body: dict[str, Any]) -> str | None:
    """Why the resource's job is out of the pool (suspended, complete, invalid, expired), so a request
    would never be served; None when it is in the pool or about to be."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    if spec.get("suspend"):
        return "spec.suspend is true"
    max_runs = spec.get("maxRuns")
    if max_runs is not None and int(status.get("runCount") or 0) >= int(max_runs):
        return f"all {max_runs} runs fired"
    for c in status.get("conditions") or []:
        if c.get("type") == "Ready" and c.get("status") == "False" and c.get("reason") in NOT_FIRING:
            return f"{c['reason']}: {c.get('message', '')}"
    return None


Parse = Callable[[dict[str, str]], Request | None]
PARSERS: tuple[tuple[str, Parse], ...] = (
    (ANNOTATION_TRIGGER, trigger_request),
    (ANNOTATION_BACKFILL, backfill_request),
)
RETRY_DELAYS = (1, 2, 2, 5, 5, 10, 10)
"""Waits while the resource's job is not in etcd yet (being mirrored) or etcd is unavailable; after them
the next watch event of the resource tries again."""


async def serve(body: dict[str, Any], context: Context) -> bool:
    """Make the requests the resource's annotations ask for and this reconciler has not made yet; True if
    it made one (its firings will change the status)."""
    made = False
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return False
    annotations = meta.get("annotations") or {}
    for annotation, parse in PARSERS:
        key, value = f"{meta['uid']}/{annotation}", annotations.get(annotation)
        if value is None:
            context.requested.pop(key, None)
            continue
        if context.requested.get(key) == value:
            continue
        for delay in (*RETRY_DELAYS, None):
            try:
                await submit(body, context, parse)
            except (NotInEtcdYet, EtcdUnavailableError) as e:
                if delay is None:
                    log.warning(
                        "%s/%s: %s not served yet: %s", meta["namespace"], meta["name"], annotation, e
                    )
                    break
                await asyncio.sleep(delay)
                continue
            context.requested[key] = value
            made = True
            break
    return made


def forget(body: dict[str, Any], context: Context) -> None:
    """The resource is gone: its served values too."""
    for annotation, _ in PARSERS:
        context.requested.pop(f"{body['metadata']['uid']}/{annotation}", None)


async def submit(body: dict[str, Any], context: Context, parse: Parse) -> bool | None:
    """Make the request an annotation asks for: True if made now, False if made before (same token or
    range), None if refused (a Warning Event names the annotation and why). Raises ``NotInEtcdYet`` (or
    ``EtcdUnavailableError``) when it should be tried again."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    request: Request | None = None
    try:
        request = parse(meta.get("annotations") or {})
        if request is None:
            return None
        runs = Runs(context.mirror.client, context.mirror.keys)
        if request.start is not None and request.end is not None:
            made = await runs.request_backfill(namespace, name, request.start, request.end, BACKFILL_RATE)
        else:
            made = await runs.request_run(namespace, name, request.token, request.payload)
    except ValidationError as e:
        if request is not None:
            reason, field = request.rejected_reason, request.annotation
        else:
            reason = "TriggerRejected" if e.field.startswith(ANNOTATION_TRIGGER) else "BackfillRejected"
            field = e.field
        await _refuse(body, context, reason, f"{field}: {e.reason}")
        return None
    except JobNotFoundError:
        assert request is not None
        why = not_firing(body)
        if why is None:
            raise NotInEtcdYet(f"{namespace}/{name} is not stored in etcd yet") from None
        await _refuse(
            body, context, request.rejected_reason, f"{request.annotation}={request.value}: not fired: {why}"
        )
        return None
    what = f"{request.annotation}={request.value}"
    log.info(
        "%s/%s: %s %s", namespace, name, what, "requested" if made else "was requested before: not again"
    )
    return made


async def _refuse(body: dict[str, Any], context: Context, reason: str, message: str) -> None:
    meta = body["metadata"]
    log.warning("%s/%s: %s", meta["namespace"], meta["name"], message)
    await warn(body, context, reason, message)
