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

from etcdcron.firing import Firing
from etcdcron.job import format_time
from etcdcron.k8s_resource import (
    ANNOTATION_PAYLOAD,
    ANNOTATION_RUN,
    ANNOTATION_SCHEDULED,
    ANNOTATION_TYPE,
    API_VERSION,
    EVENT_SOURCE,
    KIND,
    LABEL_JOB,
    REPORTING_COMPONENT,
    Envelope,
    dispatched_name,
)


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
            "name": dispatched_name(job.name, firing.scheduled),
            "namespace": job.namespace,
            "labels": {LABEL_JOB: job.name},
            "annotations": _annotations(firing, envelope),
        },
        reason=reason,
        message=f"tick {format_time(firing.scheduled)} fired (run {firing.run})",
        type="Normal",
    )


def _annotations(firing: Firing, envelope: Envelope) -> dict[str, str]:
    return {
        ANNOTATION_SCHEDULED: format_time(firing.scheduled),
        ANNOTATION_RUN: str(firing.run),
        ANNOTATION_TYPE: firing.job.job.type,
        ANNOTATION_PAYLOAD: json.dumps(envelope.payload, separators=(",", ":")),
    }


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
        {"name": "ETCDCRON_PAYLOAD", "value": json.dumps(envelope.payload, separators=(",", ":"))},
        {"name": "ETCDCRON_SCHEDULED_TIME", "value": format_time(firing.scheduled)},
        {"name": "ETCDCRON_RUN", "value": str(firing.run)},
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
            "name": dispatched_name(job.name, firing.scheduled),
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
    digest = hashlib.sha256(f"{uid}/{reason}/{key}".encode()).hexdigest()[:16]
    event = f"{name}.{digest}"
    meta = {"name": event, "namespace": namespace, "labels": {LABEL_JOB: name}}
    body = _event(
        name, namespace, uid, reporter, metadata=meta, reason=reason, message=message, type="Warning"
    )
    try:
        core.create_namespaced_event(namespace, body)
    except ApiException as e:
        if e.status != 409:
            raise
        current = core.read_namespaced_event(event, namespace)
        repeat = {
            "count": (current.count or 1) + 1,
            "lastTimestamp": body["lastTimestamp"],
            "message": message,
        }
        core.patch_namespaced_event(event, namespace, repeat)
