"""kopf handlers: they only translate between DistributedCronJob resources and etcd (see ``reconcile.py``).

Run by the one elected replica (see ``run.py``). Handler ids are stable; the finalizer and kopf's own
storage live under ``etcdcron.io`` (see ``settings.py``). A daemon per resource keeps etcd and status true:
it re-mirrors if etcd drifted, writes status when its meaning changes and coalesces counters, and deletes
the resource when its ``ttlSeconds`` pass.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from datetime import timedelta
from typing import Any

import kopf
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from etcdcron.controller import requests
from etcdcron.controller import settings as kopf_settings
from etcdcron.controller.credentials import connection_info
from etcdcron.controller.mirror import ConflictError, NotLeaderError
from etcdcron.controller.reconcile import Context, reconcile
from etcdcron.controller.resource import expires_at, parse_time, utcnow
from etcdcron.controller.status import Observed, desired_status, status_patch, urgent
from etcdcron.decode import BadEntryError
from etcdcron.dispatch.k8s_objects import record_warning
from etcdcron.errors import EtcdCronError, EtcdUnavailableError
from etcdcron.firing import to_ms
from etcdcron.k8s_resource import GROUP, PLURAL, VERSION, api_error

log = logging.getLogger(__name__)
registry = kopf.OperatorRegistry()
RESOURCE = (GROUP, VERSION, PLURAL)
STATUS_INTERVAL = timedelta(seconds=5)
RECHECK_AFTER_TICK_MS = 600  # after a tick, look again once its commit has landed (the final run, counts)


def _ctx(memo: Any) -> Context:
    context: Context = memo.context
    return context


@kopf.on.startup(registry=registry)
def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    kopf_settings.configure(settings)


@kopf.on.login(registry=registry)
def login(memo: Any, **_: Any) -> kopf.ConnectionInfo:
    """kopf talks to the cluster with the operator's own credentials, the current token each time."""
    return connection_info(_ctx(memo).api)


def _plain(body: Any) -> dict[str, Any]:
    return copy.deepcopy(dict(body))


WARN_ON = frozenset({"InvalidSpec", "JobRejected", "NeverFires", "BadEtcdEntry"})


def _ready(status: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})


async def _warn_on_change(body: Any, before: dict[str, Any], after: dict[str, Any], context: Context) -> None:
    """A Warning Event when the resource turns invalid, rejected or never firing: one per distinct cause
    (named from it), however many looks or replicas notice it."""
    old, new = _ready(before), _ready(after)
    reason, message = new.get("reason", ""), new.get("message", "")
    if reason not in WARN_ON or (old.get("reason"), old.get("message")) == (reason, message):
        return
    meta = body["metadata"]
    core = k8s.CoreV1Api(context.api)
    args = (meta["name"], meta["namespace"], meta["uid"], "reconciler", reason, message, message)
    try:
        await asyncio.to_thread(record_warning, core, *args)
    except ApiException as e:
        log.warning("%s/%s: could not record a Warning: %s", meta["namespace"], meta["name"], api_error(e))


async def _observe(body: dict[str, Any], context: Context) -> Observed | None:
    """What to write status from; None when this replica must not write (no longer the leader: kopf is
    about to stop here) or etcd kept moving under the write (try again shortly). An entry in etcd that
    cannot be decoded is shown (Ready False, ``BadEtcdEntry``, naming its key), logged once, never written
    over: whoever fixes or deletes it makes the next look mirror the resource again."""
    try:
        return await reconcile(body, context)
    except EtcdUnavailableError as e:
        return Observed(None, None, etcd_error=str(e))
    except BadEntryError as e:
        if context.report_once(str(e)):
            meta = body["metadata"]
            log.error("%s/%s: not mirrored: %s", meta["namespace"], meta["name"], e)
        return Observed(None, None, bad_entry=str(e))
    except (NotLeaderError, ConflictError) as e:
        log.info("%s/%s: not written now: %s", body["metadata"]["namespace"], body["metadata"]["name"], e)
        return None


@kopf.on.resume(*RESOURCE, id="mirror", registry=registry)
@kopf.on.create(*RESOURCE, id="mirror", registry=registry)
@kopf.on.update(*RESOURCE, id="mirror", registry=registry, field="spec")
async def mirror(body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any) -> None:
    """A spec change is mirrored at once, and its status written at once (a change of meaning)."""
    plain = _plain(body)
    expiry = expires_at(plain)
    if expiry is not None and utcnow() >= expiry:
        return  # the daemon deletes it
    observed = await _observe(plain, _ctx(memo))
    if observed is None:
        raise kopf.TemporaryError("not mirrored now", delay=2)
    before = plain.get("status") or {}
    status, _wake = desired_status(plain, observed, utcnow(), STATUS_INTERVAL)
    for key, value in status_patch(before, status).items():
        patch.status[key] = value
    await _warn_on_change(plain, before, status, _ctx(memo))
    if observed.etcd_error is not None:
        raise kopf.TemporaryError(f"etcd unavailable: {observed.etcd_error}", delay=2)


