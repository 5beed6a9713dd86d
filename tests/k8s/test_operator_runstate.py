"""Run state through suspend, edits, completion, restarts and a frozen former leader (issue 9: 1, 5, 6; and
the leader's hand-over on SIGTERM)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from helpers import (
    condition,
    create,
    events_of,
    fetch,
    get,
    leader_of,
    patch_spec,
    runs_of,
    ts,
    wait_for,
)

from etcdcron.etcd import EtcdClient
from etcdcron.k8s_resource import Envelope
from etcdcron.keys import Keys
from etcdcron.store import JobStore

pytestmark = pytest.mark.k8s


def stable(what: str, read: Any, seconds: float = 3.0) -> Any:
    """``read()`` once it has not changed for ``seconds`` (within a deadline)."""
    deadline = time.monotonic() + 60
    value, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return value
    raise AssertionError(f"{what} kept changing: {value!r}")


def test_suspend_and_resume_keep_the_exact_run_numbers(operators, crs, k8s_api, k8s_namespace):
    create(crs, k8s_namespace, "pulse", {"schedule": "* * * * * *"})
    wait_for("3 runs", lambda: len(events_of(k8s_api, k8s_namespace, "pulse")) >= 3)
    patch_spec(crs, k8s_namespace, "pulse", {"suspend": True})
    wait_for(
        "Suspended",
        lambda: condition(get(crs, k8s_namespace, "pulse"), "Suspended").get("status") == "True",
    )
    before = stable("runs while suspended", lambda: runs_of(k8s_api, k8s_namespace, "pulse"))
    assert before == list(range(1, len(before) + 1))
    obj = wait_for(
        "status caught up",
        lambda: (o := get(crs, k8s_namespace, "pulse"))["status"]["runCount"] == len(before) and o,
    )
    assert obj["status"].get("nextScheduleTime") is None
    patch_spec(crs, k8s_namespace, "pulse", {"suspend": False})
    wait_for("3 more runs", lambda: len(events_of(k8s_api, k8s_namespace, "pulse")) >= len(before) + 3)
    runs = runs_of(k8s_api, k8s_namespace, "pulse")
    assert runs == list(range(1, len(runs) + 1)), "a run number repeated or was skipped"
    ticks = [
        int(ts(e.metadata.annotations["etcdcron.io/scheduled-time"]))
        for e in events_of(k8s_api, k8s_namespace, "pulse")
    ]
    assert len(ticks) == len(set(ticks))


def test_max_runs_is_a_ceiling_through_suspend_edit_completion_and_restart(
    operators, start_operator, crs, k8s_api, k8s_namespace, operator_etcd
):
    create(crs, k8s_namespace, "six", {"schedule": "* * * * * *", "maxRuns": 6})
    wait_for("2 runs", lambda: len(events_of(k8s_api, k8s_namespace, "six")) >= 2)
    patch_spec(crs, k8s_namespace, "six", {"suspend": True})
    wait_for(
        "Suspended", lambda: condition(get(crs, k8s_namespace, "six"), "Suspended").get("status") == "True"
    )
    patch_spec(crs, k8s_namespace, "six", {"suspend": False})
    wait_for("4 runs", lambda: len(events_of(k8s_api, k8s_namespace, "six")) >= 4)
    patch_spec(crs, k8s_namespace, "six", {"schedule": "*/1 * * * * *"})  # an edit while running
    obj = wait_for(
        "Complete",
        lambda: (
            (o := get(crs, k8s_namespace, "six")) and condition(o, "Complete").get("status") == "True" and o
        ),
        timeout=40,
    )
    # The final state is written at completion: the 6th run, its tick, its Event, no NEXT.
    final = max(
        events_of(k8s_api, k8s_namespace, "six"), key=lambda e: int(e.metadata.annotations["etcdcron.io/run"])
    )
    assert final.metadata.annotations["etcdcron.io/run"] == "6"
    status = obj["status"]
    assert status["runCount"] == 6 and status["remainingRuns"] == 0 and status.get("nextScheduleTime") is None
    assert status["lastScheduleTime"] == final.metadata.annotations["etcdcron.io/scheduled-time"]
    assert status["lastDispatched"]["name"] == final.metadata.name
    # Every later path keeps the ceiling: suspend and resume, an edit, a restart of the leader.
    patch_spec(crs, k8s_namespace, "six", {"suspend": True})
    patch_spec(crs, k8s_namespace, "six", {"suspend": False})
    patch_spec(crs, k8s_namespace, "six", {"schedule": "*/2 * * * * *"})
    leader = wait_for("a leader", lambda: leader_of(operator_etcd.endpoint))
    victim = next(op for op in operators if op.member_id == leader)
    victim.kill()
    operators.remove(victim)
    operators.append(start_operator(f"{victim.member_id}-again"))
    wait_for("a new leader", lambda: leader_of(operator_etcd.endpoint) not in ("", leader), timeout=30)
    wait_for(
        "the last generation observed",
        lambda: (
            (o := get(crs, k8s_namespace, "six"))["status"]["observedGeneration"]
            == o["metadata"]["generation"]
        ),
        timeout=30,
    )
    assert stable("runs", lambda: runs_of(k8s_api, k8s_namespace, "six"), 4) == [1, 2, 3, 4, 5, 6]
    assert get(crs, k8s_namespace, "six")["status"]["runCount"] == 6


def test_next_is_never_in_the_past(operators, crs, k8s_namespace):
    create(crs, k8s_namespace, "fast", {"schedule": "* * * * * *"})
    create(crs, k8s_namespace, "slow", {"schedule": "*/3 * * * * *"})
    wait_for("status", lambda: (get(crs, k8s_namespace, "slow").get("status") or {}).get("nextScheduleTime"))
    late: list[tuple[str, float]] = []
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        for name in ("fast", "slow"):
            shown = (get(crs, k8s_namespace, name).get("status") or {}).get("nextScheduleTime")
            if shown and ts(shown) < time.time() - 1.0:  # 1 s: a status write's own latency on a busy machine
                late.append((name, time.time() - ts(shown)))
        time.sleep(0.2)
    assert not late, late


def stored_generation(endpoint: str, namespace: str, name: str) -> int:
    async def read() -> int:
        async with EtcdClient([endpoint]) as c:
            status = await JobStore(c, Keys("/operator")).get(namespace, name)
            return Envelope.from_bytes(status.stored.job.payload).generation

    return asyncio.run(read())


def test_a_thawed_former_leader_cannot_overwrite_a_newer_generation(
    operators, crs, k8s_api, k8s_namespace, operator_etcd
):
    create(crs, k8s_namespace, "fenced", {"schedule": "* * * * * *"})
    wait_for("firing", lambda: len(events_of(k8s_api, k8s_namespace, "fenced")) >= 2)
    leader = wait_for("a leader", lambda: leader_of(operator_etcd.endpoint))
    frozen = next(op for op in operators if op.member_id == leader)
    frozen.freeze()
    try:
        wait_for("another leader", lambda: leader_of(operator_etcd.endpoint) not in ("", leader), timeout=30)
        patch_spec(crs, k8s_namespace, "fenced", {"schedule": "*/2 * * * * *"})
        wait_for(
            "generation 2 mirrored",
            lambda: stored_generation(operator_etcd.endpoint, k8s_namespace, "fenced") == 2,
        )
    finally:
        frozen.thaw()
    # Thawed, it still holds generation 1 in memory; whatever it tries, etcd keeps generation 2.
    stable("stored generation", lambda: stored_generation(operator_etcd.endpoint, k8s_namespace, "fenced"), 4)
    assert stored_generation(operator_etcd.endpoint, k8s_namespace, "fenced") == 2
    assert "lost the reconciler lease" in frozen.text() or "no longer the leader" in frozen.text(), (
        frozen.tail()
    )
    runs = runs_of(k8s_api, k8s_namespace, "fenced")
    assert runs == list(range(1, len(runs) + 1))


def test_sigterm_hands_leadership_over_at_once(start_operator, operator_etcd):
    # A 30 s lease: without handing over, the other replica would wait for it to run out.
    first = start_operator("handover-a", prefix="/handover", lease_ttl=30)
    wait_for("a leader", lambda: leader_of(operator_etcd.endpoint, "/handover") == "handover-a", timeout=30)
    second = start_operator("handover-b", prefix="/handover", lease_ttl=30)
    wait_for("b ready", lambda: fetch(second.health_port, "/readyz")[0] == 200, timeout=30)
    started = time.monotonic()
    assert first.stop() == 0, first.tail()
    wait_for("b leads", lambda: leader_of(operator_etcd.endpoint, "/handover") == "handover-b", timeout=25)
    assert time.monotonic() - started < 20, "waited for the lease instead of a hand-over"
    assert "resigned as the leader" in first.text(), first.tail()
    assert second.stop() == 0
