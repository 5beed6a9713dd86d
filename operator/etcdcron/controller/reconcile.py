"""Make etcd mirror one resource: read, decide (``decide.py``), dry-run a Job template, write (fenced)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from etcdcron.controller.decide import Action, Decision, decide, own_state
from etcdcron.controller.mirror import ConflictError, Mirror, Snapshot
from etcdcron.controller.resource import utcnow
from etcdcron.controller.status import Observed
from etcdcron.dispatch.k8s_objects import job_body
from etcdcron.firing import Firing, HistoryEntry
from etcdcron.job import Job, StoredJob
from etcdcron.k8s_resource import Envelope, api_error

log = logging.getLogger(__name__)
ATTEMPTS = 5  # a write that keeps meeting a firing commit is read and decided again, this many times


@dataclass
class Context:
    """What the handlers need, handed over through kopf's memo."""

    mirror: Mirror
    api: k8s.ApiClient
    reported: set[str] = field(default_factory=set)  # problems logged already (each is logged once)
    requested: dict[str, str] = field(default_factory=dict)  # "<uid>/<annotation>" -> the value served

    def report_once(self, problem: str) -> bool:
        """True the first time ``problem`` is seen (bounded: a flood of distinct ones is still logged)."""
        if problem in self.reported:
            return False
        if len(self.reported) >= 10_000:
            self.reported.clear()
        self.reported.add(problem)
        return True


async def reconcile(body: dict[str, Any], context: Context) -> Observed:
    """Make etcd mirror the resource (idempotent); returns what status should be computed from."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    for _ in range(ATTEMPTS):
        now = utcnow()
        snap = await context.mirror.read(namespace, name)
        decision = decide(body, snap, now)
        try:
            if decision.action is Action.PUT and decision.job is not None:
                job = decision.job
                rejected = await dry_run(job, context.api, now)
                if rejected:
                    decision = Decision(Action.PARK, "Job template rejected", rejected=rejected)
                    await context.mirror.park(snap, namespace, name, meta["uid"], _gen(body), rejected)
                else:
                    new = await context.mirror.put(snap, job, meta["uid"], _gen(body), decision.progress, now)
                    log.info(
                        "%s/%s: generation %d mirrored as %s (%s)",
                        namespace,
                        name,
                        _gen(body),
                        new.id,
                        decision.why,
                    )
            elif decision.action is Action.PARK:
                await context.mirror.park(snap, namespace, name, meta["uid"], _gen(body))
                log.info("%s/%s: out of the pool (%s)", namespace, name, decision.why)
        except ConflictError:
            continue  # a firing commit or another write landed in between: read and decide again
        if decision.action in (Action.PUT, Action.PARK):
            snap = await context.mirror.read(namespace, name)
        stored, cursor, mirrored = own_state(body, snap)
        return Observed(
            stored,
            cursor,
            mirrored,
            invalid=decision.invalid,
            rejected=decision.rejected or None,
            history=history_of(body, snap, stored),
            bad_entry=snap.bad_history,
        )
    raise ConflictError(f"{namespace}/{name}: etcd kept changing while being mirrored")


def history_of(body: dict[str, Any], snap: Snapshot, stored: StoredJob | None) -> tuple[HistoryEntry, ...]:
    """The settled firings of the resource's current job version (a new version starts a new history, as
    ``etcdcron history`` shows it); none for another resource's leftovers."""
    record = snap.record if snap.record is not None and snap.record.uid == body["metadata"]["uid"] else None
    job_id = stored.id if stored is not None else record.job_id if record is not None else ""
    if snap.history is None or not job_id or snap.history[0] != job_id:
        return ()
    return snap.history[1]


def _gen(body: dict[str, Any]) -> int:
    return int(body["metadata"].get("generation", 1))


async def dry_run(job: Job, api: k8s.ApiClient, now: datetime) -> str:
    """Ask the API server whether the Job a tick would create is valid (server-side dry run, nothing is
    stored); its own message if not, else ''. Only a Job target is checked."""
    envelope = Envelope.from_bytes(job.payload)
    if envelope.kind != "Job":
        return ""
    firing = Firing(StoredJob(job, "dry-run", now), now, now, 1, "dry-run", False)
    body = job_body(firing, envelope)
    body["metadata"].pop("ownerReferences", None)  # the owner check needs RBAC on the resource's finalizers
    try:
        await asyncio.to_thread(k8s.BatchV1Api(api).create_namespaced_job, job.namespace, body, dry_run="All")
    except ApiException as e:
        if e.status in (400, 422):
            return f"the API server rejects the Job of spec.target.job.template: {api_error(e)}"
        log.warning("%s/%s: Job dry run inconclusive: %s", job.namespace, job.name, api_error(e))
    return ""
