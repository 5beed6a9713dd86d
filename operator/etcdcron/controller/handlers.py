"""kopf handlers: they only translate between DistributedCronJob resources and the JobStore.

Run by the one elected replica (see ``run.py``). Handler ids are stable; finalizer and kopf's own storage
live under ``etcdcron.io``. Status is written by one timer per resource every ``STATUS_INTERVAL`` seconds at
most (coalesced, whatever the schedule), plus once when a resource is mirrored.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kopf
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from etcdcron.controller.resource import (
    Observed,
    desired_status,
    expires_at,
    job_from_resource,
    mirrors,
    parse_time,
    status_patch,
    utcnow,
)
from etcdcron.errors import EtcdUnavailableError, JobNotFoundError, ValidationError
from etcdcron.firing import Cursor, to_ms
from etcdcron.k8s_resource import GROUP, PLURAL, VERSION
from etcdcron.store import JobStatus, JobStore

log = logging.getLogger(__name__)
registry = kopf.OperatorRegistry()
RESOURCE = (GROUP, VERSION, PLURAL)
STATUS_INTERVAL = 5.0


@dataclass
class Context:
    """What the handlers need, handed over through kopf's memo."""

    store: JobStore
    api: k8s.ApiClient


def _ctx(memo: Any) -> Context:
    context: Context = memo.context
    return context


@kopf.on.startup(registry=registry)
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = "etcdcron.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="etcdcron.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="etcdcron.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 120
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.batching.error_delays = [1, 2, 5, 10]


@kopf.on.login(registry=registry)
def login(memo: Any, **_: Any) -> kopf.ConnectionInfo:
    """kopf talks to the cluster with the very credentials of the operator's kubernetes client."""
    conf = _ctx(memo).api.configuration
    token = (conf.api_key or {}).get("authorization") or (conf.api_key or {}).get("BearerToken")
    scheme = None
    if token and " " in token:
        scheme, token = token.split(" ", 1)
    return kopf.ConnectionInfo(
        server=conf.host,
        ca_path=conf.ssl_ca_cert,
        insecure=not conf.verify_ssl,
        certificate_path=conf.cert_file,
        private_key_path=conf.key_file,
        scheme=scheme,
        token=token,
        default_namespace=None,
    )


def _plain(body: Any) -> dict[str, Any]:
    return copy.deepcopy(dict(body))


async def _current(store: JobStore, namespace: str, name: str) -> JobStatus | None:
    try:
        return await store.get(namespace, name)
    except JobNotFoundError:
        return None


def _was_mirrored(body: dict[str, Any]) -> bool:
    status = body.get("status") or {}
    return bool(status.get("observedGeneration") == body["metadata"].get("generation"))


