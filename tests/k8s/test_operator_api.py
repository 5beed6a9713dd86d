"""The operator as a cluster user meets it (issue 9: 2, 3, 4, 7, 12, 13, 14, 15)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
import yaml
from helpers import (
    ROOT,
    OperatorProcess,
    condition,
    create,
    events_of,
    fetch,
    get,
    jobs_of,
    kubectl,
    leader_of,
    wait_for,
    warnings_of,
)
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from etcdcron.etcd import EtcdClient
from etcdcron.keys import Keys
from etcdcron.localetcd import LocalEtcd
from etcdcron.store import JobStore

pytestmark = pytest.mark.k8s


def test_a_150_kb_payload_applies_fires_and_deletes(
    operators, cluster, crs, k8s_api, k8s_namespace, tmp_path
):
    payload = {"blob": "x" * 150_000}
    manifest = {
        "apiVersion": "etcdcron.io/v1alpha1",
        "kind": "DistributedCronJob",
        "metadata": {"name": "big", "namespace": k8s_namespace},
        "spec": {"schedule": "* * * * * *", "payload": payload},
    }
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(manifest))
    applied = kubectl(cluster.kubeconfig, "apply", "-f", str(path))  # client-side: kubectl keeps a copy too
    assert applied.returncode == 0, applied.stderr
    event = wait_for("an Event", lambda: events_of(k8s_api, k8s_namespace, "big"), timeout=30)[0]
    assert json.loads(event.metadata.annotations["etcdcron.io/payload"]) == payload
    obj = wait_for(
        "Ready",
        lambda: (o := get(crs, k8s_namespace, "big")) and condition(o, "Ready").get("status") == "True" and o,
    )
    ours = {k: v for k, v in obj["metadata"]["annotations"].items() if k.startswith("etcdcron.io/")}
    assert sum(len(v) for v in ours.values()) < 4096, "kopf keeps a copy of the spec in annotations"
    deleted = kubectl(cluster.kubeconfig, "delete", "-f", str(path), "--timeout=60s")
    assert deleted.returncode == 0, deleted.stderr
    with pytest.raises(ApiException) as gone:
        get(crs, k8s_namespace, "big")
    assert gone.value.status == 404


def test_a_payload_over_the_limit_is_reported_not_fired(operators, crs, k8s_api, k8s_namespace):
    create(crs, k8s_namespace, "huge", {"schedule": "* * * * * *", "payload": "x" * 200_000})
    obj = wait_for(
        "Ready=False",
        lambda: (
            (o := get(crs, k8s_namespace, "huge"))
            and condition(o, "Ready").get("reason") == "InvalidSpec"
            and o
        ),
    )
    assert condition(obj, "Ready")["message"].startswith("spec.payload: must be at most 196608 bytes")
    assert events_of(k8s_api, k8s_namespace, "huge") == []


def test_a_job_template_the_api_server_rejects_is_ready_false_with_its_message(
    operators, crs, k8s_api, k8s_namespace
):
    template = {
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "busybox"}]}
            }
        }
    }
    create(
        crs, k8s_namespace, "rejected", {"schedule": "* * * * * *", "target": {"job": {"template": template}}}
    )
    obj = wait_for(
        "Ready=False JobRejected",
        lambda: (
            (o := get(crs, k8s_namespace, "rejected"))
            and condition(o, "Ready").get("reason") == "JobRejected"
            and o
        ),
    )
    message = condition(obj, "Ready")["message"]
    assert message.startswith("the API server rejects the Job of spec.target.job.template: 422"), message
    assert "spec.template.spec.restartPolicy" in message, message
    warnings = wait_for("a Warning", lambda: warnings_of(k8s_api, k8s_namespace, "rejected"))
    assert [w.reason for w in warnings] == ["JobRejected"] and "restartPolicy" in warnings[0].message
    assert jobs_of(k8s_api, k8s_namespace, "rejected") == []
    assert (obj["status"].get("runCount") or 0) == 0 and obj["status"].get("nextScheduleTime") is None


def test_ttl_ending_before_the_first_tick_warns(operators, crs, k8s_api, k8s_namespace):
    spec = {"schedule": "@every 30s", "startTime": "2099-01-04T09:00:00Z", "ttlSeconds": 3600}
    create(crs, k8s_namespace, "never", spec)
    obj = wait_for(
        "NeverFires",
        lambda: (
            (o := get(crs, k8s_namespace, "never"))
            and condition(o, "Ready").get("reason") == "NeverFires"
            and o
        ),
    )
    assert "before the first tick at 2099-01-04T09:00:30.000Z" in condition(obj, "Ready")["message"]
    warnings = wait_for("a Warning", lambda: warnings_of(k8s_api, k8s_namespace, "never"))
    assert warnings[0].reason == "NeverFires"


def test_the_shipped_examples_fire(operators, cluster, k8s_api, k8s_namespace):
    applied = kubectl(
        cluster.kubeconfig,
        "apply",
        "-n",
        k8s_namespace,
        "-f",
        str(ROOT / "deploy" / "examples" / "maintenance-window.yaml"),
    )
    assert applied.returncode == 0, applied.stderr
    wait_for("a MaintenanceTick", lambda: events_of(k8s_api, k8s_namespace, "maintenance-window"), timeout=45)


def test_kubectl_apply_f_crds_works(cluster):
    result = kubectl(cluster.kubeconfig, "apply", "-f", str(ROOT / "crds"))
    assert result.returncode == 0, result.stderr


def test_leader_gauge(operators, operator_etcd):
    leader = wait_for("a leader", lambda: leader_of(operator_etcd.endpoint))
    for op in operators:
        want = "1.0" if op.member_id == leader else "0.0"
        wait_for(
            f"{op.member_id} leader gauge {want}",
            lambda op=op, want=want: (
                f"etcdcron_reconciler_leader {want}" in fetch(op.metrics_port, "/metrics")[1]
            ),
        )


def test_readyz_is_503_while_etcd_is_down(operator_credentials, tmp_path):
    with LocalEtcd(tmp_path / "etcd") as etcd:
        op = OperatorProcess("readiness", etcd.endpoint, "/readiness", str(operator_credentials[0]), tmp_path)
        try:
            wait_for("ready", lambda: fetch(op.health_port, "/readyz")[0] == 200, timeout=30)
            etcd.kill()
            _, text = wait_for(
                "not ready", lambda: (r := fetch(op.health_port, "/readyz"))[0] == 503 and r, timeout=30
            )
            assert "etcd" in text, text
            assert fetch(op.health_port, "/healthz")[0] == 200  # alive: no restart for an etcd outage
            etcd.start()
            wait_for("ready again", lambda: fetch(op.health_port, "/readyz")[0] == 200, timeout=60)
        finally:
            op.stop()


def test_a_namespace_deleted_while_no_operator_ran_is_swept_at_start(
    start_operator, crs, k8s_api, operator_etcd
):
    core = client.CoreV1Api(k8s_api)
    namespace = f"swept-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": namespace}})
    op = start_operator("sweeper", prefix="/sweep")
    create(crs, namespace, "orphan", {"schedule": "@daily"})
    wait_for("mirrored", lambda: asyncio.run(tenant_jobs(operator_etcd.endpoint, namespace)) == 1, timeout=40)
    assert op.stop() == 0, op.tail()
    core.delete_namespace(namespace)

    # With no operator of this pool running, nothing of ours removes the finalizer (another pool's may):
    # a user forces the resource out.
    def forced_out() -> bool:
        try:
            if not get(crs, namespace, "orphan")["metadata"].get("deletionTimestamp"):
                return False
            crs.patch_namespaced_custom_object(
                "etcdcron.io",
                "v1alpha1",
                namespace,
                "distributedcronjobs",
                "orphan",
                {"metadata": {"finalizers": None}},
            )
        except ApiException as e:
            if e.status != 404:
                raise
        return True

    wait_for("the resource forced out", forced_out)

    def namespace_gone() -> bool:
        try:
            core.read_namespace(namespace)
            return False
        except ApiException as e:
            return e.status == 404

    wait_for("namespace gone", namespace_gone, timeout=90, interval=1)
    start_operator("sweeper-again", prefix="/sweep")
    wait_for("swept", lambda: asyncio.run(tenant_jobs(operator_etcd.endpoint, namespace)) == 0, timeout=40)


async def tenant_jobs(endpoint: str, namespace: str) -> int:
    async with EtcdClient([endpoint]) as c:
        return len((await JobStore(c, Keys("/sweep")).list(namespace)).jobs)


def test_a_job_refused_at_a_tick_makes_ready_false_until_one_is_created(
    operators, cluster, crs, k8s_api, k8s_namespace, tmp_path
):
    template = {
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}
            }
        }
    }
    spec = {"schedule": "* * * * * *", "target": {"job": {"template": template}}}
    create(crs, k8s_namespace, "frozen", spec)
    wait_for("a Job", lambda: jobs_of(k8s_api, k8s_namespace, "frozen"), timeout=40)
    # From now on the API server refuses Jobs in this namespace (the template passed its dry run).
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump_all(
            [
                {
                    "apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "ValidatingAdmissionPolicy",
                    "metadata": {"name": k8s_namespace},
                    "spec": {
                        "failurePolicy": "Fail",
                        "matchConstraints": {
                            "resourceRules": [
                                {
                                    "apiGroups": ["batch"],
                                    "apiVersions": ["v1"],
                                    "operations": ["CREATE"],
                                    "resources": ["jobs"],
                                }
                            ]
                        },
                        "validations": [{"expression": "false", "message": "Jobs are frozen here"}],
                    },
                },
                {
                    "apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "ValidatingAdmissionPolicyBinding",
                    "metadata": {"name": k8s_namespace},
                    "spec": {
                        "policyName": k8s_namespace,
                        "validationActions": ["Deny"],
                        "matchResources": {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": k8s_namespace}
                            }
                        },
                    },
                },
            ]
        )
    )
    applied = kubectl(cluster.kubeconfig, "apply", "-f", str(policy))
    assert applied.returncode == 0, applied.stderr
    try:
        obj = wait_for(
            "Ready=False JobCreateFailed",
            lambda: (
                (o := get(crs, k8s_namespace, "frozen"))
                and condition(o, "Ready").get("reason") == "JobCreateFailed"
                and o
            ),
            timeout=60,
        )
        assert "Jobs are frozen here" in condition(obj, "Ready")["message"], condition(obj, "Ready")
        warnings = [w for w in warnings_of(k8s_api, k8s_namespace, "frozen") if w.reason == "JobCreateFailed"]
        assert len(warnings) == 1  # one Event, counted, not one per tick
    finally:
        kubectl(cluster.kubeconfig, "delete", "-f", str(policy))
    wait_for(
        "Ready again",
        lambda: condition(get(crs, k8s_namespace, "frozen"), "Ready").get("status") == "True",
        timeout=60,
    )
