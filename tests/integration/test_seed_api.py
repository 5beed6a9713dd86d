"""The seed peer's API (issue 12): add if not exists, delete by name prefix, jitter. Real etcd, real pool."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from etcdcron.errors import JobExistsError, ValidationError
from etcdcron.job import Job, jitter_offset_ms
from etcdcron.keys import Keys

from .test_cron_api import Recorder, cron_factory  # noqa: F401  (the fixture)


async def test_add_if_not_exists_two_concurrent_calls_exactly_one_wins(cron_factory):  # noqa: F811
    # Two clients, each with its own connection, racing for the same name, many rounds.
    a, b = cron_factory(namespace="race"), cron_factory(namespace="race")
    async with a, b:
        for i in range(20):
            name = f"job-{i}"
            results = await asyncio.gather(
                a.add_job(Job(name=name, schedule="@daily", payload=b"a"), if_not_exists=True),
                b.add_job(Job(name=name, schedule="@daily", payload=b"b"), if_not_exists=True),
                return_exceptions=True,
            )
            won = [r for r in results if not isinstance(r, BaseException)]
            lost = [r for r in results if isinstance(r, BaseException)]
            assert len(won) == 1 and len(lost) == 1, results
            assert isinstance(lost[0], JobExistsError)
            assert (lost[0].namespace, lost[0].name) == ("race", name)
            stored = await a.get_job(name)
            assert stored.stored.id == won[0].stored.id  # the winner's version is the one stored
            assert stored.stored.job.payload == won[0].stored.job.payload


async def test_add_if_not_exists_keeps_the_job_and_its_run_state(cron_factory, etcd_client, prefix):  # noqa: F811
    async with cron_factory() as cron:
        first = await cron.add_job(Job(name="keep", schedule="@hourly", payload=b"v1"), if_not_exists=True)
        with pytest.raises(JobExistsError, match="job default/keep already exists"):
            await cron.add_job(
                Job(name="keep", schedule="@daily", payload=b"v2", ttl=timedelta(hours=1)), if_not_exists=True
            )
        got = await cron.get_job("keep")
        assert got.stored.id == first.stored.id and got.stored.job.payload == b"v1" and got.stored.lease == 0
        # Without the flag, add still replaces.
        replaced = await cron.add_job(Job(name="keep", schedule="@daily", payload=b"v3"))
        assert replaced.stored.id != first.stored.id
        # A deleted job can be created again, and a stray cursor left behind does not carry over.
        assert await cron.delete_job("keep")
        keys = Keys(prefix)
        await etcd_client.put(keys.cursor(keys.ref("default", "keep")), b'{"jobId":"x","runs":7}')
        again = await cron.add_job(Job(name="keep", schedule="@daily"), if_not_exists=True)
        assert again.cursor.runs == 0
        assert await etcd_client.get(keys.cursor(keys.ref("default", "keep"))) is None


async def test_add_if_not_exists_with_a_ttl_revokes_the_lease_it_did_not_use(cron_factory, etcd_client):  # noqa: F811
    async with cron_factory() as cron:
        await cron.add_job(Job(name="held", schedule="@daily"), if_not_exists=True)
        with pytest.raises(JobExistsError):
            await cron.add_job(
                Job(name="held", schedule="@daily", ttl=timedelta(hours=1)), if_not_exists=True
            )
        got = await cron.get_job("held")
        assert got.stored.lease == 0 and got.stored.job.ttl is None


async def test_delete_prefix_deletes_matching_jobs_cursors_and_leases_of_one_tenant_only(
    cron_factory,  # noqa: F811
    etcd_client,
    prefix,
):
    keys = Keys(prefix)
    t, t1 = cron_factory(namespace="t"), cron_factory(namespace="t-1")
    names = ["job-1", "job-10", "job-1.a", "job-2", "jo", "other"]
    async with t, t1:
        for cron in (t, t1):
            for name in names:
                ttl = timedelta(hours=1) if name == "job-10" else None
                await cron.add_job(Job(name=name, schedule="@daily", ttl=ttl), if_not_exists=True)
                ref = keys.ref(cron.namespace, name)
                await etcd_client.put(keys.cursor(ref), b'{"jobId":"x"}')  # run state to be removed too
        lease = (await t.get_job("job-10")).stored.lease
        assert lease
        assert await t.delete_prefix("job-1") == 3  # job-1, job-10, job-1.a: a prefix is a prefix
        assert [s.stored.job.name for s in await t.list_jobs()] == ["jo", "job-2", "other"]
        assert [s.stored.job.name for s in await t1.list_jobs()] == sorted(names)  # tenant t-1 untouched
        for name in names:
            for tenant in ("t", "t-1"):
                cursor = await etcd_client.get(keys.cursor(keys.ref(tenant, name)))
                gone = tenant == "t" and name.startswith("job-1")
                assert (cursor is None) == gone, (tenant, name)
        assert await etcd_client.keep_alive_once(lease) <= 0  # revoked with its job
        assert (await t1.get_job("job-10")).stored.lease  # t-1's own job-10 keeps its lease
        assert await t.delete_prefix("job-1") == 0  # nothing left: zero, not an error


async def test_delete_prefix_spans_every_partition(cron_factory):  # noqa: F811
    async with cron_factory(namespace="bulk") as cron:
        names = [f"n-{i:03d}" for i in range(400)]  # 400 jobs over the 256 partitions: several transactions
        for start in range(0, len(names), 50):
            await asyncio.gather(
                *(cron.add_job(Job(name=n, schedule="@daily")) for n in names[start : start + 50])
            )
        await cron.add_job(Job(name="keep", schedule="@daily"))
        assert await cron.delete_prefix("n-") == 400
        assert [s.stored.job.name for s in await cron.list_jobs()] == ["keep"]


_NAME_CHARS = "(lowercase letters, digits, '-' and '.', starting with a letter or digit)"


@pytest.mark.parametrize(
    ("name_prefix", "reason"),
    [
        ("", "must not be empty (it would match every job of the namespace)"),
        (
            "Job",
            f"'Job' does not start a job name {_NAME_CHARS}",
        ),
        (
            "-x",
            f"'-x' does not start a job name {_NAME_CHARS}",
        ),
        (
            "a/b",
            f"'a/b' does not start a job name {_NAME_CHARS}",
        ),
        ("x" * 254, "must be at most 253 characters, got 254"),
    ],
)
async def test_delete_prefix_validates_the_prefix(cron_factory, name_prefix, reason):  # noqa: F811
    async with cron_factory() as cron:
        with pytest.raises(ValidationError) as info:
            await cron.delete_prefix(name_prefix)
        assert (info.value.field, info.value.reason) == ("name_prefix", reason)


def _name_with_offset(lo: int, hi: int, jitter_ms: int = 1000) -> str:
    return next(
        n
        for i in range(1000)
        for n in [f"spread-{i}"]
        if lo <= jitter_offset_ms("default", n, jitter_ms) < hi
    )


async def test_a_jittered_job_fires_each_tick_once_at_its_offset_never_early(cron_factory):  # noqa: F811
    rec = Recorder()
    name = _name_with_offset(500, 900)  # far beyond the 150 ms a commit goes out ahead of its moment
    offset = timedelta(milliseconds=jitter_offset_ms("default", name, 1000))
    async with cron_factory(trigger=rec, member_id="m") as cron:
        await cron.member.wait_settled(10)
        await cron.add_job(Job(name=name, schedule="* * * * * *", jitter=timedelta(seconds=1)))
        await rec.wait(lambda: len(rec.of(name)) >= 3)
        firings = rec.of(name)[:3]
        assert [f.run for f in firings] == [1, 2, 3]
        for f in firings:
            assert f.scheduled.microsecond == 0  # the nominal tick, as reported and as keyed
            assert f.due == f.scheduled + offset
            # Never before its due time (the clock read by the delivery may lag the timer by a millisecond).
            assert f.fired >= f.due - timedelta(milliseconds=5), (f.fired, f.due)
        assert len({f.key for f in firings}) == 3
        assert (await cron.get_job(name)).cursor.last_tick_ms is not None
