"""KubernetesDispatcher against a real kube-apiserver: one object per tick however often a firing is
dispatched, concurrently, on the dispatcher's own workers and connections."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client

from etcdcron.dispatch.kubernetes import KubernetesDispatcher
from etcdcron.firing import Firing
from etcdcron.job import Job, StoredJob
from etcdcron.k8s_resource import Envelope

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


async def test_each_tick_gives_one_event_when_dispatched_twice_at_once(k8s_api, k8s_namespace):
    """More firings in flight than workers, each one twice (a retry racing its first attempt, or two
    members): every call succeeds (AlreadyExists is success) and each tick has exactly one Event."""
    dispatcher = KubernetesDispatcher(k8s_api, "m-0", workers=4)
    batch = firings(k8s_namespace, {"event": {"reason": "Fired"}}, jobs=10, ticks=3)
    await asyncio.gather(*(dispatcher(f) for f in batch + batch))
    listed = client.CoreV1Api(k8s_api).list_namespaced_event(k8s_namespace).items
    expected = sorted(f"{f.job.job.name}-{int(f.scheduled.timestamp())}" for f in batch)
    assert names(listed) == expected
    assert {e.reason for e in listed} == {"Fired"}


async def test_each_tick_gives_one_job_when_dispatched_twice_at_once(k8s_api, k8s_namespace):
    dispatcher = KubernetesDispatcher(k8s_api, "m-0", workers=3)
    batch = firings(k8s_namespace, {"job": {"template": JOB_TEMPLATE}}, jobs=2, ticks=2)
    await asyncio.gather(*(dispatcher(f) for f in batch + batch))
    listed = client.BatchV1Api(k8s_api).list_namespaced_job(k8s_namespace).items
    assert names(listed) == sorted(f"{f.job.job.name}-{int(f.scheduled.timestamp())}" for f in batch)


async def test_an_event_no_retry_can_create_is_reported_once_not_raised(k8s_api, caplog):
    """A namespace that is not there (404): no retry can help, so the firing is done and the cause is
    logged once, not per tick (the undecoded answer's status is still read)."""
    dispatcher = KubernetesDispatcher(k8s_api, "m-0", workers=2)
    missing = f"etcdcron-missing-{uuid.uuid4().hex[:8]}"
    with caplog.at_level(logging.WARNING, logger="etcdcron.dispatch.kubernetes"):
        for f in firings(missing, {"event": {}}, jobs=1, ticks=3):
            await dispatcher(f)
    lines = [r.getMessage() for r in caplog.records if "Event not created" in r.getMessage()]
    assert len(lines) == 1 and "404" in lines[0], lines