@kopf.on.event(*RESOURCE, id="requests", registry=registry)
async def run_requests(event: Any, body: kopf.Body, memo: Any, **_: Any) -> None:
    """``kubectl annotate dcj X etcdcron.io/trigger=<token>`` (fire once now for that token) and
    ``etcdcron.io/backfill=<from>/<to>`` (fire every tick in between once): see requests.py."""
    if event.get("type") == "DELETED":
        requests.forget(_plain(body), _ctx(memo))
        return
    await requests.serve(_plain(body), _ctx(memo))


@kopf.on.delete(*RESOURCE, id="unmirror", registry=registry)
async def unmirror(meta: kopf.Meta, memo: Any, **_: Any) -> None:
    await _ctx(memo).mirror.remove(meta["namespace"], meta["name"])


@kopf.daemon(*RESOURCE, id="status", registry=registry, cancellation_timeout=2.0)
async def keep_true(body: kopf.Body, stopped: kopf.DaemonStopped, memo: Any, **_: Any) -> None:
    """Keep etcd and status true for as long as the resource lives; delete it when its TTL passes."""
    context = _ctx(memo)
    last_write, recheck_ms = 0.0, 0
    loop = asyncio.get_running_loop()
    while not stopped:
        plain = _plain(body)  # kopf keeps a daemon's body up to date
        now = utcnow()
        expiry = expires_at(plain)
        if plain["metadata"].get("deletionTimestamp"):
            return
        if expiry is not None and now >= expiry:
            await _expire(plain, context)
            return
        observed = await _observe(plain, context)
        if observed is None:
            await stopped.wait(1)
            continue
        before = plain.get("status") or {}
        status, wake_ms = desired_status(plain, observed, now, STATUS_INTERVAL)
        changes = status_patch(before, status)
        due = loop.time() - last_write >= STATUS_INTERVAL.total_seconds()
        if changes and (due or urgent(before, changes, now)):
            await _patch_status(plain, changes, context)
            last_write = loop.time()
            await _warn_on_change(plain, before, status, context)
            shown = before.get("nextScheduleTime")
            if shown and "nextScheduleTime" in changes:  # look again once the tick we showed has fired
                recheck_ms = to_ms(parse_time(shown)) + RECHECK_AFTER_TICK_MS
        now_ms = to_ms(utcnow())
        wake_ms = min(wake_ms, recheck_ms) if recheck_ms > now_ms else wake_ms
        delay = max((wake_ms - now_ms) / 1000, 0.2)
        if changes and not due:
            delay = min(delay, STATUS_INTERVAL.total_seconds() - (loop.time() - last_write) + 0.05)
        await stopped.wait(delay)


async def _patch_status(body: dict[str, Any], changes: dict[str, Any], context: Context) -> None:
    meta = body["metadata"]
    api = k8s.CustomObjectsApi(context.api)
    try:
        await asyncio.to_thread(
            api.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            meta["namespace"],
            PLURAL,
            meta["name"],
            {"status": changes},
        )
    except ApiException as e:
        if e.status != 404:
            log.warning("%s/%s: status not written: %s", meta["namespace"], meta["name"], api_error(e))


async def _expire(body: dict[str, Any], context: Context) -> None:
    """Delete a resource whose ttlSeconds passed (its finalizer then removes the etcd job)."""
    meta = body["metadata"]
    status, _wake = desired_status(body, Observed(None, None), utcnow(), STATUS_INTERVAL)
    await _patch_status(body, status_patch(body.get("status") or {}, status), context)
    api = k8s.CustomObjectsApi(context.api)
    try:
        await asyncio.to_thread(
            api.delete_namespaced_custom_object, GROUP, VERSION, meta["namespace"], PLURAL, meta["name"]
        )
        log.info("%s/%s: ttlSeconds passed, resource deleted", meta["namespace"], meta["name"])
    except ApiException as e:
        if e.status != 404:
            log.warning("%s/%s: TTL deletion failed: %s", meta["namespace"], meta["name"], api_error(e))


@kopf.on.startup(registry=registry)
async def sweep_tenants(memo: Any, **_: Any) -> None:
    """Namespaces deleted while no reconciler ran: their tenants' jobs go now (on every new leader)."""
    context = _ctx(memo)
    try:
        tenants = await context.mirror.tenants()
        if not tenants:
            return
        listed = await asyncio.to_thread(k8s.CoreV1Api(context.api).list_namespace)
        for gone in sorted(tenants - {ns.metadata.name for ns in listed.items}):
            deleted = await context.mirror.remove_tenant(gone)
            log.info("namespace %s is gone: removed %d job(s) from etcd", gone, deleted)
    except (ApiException, EtcdCronError) as e:  # never keep the reconciler from starting
        log.warning("tenant sweep skipped: %s", api_error(e) if isinstance(e, ApiException) else e)


@kopf.on.event("", "v1", "namespaces", id="tenant-cleanup", registry=registry)
async def tenant_cleanup(event: Any, name: str, memo: Any, **_: Any) -> None:
    """A deleted namespace takes its tenant's jobs with it (even ones whose resources were force-removed).
    An event handler, not a delete handler: kopf then never patches namespaces (no RBAC to do so)."""
    if event.get("type") != "DELETED":
        return
    deleted = await _ctx(memo).mirror.remove_tenant(name)
    if deleted:
        log.info("namespace %s deleted: removed %d job(s) from etcd", name, deleted)
