"""The operator on a real cluster (kind), installed from deploy/ as users install it.

What these tests hold the operator to, for every Event or Job that a tick of DistributedCronJob NAME creates
(in NAME's namespace):

- its name is ``NAME-<unix seconds of the scheduled time>``;
- label ``etcdcron.io/job: NAME``;
- annotation ``etcdcron.io/scheduled-time``: the tick's scheduled time, RFC 3339;
- an Event has reason ``spec.target.event.reason`` (default ``Fired``), type Normal, and is about NAME
  (involvedObject/regarding); a Job is owned by NAME (controller ownerReference);
- and across replica failover every tick is fired exactly once: one Event or Job per scheduled time, none
  missing (catchUp All), none twice, and ``status.runCount`` counts each once.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from .cluster import IMAGE, SYSTEM_NAMESPACE, Kube, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

GROUP_VERSION = "etcdcron.io/v1alpha1"
JOB_LABEL = "etcdcron.io/job"
SCHEDULED_TIME = "etcdcron.io/scheduled-time"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def dcj(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "DistributedCronJob",
        "metadata": {"name": name},
        "spec": spec,
    }


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scheduled_time(obj: dict[str, Any], job: str) -> datetime:
    """Check the names/labels/annotations contract on one Event or Job of DistributedCronJob ``job``;
    return its scheduled time."""
    meta = obj["metadata"]
    where = f"{obj.get('kind', 'object')} {meta['name']}"
    assert (meta.get("labels") or {}).get(JOB_LABEL) == job, f"{where}: label {JOB_LABEL} is not {job!r}"
    raw = (meta.get("annotations") or {}).get(SCHEDULED_TIME)
    assert raw is not None, f"{where}: no {SCHEDULED_TIME} annotation"
    assert RFC3339.match(raw), f"{where}: {SCHEDULED_TIME}={raw!r} is not RFC 3339"
    when = datetime.fromisoformat(raw.replace("z", "Z"))
    assert when.tzinfo is not None
    assert meta["name"] == f"{job}-{int(when.timestamp())}", (
        f"{where}: not named {job}-<unix seconds of {raw}>"
    )
    return when


def fired_events(kube: Kube, namespace: str, job: str) -> list[dict[str, Any]]:
    return kube.items("events", "-n", namespace, "-l", f"{JOB_LABEL}={job}")


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return None


def check_event(event: dict[str, Any], namespace: str, job: str, reason: str = "Fired") -> datetime:
    when = scheduled_time(event, job)
    name = event["metadata"]["name"]
    assert event.get("reason") == reason, f"Event {name}: reason {event.get('reason')!r}, not {reason!r}"
    assert event.get("type") == "Normal", f"Event {name}: type {event.get('type')!r}"
    about = event.get("involvedObject") or {}
    assert (about.get("kind"), about.get("name"), about.get("namespace")) == (
        "DistributedCronJob",
        job,
        namespace,
    ), f"Event {name} is about {about}"
    # exactly once: an Event is created once per tick, never bumped for a second firing of the same tick
    assert (event.get("count") or 1) == 1, f"Event {name} has count {event.get('count')}: a tick fired twice"
    assert not event.get("series"), f"Event {name} has a series: a tick fired twice"
    return when


# --- installation and the CRD -------------------------------------------------------------------------


def test_install_is_healthy(kube: Kube) -> None:
    deployment = kube.get("deployment", "-n", SYSTEM_NAMESPACE, "etcdcron-operator")
    assert deployment["status"].get("readyReplicas") == 3
    statefulset = kube.get("statefulset", "-n", SYSTEM_NAMESPACE, "etcd")
    assert statefulset["status"].get("readyReplicas") == 3
    explained = kube.kubectl("explain", "dcj.spec.target.job").stdout
    assert "concurrencyPolicy" in explained and "template" in explained


def test_crd_defaults(kube: Kube, namespace: str) -> None:
    created = kube.kubectl(
        "create",
        "--dry-run=server",
        "-n",
        namespace,
        "-o",
        "json",
        "-f",
        "-",
        input=json.dumps(dcj("defaults", schedule="@hourly")),
    ).stdout
    spec = json.loads(created)["spec"]
    assert spec["timeZone"] == "UTC"
    assert spec["suspend"] is False
    assert spec["catchUp"] == "All"
    assert spec["startingDeadlineSeconds"] == 300
    assert spec["target"] == {"event": {"reason": "Fired"}}

    job = dcj("job-defaults", schedule="0 * * * *", target={"job": {"template": {"spec": {"template": {}}}}})
    spec = json.loads(
        kube.kubectl(
            "create", "--dry-run=server", "-n", namespace, "-o", "json", "-f", "-", input=json.dumps(job)
        ).stdout
    )["spec"]
    assert spec["target"]["job"]["concurrencyPolicy"] == "Allow"
    assert spec["target"]["job"]["successfulJobsHistoryLimit"] == 3
    assert spec["target"]["job"]["failedJobsHistoryLimit"] == 1


@pytest.mark.parametrize(
    ("name", "spec", "message"),
    [
        (
            "both-targets",
            {"schedule": "@hourly", "target": {"event": {}, "job": {"template": {"spec": {}}}}},
            "exactly one of target.event or target.job must be set",
        ),
        ("no-target", {"schedule": "@hourly", "target": {}}, "exactly one of target.event or target.job"),
        ("x" * 53, {"schedule": "@hourly"}, "must be at most 52 characters"),
        ("blank", {"schedule": "   "}, "schedule must not be blank"),
        ("three-fields", {"schedule": "* * *"}, "schedule must be a 5-field cron expression"),
        ("bad-macro", {"schedule": "@fortnightly"}, "schedule must be a 5-field cron expression"),
        ("bad-catchup", {"schedule": "@hourly", "catchUp": "Some"}, "catchUp"),
        ("bad-max-runs", {"schedule": "@hourly", "maxRuns": 0}, "maxRuns"),
        ("bad-start", {"schedule": "@hourly", "startTime": "tomorrow"}, "startTime"),
        ("bad-reason", {"schedule": "@hourly", "target": {"event": {"reason": "not camel"}}}, "reason"),
    ],
)
def test_crd_rejects(kube: Kube, namespace: str, name: str, spec: dict[str, Any], message: str) -> None:
    result = kube.kubectl(
        "create",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(dcj(name, **spec)),
        check=False,
    )
    assert result.returncode != 0, f"accepted: {spec}"
    assert message in result.stderr, result.stderr


# --- admission ----------------------------------------------------------------------------------------

WEBHOOK = "etcdcron-operator-webhook"


def admission_of(kube: Kube, namespace: str, spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """A server-side dry-run create (the webhook is called for dry runs too: it has no side effects)."""
    manifest = json.dumps(dcj(f"adm-{uuid.uuid4().hex[:6]}", **spec))
    return kube.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", input=manifest, check=False)


def refused_naming_the_field(kube: Kube, namespace: str) -> str:
    """A bad schedule is never admitted; the refusal names the field once a replica is reached (right after
    a pod is force-deleted, the Service may still send a review to it: a transport error, retried)."""

    def attempt() -> str | None:
        result = admission_of(kube, namespace, {"schedule": "61 * * * *"})
        assert result.returncode != 0, "a bad schedule was admitted"
        return result.stderr if "denied the request: spec.schedule: " in result.stderr else None

    return wait_for("a refusal naming spec.schedule", attempt, timeout=120, interval=2)


def test_admission_through_the_webhook_service_on_every_replica(kube: Kube, namespace: str) -> None:
    """deploy/ as shipped: the replicas share the certificate of Secret etcdcron-operator-webhook, the
    configuration trusts it and fails closed, and replicas that replace every original one still answer."""
    secret = kube.get("secret", "-n", SYSTEM_NAMESPACE, WEBHOOK)
    config = kube.get("validatingwebhookconfiguration", "etcdcron.io")
    (hook,) = config["webhooks"]
    assert hook["failurePolicy"] == "Fail"
    assert hook["clientConfig"]["caBundle"] == secret["data"]["tls.crt"]
    assert admission_of(kube, namespace, {"schedule": "*/10 * * * * *"}).returncode == 0
    refused_naming_the_field(kube, namespace)
    originals = kube.ready_operator_pods()
    assert len(originals) == 3
    for batch in (
        originals[:2],
        originals[2:],
    ):  # at the end only replicas started after the Secret was filled
        kube.kubectl("delete", "pod", "-n", SYSTEM_NAMESPACE, "--grace-period=0", "--force", *batch)
        refused_naming_the_field(kube, namespace)
        wait_for(
            "three ready replicas, the deleted ones replaced",
            lambda batch=batch: len(ready := kube.ready_operator_pods()) == 3 and not set(batch) & set(ready),
            timeout=300,
        )
    assert not set(originals) & set(kube.ready_operator_pods())
    refused_naming_the_field(kube, namespace)
    after = kube.get("validatingwebhookconfiguration", "etcdcron.io")
    assert after["metadata"]["resourceVersion"] == config["metadata"]["resourceVersion"]  # never rewritten


# --- firing -------------------------------------------------------------------------------------------


def test_examples_fire_events(kube: Kube, namespace: str) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", "deploy/examples/")
    names = {d["metadata"]["name"] for d in kube.items("dcj", "-n", namespace)}
    assert names == {"heartbeat", "paris-report", "maintenance-window"}

    def at_least(n: int) -> Callable[[], list[dict[str, Any]] | None]:
        def events() -> list[dict[str, Any]] | None:
            found = fired_events(kube, namespace, "heartbeat")
            return found if len(found) >= n else None

        return events

    wait_for("a Fired Event of the heartbeat example (every 10 s)", at_least(1), timeout=30)
    events = wait_for("a second Fired Event of the heartbeat example", at_least(2), timeout=25)
    times = sorted(check_event(e, namespace, "heartbeat") for e in events)
    assert all(t.second % 10 == 0 and t.microsecond == 0 for t in times), times
    assert len(set(times)) == len(times), f"a tick fired twice: {times}"

    def ready() -> dict[str, Any] | None:
        obj: dict[str, Any] = kube.get("dcj", "-n", namespace, "heartbeat")
        status = obj.get("status") or {}
        ok = (condition(obj, "Ready") or {}).get("status") == "True"
        ok = ok and status.get("runCount", 0) >= 1
        return obj if ok and status.get("lastScheduleTime") and status.get("nextScheduleTime") else None

    obj = wait_for("heartbeat's status: Ready, runCount, last and next schedule times", ready, timeout=30)
    status = obj["status"]
    assert (condition(obj, "ScheduleValid") or {}).get("status") == "True"
    assert datetime.fromisoformat(status["lastScheduleTime"]).second % 10 == 0
    assert datetime.fromisoformat(status["nextScheduleTime"]).second % 10 == 0
    assert status["lastDispatched"]["kind"] == "Event"

    table = kube.kubectl("get", "dcj", "-n", namespace).stdout
    header = table.splitlines()[0].split()
    assert header == ["NAME", "SCHEDULE", "SUSPEND", "RUNS", "LAST", "NEXT", "READY", "AGE"], table
    assert any(line.split()[:2] == ["heartbeat", "*/10"] for line in table.splitlines()[1:]), table


def test_job_target_creates_completed_jobs(kube: Kube, namespace: str) -> None:
    name = "fast-job"
    container = {
        "name": "tick",
        "image": IMAGE,  # already on the node: no pull
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-c", "print('tick')"],
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    template = {
        "metadata": {"labels": {"e2e": "fast-job"}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532},
                    "containers": [container],
                }
            },
        },
    }
    kube.apply(
        dcj(
            name,
            schedule="* * * * * *",
            maxRuns=3,
            target={"job": {"successfulJobsHistoryLimit": 10, "template": template}},
        ),
        namespace,
    )

    def completed() -> list[dict[str, Any]] | None:
        jobs = kube.items("jobs", "-n", namespace, "-l", f"{JOB_LABEL}={name}")
        done = [j for j in jobs if (j.get("status") or {}).get("succeeded", 0) >= 1]
        return done if len(done) >= 3 else None

    try:
        jobs = wait_for("3 completed Jobs of a maxRuns: 3 schedule", completed, timeout=180, interval=2)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{kube.diagnostics(namespace)}") from e
    times = sorted(scheduled_time(j, name) for j in jobs)
    assert len(set(times)) == 3, f"a tick fired twice: {times}"
    assert times[2] - times[0] == timedelta(seconds=2), f"the 3 ticks of a 1-second schedule: {times}"
    for job in jobs:
        meta = job["metadata"]
        assert meta["labels"].get("e2e") == "fast-job", "the template's labels are kept"
        owners = [o for o in meta.get("ownerReferences") or [] if o.get("controller")]
        assert [(o["kind"], o["name"]) for o in owners] == [("DistributedCronJob", name)], meta

    def complete() -> dict[str, Any] | None:
        obj: dict[str, Any] = kube.get("dcj", "-n", namespace, name)
        return obj if (condition(obj, "Complete") or {}).get("status") == "True" else None

    obj = wait_for("the Complete condition after maxRuns", complete, timeout=30)
    assert obj["status"]["runCount"] == 3
    assert obj["status"]["remainingRuns"] == 0
    assert not obj["status"].get("nextScheduleTime")
    assert obj["status"]["lastDispatched"]["kind"] == "Job"
    time.sleep(3)
    assert len(kube.items("jobs", "-n", namespace, "-l", f"{JOB_LABEL}={name}")) == 3, "fired past maxRuns"


# --- failover -----------------------------------------------------------------------------------------


def test_every_tick_fires_exactly_once_while_replicas_are_killed(kube: Kube, namespace: str) -> None:
    """A 1-second schedule; the three original replicas force-deleted one after the other (each while
    others are up). Every second from startTime on gets exactly one Event."""
    name = "every-second"
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=20)
    kube.apply(dcj(name, schedule="* * * * * *", startTime=rfc3339(start), catchUp="All"), namespace)

    wait_for("the first Event", lambda: fired_events(kube, namespace, name), timeout=60)
    victims = [p["metadata"]["name"] for p in kube.operator_pods()]
    assert len(victims) == 3, victims
    for victim in victims:
        time.sleep(5)
        kube.kubectl(
            "delete", "pod", "-n", SYSTEM_NAMESPACE, victim, "--grace-period=0", "--force", "--wait=false"
        )

        def replaced(victim: str = victim) -> bool:
            pods = kube.ready_operator_pods()
            return len(pods) == 3 and victim not in pods

        try:
            wait_for(f"a ready replacement for {victim}", replaced, timeout=180, interval=2)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{kube.diagnostics()}") from e
    time.sleep(10)  # every replica up again for a while
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=3)
    expected = {start + timedelta(seconds=s) for s in range(1, int((end - start).total_seconds()) + 1)}
    assert len(expected) >= 20, f"a window of {len(expected)} s only"

    def complete() -> dict[datetime, str] | None:
        seen: dict[datetime, str] = {}
        for event in fired_events(kube, namespace, name):
            when = check_event(event, namespace, name)
            other = seen.setdefault(when, event["metadata"]["name"])
            assert other == event["metadata"]["name"], f"tick {rfc3339(when)} fired twice: {other}, {event}"
        return seen if expected <= seen.keys() else None

    try:
        seen = wait_for("an Event for every second since startTime", complete, timeout=60, interval=2)
    except AssertionError as e:
        got = {rfc3339(t) for t, _ in _safe_times(kube, namespace, name)}
        missing = sorted(rfc3339(t) for t in expected if rfc3339(t) not in got)
        raise AssertionError(
            f"{e}: {len(missing)} missing, first {missing[:20]}\n{kube.diagnostics()}"
        ) from e
    early = sorted(rfc3339(t) for t in seen if t < start)
    assert not early, f"fired before startTime {rfc3339(start)}: {early}"

    # Stop it, let anything still in flight land, and count once more: nothing twice, and runCount agrees.
    kube.kubectl("patch", "dcj", "-n", namespace, name, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    time.sleep(5)

    def settled() -> tuple[int, int] | None:
        events = fired_events(kube, namespace, name)
        times = [check_event(e, namespace, name) for e in events]
        assert len(set(times)) == len(times), "a tick fired twice"
        obj = kube.get("dcj", "-n", namespace, name)
        runs = int((obj.get("status") or {}).get("runCount", -1))
        return (runs, len(events)) if runs == len(events) else None

    try:
        wait_for("status.runCount to equal the number of Events", settled, timeout=30, interval=2)
    except AssertionError as e:
        obj = kube.get("dcj", "-n", namespace, name)
        count = len(fired_events(kube, namespace, name))
        raise AssertionError(f"{e}: runCount {obj.get('status', {}).get('runCount')}, {count} Events") from e
    suspended = kube.get("dcj", "-n", namespace, name)
    assert (condition(suspended, "Suspended") or {}).get("status") == "True"


# --- helpers ------------------------------------------------------------------------------------------


def _safe_times(kube: Kube, namespace: str, job: str) -> list[tuple[datetime, str]]:
    """Scheduled times of the Events, for a failure message (no assertions)."""
    out = []
    for event in fired_events(kube, namespace, job):
        raw = ((event["metadata"].get("annotations") or {}).get(SCHEDULED_TIME)) or ""
        try:
            out.append((datetime.fromisoformat(raw), event["metadata"]["name"]))
        except ValueError:
            continue
    return out
