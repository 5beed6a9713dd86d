"""One look at a resource: what etcd holds for it (``observe``), and the Warning a change of its Ready
condition deserves (``warn_on_change``). Shared by the kopf handlers and the status writer."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from etcdcron.controller.mirror import ConflictError, NotLeaderError
from etcdcron.controller.reconcile import Context, reconcile
from etcdcron.controller.status import Observed
from etcdcron.decode import BadEntryError
from etcdcron.dispatch.k8s_objects import record_warning
from etcdcron.errors import EtcdUnavailableError
from etcdcron.k8s_resource import api_error

log = logging.getLogger(__name__)

WARN_ON = frozenset({"InvalidSpec", "JobRejected", "NeverFires", "BadEtcdEntry"})


async def observe(body: dict[str, Any], context: Context) -> Observed | None:
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


def _ready(status: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})


async def warn_on_change(body: Any, before: dict[str, Any], after: dict[str, Any], context: Context) -> None:
    """A Warning Event when the resource turns invalid, rejected, never firing or unreadable in etcd: one
    per distinct cause (named from it), however many looks or replicas notice it."""
    old, new = _ready(before), _ready(after)
    reason, message = new.get("reason", ""), new.get("message", "")
    if reason not in WARN_ON or (old.get("reason"), old.get("message")) == (reason, message):
        return
    await warn(body, context, reason, message)


async def warn(body: Any, context: Context, reason: str, message: str) -> None:
    """One Warning Event on the resource from the reconciler (Kubernetes counts repeats of it)."""
    meta = body["metadata"]
    core = k8s.CoreV1Api(context.api)
    args = (meta["name"], meta["namespace"], meta["uid"], "reconciler", reason, message, message)
    try:
        await asyncio.to_thread(record_warning, core, *args)
    except ApiException as e:
        log.warning("%s/%s: could not record a Warning: %s", meta["namespace"], meta["name"], api_error(e))
