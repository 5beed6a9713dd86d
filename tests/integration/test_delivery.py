"""Delivery modes, acknowledgement, failure policy, parking, run-now and history, on real etcd and real
member processes (killed with SIGKILL where the guarantee is about crashes)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from etcdcron import Cron, Delivery, FailurePolicy, Firing, Job, Overlap, TriggerResult
from etcdcron.decode import decode_inflight
from etcdcron.dispatch import FinalError
from etcdcron.errors import JobNotFoundError
from etcdcron.etcd import EtcdClient
from etcdcron.keys import Keys, range_end
from eventually import eventually, eventually_async

SCRIPT = Path(__file__).with_name("scripted_member.py")


def scripted(endpoint: str, prefix: str, member_id: str, mode: str, record: Path) -> subprocess.Popen[str]:
    member = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--endpoint", endpoint, "--prefix", prefix, "--member-id", member_id,
         "--mode", mode, "--record", str(record)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert member.stdout is not None and member.stdout.readline().strip() == "ready"
    return member


def attempts(record: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


async def unsettled(endpoint: str, prefix: str) -> list[Any]:
    keys = Keys(prefix)
    root = f"{prefix}/inflight/".encode()
    async with EtcdClient([endpoint]) as client:
        response = await client.range(root, range_end(root))
    return (
        [decode_inflight(kv.key, kv.value) for kv in response.kvs if kv.key.startswith(root)] if keys else []
    )


@pytest.mark.parametrize("delivery", list(Delivery), ids=[d.value for d in Delivery])
async def test_kill_9_between_commit_and_acknowledgement(etcd_endpoint, prefix, tmp_path, delivery):
    """At-least-once: the firing is re-delivered exactly once more, with the same key. At-most-once: never."""
    record = tmp_path / "attempts.jsonl"
    crashing = scripted(etcd_endpoint, prefix, "a", "hang", record)
    try:
        async with Cron(endpoints=[etcd_endpoint], prefix=prefix) as admin:
            await admin.add_job(Job(name="once", schedule="* * * * * *", max_runs=1, delivery=delivery))
        eventually(lambda: attempts(record), 20, "the first delivery")
        crashing.kill()
        crashing.wait()
    finally:
        crashing.kill()
    taking_over = scripted(etcd_endpoint, prefix, "b", "ok", record)
    try:
        if delivery is Delivery.AT_LEAST_ONCE:
            eventually(lambda: len(attempts(record)) >= 2, 30, "the re-delivery")
            await eventually_async(lambda: _none(unsettled(etcd_endpoint, prefix)), 20, "the acknowledgement")
            first, again = attempts(record)
            assert (first["member"], again["member"]) == ("a", "b")
            assert again["key"] == first["key"] and again["redelivery"] and not first["redelivery"]
        else:
            await asyncio.sleep(4)  # b owns every partition by now: it must deliver nothing
            assert len(attempts(record)) == 1
            assert await unsettled(etcd_endpoint, prefix) == []
    finally:
        taking_over.terminate()
        taking_over.wait(30)
    assert len(attempts(record)) == (2 if delivery is Delivery.AT_LEAST_ONCE else 1)


async def test_an_unsettled_firing_of_a_job_replaced_since_is_delivered_as_the_job_is_now(
    etcd_endpoint, prefix, tmp_path
):
    """Its tick was committed (a run): a member taking over delivers it, with the job's current version."""
    record = tmp_path / "attempts.jsonl"
    crashing = scripted(etcd_endpoint, prefix, "a", "hang", record)
    try:
        async with Cron(endpoints=[etcd_endpoint], prefix=prefix) as admin:
            await admin.add_job(Job(name="edited", schedule="* * * * * *", payload=b"v1"))
            eventually(lambda: attempts(record), 20, "the first delivery")
            crashing.kill()
            crashing.wait()
            await admin.add_job(Job(name="edited", schedule="@yearly", payload=b"v2"))  # replaced meanwhile
    finally:
        crashing.kill()
    hung = {a["scheduled"] for a in attempts(record)}
    taking_over = scripted(etcd_endpoint, prefix, "b", "ok", record)
    try:
        await eventually_async(lambda: _none(unsettled(etcd_endpoint, prefix)), 30, "the re-deliveries")
    finally:
        taking_over.terminate()
        taking_over.wait(30)
    again = [a for a in attempts(record) if a["member"] == "b"]
    assert hung <= {a["scheduled"] for a in again}  # not one committed tick lost
    assert all(a["payload"] == "v2" and a["redelivery"] for a in again)


