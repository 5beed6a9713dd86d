"""What only a cluster that runs pods can show: Jobs' pods run to completion with the firing in their
environment, concurrencyPolicy Forbid and the history limits against real pod durations, the pool through
a rolling restart of the operator and the loss of an etcd member, and the operator running with exactly
the RBAC and Pod Security level that deploy/ gives it.
"""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from .cluster import OPERATOR_SELECTOR, SYSTEM_NAMESPACE, Kube, wait_for
from .test_operator import (
    JOB_LABEL,
    SCHEDULED_TIME,
    check_event,
    condition,
    dcj,
    fired_events,
    rfc3339,
    scheduled_time,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

#: Debian's busybox-static on the local node (etcdcron.testing.images), the real one on kind.
BUSYBOX = "busybox:1.36"
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def job_template(command: str, **job_spec: Any) -> dict[str, Any]:
    return {
        "spec": {
            "backoffLimit": 0,
            **job_spec,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "run",
                            "image": BUSYBOX,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["sh", "-c", command],
                            "securityContext": RESTRICTED_CONTAINER,
                        }
                    ],
                }
            },
        }
    }


def jobs_of(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    return kube.items("jobs", "-n", namespace, "-l", f"{JOB_LABEL}={name}")


def finished(job: dict[str, Any]) -> str | None:
    for kind in ("Complete", "Failed"):
        if (condition(job, kind) or {}).get("status") == "True":
            return kind
    return None


def when(raw: str) -> datetime:
    return datetime.fromisoformat(raw.replace("Z", "+00:00"))


# --- Jobs run pods ------------------------------------------------------------------------------------


def test_job_pods_complete_and_see_the_firing(kube: Kube, namespace: str) -> None:
    name = "env-report"
    payload = {"format": "csv", "to": ["ops@example.com"]}
    script = "for v in JOB TYPE PAYLOAD SCHEDULED_TIME RUN; do eval echo ETCDCRON_$v=\\$ETCDCRON_$v; done"
    kube.apply(
        dcj(
            name,
            schedule="*/2 * * * * *",
            maxRuns=2,
            type="report",
            payload=payload,
            target={"job": {"successfulJobsHistoryLimit": 5, "template": job_template(script)}},
        ),
        namespace,
    )

    def complete() -> list[dict[str, Any]] | None:
        jobs = [j for j in jobs_of(kube, namespace, name) if finished(j) == "Complete"]
        return jobs if len(jobs) == 2 else None

    try:
        jobs = wait_for("2 Jobs Complete", complete, timeout=120, interval=2)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{kube.diagnostics(namespace)}") from e
    runs = set()
    for job in jobs:
        meta = job["metadata"]
        tick = scheduled_time(job, name)
        pods = kube.items("pods", "-n", namespace, "-l", f"job-name={meta['name']}")
        assert [p["status"]["phase"] for p in pods] == ["Succeeded"], pods
        log = kube.kubectl("logs", "-n", namespace, f"job/{meta['name']}").stdout
        env = dict(line.split("=", 1) for line in log.splitlines() if line.startswith("ETCDCRON_"))
        assert env["ETCDCRON_JOB"] == name, log
        assert env["ETCDCRON_TYPE"] == "report", log
        assert json.loads(env["ETCDCRON_PAYLOAD"]) == payload, log
        assert env["ETCDCRON_SCHEDULED_TIME"] == meta["annotations"][SCHEDULED_TIME], log
        assert when(env["ETCDCRON_SCHEDULED_TIME"]) == tick
        runs.add(int(env["ETCDCRON_RUN"]))
    assert len(runs) == 2, f"each run has its own number: {runs}"

    obj = wait_for(
        "Complete after maxRuns",
        lambda: (lambda o: o if (condition(o, "Complete") or {}).get("status") == "True" else None)(
            kube.get("dcj", "-n", namespace, name)
        ),
        timeout=30,
    )
    assert obj["status"]["runCount"] == 2


def test_forbid_skips_ticks_while_a_pod_runs_and_history_is_trimmed(kube: Kube, namespace: str) -> None:
    """A 5-second schedule whose pod sleeps 12 s: while one Job runs, the ticks are skipped with a
    ForbidConcurrent Warning (and still counted); Jobs never overlap; successfulJobsHistoryLimit 1 deletes
    the older completed Jobs when a new one is created."""
    name = "slow"
    ticks = 9
    kube.apply(
        dcj(
            name,
            schedule="*/5 * * * * *",
            maxRuns=ticks,
            target={
                "job": {
                    "concurrencyPolicy": "Forbid",
                    "successfulJobsHistoryLimit": 1,
                    "template": job_template("sleep 12"),
                }
            },
        ),
        namespace,
    )
    seen: dict[str, dict[str, Any]] = {}  # every Job ever seen, by name (trimmed ones vanish later)
    deleted: set[str] = set()

    def done() -> dict[str, Any] | None:
        current = {j["metadata"]["name"]: j for j in jobs_of(kube, namespace, name)}
        deleted.update(n for n in seen if n not in current)
        seen.update(current)
        obj: dict[str, Any] = kube.get("dcj", "-n", namespace, name)
        complete = (condition(obj, "Complete") or {}).get("status") == "True"
        return obj if complete and all(finished(j) for j in current.values()) else None

    try:
        obj = wait_for(f"{ticks} ticks and every Job finished", done, timeout=ticks * 5 + 90, interval=1)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{kube.diagnostics(namespace)}") from e
    warnings = [
        e
        for e in kube.items("events", "-n", namespace, "-l", f"{JOB_LABEL}={name}")
        if e.get("reason") == "ForbidConcurrent"
    ]
    jobs = sorted(seen.values(), key=lambda j: scheduled_time(j, name))
    assert warnings, "no tick was skipped while a 12 s pod ran on a 5 s schedule"
    assert len(jobs) >= 2, [j["metadata"]["name"] for j in jobs]
    assert obj["status"]["runCount"] == ticks
    # One Warning per distinct cause, its count the ticks it stands for (Kubernetes' own aggregation).
    skipped = sum(int(w.get("count") or 1) for w in warnings)
    assert len(jobs) + skipped == ticks, (
        f"{len(jobs)} Jobs + {skipped} skipped ticks != {ticks} ticks: "
        f"{[j['metadata']['name'] for j in jobs]} {[w['message'] for w in warnings]}"
    )
    for earlier, later in itertools.pairwise(jobs):
        ended = earlier["status"].get("completionTime")
        assert ended, (
            f"{earlier['metadata']['name']} was seen finished only after {later['metadata']['name']}"
        )
        assert when(later["metadata"]["creationTimestamp"]) >= when(ended), (
            f"{later['metadata']['name']} created while {earlier['metadata']['name']} still ran"
        )
    # History: trimmed when a Job is created, so at most limit + the last one remain; the oldest went.
    remaining = [j for j in jobs_of(kube, namespace, name) if finished(j) == "Complete"]
    assert len(remaining) <= 2, [j["metadata"]["name"] for j in remaining]
    if len(jobs) >= 3:
        assert jobs[0]["metadata"]["name"] in deleted, "the oldest completed Job was not trimmed"


# --- the pool through disruptions ---------------------------------------------------------------------


def every_second_once(kube: Kube, namespace: str, name: str, start: datetime, end: datetime) -> None:
    """Every second in (start, end] has exactly one Event of DistributedCronJob ``name``; none before."""
    expected = {start + timedelta(seconds=s) for s in range(1, int((end - start).total_seconds()) + 1)}

    def complete() -> dict[datetime, str] | None:
        seen: dict[datetime, str] = {}
        for event in fired_events(kube, namespace, name):
            at = check_event(event, namespace, name)
            other = seen.setdefault(at, event["metadata"]["name"])
            assert other == event["metadata"]["name"], f"tick {rfc3339(at)} fired twice: {other}, {event}"
        return seen if expected <= seen.keys() else None

    try:
        seen = wait_for("an Event for every second since startTime", complete, timeout=90, interval=2)
    except AssertionError as e:
        got = {
            (ev["metadata"].get("annotations") or {}).get(SCHEDULED_TIME)
            for ev in fired_events(kube, namespace, name)
        }
        missing = sorted(rfc3339(t) for t in expected if rfc3339(t) not in got)
        raise AssertionError(
            f"{e}: {len(missing)} missing, first {missing[:20]}\n{kube.diagnostics()}"
        ) from e
    early = sorted(rfc3339(t) for t in seen if t < start)
    assert not early, f"fired before startTime {rfc3339(start)}: {early}"


def _every_second(kube: Kube, namespace: str, name: str) -> datetime:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=10)
    kube.apply(dcj(name, schedule="* * * * * *", startTime=rfc3339(start), catchUp="All"), namespace)
    wait_for("the first Event", lambda: fired_events(kube, namespace, name), timeout=60)
    return start


