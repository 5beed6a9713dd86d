"""Dispatch a firing of a DistributedCronJob as a Kubernetes Event or Job, in the resource's own namespace.

The object is named from the firing's identity (resource, scheduled time), so a retry, or a member taking
over after a crash between commit and dispatch, finds it already there: every tick gives exactly one
object. Tenancy: the namespace is the job's tenant, nothing else is ever written or read.

The official ``kubernetes`` client is blocking: every call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import time
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
    api_detail,
    api_error,
    dispatched_name,
)

log = logging.getLogger(__name__)
REPEAT_LOG_SECONDS = 60


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


class JobCreateError(Exception):
    """Creating a tick's Event or Job failed in a way a retry may fix (server error, throttling)."""


def _final(error: ApiException) -> bool:
    """A 4xx other than a conflict or throttling: the same request can never succeed."""
    return 400 <= int(error.status or 0) < 500 and error.status not in (408, 409, 429)


def _finished(job: Any) -> str | None:
    """'Complete' or 'Failed' for a finished Job, else None."""
    for cond in (job.status.conditions or []) if job.status else []:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return str(cond.type)
    return None


class KubernetesDispatcher:
    """A trigger for pool members in the operator: creates the Event or Job of each firing."""

    def __init__(self, api_client: k8s.ApiClient, member: str) -> None:
        self.core = k8s.CoreV1Api(api_client)
        self.batch = k8s.BatchV1Api(api_client)
        self.member = member
        self._logged: dict[tuple[str, str, str], float] = {}

    async def __call__(self, firing: Firing) -> None:
        envelope = Envelope.from_bytes(firing.job.job.payload)
        create = self._create_job if envelope.kind == "Job" else self._create_event
        try:
            await asyncio.to_thread(create, firing, envelope)
        except ApiException as e:  # one line (the client's own text dumps every HTTP header)
            raise JobCreateError(
                f"{envelope.kind} of tick {format_time(firing.scheduled)}: {api_error(e)}"
            ) from None

    def _create_event(self, firing: Firing, envelope: Envelope) -> None:
        body = event_body(firing, envelope, self.member)
        job = firing.job.job
        try:
            self.core.create_namespaced_event(job.namespace, body)
        except ApiException as e:
            if e.status == 409:
                return  # this tick's Event exists already (a retry after a crash)
            if _final(e):  # e.g. 403 "namespace is being terminated": no retry can succeed
                self._log_once(job.namespace, job.name, f"Event not created: {api_error(e)}")
                return
            raise JobCreateError(
                f"creating Event {body['metadata']['name']} failed: {api_error(e)}"
            ) from None

    def _create_job(self, firing: Firing, envelope: Envelope) -> None:
        spec = envelope.target.get("job") or {}
        policy = spec.get("concurrencyPolicy", "Allow")
        job = firing.job.job
        name = dispatched_name(job.name, firing.scheduled)
        selector = f"{LABEL_JOB}={job.name}"
        ours = [
            j
            for j in self.batch.list_namespaced_job(job.namespace, label_selector=selector).items
            if any(o.uid == envelope.uid for o in (j.metadata.owner_references or []))
        ]
        if any(j.metadata.name == name for j in ours):
            return  # this tick's Job exists already (a retry after a crash)
        active = [j for j in ours if _finished(j) is None and j.metadata.deletion_timestamp is None]
        if active and policy == "Forbid":
            log.info(
                "job %s/%s: tick %s skipped, %d Job(s) still running (Forbid)",
                job.namespace,
                job.name,
                format_time(firing.scheduled),
                len(active),
            )
            self._warn(
                firing,
                envelope,
                "ForbidConcurrent",
                f"tick {format_time(firing.scheduled)} skipped: {active[0].metadata.name} is still running",
                key="still running",
            )
            return
        if active and policy == "Replace":
            for old in active:
                self._delete_job(job.namespace, old.metadata.name)
        try:
            self.batch.create_namespaced_job(job.namespace, job_body(firing, envelope))
        except ApiException as e:
            if e.status == 409:
                pass  # this tick's Job exists already
            elif _final(e):  # the request itself is wrong: retrying cannot help, say so once per cause
                detail = api_detail(e)
                self._warn(
                    firing, envelope, "JobCreateFailed", f"creating a Job failed: {api_error(e)}", detail
                )
                log.warning(
                    "job %s/%s: creating Job %s failed: %s", job.namespace, job.name, name, api_error(e)
                )
                return
            else:
                raise JobCreateError(f"creating Job {name} failed: {api_error(e)}") from None
        self._trim_history(job.namespace, ours, spec)

    def _trim_history(self, namespace: str, jobs: list[Any], spec: dict[str, Any]) -> None:
        limits = {
            "Complete": int(spec.get("successfulJobsHistoryLimit", 3)),
            "Failed": int(spec.get("failedJobsHistoryLimit", 1)),
        }
        for outcome, limit in limits.items():
            done = sorted(
                (j for j in jobs if _finished(j) == outcome),
                key=lambda j: j.metadata.creation_timestamp,
                reverse=True,
            )
            for old in done[limit:]:
                self._delete_job(namespace, old.metadata.name)

    def _delete_job(self, namespace: str, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        except ApiException as e:
            if e.status != 404:
                raise

    def _warn(self, firing: Firing, envelope: Envelope, reason: str, message: str, key: str) -> None:
        job = firing.job.job
        try:
            record_warning(
                self.core, job.name, job.namespace, envelope.uid, self.member, reason, message, key
            )
        except ApiException as e:
            self._log_once(job.namespace, job.name, f"could not record a Warning: {api_error(e)}")

    def _log_once(self, namespace: str, name: str, message: str) -> None:
        """A failure that repeats every tick is logged once per ``REPEAT_LOG_SECONDS``, not per tick."""
        now = time.monotonic()
        key = (namespace, name, message)
        if now - self._logged.get(key, -REPEAT_LOG_SECONDS) >= REPEAT_LOG_SECONDS:
            self._logged = {k: t for k, t in self._logged.items() if now - t < REPEAT_LOG_SECONDS}
            self._logged[key] = now
            log.warning(
                "job %s/%s: %s (repeats are not logged for %ds)", namespace, name, message, REPEAT_LOG_SECONDS
            )


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
