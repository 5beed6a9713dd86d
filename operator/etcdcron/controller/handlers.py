"""kopf handlers: they only translate between DistributedCronJob resources and etcd (see ``reconcile.py``).

Run by the one elected replica (see ``run.py``). Handler ids are stable; the finalizer and kopf's own
storage live under ``etcdcron.io`` (see ``settings.py``). A spec change is mirrored and its status written
at once; everything else about status (counters, NEXT, completion, TTL deletion, etcd drift) is the one
status writer's (``keeper.py``), fed by kopf's watch through ``track``: no task or timer per resource.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import kopf
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from etcdcron.controller import requests
from etcdcron.controller import settings as kopf_settings
from etcdcron.controller.credentials import connection_info
from etcdcron.controller.keeper import StatusKeeper
from etcdcron.controller.looks import observe, warn_on_change
from etcdcron.controller.reconcile import Context
from etcdcron.controller.resource import expires_at, utcnow
from etcdcron.controller.status import COUNTERS, desired_status, status_patch
from etcdcron.errors import EtcdCronError
from etcdcron.k8s_resource import GROUP, PLURAL, VERSION, api_error

log = logging.getLogger(__name__)
registry = kopf.OperatorRegistry()
RESOURCE = (GROUP, VERSION, PLURAL)


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


def _keeper(memo: Any) -> StatusKeeper:
    keeper: StatusKeeper = memo.keeper
    return keeper


@kopf.on.event(*RESOURCE, id="track", registry=registry)
async def track(event: Any, memo: Any, **_: Any) -> None:
    """Every version of every resource goes to the status writer (a deletion takes it off its books): the
    watch event's own object, decoded afresh for each event and never changed, so not copied. Async on
    purpose: kopf runs a plain function in a thread, and the writer is not thread-safe."""
    _keeper(memo).track(event["object"], deleted=event.get("type") == "DELETED")


@kopf.on.resume(*RESOURCE, id="mirror", registry=registry)
@kopf.on.create(*RESOURCE, id="mirror", registry=registry)
@kopf.on.update(*RESOURCE, id="mirror", registry=registry, field="spec")
async def mirror(body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any) -> None:
    """A spec change is mirrored at once, and its status written at once (a change of meaning); a
    resource merely resumed (a new leader) has its counters and NEXT left to the status writer, paced
    (kopf's own patches are not: a new leader would send one per resource at once)."""
    plain = _plain(body)
    expiry = expires_at(plain)
    if expiry is not None and utcnow() >= expiry:
        return  # the status writer deletes it
    keeper = _keeper(memo)
    observed = await observe(plain, _ctx(memo))
    if observed is None:
        raise kopf.TemporaryError("not mirrored now", delay=2)
    before = plain.get("status") or {}
    now = utcnow()
    status, _wake = desired_status(plain, observed, now, keeper.interval())
    changes = status_patch(before, status)
    if set(changes) - COUNTERS:  # a condition, the generation: now; counters and NEXT: the status writer
        for key, value in changes.items():
            patch.status[key] = value
    else:
        keeper.look_now((plain["metadata"]["namespace"], plain["metadata"]["name"]))
    await warn_on_change(plain, before, status, _ctx(memo))
    if observed.etcd_error is not None:
        raise kopf.TemporaryError(f"etcd unavailable: {observed.etcd_error}", delay=2)


@kopf.on.event(*RESOURCE, id="requests", registry=registry)
async def run_requests(event: Any, body: kopf.Body, memo: Any, **_: Any) -> None:
    """``kubectl annotate dcj X etcdcron.io/trigger=<token>`` (fire once now for that token) and
    ``etcdcron.io/backfill=<from>/<to>`` (fire every tick in between once): see requests.py."""
    if event.get("type") == "DELETED":
        requests.forget(_plain(body), _ctx(memo))
        return
    if await requests.serve(_plain(body), _ctx(memo)):
        _keeper(memo).follow((body["metadata"]["namespace"], body["metadata"]["name"]))


@kopf.on.delete(*RESOURCE, id="unmirror", registry=registry)
async def unmirror(meta: kopf.Meta, memo: Any, **_: Any) -> None:
    await _ctx(memo).mirror.remove(meta["namespace"], meta["name"])


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