def _stop(kube: Kube, namespace: str, name: str) -> None:
    kube.kubectl("patch", "dcj", "-n", namespace, name, "--type=merge", "-p", '{"spec":{"suspend":true}}')


def test_rollout_restart_loses_and_doubles_no_tick(kube: Kube, namespace: str) -> None:
    name = "through-restart"
    start = _every_second(kube, namespace, name)
    time.sleep(3)
    kube.kubectl("rollout", "restart", "-n", SYSTEM_NAMESPACE, "deployment/etcdcron-operator")
    try:
        kube.kubectl(
            "rollout",
            "status",
            "-n",
            SYSTEM_NAMESPACE,
            "deployment/etcdcron-operator",
            "--timeout=300s",
            timeout=320,
        )
    except AssertionError as e:
        raise AssertionError(f"{e}\n{kube.diagnostics()}") from e
    time.sleep(8)
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=3)
    assert (end - start).total_seconds() >= 15
    every_second_once(kube, namespace, name, start, end)
    _stop(kube, namespace, name)


def test_losing_an_etcd_member_loses_and_doubles_no_tick(kube: Kube, namespace: str) -> None:
    name = "through-etcd-loss"
    start = _every_second(kube, namespace, name)
    time.sleep(3)
    kube.kubectl(
        "delete", "pod", "-n", SYSTEM_NAMESPACE, "etcd-1", "--grace-period=0", "--force", "--wait=false"
    )

    def members_ready() -> bool:
        sts = kube.get("statefulset", "-n", SYSTEM_NAMESPACE, "etcd")
        pod = kube.get("pod", "-n", SYSTEM_NAMESPACE, "etcd-1")
        fresh = when(pod["metadata"]["creationTimestamp"]) > start
        return bool(fresh and (sts.get("status") or {}).get("readyReplicas") == 3)

    time.sleep(2)
    try:
        wait_for("etcd-1 back and 3 members ready", members_ready, timeout=240, interval=2)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{kube.diagnostics()}") from e
    time.sleep(8)
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=3)
    every_second_once(kube, namespace, name, start, end)
    assert len(kube.ready_operator_pods()) == 3, "an operator replica went unready with one etcd member down"
    _stop(kube, namespace, name)


