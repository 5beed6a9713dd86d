"""Admission runs the library's own validation and names the resource's field; the certificate and the
configuration are decided by pure functions."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from etcdcron.controller import webhook_config as config
from etcdcron.controller.webhook import problem, review
from etcdcron.controller.webhook_cert import RENEW_BEFORE, VALIDITY, Certificate, generate, unusable

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 28, 3, 30, tzinfo=dt.UTC)
SVC = "etcdcron-operator-webhook.etcdcron-system.svc"


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


def request(operation: str, new: dict[str, Any] | None, old: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "u-1", "operation": operation, "object": new, "oldObject": old},
    }


BAD, GOOD = resource(schedule="61 * * * *"), resource()
DELETING = {**BAD, "metadata": {**BAD["metadata"], "deletionTimestamp": "2026-11-28T03:30:00Z"}}
RELABELLED = {**BAD, "metadata": {**BAD["metadata"], "labels": {"a": "b"}, "finalizers": ["x"]}}


@pytest.mark.parametrize(
    ("operation", "new", "old", "allowed"),
    [
        ("CREATE", GOOD, None, True),
        ("CREATE", BAD, None, False),
        ("UPDATE", BAD, GOOD, False),  # a spec turned bad
        ("UPDATE", GOOD, BAD, True),  # a spec fixed
        ("UPDATE", RELABELLED, BAD, True),  # metadata only (kopf's finalizer): an old bad spec may stay
        ("UPDATE", DELETING, BAD, True),  # being deleted: never held up
        ("DELETE", None, BAD, True),
    ],
)
def test_a_review_judges_only_a_new_or_changed_spec(
    operation: str, new: dict[str, Any] | None, old: dict[str, Any] | None, allowed: bool
) -> None:
    answer = review(request(operation, new, old))
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == "u-1" and answer["response"]["allowed"] is allowed
    if not allowed:
        status = answer["response"]["status"]
        assert status["code"] == 422 and status["message"].startswith("spec.schedule: "), status
        assert "61" in status["message"], status


def test_the_self_signed_certificate_names_every_host_and_lasts() -> None:
    cert = generate(["127.0.0.1", "0.0.0.0", "op.example", SVC], NOW)
    parsed = x509.load_pem_x509_certificate(cert.cert_pem)
    sans = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["op.example", SVC]
    assert parsed.not_valid_after_utc == NOW + VALIDITY
    assert b"PRIVATE KEY" in cert.key_pem


OTHER = generate([SVC], NOW)
CERT = generate([SVC], NOW)


@pytest.mark.parametrize(
    ("certificate", "now", "why"),
    [
        (CERT, NOW, None),
        (None, NOW, "empty"),
        (Certificate(b"", b""), NOW, "empty"),
        (Certificate(b"junk", b"junk"), NOW, "not a PEM"),
        (Certificate(CERT.cert_pem, OTHER.key_pem), NOW, "the key does not belong"),
        (generate(["other.svc"], NOW), NOW, f"does not name {SVC}"),
        (CERT, NOW - dt.timedelta(hours=1), "not valid before"),
        (CERT, NOW + VALIDITY - RENEW_BEFORE + dt.timedelta(seconds=1), "ends "),
    ],
)
def test_a_certificate_is_replaced_when_unusable(
    certificate: Certificate | None, now: dt.datetime, why: str | None
) -> None:
    found = unusable(certificate, SVC, now)
    assert (found is None) if why is None else (found is not None and found.startswith(why)), found


@pytest.mark.parametrize(
    ("host", "port", "target"),
    [
        (SVC, 9443, config.Target(service="etcdcron-operator-webhook", namespace="etcdcron-system")),
        ("127.0.0.1", 9443, config.Target(url="https://127.0.0.1:9443/validate")),
        ("op.example", 8443, config.Target(url="https://op.example:8443/validate")),
        ("::1", 9443, config.Target(url="https://[::1]:9443/validate")),
    ],
)
def test_the_host_says_service_or_url(host: str, port: int, target: config.Target) -> None:
    assert config.target_of(host, port) == target


def shipped() -> dict[str, Any]:
    docs = yaml.safe_load_all((ROOT / "deploy" / "operator" / "webhook.yaml").read_text())
    return next(d for d in docs if d["kind"] == "ValidatingWebhookConfiguration")


def test_the_shipped_configuration_is_the_local_one_but_for_the_service_and_failing_closed() -> None:
    manifest = shipped()
    assert manifest["metadata"]["name"] == config.NAME
    (hook,) = manifest["webhooks"]
    service = {"name": "etcdcron-operator-webhook", "namespace": "etcdcron-system", "port": 443}
    assert hook["clientConfig"] == {"service": {**service, "path": config.PATH}}
    assert hook["failurePolicy"] == "Fail"
    local = config.url_configuration("https://127.0.0.1:9443/validate", "Q0E=")["webhooks"][0]
    assert local["failurePolicy"] == "Ignore"
    same = {k: v for k, v in local.items() if k not in ("clientConfig", "failurePolicy")}
    assert {k: v for k, v in hook.items() if k not in ("clientConfig", "failurePolicy")} == same


def test_a_caBundle_is_patched_only_where_it_differs_and_guarded_by_the_version() -> None:
    current = {**shipped(), "metadata": {"name": config.NAME, "resourceVersion": "42"}}
    ops = config.ca_patch(current, "etcdcron-operator-webhook", "etcdcron-system", "Q0E=")
    assert ops == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "42"},
        {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "Q0E="},
    ]
    current["webhooks"][0]["clientConfig"]["caBundle"] = "Q0E="
    assert config.ca_patch(current, "etcdcron-operator-webhook", "etcdcron-system", "Q0E=") == []
    assert config.ca_patch(current, "other", "etcdcron-system", "Q0I=") == []  # not our Service
    assert config.calls(current, "etcdcron-operator-webhook", "etcdcron-system")
    assert not config.calls(current, "other", "etcdcron-system")


def test_a_local_configuration_drifts_only_in_what_it_sets() -> None:
    desired = config.url_configuration("https://127.0.0.1:9443/validate", "Q0E=")
    served = {"webhooks": [{**desired["webhooks"][0], "matchPolicy": "Equivalent", "objectSelector": {}}]}
    assert not config.drifted(served, desired)  # the API server's defaults are no drift
    moved = config.url_configuration("https://127.0.0.1:9555/validate", "Q0E=")
    assert config.drifted(served, moved)
    assert config.drifted(served, config.url_configuration("https://127.0.0.1:9443/validate", "Q0I="))
    assert config.drifted({"webhooks": []}, desired)
