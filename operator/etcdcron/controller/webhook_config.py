"""ValidatingWebhookConfiguration ``etcdcron.io``: kept by the elected replica only, so replicas never fight.

Two cases, by ``--webhook-host``:

- ``<service>.<namespace>.svc`` (a cluster, ``deploy/``): the configuration is a manifest of ``deploy/`` and
  its policy (``failurePolicy: Fail``, selectors, timeout) is the user's to change; the leader only keeps
  ``caBundle`` of the webhooks calling that Service equal to the replicas' shared certificate. It never
  creates the configuration: deleting it turns admission off.
- an address or name (a local ``etcdcron operator``): the leader registers the whole configuration, with a
  URL to itself and its own certificate, ``failurePolicy: Ignore`` (one process, not a Service of
  replicas, answers: a stopped local operator must not block every write of the resource).

Reviews are sent for CREATE and for an UPDATE that changes ``spec`` of a resource not being deleted
(``matchConditions``), never for DELETE: kopf's finalizer and annotation writes and ``kubectl delete`` never
depend on the webhook. Namespaces ``kube-system`` and the operator's own, and any namespace labelled
``etcdcron.io/admission=disabled``, are never sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from etcdcron.controller.webhook_cert import Certificate
from etcdcron.k8s_resource import GROUP, PLURAL, VERSION, api_error

log = logging.getLogger(__name__)
NAME = "etcdcron.io"
WEBHOOK = "validate.etcdcron.io"
PATH = "/validate"
OPT_OUT = "etcdcron.io/admission"
SYSTEM_NAMESPACES = ("kube-system", "etcdcron-system")
NAMESPACE_NAME = "kubernetes.io/metadata.name"  # the label every namespace carries
TIMEOUT_SECONDS = 5  # the check takes milliseconds: a stuck replica fails the request fast
RESYNC_SECONDS = 10.0


@dataclass(frozen=True)
class Target:
    """How the API server reaches the webhook: a URL (one local process) or a Service (the replicas)."""

    url: str | None = None
    service: str | None = None
    namespace: str | None = None


def target_of(host: str, port: int) -> Target:
    """``<service>.<namespace>.svc`` is a Service in front of the replicas; anything else, a URL."""
    parts = host.split(".")
    if len(parts) == 3 and parts[2] == "svc":
        return Target(service=parts[0], namespace=parts[1])
    bracketed = f"[{host}]" if ":" in host else host
    return Target(url=f"https://{bracketed}:{port}{PATH}")


def webhook_entry(client_config: dict[str, Any], failure_policy: str) -> dict[str, Any]:
    """The one webhook: what is sent, when, and what happens when nobody answers."""
    return {
        "name": WEBHOOK,
        "clientConfig": client_config,
        "rules": [
            {
                "apiGroups": [GROUP],
                "apiVersions": [VERSION],
                "resources": [PLURAL],
                "operations": ["CREATE", "UPDATE"],
                "scope": "Namespaced",
            }
        ],
        "failurePolicy": failure_policy,
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": TIMEOUT_SECONDS,
        "namespaceSelector": {
            "matchExpressions": [
                {"key": NAMESPACE_NAME, "operator": "NotIn", "values": list(SYSTEM_NAMESPACES)},
                {"key": OPT_OUT, "operator": "NotIn", "values": ["disabled"]},
            ]
        },
        "matchConditions": [
            {"name": "not-being-deleted", "expression": "!has(object.metadata.deletionTimestamp)"},
            {
                "name": "spec-written",
                "expression": "request.operation == 'CREATE' || object.spec != oldObject.spec",
            },
        ],
    }


def url_configuration(url: str, ca_bundle: str) -> dict[str, Any]:
    """The whole configuration a local operator registers."""
    entry = webhook_entry({"url": url, "caBundle": ca_bundle}, "Ignore")
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": NAME, "labels": {"app.kubernetes.io/name": "etcdcron"}},
        "webhooks": [entry],
    }


def drifted(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    """Whether ``current`` differs from ``desired`` in anything ``desired`` sets (the API server fills in
    defaults, which are no drift)."""
    have = current.get("webhooks") or []
    want = desired["webhooks"]
    if len(have) != len(want):
        return True
    return any(any(h.get(k) != v for k, v in w.items()) for h, w in zip(have, want, strict=True))


def ca_patch(current: dict[str, Any], service: str, namespace: str, ca_bundle: str) -> list[dict[str, Any]]:
    """JSON patch setting ``caBundle`` of each webhook that calls the Service; [] when all are right.
    Guarded by the resourceVersion read, so an edit in between is never overwritten by index."""
    ops: list[dict[str, Any]] = []
    for i, hook in enumerate(current.get("webhooks") or []):
        config = hook.get("clientConfig") or {}
        ref = config.get("service") or {}
        ours = (ref.get("name"), ref.get("namespace")) == (service, namespace)
        if ours and config.get("caBundle") != ca_bundle:
            ops.append({"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": ca_bundle})
    if not ops:
        return []
    version = (current.get("metadata") or {}).get("resourceVersion")
    return [{"op": "test", "path": "/metadata/resourceVersion", "value": version}, *ops]


def calls(current: dict[str, Any], service: str, namespace: str) -> bool:
    return any(
        ((h.get("clientConfig") or {}).get("service") or {}).get("name") == service
        and h["clientConfig"]["service"].get("namespace") == namespace
        for h in current.get("webhooks") or []
    )


class Keeper:
    """The leader's loop: make the configuration call this operator with its certificate, then look again
    every ``RESYNC_SECONDS`` (a re-applied manifest, a rotated certificate). Writes only on a difference."""

    def __init__(self, api: k8s.ApiClient, target: Target, certificate: Callable[[], Certificate]) -> None:
        self.api, self.target, self.certificate = api, target, certificate
        self.kept = asyncio.Event()  # one pass succeeded (readiness of the leader)
        self._said: str | None = None

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self._say(await self.once())
                self.kept.set()
            except ApiException as e:
                self._say(f"ValidatingWebhookConfiguration {NAME} not kept: {api_error(e)}", logging.WARNING)
            except Exception as e:  # a bad answer must not end the leader's loop; say it once
                self._say(f"ValidatingWebhookConfiguration {NAME} not kept: {e!r}", logging.WARNING)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RESYNC_SECONDS)

    def _say(self, line: str | None, level: int = logging.INFO) -> None:
        """Each distinct outcome once, not once per pass."""
        if line is not None and line != self._said:
            log.log(level, "%s", line)
        self._said = line

    async def once(self) -> str | None:
        """One pass; a line to log when it did something or found something to say."""
        admission = k8s.AdmissionregistrationV1Api(self.api)
        ca = self.certificate().ca_bundle
        try:
            model = await asyncio.to_thread(admission.read_validating_webhook_configuration, NAME)
            current: dict[str, Any] | None = self.api.sanitize_for_serialization(model)
        except ApiException as e:
            if e.status != 404:
                raise
            current = None
        t = self.target
        if t.url is not None:
            desired = url_configuration(t.url, ca)
            if current is None:
                await asyncio.to_thread(admission.create_validating_webhook_configuration, desired)
                return f"ValidatingWebhookConfiguration {NAME} registered: {t.url}"
            if drifted(current, desired):
                await asyncio.to_thread(
                    admission.patch_validating_webhook_configuration,
                    NAME,
                    {"webhooks": desired["webhooks"]},
                    _content_type="application/merge-patch+json",
                )
                return f"ValidatingWebhookConfiguration {NAME} now calls {t.url}"
            return None
        assert t.service is not None and t.namespace is not None
        if current is None:
            return f"ValidatingWebhookConfiguration {NAME} is absent: admission is off (deploy/ ships it)"
        if not calls(current, t.service, t.namespace):
            return f"ValidatingWebhookConfiguration {NAME} calls no {t.namespace}/{t.service}: left alone"
        ops = ca_patch(current, t.service, t.namespace, ca)
        if ops:
            await asyncio.to_thread(admission.patch_validating_webhook_configuration, NAME, ops)
            return f"ValidatingWebhookConfiguration {NAME}: caBundle set to the replicas' certificate"
        return None
