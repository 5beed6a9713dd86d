"""Admission (issue 9, item 8): `kubectl apply` refuses what the library refuses, naming the field.

Two set-ups, on one API server, the operators logging in with the ServiceAccount of deploy/:

- local: `etcdcron operator --webhook-port N --webhook-host 127.0.0.1` registers its own configuration;
- as deploy/ runs it: two replicas behind the webhook Service, one certificate from the shipped Secret,
  the shipped configuration (failurePolicy Fail). There is no pod network here, so the Service is an
  ExternalName one for 127.0.0.1 and both replicas listen on one port (SO_REUSEPORT): like a Service, the
  kernel hands each connection to either. The API server still checks the certificate against
  `etcdcron-operator-webhook.etcdcron-system.svc`, as in a cluster.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import (
    ROOT,
    SERVICE_ACCOUNT,
    SYSTEM_NAMESPACE,
    OperatorProcess,
    fetch,
    kubectl,
    leader_of,
    wait_for,
)

from etcdcron.localetcd import free_port

pytestmark = pytest.mark.k8s
SERVICE = "etcdcron-operator-webhook"
HOST = f"{SERVICE}.{SYSTEM_NAMESPACE}.svc"
DENIED = f'system:serviceaccount:{SYSTEM_NAMESPACE}:{SERVICE_ACCOUNT}" cannot'


def manifest(name: str, namespace: str, **spec: object) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "etcdcron.io/v1alpha1",
            "kind": "DistributedCronJob",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"schedule": "@daily", **spec},
        }
    )


def apply(cluster: Any, tmp_path: Path, text: str) -> Any:
    path = tmp_path / f"doc-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(text)
    return kubectl(cluster.kubeconfig, "apply", "-f", str(path))


def configuration(cluster: Any) -> dict[str, Any] | None:
    got = kubectl(cluster.kubeconfig, "get", "validatingwebhookconfiguration", "etcdcron.io", "-o", "yaml")
    return yaml.safe_load(got.stdout) if got.returncode == 0 else None


def new_name() -> str:
    return f"dcj-{uuid.uuid4().hex[:6]}"


def refused_naming(result: Any, field: str) -> bool:
    return result.returncode != 0 and f"{field}: " in result.stderr and "denied the request" in result.stderr


def stop_all(ops: list[OperatorProcess]) -> None:
    for op in ops:
        op.stop()
    for op in ops:  # whatever the shipped RBAC lacks shows up as a denial in some replica's log
        assert DENIED not in op.text(), op.tail()


@pytest.fixture(scope="class")
def local(
    cluster: Any, operator_credentials: Any, operator_etcd: Any, tmp_path_factory: Any
) -> Iterator[OperatorProcess]:
    # Creating the configuration is the one thing a local operator needs beyond deploy/'s RBAC.
    folder = tmp_path_factory.mktemp("webhook-local")
    grant = folder / "grant.yaml"
    grant.write_text(LOCAL_GRANT)
    assert kubectl(cluster.kubeconfig, "apply", "-f", str(grant)).returncode == 0
    extra = ("--webhook-port", str(free_port()), "--webhook-host", "127.0.0.1")
    op = OperatorProcess(
        "local",
        operator_etcd.endpoint,
        "/webhook-local",
        str(operator_credentials[0]),
        folder,
        extra=extra,
    )
    try:
        yield op
    finally:
        stop_all([op])
        kubectl(cluster.kubeconfig, "delete", "validatingwebhookconfiguration", "etcdcron.io")
        kubectl(cluster.kubeconfig, "delete", "-f", str(grant))


class TestLocalOperator:
    """One local process registers the whole configuration itself, with a URL to itself."""

    @pytest.mark.parametrize(
        ("spec", "field"),
        [
            ({"schedule": "61 * * * *"}, "spec.schedule"),
            ({"schedule": "@every 0s"}, "spec.schedule"),
            ({"timeZone": "Mars/Olympus"}, "spec.timeZone"),
        ],
    )
    def test_kubectl_apply_refuses_an_invalid_schedule_naming_the_field(
        self, local: OperatorProcess, cluster: Any, k8s_namespace: str, tmp_path: Path, spec: Any, field: str
    ) -> None:
        wait_for("the operator ready", lambda: fetch(local.health_port, "/readyz")[0] == 200, timeout=60)
        hook = (configuration(cluster) or {"webhooks": [{}]})["webhooks"][0]
        assert hook["clientConfig"]["url"].startswith("https://127.0.0.1:"), hook
        assert hook["failurePolicy"] == "Ignore", hook  # one process answers: it never blocks when gone
        result = apply(cluster, tmp_path, manifest(new_name(), k8s_namespace, **spec))
        assert refused_naming(result, field), result.stderr
        assert apply(cluster, tmp_path, manifest(new_name(), k8s_namespace)).returncode == 0


LOCAL_GRANT = f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: etcdcron-operator-local-webhook}}
rules:
  - apiGroups: ["admissionregistration.k8s.io"]
    resources: ["validatingwebhookconfigurations"]
    verbs: ["create"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: etcdcron-operator-local-webhook}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: etcdcron-operator-local-webhook}}
subjects: [{{kind: ServiceAccount, name: {SERVICE_ACCOUNT}, namespace: {SYSTEM_NAMESPACE}}}]
"""