async def _none(pending: Any) -> bool:
    return not await pending


async def test_retries_continue_after_a_takeover(etcd_endpoint, prefix, tmp_path):
    record = tmp_path / "attempts.jsonl"
    failing = scripted(etcd_endpoint, prefix, "a", "fail", record)
    policy = FailurePolicy.constant(timedelta(seconds=3), 5)
    try:
        async with Cron(endpoints=[etcd_endpoint], prefix=prefix) as admin:
            await admin.add_job(Job(name="flaky", schedule="* * * * * *", max_runs=1, failure_policy=policy))

        async def retry_recorded() -> bool:
            return any(r.attempts >= 1 and r.next_attempt_ms for r in await unsettled(etcd_endpoint, prefix))

        await eventually_async(retry_recorded, 20, "the retry state in etcd")
        failing.kill()
        failing.wait()
    finally:
        failing.kill()
    before = len(attempts(record))
    # What etcd says was tried (a loaded machine may let a second attempt start before the kill, unrecorded).
    tried = (await unsettled(etcd_endpoint, prefix))[0].attempts
    assert 1 <= tried <= before
    healthy = scripted(etcd_endpoint, prefix, "b", "ok", record)
    try:
        eventually(lambda: len(attempts(record)) > before, 30, "the retry by the new owner")
        await eventually_async(lambda: _none(unsettled(etcd_endpoint, prefix)), 20, "the acknowledgement")
        async with Cron(endpoints=[etcd_endpoint], prefix=prefix) as admin:
            history = await admin.history("flaky")
    finally:
        healthy.terminate()
        healthy.wait(30)
    retried = attempts(record)[before]
    assert retried["member"] == "b" and retried["attempt"] == tried + 1 and retried["redelivery"]
    assert [(h.result, h.attempts, h.member) for h in history][-1] == ("success", tried + 1, "b")


class Recorder:
    def __init__(self, answers: list[TriggerResult | None]) -> None:
        self.answers = answers
        self.firings: list[Firing] = []

    async def __call__(self, firing: Firing) -> TriggerResult | None:
        self.firings.append(firing)
        return self.answers.pop(0) if self.answers else None


async def test_drop_reports_once_and_records_the_failure(etcd_endpoint, prefix):
    errors: list[Exception] = []
    trigger = Recorder([TriggerResult.FAILED] * 10)
    async with Cron(
        endpoints=[etcd_endpoint], prefix=prefix, trigger=trigger, member_id="m", lease_ttl=2,
        on_error=lambda job, e: errors.append(e),
    ) as cron:  # fmt: skip
        assert cron.member is not None
        await cron.member.wait_settled(20)
        await cron.add_job(
            Job(name="d", schedule="* * * * * *", max_runs=1, failure_policy=FailurePolicy.drop())
        )
        await eventually_async(lambda: _history_results(cron, "d"), 20, "the failure in the history")
        assert len(trigger.firings) == 1 and len(errors) == 1
        assert [(h.result, h.attempts) for h in await cron.history("d")] == [("failed", 1)]


async def test_a_final_error_fails_at_once_and_the_history_says_why(etcd_endpoint, prefix):
    errors: list[Exception] = []
    calls: list[Firing] = []

    async def refuse(firing: Firing) -> None:
        calls.append(firing)
        raise FinalError("422 Unprocessable Entity: spec.x: Invalid value")

    async with Cron(
        endpoints=[etcd_endpoint], prefix=prefix, trigger=refuse, member_id="m", lease_ttl=2,
        on_error=lambda job, e: errors.append(e),
    ) as cron:  # fmt: skip
        assert cron.member is not None
        await cron.member.wait_settled(20)
        policy = FailurePolicy.constant(timedelta(milliseconds=10), 5)
        await cron.add_job(Job(name="f", schedule="* * * * * *", max_runs=1, failure_policy=policy))
        await eventually_async(lambda: _history_results(cron, "f"), 20, "the failure in the history")
        assert len(calls) == 1 and len(errors) == 1, "no retry"
        [entry] = await cron.history("f")
        assert (entry.result, entry.attempts) == ("failed", 1)
        assert entry.error == "422 Unprocessable Entity: spec.x: Invalid value"
        assert entry.document()["error"] == entry.error


async def _parked(endpoint: str, prefix: str) -> bool:
    return [r.parked for r in await unsettled(endpoint, prefix)] == [True]


async def _history_results(cron: Cron, name: str) -> list[str]:
    try:
        return [h.result for h in await cron.history(name)]
    except JobNotFoundError:  # completed, its history not written yet
        return []