# --- as installed: RBAC and Pod Security ---------------------------------------------------------------


def test_operator_runs_restricted_with_the_shipped_rbac_and_is_never_forbidden(kube: Kube) -> None:
    ns = kube.get("namespace", SYSTEM_NAMESPACE)
    assert ns["metadata"]["labels"].get("pod-security.kubernetes.io/enforce") == "restricted"
    pods = kube.operator_pods()
    assert len(pods) == 3
    for pod in pods:
        spec = pod["spec"]
        assert spec["serviceAccountName"] == "etcdcron-operator"
        assert pod["status"]["phase"] == "Running"
    # A pod that the restricted level rejects is not admitted at all: prove the level is enforced here.
    bad = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "e2e-privileged-probe"},
        "spec": {"containers": [{"name": "c", "image": BUSYBOX, "securityContext": {"privileged": True}}]},
    }
    result = kube.kubectl(
        "create", "--dry-run=server", "-n", SYSTEM_NAMESPACE, "-f", "-", input=json.dumps(bad), check=False
    )
    assert result.returncode != 0 and "violates PodSecurity" in result.stderr, result.stderr
    # What the operator may do is deploy/operator/rbac.yaml: ask the API server as its service account.
    sa = f"system:serviceaccount:{SYSTEM_NAMESPACE}:etcdcron-operator"
    for verb, resource in [
        ("create", "jobs"),
        ("create", "events"),
        ("patch", "distributedcronjobs.etcdcron.io"),
    ]:
        answer = kube.kubectl("auth", "can-i", verb, resource, "-n", "default", f"--as={sa}", check=False)
        assert answer.stdout.strip() == "yes", (verb, resource, answer.stdout, answer.stderr)
    answer = kube.kubectl("auth", "can-i", "create", "pods", "-n", "default", f"--as={sa}", check=False)
    assert answer.stdout.strip() == "no", "the operator must not be able to create pods directly"
    # And through every test so far, no replica was refused anything.
    logs = kube.kubectl(
        "logs", "-n", SYSTEM_NAMESPACE, "-l", OPERATOR_SELECTOR, "--tail=-1", "--prefix", timeout=120
    ).stdout
    forbidden = [line for line in logs.splitlines() if "forbidden" in line.lower()]
    assert not forbidden, f"{len(forbidden)} Forbidden lines in the operator's logs, e.g.:\n" + "\n".join(
        forbidden[:5]
    )
