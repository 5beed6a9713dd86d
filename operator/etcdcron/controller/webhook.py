"""Admission: a DistributedCronJob the library would refuse is refused at ``kubectl apply``.

Every replica serves the validating webhook (``--webhook-port``), leader or not: the check is stateless,
the library's own (``job_from_resource``: schedule, time zone, start time, payload size ...), and the
message names the field as the conditions do (``spec.schedule: ...``). kopf's ``WebhookServer`` does the
HTTPS; the certificate is shared by the replicas behind a Service (``webhook_cert.py``) and the elected
replica alone keeps the ``ValidatingWebhookConfiguration`` (``webhook_config.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, cast

import kopf
from aiohttp import web

from etcdcron.controller import webhook_cert, webhook_config
from etcdcron.controller.resource import job_from_resource, utcnow
from etcdcron.controller.webhook_cert import Certificate
from etcdcron.errors import ValidationError
from etcdcron.k8s_resource import GROUP, PLURAL

log = logging.getLogger(__name__)
FILE_CHECK_SECONDS = 2.0  # how soon a replica serves a certificate that changed in its Secret


def problem(body: dict[str, Any]) -> ValidationError | None:
    """What the library refuses in this resource, naming the resource's field; None if it is valid."""
    meta = body.get("metadata") or {}
    if not meta.get("name"):  # generateName: the API server names it after admission
        meta = {**meta, "name": "x"}
    plain = {
        **body,
        "metadata": {
            "uid": meta.get("uid") or "admission",
            "namespace": meta.get("namespace") or "default",
            "generation": meta.get("generation") or 1,
            "creationTimestamp": meta.get("creationTimestamp") or utcnow().isoformat(),
            **meta,
        },
    }
    try:
        job_from_resource(plain, utcnow())
    except ValidationError as e:
        return e
    return None


def review(request: dict[str, Any]) -> dict[str, Any]:
    """The AdmissionReview answer to a review of a DistributedCronJob. Only a new or changed spec is
    judged: metadata writes (kopf's finalizer), status and a resource being deleted always pass, so an
    object admitted before the webhook existed can still be finished and deleted."""
    payload = request["request"]
    obj = payload.get("object") or {}
    old = payload.get("oldObject") or {}
    operation = payload.get("operation")
    answer: dict[str, Any] = {"uid": payload["uid"], "allowed": True}
    deleting = bool((obj.get("metadata") or {}).get("deletionTimestamp"))
    unchanged = operation == "UPDATE" and obj.get("spec") == old.get("spec")
    if operation in ("CREATE", "UPDATE") and obj and not deleting and not unchanged:
        error = problem(obj)
        if error is not None:
            message = f"{error.field}: {error.reason}"
            status = {"code": 422, "reason": "Invalid", "message": message}
            answer = {**answer, "allowed": False, "status": status}
    version = request.get("apiVersion", "admission.k8s.io/v1")
    return {"apiVersion": version, "kind": "AdmissionReview", "response": answer}


async def _answer(request: Any, **_: Any) -> dict[str, Any]:
    """kopf's server calls this with each review it receives (a ``kopf.WebhookFn``)."""
    payload = request.get("request") if isinstance(request, dict) else None
    if not isinstance(payload, dict) or not payload.get("uid"):
        raise web.HTTPBadRequest(reason="not an AdmissionReview request")
    resource = payload.get("resource") or {}
    if (resource.get("group"), resource.get("resource")) != (GROUP, PLURAL):
        raise web.HTTPBadRequest(reason=f"only {PLURAL}.{GROUP} is validated here, not {resource}")
    return review(request)


def _reachable(address: str) -> str:
    """An address the API server can call for one we listen on: 0.0.0.0 (all) is reached at 127.0.0.1."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    return ("127.0.0.1" if ip.version == 4 else "::1") if ip.is_unspecified else address


class Webhook:
    """This replica's admission webhook: the certificate, the HTTPS server, and (on the leader) the
    configuration. ``serving`` is set once it answers (part of ``/readyz``)."""

    def __init__(self, api: Any, port: int, host: str | None, address: str) -> None:
        self.api, self.port, self.address = api, port, address
        self.host = host or _reachable(address)
        self.target = webhook_config.target_of(self.host, port)
        self.serving = asyncio.Event()
        self._folder = Path(tempfile.mkdtemp(prefix="etcdcron-webhook-"))  # 0700: the key stays private
        self._pem = self._folder / "webhook.pem"  # key and certificate in one file: replaced at once
        self._certificate: Certificate | None = None

    @property
    def certificate(self) -> Certificate:
        assert self._certificate is not None, "start() first"
        return self._certificate

    async def start(self) -> None:
        """Get the certificate (one line naming the Secret if it cannot be had)."""
        try:
            self._install(await self._obtain())
        except BaseException:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise

    async def _obtain(self) -> Certificate:
        t = self.target
        if t.service is not None and t.namespace is not None:
            return await webhook_cert.shared(self.api, t.service, t.namespace)
        return webhook_cert.generate([self.host, self.address, "localhost"], dt.datetime.now(dt.UTC))

    def _install(self, certificate: Certificate) -> None:
        if certificate == self._certificate:
            return
        staged = self._pem.with_suffix(".new")
        with open(os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(certificate.key_pem + certificate.cert_pem)
        staged.replace(self._pem)
        self._certificate = certificate

    def keeper(self) -> webhook_config.Keeper:
        """What the elected replica runs: the configuration, pointing at this operator's certificate."""
        return webhook_config.Keeper(self.api, self.target, lambda: self.certificate)

    async def serve(self, stop: asyncio.Event) -> None:
        """Serve until ``stop``; behind a Service, follow the shared certificate if it is replaced."""
        server = kopf.WebhookServer(
            addr=self.address,
            port=self.port,
            certfile=str(self._pem),
            pkeyfile=str(self._pem),
            cadata=self.certificate.cert_pem,
            file_check_interval=FILE_CHECK_SECONDS,
        )

        answer = cast(kopf.WebhookFn, _answer)

        async def listen() -> None:
            async for _config in server(answer):  # again after each change of the certificate file
                self.serving.set()

        tasks = [asyncio.create_task(listen())]
        if self.target.service is not None:
            tasks.append(asyncio.create_task(self._follow(stop)))
        waiter = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
            for task in done - {waiter}:
                task.result()  # a server that could not run is loud
        finally:
            self.serving.clear()
            for task in [*tasks, waiter]:
                task.cancel()
            await asyncio.gather(*tasks, waiter, return_exceptions=True)
            shutil.rmtree(self._folder, ignore_errors=True)

    async def _follow(self, stop: asyncio.Event) -> None:
        """Re-read the Secret now and then: a replaced (rotated, cleared) certificate is served by all."""
        said = ""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), webhook_config.RESYNC_SECONDS)
            if stop.is_set():
                return
            try:
                self._install(await self._obtain())
                said = ""
            except Exception as e:  # the API away for a while: keep serving, say it once
                if str(e) != said:
                    log.warning("%s (serving the certificate it had)", e)
                said = str(e)