def shipped_webhook(port: int) -> str:
    """deploy/operator/webhook.yaml (the empty Secret and the configuration), but the Service port: here
    the API server dials the ExternalName Service's host at the configuration's port."""
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "operator" / "webhook.yaml").read_text()))
    for doc in docs:
        if doc["kind"] == "ValidatingWebhookConfiguration":
            doc["webhooks"][0]["clientConfig"]["service"]["port"] = port
    stand_in = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": SERVICE, "namespace": SYSTEM_NAMESPACE},
        "spec": {"type": "ExternalName", "externalName": "127.0.0.1"},
    }
    return yaml.safe_dump_all([*docs, stand_in])


LEASE_TTL = 20  # a killed leader keeps its seat this long: long enough to see the follower answer


@pytest.fixture(scope="class")
def replicas(
    cluster: Any, operator_credentials: Any, operator_etcd: Any, tmp_path_factory: Any
) -> Iterator[list[OperatorProcess]]:
    folder = tmp_path_factory.mktemp("webhook-replicas")
    port = free_port()
    shipped = folder / "webhook.yaml"
    shipped.write_text(shipped_webhook(port))
    applied = kubectl(cluster.kubeconfig, "apply", "-f", str(shipped))
    assert applied.returncode == 0, applied.stderr
    extra = ("--webhook-port", str(port), "--webhook-host", HOST)
    ops: list[OperatorProcess] = []

    def start(member: str) -> OperatorProcess:
        config = str(operator_credentials[0])
        with pytest.MonkeyPatch.context() as env:  # a killed replica leaves its certificate file here
            env.setenv("TMPDIR", str(folder))
            op = OperatorProcess(
                member, operator_etcd.endpoint, "/webhook-svc", config, folder, LEASE_TTL, extra
            )
        ops.append(op)
        return op

    try:
        first = start("replica-a")
        wait_for(
            "replica-a leads",
            lambda: leader_of(operator_etcd.endpoint, "/webhook-svc") == first.member_id,
        )
        start("replica-b")
        for op in ops:
            wait_for(f"{op.member_id} ready", lambda op=op: fetch(op.health_port, "/readyz")[0] == 200, 90)
        yield ops
    finally:
        stop_all(ops)
        kubectl(cluster.kubeconfig, "delete", "-f", str(shipped), "--wait=false")


