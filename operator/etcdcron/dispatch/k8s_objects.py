"""The Kubernetes objects a firing creates, as plain manifests: a tick's Event or Job, and the Warnings about
a DistributedCronJob. Pure apart from ``record_warning``; named from the firing's identity so a retry, or
another replica, finds the object already there.
"""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from etcdcron.firing import BACKFILL, MANUAL, Firing
from etcdcron.job import format_time
from etcdcron.k8s_resource import (
    ANNOTATION_KIND,
    ANNOTATION_PAYLOAD,
    ANNOTATION_RUN,
    ANNOTATION_SCHEDULED,
    ANNOTATION_TRIGGER,
    ANNOTATION_TYPE,
    API_VERSION,
    EVENT_SOURCE,
    KIND,
    LABEL_JOB,
    REPORTING_COMPONENT,
    Envelope,
    backfill_name,
    dispatched_name,
    manual_name,
)


def object_name(firing: Firing, uid: str) -> str:
    """The Event or Job a firing creates: a tick's is named from its time, a run-now request's from its
    token, a backfilled tick's from its time in another form (so it is not the tick's own)."""
    job = firing.job.job
    if firing.kind == MANUAL:
        return manual_name(job.name, uid, firing.token)
    if firing.kind == BACKFILL:
        return backfill_name(job.name, firing.scheduled)
    return dispatched_name(job.name, firing.scheduled)


def payload_of(firing: Firing, envelope: Envelope) -> Any:
    """The firing's payload: a run-now request's own (JSON, else its text) or spec.payload."""
    raw = firing.payload_override
    if raw is None:
        return envelope.payload
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def describe(firing: Firing) -> str:
    """What fired, for an Event's message."""
    when = format_time(firing.scheduled)
    if firing.kind == MANUAL:
        return f"run now ({ANNOTATION_TRIGGER}={firing.token}) fired at {when}"
    if firing.kind == BACKFILL:
        return f"backfilled tick {when} fired"
    return f"tick {when} fired (run {firing.run})"


def _owner(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _event(job_name: str, namespace: str, uid: str, member: str, **fields: Any) -> dict[str, Any]:
    """A core/v1 Event about a DistributedCronJob, reported by this operator replica."""
    now = format_time(datetime.now(UTC))
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": job_name,
            "namespace": namespace,
            "uid": uid,
        },
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "source": {"component": EVENT_SOURCE},
        "reportingComponent": REPORTING_COMPONENT,
        "reportingInstance": member[:128],
        **fields,
    }


def event_body(firing: Firing, envelope: Envelope, member: str) -> dict[str, Any]:
    """The Event of one tick, named from the firing's identity."""
    job = firing.job.job
    reason = (envelope.target.get("event") or {}).get("reason") or "Fired"
    return _event(
        job.name,
        job.namespace,
        envelope.uid,
        member,
        metadata={
            "name": object_name(firing, envelope.uid),
            "namespace": job.namespace,
            "labels": {LABEL_JOB: job.name},
            "annotations": _annotations(firing, envelope),
        },
        reason=reason,
        message=describe(firing),
        type="Normal",
    )


def _annotations(firing: Firing, envelope: Envelope) -> dict[str, str]:
    notes = {
        ANNOTATION_SCHEDULED: format_time(firing.scheduled),
        ANNOTATION_RUN: str(firing.run),
        ANNOTATION_TYPE: firing.job.job.type,
        ANNOTATION_PAYLOAD: json.dumps(payload_of(firing, envelope), separators=(",", ":")),
    }
    if firing.kind != "scheduled":
        notes[ANNOTATION_KIND] = firing.kind
    if firing.kind == MANUAL:
        notes[ANNOTATION_TRIGGER] = firing.token
    return notes


def job_body(firing: Firing, envelope: Envelope) -> dict[str, Any]:
    """A batch/v1 Job from the resource's template, owned by the resource, carrying the firing in env."""
    job = firing.job.job
    template = copy.deepcopy((envelope.target.get("job") or {}).get("template") or {})
    meta = template.get("metadata") or {}
    labels = {**(meta.get("labels") or {}), LABEL_JOB: job.name}
    annotations = {**(meta.get("annotations") or {}), **_annotations(firing, envelope)}
    spec = template.get("spec") or {}
    env = [
        {"name": "ETCDCRON_JOB", "value": job.name},
        {"name": "ETCDCRON_TYPE", "value": job.type},
        {
            "name": "ETCDCRON_PAYLOAD",
            "value": json.dumps(payload_of(firing, envelope), separators=(",", ":")),
        },
        {"name": "ETCDCRON_SCHEDULED_TIME", "value": format_time(firing.scheduled)},
        {"name": "ETCDCRON_RUN", "value": str(firing.run)},
        {"name": "ETCDCRON_KIND", "value": firing.kind},
    ]
    pod_spec = spec.setdefault("template", {}).setdefault("spec", {})
    for container in pod_spec.get("containers", []) + pod_spec.get("initContainers", []):
        names = {e["name"] for e in env}
        container["env"] = [e for e in container.get("env", []) if e.get("name") not in names] + env
    pod_meta = spec["template"].setdefault("metadata", {})
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), LABEL_JOB: job.name}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": object_name(firing, envelope.uid),
            "namespace": job.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [_owner(job.name, envelope.uid)],
        },
        "spec": spec,
    }


def record_warning(
    core: k8s.CoreV1Api,
    name: str,
    namespace: str,
    uid: str,
    reporter: str,
    reason: str,
    message: str,
    key: str,
) -> None:
    """One Warning Event about a DistributedCronJob per distinct failure (``key``), named from it: a repeat,
    from any replica or path, counts on the same Event (as Kubernetes aggregates them)."""
    body = warning_event(name, namespace, uid, reporter, reason, message, key)
    event = body["metadata"]["name"]
    try:
        core.create_namespaced_event(namespace, body)
    except ApiException as e:
        if e.status != 409:
            raise
        current = core.read_namespaced_event(event, namespace)
        core.patch_namespaced_event(event, namespace, repeat_patch(current.count, body))


def warning_event(
    name: str, namespace: str, uid: str, reporter: str, reason: str, message: str, key: str
) -> dict[str, Any]:
    """The Warning Event of one distinct failure (``key``) of a DistributedCronJob, named from it."""
    digest = hashlib.sha256(f"{uid}/{reason}/{key}".encode()).hexdigest()[:16]
    meta = {"name": f"{name}.{digest}", "namespace": namespace, "labels": {LABEL_JOB: name}}
    return _event(
        name, namespace, uid, reporter, metadata=meta, reason=reason, message=message, type="Warning"
    )


def repeat_patch(count: int | None, body: dict[str, Any]) -> dict[str, Any]:
    """The patch that counts one more occurrence on a Warning Event whose count is ``count``."""
    return {"count": (count or 1) + 1, "lastTimestamp": body["lastTimestamp"], "message": body["message"]}
