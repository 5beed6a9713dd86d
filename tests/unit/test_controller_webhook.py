"""Admission runs the library's own validation and names the resource's field."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from cryptography import x509

from etcdcron.controller.webhook import SelfSignedServer, problem


def resource(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "r", "namespace": "team-a"}, "spec": {"schedule": "@daily", **spec}}


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"schedule": "61 * * * *"}, "spec.schedule", "61"),
        ({"schedule": "@every 0s"}, "spec.schedule", ""),
        ({"timeZone": "Mars/Olympus"}, "spec.timeZone", "Mars/Olympus"),
        ({"startTime": "tomorrow"}, "spec.startTime", "RFC 3339"),
        ({"payload": "x" * 200_000}, "spec.payload", "196608"),
    ],
)
def test_what_the_library_refuses_is_refused_naming_the_field(
    spec: dict[str, Any], field: str, words: str
) -> None:
    error = problem(resource(**spec))
    assert error is not None and error.field == field and words in error.reason


def test_a_valid_resource_passes_even_before_it_has_a_uid_or_name() -> None:
    body = resource(schedule="*/10 * * * * *", timeZone="Europe/Paris")
    body["metadata"] = {"generateName": "r-", "namespace": "team-a"}
    assert problem(body) is None


def test_the_self_signed_certificate_names_the_host() -> None:
    cert_pem, key_pem = SelfSignedServer.build_certificate(["127.0.0.1", "0.0.0.0", "op.example"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["op.example"]
    assert b"PRIVATE KEY" in key_pem