async def _results_are(cron: Cron, name: str, expected: list[str]) -> bool:
    return await _history_results(cron, name) == expected  # histories are rewritten every few seconds


async def test_an_undeliverable_firing_is_parked_until_a_consumer_registers(etcd_endpoint, prefix):
    trigger = Recorder([TriggerResult.UNDELIVERABLE])
    async with Cron(
        endpoints=[etcd_endpoint], prefix=prefix, trigger=trigger, member_id="m", lease_ttl=2
    ) as cron:
        assert cron.member is not None
        await cron.member.wait_settled(20)
        await cron.add_job(Job(name="u", schedule="* * * * * *", max_runs=1))
        await eventually_async(lambda: _parked(etcd_endpoint, prefix), 20, "the parked record")
        assert cron.deliverable("other/") == 0
        assert cron.deliverable("default/u") == 1
        await eventually_async(lambda: _none(unsettled(etcd_endpoint, prefix)), 20, "the delivery")
        assert len(trigger.firings) == 2 and trigger.firings[0].key == trigger.firings[1].key
        history = ["undeliverable", "success"]
        await eventually_async(lambda: _results_are(cron, "u", history), 20, "the history")


async def test_run_now_fires_once_per_token_even_when_asked_twice_at_once(etcd_endpoint, prefix, tmp_path):
    trigger = Recorder([])
    async with Cron(
        endpoints=[etcd_endpoint], prefix=prefix, trigger=trigger, member_id="m", lease_ttl=2
    ) as cron:
        assert cron.member is not None
        await cron.member.wait_settled(20)
        await cron.add_job(Job(name="r", schedule="@yearly", payload=b"job"))
        tokens = await asyncio.gather(
            cron.trigger_job("r", token="t-1", payload=b"now"),
            cron.trigger_job("r", token="t-1", payload=b"now"),
        )
        assert tokens == ["t-1", "t-1"]
        await eventually_async(lambda: trigger.firings, 20, "the run-now firing")
        await cron.trigger_job("r", token="t-1")  # a third time, after it ran
        await cron.trigger_job("r", token="t-2")
        await eventually_async(lambda: len(trigger.firings) >= 2, 20, "the second token's firing")
        await eventually_async(lambda: _none(unsettled(etcd_endpoint, prefix)), 20, "the acknowledgements")
        history = await cron.history("r")
    assert [(f.kind, f.token, f.payload, f.run) for f in trigger.firings] == [
        ("manual", "t-1", b"now", 0),
        ("manual", "t-2", b"job", 0),
    ]
    assert trigger.firings[0].key.endswith("/manual/t-1")
    assert [(h.kind, h.result) for h in history] == [("manual", "success")] * 2
    assert (await cron_status(etcd_endpoint, prefix, "r")) == 0  # not counted as runs


async def cron_status(endpoint: str, prefix: str, name: str) -> int:
    async with Cron(endpoints=[endpoint], prefix=prefix) as admin:
        return (await admin.get_job(name)).cursor.runs


async def test_backfill_fires_every_tick_of_the_range_once_even_when_started_twice(etcd_endpoint, prefix):
    trigger = Recorder([])
    member = dict(endpoints=[etcd_endpoint], prefix=prefix, trigger=trigger, member_id="m", lease_ttl=2)
    async with Cron(**member) as cron:  # type: ignore[arg-type]
        assert cron.member is not None
        await cron.member.wait_settled(20)
        await cron.add_job(Job(name="b", schedule="*/10 * * * *"))  # every 10 minutes
        start = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
        end = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)  # 13 ticks, both ends included
        made = await asyncio.gather(
            cron.backfill("b", start, end, rate=20), cron.backfill("b", start, end, 20)
        )
        assert sorted(made) == [False, True]
        await eventually_async(lambda: len(trigger.firings) >= 13, 30, "13 backfilled firings")
        await eventually_async(lambda: _none(unsettled(etcd_endpoint, prefix)), 20, "the acknowledgements")
        assert await cron.backfill("b", start, end) is False  # done: asking again fires nothing more
        await asyncio.sleep(1)
    ticks = [f.scheduled for f in trigger.firings]
    assert ticks == [start + timedelta(minutes=10 * i) for i in range(13)]
    assert {(f.kind, f.run) for f in trigger.firings} == {("backfill", 0)}
    assert trigger.firings[0].key.endswith(f"/{int(start.timestamp() * 1000)}")  # the tick's own key