class TestReplicasBehindAService:
    """Two replicas (leader and follower) as deploy/ runs them."""

    def test_one_certificate_for_all_and_the_leader_sets_the_bundle(
        self, replicas: list[OperatorProcess], cluster: Any
    ) -> None:
        secret = kubectl(cluster.kubeconfig, "get", "secret", "-n", SYSTEM_NAMESPACE, SERVICE, "-o", "yaml")
        data = yaml.safe_load(secret.stdout)["data"]
        assert base64.b64decode(data["tls.crt"]).count(b"BEGIN CERTIFICATE") == 1
        hook = (configuration(cluster) or {})["webhooks"][0]
        assert hook["clientConfig"]["caBundle"] == data["tls.crt"]  # base64 of the PEM, both
        assert hook["failurePolicy"] == "Fail"
        leader, follower = replicas
        assert "caBundle set" in leader.text() and "caBundle" not in follower.text()

    def test_opted_out_deleted_and_metadata_writes_are_not_judged(
        self, replicas: list[OperatorProcess], cluster: Any, k8s_namespace: str, tmp_path: Path
    ) -> None:
        kube = cluster.kubeconfig
        assert (
            kubectl(kube, "label", "namespace", k8s_namespace, "etcdcron.io/admission=disabled").returncode
            == 0
        )
        bad = manifest("admitted-unchecked", k8s_namespace, schedule="61 * * * *")
        assert apply(cluster, tmp_path, bad).returncode == 0  # opted out: the conditions report it
        assert kubectl(kube, "label", "namespace", k8s_namespace, "etcdcron.io/admission-").returncode == 0
        target = ("dcj", "admitted-unchecked", "-n", k8s_namespace)
        # kopf's finalizer on the (still bad) resource: a metadata write, not sent for review
        wait_for(
            "the operator's finalizer",
            lambda: (
                "etcdcron.io" in kubectl(kube, "get", *target, "-o", "jsonpath={.metadata.finalizers}").stdout
            ),
            timeout=60,
        )
        assert kubectl(kube, "label", *target, "team=a").returncode == 0
        edited = apply(
            cluster, tmp_path, manifest("admitted-unchecked", k8s_namespace, schedule="62 * * * *")
        )
        assert refused_naming(edited, "spec.schedule"), edited.stderr
        deleted = kubectl(kube, "delete", *target, "--timeout=60s")
        assert deleted.returncode == 0, deleted.stderr  # the finalizer's removal is never judged

    def test_a_follower_answers_and_the_configuration_never_moves(
        self,
        replicas: list[OperatorProcess],
        cluster: Any,
        operator_etcd: Any,
        k8s_namespace: str,
        tmp_path: Path,
    ) -> None:
        leader, follower = replicas
        version = (configuration(cluster) or {})["metadata"]["resourceVersion"]
        assert refused_naming(
            apply(cluster, tmp_path, manifest(new_name(), k8s_namespace, timeZone="Mars/Olympus")),
            "spec.timeZone",
        )
        leader.kill()  # its seat stays taken until its lease runs out: only a follower is listening now
        bad = manifest(new_name(), k8s_namespace, schedule="61 * * * *")
        result = apply(cluster, tmp_path, bad)
        assert refused_naming(result, "spec.schedule"), result.stderr
        assert apply(cluster, tmp_path, manifest(new_name(), k8s_namespace)).returncode == 0
        assert leader_of(operator_etcd.endpoint, "/webhook-svc") == leader.member_id, "answered by a leader"
        wait_for(
            "the follower leads",
            lambda: leader_of(operator_etcd.endpoint, "/webhook-svc") == follower.member_id,
            timeout=LEASE_TTL * 3,
        )
        wait_for("the new leader ready", lambda: fetch(follower.health_port, "/readyz")[0] == 200, timeout=60)
        assert (configuration(cluster) or {})["metadata"]["resourceVersion"] == version  # nothing rewritten
        follower.kill()  # no replica at all: refused, not admitted unchecked (failurePolicy Fail)
        refused = apply(cluster, tmp_path, manifest(new_name(), k8s_namespace))
        assert refused.returncode != 0 and "failed calling webhook" in refused.stderr, refused.stderr


def test_a_long_name_is_refused_with_field_path_metadata_name(
    cluster: Any, k8s_namespace: str, tmp_path: Path
) -> None:
    result = apply(cluster, tmp_path, manifest("x" * 53, k8s_namespace))
    assert result.returncode != 0 and "metadata.name" in result.stderr, result.stderr
    assert "<nil>" not in result.stderr


def test_a_replica_without_the_certificate_secret_stops_with_one_line(
    operator_credentials: Any, operator_etcd: Any, tmp_path: Path
) -> None:
    extra = ("--webhook-port", str(free_port()), "--webhook-host", f"elsewhere.{SYSTEM_NAMESPACE}.svc")
    op = OperatorProcess(
        "no-secret",
        operator_etcd.endpoint,
        "/webhook-none",
        str(operator_credentials[0]),
        tmp_path,
        extra=extra,
    )
    assert op.process.wait(60) == 1
    op.stop()
    lines = op.text().strip().splitlines()
    assert f"Secret {SYSTEM_NAMESPACE}/elsewhere" in lines[-1] and "403" in lines[-1], op.tail()
    assert "Traceback" not in op.text(), op.tail()
