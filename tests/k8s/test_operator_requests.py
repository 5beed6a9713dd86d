"""Run now, backfill, recent firings and failures from kubectl (issue 12, operator side; issue 9's loose ends:
a dispatch failure cleared by another replica's success, hostile entries in etcd)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from helpers import (
    condition,
    create,
    get,
    jobs_of,
    kubectl,
    leader_of,
    wait_for,
    warnings_of,
)
from kubernetes import client

from etcdcron.etcd import EtcdClient
from etcdcron.k8s_resource import backfill_name, manual_name
from etcdcron.keys import Keys
from etcdcron.localetcd import free_port
from etcdcron.schedule import parse_schedule, ticks_between

pytestmark = pytest.mark.k8s
TEMPLATE = {
    "spec": {
        "backoffLimit": 0,
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}},
    }
}


def annotate(cluster: Any, namespace: str, name: str, *pairs: str) -> None:
    done = kubectl(cluster.kubeconfig, "-n", namespace, "annotate", "--overwrite", f"dcj/{name}", *pairs)
    assert done.returncode == 0, done.stderr


def all_events(k8s_api: Any, namespace: str, name: str) -> list[Any]:
    """Every Normal Event of the resource, ticks, run-now and backfill alike."""
    core = client.CoreV1Api(k8s_api)
    items = core.list_namespaced_event(namespace, label_selector=f"etcdcron.io/job={name}").items
    return [e for e in items if e.type == "Normal"]


def of_kind(events: list[Any], kind: str) -> list[Any]:
    return [e for e in events if (e.metadata.annotations or {}).get("etcdcron.io/kind") == kind]


def settle(what: str, read: Any, seconds: float = 4.0) -> Any:
    """``read()`` once it has stopped changing for ``seconds`` (within a deadline)."""
    values: list[Any] = []

    def steady() -> Any:
        values.append(read())
        recent = values[-int(seconds / 0.25) :]
        return len(recent) * 0.25 >= seconds and all(v == recent[-1] for v in recent) and (recent[-1],)

    return wait_for(what, steady, timeout=60)[0]


def test_trigger_annotation_fires_once_per_token_through_restarts(
    operators, start_operator, cluster, crs, k8s_api, k8s_namespace, operator_etcd
):
    create(crs, k8s_namespace, "nightly", {"schedule": "0 0 3 1 1 *", "payload": {"from": "spec"}})
    uid = wait_for(
        "Ready",
        lambda: (
            (o := get(crs, k8s_namespace, "nightly"))
            and condition(o, "Ready").get("status") == "True"
            and o["metadata"]["uid"]
        ),
    )
    annotate(cluster, k8s_namespace, "nightly", "etcdcron.io/trigger=first")
    event = wait_for(
        "the run-now Event", lambda: of_kind(all_events(k8s_api, k8s_namespace, "nightly"), "manual")
    )[0]
    assert event.metadata.name == manual_name("nightly", uid, "first")
    notes = event.metadata.annotations
    assert (notes["etcdcron.io/trigger"], notes["etcdcron.io/run"], notes["etcdcron.io/payload"]) == (
        "first",
        "0",
        '{"from":"spec"}',
    )
    obj = wait_for("recent", lambda: (o := get(crs, k8s_namespace, "nightly"))["status"].get("recent") and o)
    assert [(r["kind"], r["result"], r["run"]) for r in obj["status"]["recent"]] == [("manual", "success", 0)]
    assert obj["status"]["runCount"] == 0, "a run-now firing is not a run"
    # The same token again: applied anew, removed and re-added, across a leader restart: never again.
    annotate(cluster, k8s_namespace, "nightly", "etcdcron.io/trigger=first")
    annotate(cluster, k8s_namespace, "nightly", "etcdcron.io/trigger-")
    annotate(cluster, k8s_namespace, "nightly", "etcdcron.io/trigger=first")
    leader = wait_for("a leader", lambda: leader_of(operator_etcd.endpoint))
    victim = next(op for op in operators if op.member_id == leader)
    victim.kill()
    operators.remove(victim)
    operators.append(start_operator(f"{victim.member_id}-again"))
    wait_for("a new leader", lambda: leader_of(operator_etcd.endpoint) not in ("", leader), timeout=30)
    # A new token with its own payload fires once more.
    annotate(
        cluster,
        k8s_namespace,
        "nightly",
        "etcdcron.io/trigger=second",
        'etcdcron.io/trigger-payload={"n": 2}',
    )
    second = wait_for(
        "the second run-now Event",
        lambda: [
            e
            for e in of_kind(all_events(k8s_api, k8s_namespace, "nightly"), "manual")
            if e.metadata.annotations["etcdcron.io/trigger"] == "second"
        ],
        timeout=40,
    )[0]
    assert second.metadata.annotations["etcdcron.io/payload"] == '{"n":2}'
    manual = settle(
        "run-now Events",
        lambda: sorted(e.metadata.name for e in all_events(k8s_api, k8s_namespace, "nightly")),
    )
    assert manual == sorted([manual_name("nightly", uid, "first"), manual_name("nightly", uid, "second")])
    assert get(crs, k8s_namespace, "nightly")["status"]["runCount"] == 0


def test_a_trigger_on_a_suspended_resource_or_a_bad_token_is_refused_with_a_warning(
    operators, cluster, crs, k8s_api, k8s_namespace
):
    create(crs, k8s_namespace, "paused", {"schedule": "0 0 3 1 1 *", "suspend": True})
    wait_for(
        "Suspended",
        lambda: condition(get(crs, k8s_namespace, "paused"), "Ready").get("reason") == "Suspended",
    )
    annotate(cluster, k8s_namespace, "paused", "etcdcron.io/trigger=now")
    warning = wait_for(
        "a TriggerRejected Warning",
        lambda: [w for w in warnings_of(k8s_api, k8s_namespace, "paused") if w.reason == "TriggerRejected"],
    )[0]
    assert warning.message == "etcdcron.io/trigger=now: not fired: spec.suspend is true"
    annotate(cluster, k8s_namespace, "paused", "etcdcron.io/trigger=no spaces please")
    wait_for(
        "a Warning naming the annotation",
        lambda: [
            w
            for w in warnings_of(k8s_api, k8s_namespace, "paused")
            if w.message.startswith("etcdcron.io/trigger: 'no spaces please' is not")
        ],
    )
    assert all_events(k8s_api, k8s_namespace, "paused") == []


def test_backfill_annotation_fires_every_tick_of_the_range_once(
    operators, cluster, crs, k8s_api, k8s_namespace
):
    create(crs, k8s_namespace, "yearly", {"schedule": "0 0 0 1 1 *"})
    wait_for("Ready", lambda: condition(get(crs, k8s_namespace, "yearly"), "Ready").get("status") == "True")
    annotate(
        cluster, k8s_namespace, "yearly", "etcdcron.io/backfill=2020-01-01T00:00:00Z/2023-06-01T00:00:00Z"
    )
    schedule = parse_schedule("0 0 0 1 1 *")
    span = (datetime(2019, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(2023, 6, 1, tzinfo=UTC))
    expected = [backfill_name("yearly", t) for t in ticks_between(schedule, *span, 100)]
    assert len(expected) == 4
    wait_for(
        "4 backfilled Events",
        lambda: len(of_kind(all_events(k8s_api, k8s_namespace, "yearly"), "backfill")) >= 4,
        timeout=40,
    )
    annotate(cluster, k8s_namespace, "yearly", "etcdcron.io/backfill-")  # applied twice: the same backfill
    annotate(
        cluster, k8s_namespace, "yearly", "etcdcron.io/backfill=2020-01-01T00:00:00Z/2023-06-01T00:00:00Z"
    )
    names = settle(
        "backfilled Events",
        lambda: sorted(e.metadata.name for e in all_events(k8s_api, k8s_namespace, "yearly")),
    )
    assert names == sorted(expected)
    scheduled = sorted(
        e.metadata.annotations["etcdcron.io/scheduled-time"]
        for e in all_events(k8s_api, k8s_namespace, "yearly")
    )
    assert scheduled == [f"{y}-01-01T00:00:00.000Z" for y in range(2020, 2024)]
    recent = wait_for(
        "recent", lambda: len(get(crs, k8s_namespace, "yearly")["status"].get("recent") or []) >= 4
    )
    assert recent
    status = get(crs, k8s_namespace, "yearly")["status"]
    assert {r["kind"] for r in status["recent"]} == {"backfill"} and status["runCount"] == 0
    # A value that is not a range is refused, naming the annotation.
    annotate(cluster, k8s_namespace, "yearly", "etcdcron.io/backfill=last week")
    wait_for(
        "a BackfillRejected Warning",
        lambda: [
            w
            for w in warnings_of(k8s_api, k8s_namespace, "yearly")
            if w.reason == "BackfillRejected"
            and w.message.startswith("etcdcron.io/backfill: 'last week' is not")
        ],
    )


def dead_webhook(namespace: str) -> dict[str, Any]:
    """A webhook on Job creation in ``namespace`` that nothing serves: the API server answers 500."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": f"dead-{namespace}"},
        "webhooks": [
            {
                "name": "dead.etcdcron.test",
                "clientConfig": {"url": f"https://127.0.0.1:{free_port()}/"},
                "rules": [
                    {
                        "apiGroups": ["batch"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["jobs"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 2,
            }
        ],
    }


def test_a_failure_policy_that_gives_up_shows_until_another_replica_succeeds(
    operators, start_operator, cluster, crs, k8s_api, k8s_namespace, tmp_path
):
    spec = {
        "schedule": "*/2 * * * * *",
        "failurePolicy": {"backoff": "Constant", "intervalSeconds": 0, "maxRetries": 2},
        "target": {"job": {"template": TEMPLATE}},
    }
    create(crs, k8s_namespace, "flaky", spec)
    wait_for("a Job", lambda: jobs_of(k8s_api, k8s_namespace, "flaky"), timeout=60)
    path = tmp_path / "dead.yaml"
    path.write_text(yaml.safe_dump(dead_webhook(k8s_namespace)))
    applied = kubectl(cluster.kubeconfig, "apply", "-f", str(path))
    assert applied.returncode == 0, applied.stderr
    try:
        obj = wait_for(
            "Ready=False JobCreateFailed",
            lambda: (
                (o := get(crs, k8s_namespace, "flaky"))
                and condition(o, "Ready").get("reason") == "JobCreateFailed"
                and o
            ),
            timeout=60,
        )
        failure = obj["status"]["dispatchFailure"]
        assert failure["attempts"] == 3 and failure["message"].endswith("(3 attempts)"), failure
        assert "failed calling webhook" in failure["message"] and "flaky-1" not in failure["message"]
        assert condition(obj, "Ready")["message"] == failure["message"]
        failed = [r for r in obj["status"]["recent"] if r["result"] == "failed"]
        assert failed and failed[-1]["attempts"] == 3 and "failed calling webhook" in failed[-1]["error"]
        # One Warning for the cause, however many ticks fail so.
        wait_for(
            "2 failed ticks",
            lambda: (
                sum(r["result"] == "failed" for r in get(crs, k8s_namespace, "flaky")["status"]["recent"])
                >= 2
            ),
            timeout=30,
        )
        warnings = [w for w in warnings_of(k8s_api, k8s_namespace, "flaky") if w.reason == "JobCreateFailed"]
        assert len(warnings) == 1 and warnings[0].count >= 2, [(w.message, w.count) for w in warnings]
        # The replica that recorded the failure dies; the survivor's success clears it (issue 9's loose end).
        member = failed[-1]["member"]
        victim = next(op for op in operators if op.member_id == member)
        victim.kill()
        operators.remove(victim)
    finally:
        kubectl(cluster.kubeconfig, "delete", "-f", str(path))
    survivor = operators[0].member_id
    obj = wait_for(
        "Ready again",
        lambda: (
            (o := get(crs, k8s_namespace, "flaky")) and condition(o, "Ready").get("status") == "True" and o
        ),
        timeout=60,
    )
    assert obj["status"].get("dispatchFailure") is None
    assert (
        obj["status"]["recent"][-1]["result"] == "success"
        and obj["status"]["recent"][-1]["member"] == survivor
    )
    operators.append(start_operator(f"{member}-again"))


def test_a_job_refused_by_the_api_server_is_not_retried(
    operators, cluster, crs, k8s_api, k8s_namespace, tmp_path
):
    spec = {
        "schedule": "*/2 * * * * *",
        "failurePolicy": {"maxRetries": 5, "intervalSeconds": 1},
        "target": {"job": {"template": TEMPLATE}},
    }
    create(crs, k8s_namespace, "denied", spec)
    wait_for("a Job", lambda: jobs_of(k8s_api, k8s_namespace, "denied"), timeout=60)
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": f"deny-{k8s_namespace}"},
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
            "validations": [{"expression": "false", "message": "no Jobs today"}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": f"deny-{k8s_namespace}"},
        "spec": {
            "policyName": f"deny-{k8s_namespace}",
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": k8s_namespace}}
            },
        },
    }
    path = tmp_path / "deny.yaml"
    path.write_text(yaml.safe_dump_all([policy, binding]))
    assert kubectl(cluster.kubeconfig, "apply", "-f", str(path)).returncode == 0
    try:
        obj = wait_for(
            "a refused tick",
            lambda: (
                (o := get(crs, k8s_namespace, "denied"))
                and (o["status"].get("dispatchFailure") or {}).get("attempts")
                and o
            ),
            timeout=60,
        )
        failure = obj["status"]["dispatchFailure"]
        assert failure["attempts"] == 1, "a 4xx is not retried whatever the failure policy"
        assert "no Jobs today" in failure["message"] and failure["message"].startswith(
            "the API server refused"
        )
    finally:
        kubectl(cluster.kubeconfig, "delete", "-f", str(path))


def put_raw(endpoint: str, key: bytes, value: bytes) -> None:
    async def go() -> None:
        async with EtcdClient([endpoint]) as c:
            await c.put(key, value)

    asyncio.run(go())


def delete_raw(endpoint: str, key: bytes) -> None:
    async def go() -> None:
        async with EtcdClient([endpoint]) as c:
            await c.delete(key)

    asyncio.run(go())


def test_garbage_in_etcd_under_a_resource_is_a_condition_not_a_handler_loop(
    operators, crs, k8s_api, k8s_namespace, operator_etcd
):
    create(crs, k8s_namespace, "victim", {"schedule": "* * * * * *"})
    wait_for(
        "firing",
        lambda: ((get(crs, k8s_namespace, "victim").get("status") or {}).get("runCount") or 0) >= 2,
        timeout=40,
    )
    keys = Keys("/operator")
    ref = keys.ref(k8s_namespace, "victim")
    cursor_key = keys.cursor(ref)
    since = {op.member_id: len(op.text()) for op in operators}
    put_raw(operator_etcd.endpoint, cursor_key, b"\xff not json")
    obj = wait_for(
        "Ready=False BadEtcdEntry",
        lambda: (
            (o := get(crs, k8s_namespace, "victim"))
            and condition(o, "Ready").get("reason") == "BadEtcdEntry"
            and o
        ),
        timeout=30,
    )
    message = condition(obj, "Ready")["message"]
    assert cursor_key.decode() in message and "JSON" in message, message
    runs = obj["status"]["runCount"]
    settle("the condition", lambda: condition(get(crs, k8s_namespace, "victim"), "Ready").get("message"))
    warnings = [w for w in warnings_of(k8s_api, k8s_namespace, "victim") if w.reason == "BadEtcdEntry"]
    assert len(warnings) == 1 and warnings[0].count == 1, "reported once"
    logged = [op.text()[since.get(op.member_id, 0) :] for op in operators]
    assert not any("BadEntryError" in text for text in logged), "a handler failed on the bad entry"
    reports = [text.count("not mirrored: bad entry") for text in logged]
    assert sum(reports) >= 1 and max(reports) == 1, "logged once (per reconciler process)"
    # Whoever removes the bad entry makes the next look mirror the resource again: runs go on from status.
    delete_raw(operator_etcd.endpoint, cursor_key)
    wait_for(
        "firing again",
        lambda: (
            (o := get(crs, k8s_namespace, "victim"))
            and condition(o, "Ready").get("status") == "True"
            and o["status"]["runCount"] > runs
        ),
        timeout=40,
    )
    # A hostile job spec never keeps the resource from being deleted.
    put_raw(operator_etcd.endpoint, keys.job(ref), b'{"name": 5}')
    wait_for(
        "BadEtcdEntry",
        lambda: condition(get(crs, k8s_namespace, "victim"), "Ready").get("reason") == "BadEtcdEntry",
    )
    crs.delete_namespaced_custom_object(
        "etcdcron.io", "v1alpha1", k8s_namespace, "distributedcronjobs", "victim"
    )

    def gone() -> bool:
        try:
            get(crs, k8s_namespace, "victim")
        except client.exceptions.ApiException as e:
            return e.status == 404
        return False

    wait_for("deleted", gone, timeout=30)
    assert not any("BadEntryError" in op.text()[since.get(op.member_id, 0) :] for op in operators)