def _resume_progress(body: dict[str, Any], now: datetime) -> Cursor | None:
    """The run state to restart from when the etcd job is gone (suspended, or etcd lost it)."""
    status = body.get("status") or {}
    runs, missed = int(status.get("runCount") or 0), int(status.get("missedRuns") or 0)
    was_suspended = any(
        c.get("type") == "Suspended" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    if was_suspended:
        return Cursor("", to_ms(now), runs, missed)  # ticks due while suspended are skipped
    last = status.get("lastScheduleTime")
    if runs or last:
        return Cursor("", to_ms(parse_time(last)) if last else None, runs, missed)
    return None


async def reconcile(body: dict[str, Any], context: Context) -> Observed:
    """Make etcd mirror the resource (idempotent); returns what status should be computed from."""
    meta, spec = body["metadata"], body.get("spec", {})
    namespace, name = meta["namespace"], meta["name"]
    store = context.store
    now = utcnow()
    try:
        job = job_from_resource(body, now)
    except ValidationError as e:
        await store.delete(namespace, name)  # an earlier valid version must stop firing
        return Observed(None, None, invalid=e)
    if spec.get("suspend"):
        await store.delete(namespace, name)
        return Observed(None, None)
    current = await _current(store, namespace, name)
    if current is not None and mirrors(current.stored, body):
        return Observed(current.stored, current.cursor)
    if current is None and spec.get("maxRuns") is not None and _was_mirrored(body):
        return Observed(None, None)  # it ran its course and left etcd: never fire it again
    if current is not None:
        stored = await store.add(job, keep_progress=True)
    else:
        stored = await store.add(job, progress=_resume_progress(body, now))
    fresh = await store.get(namespace, name)
    log.info("job %s/%s: mirrored generation %s as %s", namespace, name, meta.get("generation"), stored.id)
    return Observed(fresh.stored, fresh.cursor)


async def observe(body: dict[str, Any], context: Context) -> Observed:
    meta = body["metadata"]
    try:
        job_from_resource(body, utcnow())
    except ValidationError as e:
        return Observed(None, None, invalid=e)
    current = await _current(context.store, meta["namespace"], meta["name"])
    return Observed(current.stored, current.cursor) if current else Observed(None, None)


def _write_status(body: dict[str, Any], observed: Observed, patch: kopf.Patch) -> None:
    desired = desired_status(body, observed, utcnow())
    for key, value in status_patch(body.get("status") or {}, desired).items():
        patch.status[key] = value


@kopf.on.resume(*RESOURCE, id="mirror", registry=registry)
@kopf.on.create(*RESOURCE, id="mirror", registry=registry)
@kopf.on.update(*RESOURCE, id="mirror", registry=registry, field="spec")
async def mirror(body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any) -> None:
    plain = _plain(body)
    if await _expire_if_due(plain, patch, _ctx(memo)):
        return
    try:
        observed = await reconcile(plain, _ctx(memo))
    except EtcdUnavailableError as e:
        _write_status(plain, Observed(None, None, etcd_error=str(e)), patch)
        raise kopf.TemporaryError(f"etcd unavailable: {e}", delay=2) from e
    if observed.invalid is not None:
        kopf.warn(
            body, reason="InvalidSchedule", message=f"{observed.invalid.field}: {observed.invalid.reason}"
        )
    _write_status(plain, observed, patch)


@kopf.on.delete(*RESOURCE, id="unmirror", registry=registry)
async def unmirror(meta: kopf.Meta, memo: Any, **_: Any) -> None:
    await _ctx(memo).store.delete(meta["namespace"], meta["name"])


@kopf.timer(*RESOURCE, id="status", interval=STATUS_INTERVAL, registry=registry)
async def refresh_status(body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any) -> None:
    """Keep status true (runs, last and next tick, conditions): at most one write per interval."""
    plain = _plain(body)
    if plain["metadata"].get("deletionTimestamp") or await _expire_if_due(plain, patch, _ctx(memo)):
        return
    try:
        observed = await observe(plain, _ctx(memo))
    except EtcdUnavailableError as e:
        observed = Observed(None, None, etcd_error=str(e))
    _write_status(plain, observed, patch)


async def _expire_if_due(body: dict[str, Any], patch: kopf.Patch, context: Context) -> bool:
    """Delete a resource whose ttlSeconds passed (its finalizer then removes the etcd job)."""
    expiry = expires_at(body)
    if expiry is None or utcnow() < expiry:
        return False
    meta = body["metadata"]
    _write_status(body, Observed(None, None), patch)
    api = k8s.CustomObjectsApi(context.api)
    try:
        await asyncio.to_thread(
            api.delete_namespaced_custom_object, GROUP, VERSION, meta["namespace"], PLURAL, meta["name"]
        )
        log.info("job %s/%s: ttlSeconds passed, resource deleted", meta["namespace"], meta["name"])
    except ApiException as e:
        if e.status != 404:
            raise
    return True


@kopf.on.delete("", "v1", "namespaces", id="tenant-cleanup", optional=True, registry=registry)
async def tenant_cleanup(name: str, memo: Any, **_: Any) -> None:
    """A deleted namespace takes its tenant's jobs with it (even ones whose resources were force-removed)."""
    deleted = await _ctx(memo).store.delete_tenant(name)
    if deleted:
        log.info("namespace %s deleted: removed %d job(s) from etcd", name, deleted)
