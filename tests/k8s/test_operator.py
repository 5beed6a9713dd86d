"""The operator on a real kube-apiserver and kube-controller-manager, with real operator processes."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import subprocess
import time
from typing import Any

import pytest
from helpers import condition, create, events_of, fetch, get, jobs_of, leader_of, ts, wait_for
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from etcdcron.etcd import EtcdClient
from etcdcron.keys import Keys
from etcdcron.store import JobStore

pytestmark = pytest.mark.k8s


# -- the schema and CEL rules, as the API server enforces them --------------------------------------
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"schedule": "* * * * *", "target": {"event": {}, "job": {"template": {"spec": {}}}}},
            "exactly one of target.event or target.job must be set",
        ),
        ({"schedule": "   "}, "schedule must not be blank"),
        ({"schedule": "* * * * *", "maxRuns": 0}, "should be greater than or equal to 1"),
        ({"schedule": "* * * * *", "catchUp": "Sometimes"}, "Unsupported value"),
        ({"schedule": "* * * * *", "ttlSeconds": -5}, "should be greater than or equal to 1"),
    ],
)
def test_schema_and_cel_rejections(cluster, crs, k8s_namespace, spec, message):
    with pytest.raises(ApiException) as err:
        create(crs, k8s_namespace, "bad", spec)
    assert err.value.status == 422
    assert message in err.value.body


def test_name_too_long_for_job_names_is_rejected(cluster, crs, k8s_namespace):
    with pytest.raises(ApiException) as err:
        create(crs, k8s_namespace, "x" * 53, {"schedule": "@daily"})
    assert err.value.status == 422 and "52" in err.value.body


# -- firing -------------------------------------------------------------------------------------------
def test_event_target_fires_every_second_with_status(operators, crs, k8s_api, k8s_namespace, cluster):
    create(
        crs,
        k8s_namespace,
        "beat",
        {
            "schedule": "* * * * * *",
            "type": "heartbeat",
            "payload": {"msg": "hi", "n": 1},
            "target": {"event": {"reason": "Beat"}},
        },
    )
    events = wait_for(
        "3 events", lambda: (e := events_of(k8s_api, k8s_namespace, "beat")) and len(e) >= 3 and e
    )
    event = sorted(events, key=lambda e: e.metadata.name)[0]
    scheduled = event.metadata.annotations["etcdcron.io/scheduled-time"]
    assert event.metadata.name == f"beat-{int(ts(scheduled))}"
    assert event.reason == "Beat" and event.involved_object.kind == "DistributedCronJob"
    assert event.involved_object.name == "beat" and event.metadata.namespace == k8s_namespace
    assert json.loads(event.metadata.annotations["etcdcron.io/payload"]) == {"msg": "hi", "n": 1}
    assert event.metadata.annotations["etcdcron.io/type"] == "heartbeat"
    obj = wait_for(
        "status",
        lambda: (o := get(crs, k8s_namespace, "beat")).get("status", {}).get("runCount", 0) >= 2 and o,
    )
    status = obj["status"]
    assert condition(obj, "Ready")["status"] == "True"
    assert condition(obj, "ScheduleValid")["status"] == "True"
    assert ts(status["nextScheduleTime"]) > ts(status["lastScheduleTime"])
    assert status["lastDispatched"]["kind"] == "Event"
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    table = subprocess.run(
        ["kubectl", "get", "dcj", "-n", k8s_namespace],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        timeout=30,
    )
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[0].split()
    assert header == ["NAME", "SCHEDULE", "SUSPEND", "RUNS", "LAST", "NEXT", "READY", "AGE"]
    assert "beat" in table.stdout and "True" in table.stdout


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"schedule": "61 * * * *"}, "spec.schedule"),
        ({"schedule": "@daily", "timeZone": "Mars/Olympus_Mons"}, "spec.timeZone"),
    ],
)
def test_bad_schedule_or_time_zone_surfaces_as_a_condition(
    operators, crs, k8s_api, k8s_namespace, spec, field
):
    create(crs, k8s_namespace, "wrong", spec)
    obj = wait_for(
        "ScheduleValid=False",
        lambda: (
            (o := get(crs, k8s_namespace, "wrong"))
            and condition(o, "ScheduleValid").get("status") == "False"
            and o
        ),
    )
    assert field in condition(obj, "ScheduleValid")["message"]
    assert condition(obj, "Ready")["status"] == "False"
    core = client.CoreV1Api(k8s_api)
    warnings = wait_for(
        "a warning event",
        lambda: [
            e
            for e in core.list_namespaced_event(k8s_namespace).items
            if e.type == "Warning" and e.involved_object.name == "wrong"
        ],
    )
    assert field in warnings[0].message


JOB_TEMPLATE = {
    "metadata": {"labels": {"app": "report"}},
    "spec": {
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox", "command": ["true"]}],
            }
        }
    },
}


def test_job_target_creates_owned_jobs_with_env_then_completes(operators, crs, k8s_api, k8s_namespace):
    created = create(
        crs,
        k8s_namespace,
        "report",
        {
            "schedule": "* * * * * *",
            "maxRuns": 3,
            "type": "nightly",
            "payload": [1, 2],
            "target": {"job": {"template": JOB_TEMPLATE}},
        },
    )
    obj = wait_for(
        "Complete",
        lambda: (
            (o := get(crs, k8s_namespace, "report"))
            and condition(o, "Complete").get("status") == "True"
            and o
        ),
        timeout=40,
    )
    assert obj["status"]["runCount"] == 3 and obj["status"]["remainingRuns"] == 0
    assert obj["status"].get("nextScheduleTime") is None
    jobs = sorted(jobs_of(k8s_api, k8s_namespace, "report"), key=lambda j: j.metadata.name)
    assert len(jobs) == 3
    ticks = [int(ts(j.metadata.annotations["etcdcron.io/scheduled-time"])) for j in jobs]
    assert [j.metadata.name for j in jobs] == [f"report-{t}" for t in ticks]
    assert ticks == [ticks[0], ticks[0] + 1, ticks[0] + 2]
    job = jobs[0]
    assert job.metadata.labels["app"] == "report"
    owners = job.metadata.owner_references
    assert len(owners) == 1 and owners[0].uid == created["metadata"]["uid"] and owners[0].controller
    env = {e.name: e.value for e in job.spec.template.spec.containers[0].env}
    assert env["ETCDCRON_TYPE"] == "nightly" and json.loads(env["ETCDCRON_PAYLOAD"]) == [1, 2]
    assert env["ETCDCRON_RUN"] in {"1", "2", "3"} and env["ETCDCRON_SCHEDULED_TIME"].endswith("Z")
    time.sleep(2)
    assert len(jobs_of(k8s_api, k8s_namespace, "report")) == 3, "fired past maxRuns"


@pytest.mark.parametrize("policy", ["Forbid", "Replace"])
def test_concurrency_policy(operators, crs, k8s_api, k8s_namespace, policy):
    # No kubelet runs here, so every Job stays active: Forbid must create one, Replace must keep one alive.
    create(
        crs,
        k8s_namespace,
        "busy",
        {
            "schedule": "* * * * * *",
            "target": {"job": {"template": JOB_TEMPLATE, "concurrencyPolicy": policy}},
        },
    )
    wait_for(
        "status runs",
        lambda: (get(crs, k8s_namespace, "busy").get("status") or {}).get("runCount", 0) >= 4,
        timeout=40,
    )
    live = [j for j in jobs_of(k8s_api, k8s_namespace, "busy") if j.metadata.deletion_timestamp is None]
    if policy == "Forbid":
        assert len(jobs_of(k8s_api, k8s_namespace, "busy")) == 1
    else:
        assert len(live) == 1
        newest = max(int(j.metadata.name.rsplit("-", 1)[1]) for j in live)
        assert time.time() - newest < 5


def test_failed_jobs_history_limit(operators, crs, k8s_api, k8s_namespace):
    # No kubelet runs pods here, but kube-controller-manager fails a Job past its activeDeadlineSeconds.
    template = {"spec": {**JOB_TEMPLATE["spec"], "activeDeadlineSeconds": 1}}
    create(
        crs,
        k8s_namespace,
        "flaky",
        {"schedule": "* * * * * *", "target": {"job": {"template": template, "failedJobsHistoryLimit": 1}}},
    )

    def failed() -> list[Any]:
        return [
            j
            for j in jobs_of(k8s_api, k8s_namespace, "flaky")
            if j.metadata.deletion_timestamp is None
            and any(c.type == "Failed" and c.status == "True" for c in (j.status.conditions or []))
        ]

    wait_for("a failed Job", failed, timeout=30)
    wait_for(
        "several runs",
        lambda: (get(crs, k8s_namespace, "flaky").get("status") or {}).get("runCount", 0) >= 8,
        timeout=40,
    )
    # Trimming happens at each creation, so one more may have failed since the last one.
    assert 1 <= len(failed()) <= 2, [j.metadata.name for j in failed()]


def test_ttl_deletes_the_resource_and_its_etcd_job_within_seconds(
    operators, crs, k8s_namespace, operator_etcd
):
    created = create(crs, k8s_namespace, "short", {"schedule": "* * * * * *", "ttlSeconds": 3})
    expiry = ts(created["metadata"]["creationTimestamp"]) + 3

    def gone() -> bool:
        try:
            get(crs, k8s_namespace, "short")
            return False
        except ApiException as e:
            return e.status == 404

    wait_for("TTL deletion", gone, timeout=45)
    # The daemon deletes at expiry and kopf notices its exit at once (not after its 60 s polling).
    assert time.time() - expiry < 10, f"gone {time.time() - expiry:.1f}s after expiry"

    async def etcd_jobs() -> int:
        async with EtcdClient([operator_etcd.endpoint]) as c:
            return len((await JobStore(c, Keys("/operator")).list(k8s_namespace)).jobs)

    wait_for("its etcd job gone", lambda: asyncio.run(etcd_jobs()) == 0, timeout=10, interval=0.5)


def test_tenant_isolation_and_namespace_cleanup(operators, crs, k8s_api, operator_etcd):
    core = client.CoreV1Api(k8s_api)
    a, b = f"tenant-a-{os.getpid()}", f"tenant-b-{os.getpid()}"
    for ns in (a, b):
        core.create_namespace({"metadata": {"name": ns}})
    try:
        create(crs, a, "same-name", {"schedule": "* * * * * *"})
        create(crs, b, "same-name", {"schedule": "@yearly"})
        wait_for("events in a", lambda: len(events_of(k8s_api, a, "same-name")) >= 2)
        assert events_of(k8s_api, b, "same-name") == []
        for event in events_of(k8s_api, a, "same-name"):
            assert event.involved_object.namespace == a
    finally:
        core.delete_namespace(a)
        core.delete_namespace(b)

    async def count(ns: str) -> int:
        async with EtcdClient([operator_etcd.endpoint]) as c:
            return len((await JobStore(c, Keys("/operator")).list(ns)).jobs)

    wait_for(
        "tenant jobs gone from etcd",
        lambda: asyncio.run(count(a)) == 0 and asyncio.run(count(b)) == 0,
        timeout=60,
        interval=1,
    )


def test_status_writes_are_coalesced(operators, crs, k8s_namespace):
    create(crs, k8s_namespace, "chatty", {"schedule": "* * * * * *"})
    wait_for(
        "firing", lambda: (get(crs, k8s_namespace, "chatty").get("status") or {}).get("runCount", 0) >= 1
    )
    watch_seconds = 12
    first = get(crs, k8s_namespace, "chatty")["metadata"]["resourceVersion"]
    versions = {first}
    deadline = time.monotonic() + watch_seconds
    while time.monotonic() < deadline:
        versions.add(get(crs, k8s_namespace, "chatty")["metadata"]["resourceVersion"])
        time.sleep(0.1)
    writes = len(versions) - 1
    assert 1 <= writes <= watch_seconds / 5 + 1, f"{writes} writes in {watch_seconds}s for a 1 s schedule"


def test_failover_of_the_reconciler_loses_and_doubles_no_tick(
    operators, start_operator, crs, k8s_api, k8s_namespace, operator_etcd
):
    operators.append(start_operator("op-c"))
    create(crs, k8s_namespace, "steady", {"schedule": "* * * * * *"})
    wait_for("firing", lambda: len(events_of(k8s_api, k8s_namespace, "steady")) >= 2, timeout=40)
    start = time.time()
    time.sleep(2)
    leader = wait_for("a leader", lambda: leader_of(operator_etcd.endpoint))
    victim = next(op for op in operators if op.member_id == leader)
    victim.kill()
    operators.remove(victim)
    # The survivors take over both the reconciler (a new resource gets mirrored) and the dead one's ticks.
    create(crs, k8s_namespace, "after", {"schedule": "* * * * * *"})
    wait_for("new resource fires", lambda: len(events_of(k8s_api, k8s_namespace, "after")) >= 1, timeout=30)
    assert leader_of(operator_etcd.endpoint) not in ("", leader)
    time.sleep(3)
    end = time.time() - 2
    ticks = collections.Counter(
        int(ts(e.metadata.annotations["etcdcron.io/scheduled-time"]))
        for e in events_of(k8s_api, k8s_namespace, "steady")
    )
    window = range(int(start) + 1, int(end))
    assert not [t for t in window if ticks[t] != 1], {t: ticks[t] for t in window if ticks[t] != 1}
    assert not [t for t, n in ticks.items() if n > 1]


def test_operator_probes_metrics_and_clean_exit_on_sigterm(start_operator, operators):
    op = start_operator("short-lived")
    assert wait_for("readyz", lambda: fetch(op.health_port, "/readyz")[0] == 200, timeout=20)
    assert fetch(op.health_port, "/healthz") == (200, "ok")
    metrics = wait_for("metrics", lambda: fetch(op.metrics_port, "/metrics")[1])
    for name in (
        "etcdcron_firings_total",
        "etcdcron_firing_lateness_seconds_bucket",
        "etcdcron_commit_conflicts_total",
        "etcdcron_partitions_owned",
        "etcdcron_dispatch_errors_total",
    ):
        assert name in metrics
    assert op.stop() == 0, op.tail()
