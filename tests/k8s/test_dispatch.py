"""KubernetesDispatcher against a real kube-apiserver (and kube-controller-manager): one object per tick
however often a firing is dispatched, concurrently, with fewer requests in flight than firings;
concurrencyPolicy and the history limits of Jobs; what a refusal and an unreachable server raise."""

from __future__ import annotations

import asyncio
import copy
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client

from etcdcron.dispatch import FinalError
from etcdcron.dispatch.kubernetes import JobCreateError, KubernetesDispatcher
from etcdcron.firing import Firing
from etcdcron.job import Job, StoredJob
from etcdcron.k8s_resource import Envelope
from etcdcron.localetcd import free_port
from eventually import eventually_async

pytestmark = pytest.mark.k8s

JOB_TEMPLATE = {
    "spec": {
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}}
    }
}


def firings(namespace: str, target: dict[str, Any], jobs: int, ticks: int) -> list[Firing]:
    start = datetime.now(UTC).replace(microsecond=0)
    out = []
    for i in range(jobs):
        envelope = Envelope(str(uuid.uuid4()), 1, target, {"i": i})
        job = Job(name=f"d{i}", schedule="* * * * * *", namespace=namespace, payload=envelope.to_bytes())
        stored = StoredJob(job, uuid.uuid4().hex, start)
        for k in range(ticks):
            tick = start + timedelta(seconds=k)
            out.append(Firing(stored, tick, tick, k + 1, "m-0", False))
    return out


def names(items: Any) -> list[str]:
    return sorted(o.metadata.name for o in items)


def tick_names(batch: list[Firing]) -> list[str]:
    return sorted(f"{f.job.job.name}-{int(f.scheduled.timestamp())}" for f in batch)


@pytest.fixture
async def dispatcher(k8s_api: Any) -> AsyncIterator[KubernetesDispatcher]:
    d = KubernetesDispatcher(k8s_api, "m-0", in_flight=3)
    try:
        yield d
    finally:
        await d.close()


def jobs_in(k8s_api: Any, namespace: str) -> list[Any]:
    return list(client.BatchV1Api(k8s_api).list_namespaced_job(namespace).items)


async def test_each_tick_gives_one_event_when_dispatched_twice_at_once(dispatcher, k8s_api, k8s_namespace):
    """More firings at once than requests in flight, each one twice (a retry racing its first attempt,
    or two members): every call succeeds (AlreadyExists is success) and each tick has exactly one Event."""
    batch = firings(k8s_namespace, {"event": {"reason": "Fired"}}, jobs=10, ticks=3)
    await asyncio.gather(*(dispatcher(f) for f in batch + batch))
    listed = client.CoreV1Api(k8s_api).list_namespaced_event(k8s_namespace).items
    assert names(listed) == tick_names(batch)
    assert {e.reason for e in listed} == {"Fired"}
    assert {e.reporting_instance for e in listed} == {"m-0"}


async def test_each_tick_gives_one_job_when_dispatched_twice_at_once(dispatcher, k8s_api, k8s_namespace):
    batch = firings(k8s_namespace, {"job": {"template": JOB_TEMPLATE}}, jobs=2, ticks=2)
    await asyncio.gather(*(dispatcher(f) for f in batch + batch))
    assert names(jobs_in(k8s_api, k8s_namespace)) == tick_names(batch)


async def test_an_event_no_retry_can_create_is_reported_once_not_raised(dispatcher, caplog):
    """A namespace that is not there (404): no retry can help, so the firing is done and the cause is
    logged once, not per tick."""
    missing = f"etcdcron-missing-{uuid.uuid4().hex[:8]}"
    with caplog.at_level(logging.WARNING, logger="etcdcron.dispatch.kubernetes"):
        for f in firings(missing, {"event": {}}, jobs=1, ticks=3):
            await dispatcher(f)
    lines = [r.getMessage() for r in caplog.records if "Event not created" in r.getMessage()]
    assert len(lines) == 1 and "404" in lines[0], lines


async def test_a_job_the_api_server_refuses_is_final(dispatcher, k8s_namespace):
    """An invalid template (no containers): 422, a FinalError naming the field, not the Job's name."""
    bad = copy.deepcopy(JOB_TEMPLATE)
    bad["spec"]["template"]["spec"]["containers"] = []
    (firing,) = firings(k8s_namespace, {"job": {"template": bad}}, jobs=1, ticks=1)
    with pytest.raises(FinalError, match="422") as refused:
        await dispatcher(firing)
    assert "containers" in str(refused.value) and "d0-" not in str(refused.value)


