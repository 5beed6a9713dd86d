"""Admission: a DistributedCronJob the library would refuse is refused at ``kubectl apply``.

The elected reconciler's kopf serves a validating webhook (``--webhook-port``) and keeps its own
``ValidatingWebhookConfiguration`` (``etcdcron.io``) pointing at itself, with a self-signed certificate
as its CA bundle. The check is the library's own (``job_from_resource``: schedule, time zone, start time,
payload size ...), so the message names the field as the conditions do: ``spec.schedule: ...``.
``failurePolicy: Ignore``: while no replica answers (a leader change, the operator down) resources are
admitted, and the operator's conditions still report what is wrong; creating schedules never depends
on the operator being up.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Any

import kopf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from etcdcron.controller.resource import job_from_resource, utcnow
from etcdcron.errors import ValidationError

CONFIGURATION = "etcdcron.io"


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


class SelfSignedServer(kopf.WebhookServer):
    """kopf's webhook server, with its self-signed certificate made by ``cryptography`` (a dependency
    already) rather than the optional ``certbuilder``."""

    @staticmethod
    def build_certificate(hostnames: Any, password: Any = None) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for host in dict.fromkeys(h for h in hostnames if h):
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                names.append(x509.DNSName(host))
                continue
            if not address.is_unspecified:
                names.append(x509.IPAddress(address))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "etcdcron-operator-webhook")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cert.public_bytes(serialization.Encoding.PEM), pem


class ServiceReference:
    """In a cluster: the API server reaches the webhook through a Service (``<name>.<namespace>.svc``,
    port 443), not a URL it would have to resolve itself."""

    def __init__(self, server: SelfSignedServer, name: str, namespace: str) -> None:
        self.server, self.name, self.namespace = server, name, namespace

    async def __call__(self, fn: Any) -> Any:
        async for config in self.server(fn):
            service = {"name": self.name, "namespace": self.namespace, "port": 443, "path": "/validate"}
            yield {"service": service, **({"caBundle": config["caBundle"]} if "caBundle" in config else {})}


def configure(settings: Any, port: int, host: str | None, address: str) -> None:
    """Serve the webhook on ``address:port``; the API server calls it at ``host`` (default: ``address``);
    a host ``<service>.<namespace>.svc`` is a Service in front of the replicas."""
    server = SelfSignedServer(addr=address, port=port, host=host or address, path="/validate")
    parts = (host or "").split(".")
    if len(parts) == 3 and parts[2] == "svc":
        server.extra_sans = [f"{parts[0]}.{parts[1]}", parts[0]]
        settings.admission.server = ServiceReference(server, parts[0], parts[1])
    else:
        settings.admission.server = server
    settings.admission.managed = CONFIGURATION


def register(registry: kopf.OperatorRegistry, resource: tuple[str, str, str]) -> None:
    @kopf.on.validate(
        *resource,
        id="spec",
        registry=registry,
        operations=["CREATE", "UPDATE"],
        ignore_failures=True,
    )
    def validate(body: kopf.Body, **_: Any) -> None:
        error = problem(dict(body))
        if error is not None:
            raise kopf.AdmissionError(f"{error.field}: {error.reason}", code=422)
