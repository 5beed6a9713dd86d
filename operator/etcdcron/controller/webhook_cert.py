"""The admission webhook's certificate: self-signed, and in a cluster one for all replicas.

The API server trusts one CA bundle per webhook, and a Service sends each review to any ready replica, so
every replica behind ``<service>.<namespace>.svc`` must serve the same certificate. It lives in Secret
``<service>`` of that namespace (``deploy/operator/webhook.yaml`` ships it empty): the first replica that
finds it empty, unusable or near its end fills it, guarded by the Secret's ``resourceVersion`` (a replica
that loses the race reads the winner's). The operator may only get and update that one Secret.
A local operator (``--webhook-host`` an address) makes a certificate of its own instead.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import logging
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from etcdcron.errors import EtcdCronError
from etcdcron.k8s_resource import api_error

log = logging.getLogger(__name__)
VALIDITY = dt.timedelta(days=3650)
RENEW_BEFORE = dt.timedelta(days=30)  # a certificate this close to its end is replaced
CERT, KEY = "tls.crt", "tls.key"
ATTEMPTS = 5


class CertificateError(EtcdCronError):
    """The shared certificate cannot be had (no Secret, no permission): names the Secret."""


@dataclass(frozen=True)
class Certificate:
    cert_pem: bytes  # also the CA bundle: the certificate signs itself
    key_pem: bytes

    @property
    def ca_bundle(self) -> str:
        """As ``clientConfig.caBundle`` wants it: base64 of the PEM."""
        return base64.b64encode(self.cert_pem).decode("ascii")


def generate(hosts: list[str], now: dt.datetime) -> Certificate:
    """A self-signed certificate naming every host (DNS names and IP addresses; 0.0.0.0 is skipped)."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(h for h in hosts if h):
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            names.append(x509.DNSName(host))
            continue
        if not address.is_unspecified:
            names.append(x509.IPAddress(address))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "etcdcron-operator-webhook")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Certificate(cert.public_bytes(serialization.Encoding.PEM), pem)


def unusable(certificate: Certificate | None, host: str, now: dt.datetime) -> str | None:
    """Why this certificate cannot serve ``host`` from now on (None: it can)."""
    if certificate is None or not certificate.cert_pem or not certificate.key_pem:
        return "empty"
    try:
        cert = x509.load_pem_x509_certificate(certificate.cert_pem)
        key = serialization.load_pem_private_key(certificate.key_pem, password=None)
    except (ValueError, TypeError) as e:
        return f"not a PEM certificate and key ({e})"
    if cert.public_key() != key.public_key():
        return "the key does not belong to the certificate"
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return f"does not name {host}"
    if host not in names.get_values_for_type(x509.DNSName):
        return f"does not name {host}"
    if now < cert.not_valid_before_utc:
        return f"not valid before {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}"
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return f"ends {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
    return None


def service_hosts(service: str, namespace: str) -> list[str]:
    """The names a Service is called by; the API server checks the certificate for ``<s>.<ns>.svc``."""
    svc = f"{service}.{namespace}.svc"
    return [svc, f"{svc}.cluster.local", f"{service}.{namespace}", service]


def _from_secret(secret: k8s.V1Secret) -> Certificate | None:
    data = secret.data or {}
    if not data.get(CERT) or not data.get(KEY):
        return None
    return Certificate(base64.b64decode(data[CERT]), base64.b64decode(data[KEY]))


async def shared(api: k8s.ApiClient, service: str, namespace: str) -> Certificate:
    """The certificate of every replica behind the Service, from its Secret (filled if need be)."""
    core = k8s.CoreV1Api(api)
    where = f"Secret {namespace}/{service}"
    host = service_hosts(service, namespace)[0]
    for _ in range(ATTEMPTS):
        try:
            secret = await asyncio.to_thread(core.read_namespaced_secret, service, namespace)
        except ApiException as e:
            hint = " (deploy/operator/webhook.yaml creates it)" if e.status == 404 else ""
            raise CertificateError(f"webhook certificate: {where}: {api_error(e)}{hint}") from None
        except Exception as e:  # the API server unreachable: urllib3's errors, not ApiException
            raise CertificateError(f"webhook certificate: {where}: {e}") from None
        now = dt.datetime.now(dt.UTC)
        current = _from_secret(secret)
        why = unusable(current, host, now)
        if why is None and current is not None:
            return current
        fresh = generate(service_hosts(service, namespace), now)
        secret.data = {
            **(secret.data or {}),
            CERT: base64.b64encode(fresh.cert_pem).decode("ascii"),
            KEY: base64.b64encode(fresh.key_pem).decode("ascii"),
        }
        try:  # carries the resourceVersion read: another replica's write in between makes this a 409
            await asyncio.to_thread(core.replace_namespaced_secret, service, namespace, secret)
        except ApiException as e:
            if e.status == 409:
                continue  # another replica filled it first: use theirs
            raise CertificateError(f"webhook certificate: {where}: {api_error(e)}") from None
        except Exception as e:
            raise CertificateError(f"webhook certificate: {where}: {e}") from None
        log.info("webhook certificate: %s was %s; a new one is stored there", where, why)
        return fresh
    raise CertificateError(f"webhook certificate: {where} kept changing while it was being filled")