def test_backfill_from_the_command_line(etcd_endpoint, prefix):
    env = {**os.environ, "ETCDCRON_ENDPOINTS": etcd_endpoint, "ETCDCRON_PREFIX": prefix}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "etcdcron.cli", *args], capture_output=True, text=True, env=env
        )

    assert run("add", "nightly", "--schedule", "@daily").returncode == 0
    rng = ("--from", "2026-01-01T00:00:00Z", "--to", "2026-01-03T00:00:00Z")
    first, second = run("backfill", "nightly", *rng), run("backfill", "nightly", *rng)
    assert json.loads(first.stdout)["new"] is True and json.loads(second.stdout)["new"] is False
    bad = run("backfill", "nightly", "--from", "2026-01-03T00:00:00Z", "--to", "2026-01-01T00:00:00Z")
    assert bad.returncode == 2 and bad.stderr.startswith("etcdcron: error: --to: must be after --from")


class Gate:
    """A trigger whose first firing waits until the test opens the gate."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.calls: list[tuple[int, bool]] = []  # (run, gate open at the call)

    async def __call__(self, firing: Firing) -> None:
        self.calls.append((firing.run, self.open.is_set()))
        if firing.run == 1:
            await self.open.wait()

    def runs(self) -> list[int]:
        return [run for run, _ in self.calls]


@pytest.mark.parametrize("overlap", list(Overlap), ids=[o.value for o in Overlap])
async def test_overlap_decides_what_ticks_do_while_one_is_delivered(etcd_endpoint, prefix, overlap):
    gate = Gate()
    async with Cron(
        endpoints=[etcd_endpoint], prefix=prefix, trigger=gate, member_id="m", lease_ttl=2
    ) as cron:
        assert cron.member is not None
        await cron.member.wait_settled(20)
        await cron.add_job(Job(name="o", schedule="* * * * * *", overlap=overlap))
        if overlap is Overlap.ALLOW:
            await eventually_async(lambda: 2 in gate.runs(), 20, "run 2 while run 1 is delivered")
        elif overlap is Overlap.SKIP:
            await eventually_async(
                lambda: _count(_history_results(cron, "o"), "skipped", 2), 20, "two ticks skipped"
            )
        else:
            await eventually_async(lambda: _due(cron, "o", 3), 20, "run 3 due while run 1 is delivered")
        assert gate.runs() == ([1, 2] if overlap is Overlap.ALLOW else [1])[: len(gate.runs())]
        gate.open.set()
        await eventually_async(lambda: max(gate.runs()) >= 4, 20, "later ticks delivered")
        history = {h.run: h.result for h in await cron.history("o")}
    runs = gate.runs()
    assert runs == sorted(set(runs)) and runs[0] == 1  # in order, none twice
    if overlap is Overlap.WAIT:
        assert runs[:4] == [1, 2, 3, 4]
        assert (2, False) not in gate.calls and (3, False) not in gate.calls  # held until 1 settled
    if overlap is Overlap.SKIP:
        skipped = {run for run, result in history.items() if result == "skipped"}
        assert len(skipped) >= 2 and not skipped & set(runs)
        assert all(history[run] == "success" for run in runs if run in history)


async def _count(results: Any, result: str, n: int) -> bool:
    return (await results).count(result) >= n


async def _due(cron: Cron, name: str, runs: int) -> bool:
    cursor = (await cron.get_job(name)).cursor
    return cursor.runs >= runs and cursor.last_tick_ms <= datetime.now(UTC).timestamp() * 1000


class Buffering(Recorder):
    """A trigger that buffers its firings; its first flush fails (a full disk, a closed pipe)."""

    def __init__(self) -> None:
        super().__init__([])
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        if self.flushes == 1:
            raise OSError("No space left on device")


async def test_a_buffering_trigger_is_acknowledged_only_after_its_flush(etcd_endpoint, prefix):
    trigger = Buffering()
    async with Cron(
        endpoints=[etcd_endpoint], prefix=prefix, trigger=trigger, member_id="m", lease_ttl=2
    ) as cron:
        assert cron.member is not None
        await cron.member.wait_settled(20)
        policy = FailurePolicy.constant(timedelta(milliseconds=200), 3)
        await cron.add_job(Job(name="f", schedule="* * * * * *", max_runs=1, failure_policy=policy))
        await eventually_async(lambda: len(trigger.firings) >= 2, 20, "the retry")
        await eventually_async(lambda: _none(unsettled(etcd_endpoint, prefix)), 20, "the acknowledgement")
    assert [f.attempt for f in trigger.firings] == [1, 2]  # the failed flush failed the first attempt
    assert trigger.flushes == 2
