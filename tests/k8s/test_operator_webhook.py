"""Admission: `etcdcron operator --webhook-port N --webhook-host H` registers its own validating webhook,
and `kubectl apply` refuses what the library refuses, naming the field (issue 9, item 8)."""

from __future__ import annotations

import uuid

import pytest
import yaml
from helpers import OperatorProcess, kubectl, wait_for

from etcdcron.localetcd import free_port

pytestmark = pytest.mark.k8s


def manifest(name: str, namespace: str, **spec: object) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "etcdcron.io/v1alpha1",
            "kind": "DistributedCronJob",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"schedule": "@daily", **spec},
        }
    )


def apply(cluster, tmp_path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / f"dcj-{abs(hash(text))}.yaml"
    path.write_text(text)
    return kubectl(cluster.kubeconfig, "apply", "-f", str(path))


@pytest.fixture(scope="module")
def webhook_operator(cluster, operator_credentials, operator_etcd, tmp_path_factory):  # type: ignore[no-untyped-def]
    port = free_port()
    extra = ("--webhook-port", str(port), "--webhook-host", "127.0.0.1")
    folder = tmp_path_factory.mktemp("webhook")
    op = OperatorProcess(
        "webhook", operator_etcd.endpoint, "/webhook", str(operator_credentials[0]), folder, extra=extra
    )
    yield op
    assert op.stop() == 0, op.tail()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"schedule": "61 * * * *"}, "spec.schedule: "),
        ({"schedule": "@every 0s"}, "spec.schedule: "),
        ({"timeZone": "Mars/Olympus"}, "spec.timeZone: "),
    ],
)
def test_kubectl_apply_refuses_an_invalid_schedule_naming_the_field(
    webhook_operator, cluster, k8s_namespace, tmp_path, spec, message
):
    # Wait until the webhook answers: a valid resource is admitted, through the webhook.
    wait_for(
        "the webhook registered",
        lambda: (
            kubectl(cluster.kubeconfig, "get", "validatingwebhookconfiguration", "etcdcron.io").returncode
            == 0
        ),
        timeout=60,
    )
    result = wait_for(
        "a refusal",
        # a new name each time: one admitted before the webhook answered would make later applies no-ops
        lambda: (
            (
                r := apply(cluster, tmp_path, manifest(f"bad-{uuid.uuid4().hex[:6]}", k8s_namespace, **spec))
            ).returncode
            != 0
            and r
        ),
        timeout=60,
        interval=1,
    )
    assert message in result.stderr and "admission webhook" in result.stderr, result.stderr
    assert apply(cluster, tmp_path, manifest("good", k8s_namespace)).returncode == 0


def test_a_long_name_is_refused_with_field_path_metadata_name(cluster, k8s_namespace, tmp_path):
    result = apply(cluster, tmp_path, manifest("x" * 53, k8s_namespace))
    assert result.returncode != 0 and "metadata.name" in result.stderr, result.stderr
    assert "<nil>" not in result.stderr
