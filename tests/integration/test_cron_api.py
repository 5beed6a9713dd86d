"""The seed's features through the Python API, against a real etcd and real pool members."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest

from etcdcron import ValidationError
from etcdcron.cron import Cron
from etcdcron.errors import JobNotFoundError
from etcdcron.firing import Firing
from etcdcron.job import CatchUp, Job
from etcdcron.keys import Keys
from etcdcron.policy import RetryPolicy


class Recorder:
    """A trigger that records firings (optionally failing) and lets a test await a condition."""

    def __init__(self, fail_times: int = 0) -> None:
        self.firings: list[Firing] = []
        self.attempts = 0
        self.fail_times = fail_times
        self.changed = asyncio.Event()

    async def __call__(self, firing: Firing) -> None:
        self.attempts += 1
        if self.attempts <= self.fail_times:
            raise RuntimeError(f"boom {self.attempts}")
        self.firings.append(firing)
        self.changed.set()

    def of(self, name: str) -> list[Firing]:
        return [f for f in self.firings if f.job.job.name == name]

    async def wait(self, condition: Callable[[], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("timed out waiting for firings")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)


@pytest.fixture
async def cron_factory(etcd_endpoint: str, prefix: str) -> AsyncIterator[Callable[..., Cron]]:
    crons: list[Cron] = []

    def make(**kwargs: object) -> Cron:
        kwargs.setdefault("endpoints", [etcd_endpoint])
        kwargs.setdefault("prefix", prefix)
        kwargs.setdefault("lease_ttl", 2)
        cron = Cron(**kwargs)  # type: ignore[arg-type]
        crons.append(cron)
        return cron

    yield make
    for cron in crons:
        with contextlib.suppress(Exception):
            await cron.__aexit__(None, None, None)


async def test_add_get_list_delete_and_fire(cron_factory):
    rec = Recorder()
    async with cron_factory(namespace="team-a", trigger=rec, member_id="a1") as cron:
        await cron.member.wait_settled(10)
        status = await cron.add_job(Job(name="job0", schedule="* * * * * *", type="t", payload=b"hello"))
        assert status.stored.job.namespace == "team-a"
        assert status.cursor.runs == 0
        await rec.wait(lambda: len(rec.of("job0")) >= 2)
        first, second = rec.of("job0")[:2]
        assert (first.run, second.run) == (1, 2)
        assert second.scheduled - first.scheduled == timedelta(seconds=1)
        assert first.scheduled.microsecond == 0
        assert first.job.job.payload == b"hello" and first.job.job.type == "t"
        assert first.key != second.key and first.key.startswith("team-a/job0/")
        assert 0 <= (first.fired - first.scheduled).total_seconds() < 0.5
        got = await cron.get_job("job0")
        assert got.cursor.runs >= 2
        assert [s.stored.job.name for s in await cron.list_jobs()] == ["job0"]
        assert await cron.delete_job("job0") is True
        assert await cron.delete_job("job0") is False
        with pytest.raises(JobNotFoundError):
            await cron.get_job("job0")
        count = len(rec.of("job0"))
        await asyncio.sleep(1.5)
        assert len(rec.of("job0")) == count, "a deleted job kept firing"


async def test_tenants_never_see_each_other(cron_factory):
    a = cron_factory(namespace="test")
    b = cron_factory(namespace="test-1")
    async with a, b:
        await a.add_job(Job(name="shared-name", schedule="@daily", payload=b"a"))
        await b.add_job(Job(name="shared-name", schedule="@hourly", payload=b"b"))
        await b.add_job(Job(name="only-b", schedule="@hourly"))
        assert [s.stored.job.name for s in await a.list_jobs()] == ["shared-name"]
        assert (await a.get_job("shared-name")).stored.job.payload == b"a"
        with pytest.raises(JobNotFoundError):
            await a.get_job("only-b")
        assert await a.delete_job("only-b") is False
        assert (await b.get_job("only-b")).stored.job.name == "only-b"
        with pytest.raises(ValidationError) as err:
            await a.add_job(Job(name="x", schedule="@daily", namespace="test-1"))
        assert err.value.field == "namespace"


async def test_max_runs_completes_and_removes_the_job(cron_factory):
    rec = Recorder()
    async with cron_factory(trigger=rec, member_id="m") as cron:
        await cron.member.wait_settled(10)
        await cron.add_job(Job(name="thrice", schedule="* * * * * *", max_runs=3))
        await rec.wait(lambda: len(rec.of("thrice")) >= 3)
        await asyncio.sleep(1.5)
        runs = rec.of("thrice")
        assert [f.run for f in runs] == [1, 2, 3]
        assert [f.last for f in runs] == [False, False, True]
        with pytest.raises(JobNotFoundError):
            await cron.get_job("thrice")


async def test_ttl_deletes_job_and_state(cron_factory, etcd_client, prefix):
    rec = Recorder()
    async with cron_factory(trigger=rec, member_id="m") as cron:
        await cron.member.wait_settled(10)
        await cron.add_job(Job(name="brief", schedule="* * * * * *", ttl=timedelta(seconds=2)))
        await rec.wait(lambda: len(rec.of("brief")) >= 1)
        await asyncio.sleep(3.5)
        with pytest.raises(JobNotFoundError):
            await cron.get_job("brief")
        keys = Keys(prefix)
        ref = keys.ref("default", "brief")
        assert await etcd_client.get(keys.cursor(ref)) is None, "the job's state outlived its TTL"
        count = len(rec.of("brief"))
        assert 1 <= count <= 3
        await asyncio.sleep(1.2)
        assert len(rec.of("brief")) == count


async def test_delayed_start_fires_nothing_before_it(cron_factory):
    rec = Recorder()
    async with cron_factory(trigger=rec, member_id="m") as cron:
        await cron.member.wait_settled(10)
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
        await cron.add_job(Job(name="later", schedule="* * * * * *", start_at=start))
        await rec.wait(lambda: len(rec.of("later")) >= 1, timeout=8)
        assert rec.of("later")[0].scheduled == start  # a tick exactly at the start fires


async def test_every_is_anchored_to_the_start(cron_factory):
    rec = Recorder()
    async with cron_factory(trigger=rec, member_id="m") as cron:
        await cron.member.wait_settled(10)
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)  # ticks are whole seconds
        await cron.add_job(Job(name="every", schedule="@every 2s", start_at=start))
        await rec.wait(lambda: len(rec.of("every")) >= 2, timeout=10)
        ticks = [f.scheduled for f in rec.of("every")[:2]]
        assert ticks == [start + timedelta(seconds=2), start + timedelta(seconds=4)]


async def test_failing_trigger_is_retried_then_reported(cron_factory):
    rec = Recorder(fail_times=10**6)
    errors: list[tuple[str, str]] = []

    def on_error(job: Job | None, error: Exception) -> None:
        errors.append((job.name if job else "?", str(error)))
        rec.changed.set()

    async with cron_factory(trigger=rec, on_error=on_error, member_id="m") as cron:
        await cron.member.wait_settled(10)
        retry = RetryPolicy(retries=2, interval=timedelta(milliseconds=200))
        await cron.add_job(Job(name="flaky", schedule="* * * * * *", max_runs=1, failure_policy=retry))
        await rec.wait(lambda: bool(errors), timeout=8)
        assert errors[0][0] == "flaky"
        assert rec.attempts == 3  # the first try and two retries, then the error handler, nothing more


async def test_catch_up_policies_after_an_outage(cron_factory, etcd_endpoint, prefix):
    admin = cron_factory()
    async with admin:
        for policy in CatchUp:
            await admin.add_job(Job(name=f"cu-{policy.value}", schedule="* * * * * *", catch_up=policy))
        await asyncio.sleep(4.2)  # no member: every job misses about four ticks
        rec = Recorder()
        joined = datetime.now(UTC)  # every tick before this was missed: no member was alive
        async with cron_factory(trigger=rec, member_id="late") as member:
            await member.member.wait_settled(10)
            await rec.wait(lambda: all(rec.of(f"cu-{p.value}") for p in CatchUp))
        caught = {p: [f for f in rec.of(f"cu-{p.value}") if f.scheduled < joined] for p in CatchUp}
        assert len(caught[CatchUp.ALL]) >= 4  # every missed tick within the deadline
        assert len(caught[CatchUp.LATEST]) <= 1  # the newest due tick only (maybe one after ``joined``)
        # ``none`` fires a tick only if it is at most a second late when planned (after ``joined``).
        assert all(f.scheduled >= joined - timedelta(seconds=1) for f in caught[CatchUp.NONE])
        missed = {p: (await admin.get_job(f"cu-{p.value}")).cursor.missed for p in CatchUp}
        assert missed[CatchUp.ALL] == 0
        assert missed[CatchUp.LATEST] >= 3
        assert missed[CatchUp.NONE] >= 3


async def test_a_bad_stored_job_never_stops_the_pool(cron_factory, etcd_client, prefix):
    rec = Recorder()
    errors: list[Exception] = []
    keys = Keys(prefix)
    ref = keys.ref("default", "corrupt")
    await etcd_client.put(keys.job(ref), b'{"not": "a job"}')
    async with cron_factory(trigger=rec, on_error=lambda job, e: errors.append(e), member_id="m") as cron:
        await cron.member.wait_settled(10)
        await cron.add_job(Job(name="healthy", schedule="* * * * * *"))
        await rec.wait(lambda: len(rec.of("healthy")) >= 1)
        assert errors
        assert await etcd_client.get(keys.job(ref)) is not None, "a stored job was dropped"


async def test_invalid_jobs_name_the_field():
    cases = {
        "name": dict(name="Bad_Name", schedule="@daily"),
        "schedule": dict(name="ok", schedule="61 * * * *"),
        "time_zone": dict(name="ok", schedule="@daily", time_zone="Mars/Olympus"),
        "max_runs": dict(name="ok", schedule="@daily", max_runs=0),
        "ttl": dict(name="ok", schedule="@daily", ttl=timedelta(0)),
        "namespace": dict(name="ok", schedule="@daily", namespace="Team_A"),
        "payload": dict(name="ok", schedule="@daily", payload=b"x" * (256 * 1024 + 1)),
        "start_at": dict(name="ok", schedule="@daily", start_at=datetime(2030, 1, 1)),
    }
    for field, kwargs in cases.items():
        with pytest.raises(ValidationError) as err:
            Job(**kwargs)  # type: ignore[arg-type]
        assert err.value.field == field, (field, err.value)


async def test_unreachable_etcd_raises_a_clear_error():
    from etcdcron.errors import EtcdUnavailableError
    from etcdcron.localetcd import free_port

    async with Cron(endpoints=[f"127.0.0.1:{free_port()}"], timeout=1) as cron:
        with pytest.raises(EtcdUnavailableError):
            await cron.list_jobs()


async def test_replacing_a_job_just_before_a_tick_never_fires_that_tick_twice(cron_factory):
    """Commits go out ahead of their tick: a replacement landing in between must not fire the tick again."""
    rec = Recorder()
    async with cron_factory(trigger=rec, member_id="m") as cron:
        await cron.member.wait_settled(10)
        await cron.add_job(Job(name="edited", schedule="* * * * * *"))
        await rec.wait(lambda: len(rec.of("edited")) >= 1)
        for lead in (0.12, 0.08, 0.04, 0.01, 0.2):
            now = time.time()
            await asyncio.sleep(1 - now % 1 - lead)  # ``lead`` seconds before the next whole second
            await cron.add_job(Job(name="edited", schedule="* * * * * *"))
        count = len(rec.of("edited"))
        await rec.wait(lambda: len(rec.of("edited")) >= count + 2)
    ticks = [f.scheduled for f in rec.of("edited")]
    assert len(ticks) == len(set(ticks)), sorted(ticks)