async def test_an_unreachable_api_server_is_retryable(k8s_api, k8s_namespace):
    api = client.ApiClient(copy.copy(k8s_api.configuration))
    api.configuration.host = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    d = KubernetesDispatcher(api, "m-0", in_flight=1)
    try:
        for target in ({"event": {}}, {"job": {"template": JOB_TEMPLATE}}):
            (firing,) = firings(k8s_namespace, target, jobs=1, ticks=1)
            with pytest.raises(JobCreateError, match="failed: POST"):
                await d(firing)
    finally:
        await d.close()


@pytest.mark.parametrize("policy", ["Forbid", "Replace"])
async def test_concurrency_policy_with_jobs_that_keep_running(dispatcher, k8s_api, k8s_namespace, policy):
    """No kubelet runs the pods, so every Job stays active. Forbid: the first tick's Job alone, each later
    tick skipped and counted on one ForbidConcurrent Warning. Replace: each tick deletes the one before."""
    target = {"job": {"template": JOB_TEMPLATE, "concurrencyPolicy": policy}}
    batch = firings(k8s_namespace, target, jobs=1, ticks=3)
    for f in batch:
        await asyncio.gather(dispatcher(f), dispatcher(f))  # twice at once: still one outcome per tick
    live = [j for j in jobs_in(k8s_api, k8s_namespace) if j.metadata.deletion_timestamp is None]
    if policy == "Forbid":
        assert names(live) == tick_names(batch)[:1]
        warnings = [
            e
            for e in client.CoreV1Api(k8s_api).list_namespaced_event(k8s_namespace).items
            if e.reason == "ForbidConcurrent"
        ]
        assert len(warnings) == 1 and warnings[0].count in (2, 3, 4), warnings  # 2 ticks, each up to twice
    else:
        assert names(live) == tick_names(batch)[-1:]


async def test_failed_jobs_beyond_the_history_limit_are_deleted(dispatcher, k8s_api, k8s_namespace):
    """kube-controller-manager fails each Job past activeDeadlineSeconds; a later tick's creation trims
    the failed ones down to failedJobsHistoryLimit (the most recent kept)."""
    template = {"spec": {**JOB_TEMPLATE["spec"], "activeDeadlineSeconds": 1}}
    batch = firings(k8s_namespace, {"job": {"template": template, "failedJobsHistoryLimit": 1}}, 1, 4)

    def failed() -> list[str]:
        return [
            j.metadata.name
            for j in jobs_in(k8s_api, k8s_namespace)
            if j.metadata.deletion_timestamp is None
            and any(c.type == "Failed" and c.status == "True" for c in (j.status.conditions or []))
        ]

    for f in batch[:3]:
        await dispatcher(f)
    await eventually_async(lambda: len(failed()) == 3, 60, "3 failed Jobs")
    await dispatcher(batch[3])
    newest, fourth = tick_names(batch)[2:]  # the 4th tick's Job may fail too, after the trim

    def trimmed() -> bool:
        return newest in failed() and set(failed()) <= {newest, fourth}

    await eventually_async(trimmed, 30, f"only {newest} kept of the first 3 failed Jobs")


async def test_a_namespace_being_deleted_is_said_once_and_not_as_forbidden(dispatcher, k8s_api, caplog):
    """A tick into a namespace being deleted gets a 403 (NamespaceTerminating): not a permission the
    operator lacks, nothing to retry, no Warning to write there. Said once at INFO, never 'Forbidden'."""
    core = client.CoreV1Api(k8s_api)
    namespace = f"etcdcron-going-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": namespace}})
    held = {"metadata": {"name": "held", "finalizers": ["etcdcron.io/test-hold"]}}
    core.create_namespaced_config_map(namespace, held)  # keeps the namespace Terminating
    core.delete_namespace(namespace)
    try:
        await eventually_async(
            lambda: core.read_namespace(namespace).status.phase == "Terminating", 30, "namespace terminating"
        )
        with caplog.at_level(logging.INFO, logger="etcdcron.dispatch.kubernetes"):
            for target in ({"event": {"reason": "Fired"}}, {"job": {"template": JOB_TEMPLATE}}):
                for f in firings(namespace, target, jobs=1, ticks=2):
                    await dispatcher(f)  # neither raises: done, as far as this tick can be
        lines = [r.getMessage() for r in caplog.records]
        going = [line for line in lines if "namespace is being deleted" in line]
        assert len(going) == 2 and {"Events" in going[0], "Jobs" in going[1]} == {True}, lines
        assert not [line for line in lines if "forbidden" in line.lower()], lines
    finally:
        core.patch_namespaced_config_map("held", namespace, {"metadata": {"finalizers": None}})
