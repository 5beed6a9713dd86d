"""Hostile entries in etcd never silence the pool, and an unexpected failure takes a member out loudly."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import textwrap
import time
from typing import Any

from etcdcron.cron import Cron
from etcdcron.errors import EtcdCronError
from etcdcron.etcd import EtcdClient
from etcdcron.job import Job
from etcdcron.keys import Keys
from etcdcron.pool import MemberFailure
from etcdcron.pool.jobtable import JobTable
from eventually import eventually

from .firings import add_jobs, assert_exactly_once, everything, job_names, ts, wait_settled

GOOD_JOBS = 20


def poison(keys: Keys, good: bytes) -> dict[bytes, bytes]:
    """Every kind of bad entry issue 7 found, under the jobs prefix."""
    doc = json.loads(good)

    def job_with(name: str, **fields: Any) -> tuple[bytes, bytes]:
        return keys.job(keys.ref("default", name)), json.dumps({**doc, "name": name, **fields}).encode()

    root = keys.jobs_root()
    entries = dict(
        [
            job_with("wrong-retries", failurePolicy={**doc["failurePolicy"], "maxRetries": "3"}),
            job_with("schedule-list", schedule=["@daily"]),
            job_with("schedule-int", schedule=5),
            job_with("bad-zone", timeZone="Mars/Olympus"),
        ]
    )
    entries.update(
        {
            root + b"stray": good,
            root + b"00x7/default/job-000": good,
            root + b"0001/default": good,
            root + b"0002/default/\xff\xfe": good,
            keys.job(keys.ref("default", "not-json")): b"{not json",
            keys.job(keys.ref("default", "a-list")): b"[1, 2]",
            # A valid job's JSON copied to another key: its cursor key would be job-000's.
            keys.job(keys.ref("default", "copy-of-job-000")): good,
        }
    )
    return entries


async def test_a_poisoned_store_never_silences_the_pool(pool, etcd_endpoint, prefix):
    keys = Keys(prefix)
    await add_jobs(etcd_endpoint, prefix, GOOD_JOBS)
    members = [pool("p0"), pool("p1")]
    await wait_settled(etcd_endpoint, prefix, ["p0", "p1"])
    async with EtcdClient([etcd_endpoint]) as client:
        good = (await client.get(keys.job(keys.ref("default", "job-000")))).value
        bad = poison(keys, good)
        start = time.time()
        for key, value in bad.items():
            await client.put(key, value)
        await asyncio.sleep(2)
        # A job added after the poisoning fires; a member joining afterwards takes its share.
        await add_jobs(etcd_endpoint, prefix, 1, first=GOOD_JOBS)
        members.append(pool("p2"))
        await wait_settled(etcd_endpoint, prefix, ["p0", "p1", "p2"])
        eventually(
            lambda: any(f["name"] == f"job-{GOOD_JOBS:03d}" for f in everything(members)), 20, "new job"
        )
        eventually(lambda: bool(members[2].firings), 20, "the newcomer to fire")
        await asyncio.sleep(2)
        end = time.time() - 1.5
        for m in members:
            assert m.terminate() == 0, m.log()
        for key, value in bad.items():  # never deleted
            stored = await client.get(key)
            assert stored is not None and stored.value == value, key
    firings = everything(members)
    assert_exactly_once(firings, start, end, job_names(GOOD_JOBS))
    for name in job_names(GOOD_JOBS):  # never a pause: consecutive firings at most 2 s apart
        fired = sorted(ts(f["fired"]) for f in firings if f["name"] == name and ts(f["scheduled"]) >= start)
        gap = max(b - a for a, b in itertools.pairwise(fired))
        assert gap <= 2, f"{name} stopped for {gap:.1f}s"
    # Each bad entry is reported (once per version) by the member owning it, never once per retry.
    logs = "".join(m.log(limit=None) for m in members)
    for key in bad:
        text = key.decode("utf-8", "backslashreplace")
        reports = logs.count(f"skipping bad entry {text}:")
        assert 1 <= reports <= len(members), (text, reports)


async def test_an_unexpected_failure_takes_the_member_out_of_the_pool(etcd_endpoint, prefix, monkeypatch):
    def broken(self: JobTable, batch: object) -> None:
        raise RuntimeError("boom")

    errors: list[Exception] = []

    async def trigger(_: object) -> None:
        pass

    async with Cron(
        endpoints=[etcd_endpoint],
        prefix=prefix,
        trigger=trigger,
        member_id="doomed",
        lease_ttl=30,
        on_error=lambda job, e: errors.append(e),
    ) as cron:
        assert cron.member is not None
        await cron.member.wait_settled(20)
        monkeypatch.setattr(JobTable, "apply", broken)
        await cron.add_job(Job(name="any", schedule="@daily"))
        await asyncio.wait_for(cron.member.done.wait(), 20)
        assert isinstance(cron.failure, MemberFailure)
        assert str(cron.failure) == "control loop failed: RuntimeError: boom"
        assert errors and errors[-1] is cron.failure
        # It left at once: its member key and every partition key are gone, long before its 30 s lease.
        keys = Keys(prefix)
        async with EtcdClient([etcd_endpoint]) as client:
            assert await client.get(keys.member("doomed")) is None
            held = await client.range(keys.partitions_root(), keys.partitions_root() + b"\xff")
            assert not held.kvs


def test_etcdcron_member_exits_non_zero_with_one_line_when_a_loop_fails(etcd_endpoint, prefix):
    script = textwrap.dedent(
        f"""
        import sys
        from etcdcron import cli
        from etcdcron.pool.jobtable import JobTable

        def broken(self, batch):
            raise RuntimeError("boom")

        JobTable.apply = broken
        sys.exit(cli.main(["member", "--endpoints", {etcd_endpoint!r}, "--prefix", {prefix!r},
                           "--member-id", "loud", "--lease-ttl", "30"]))
        """
    )
    member = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        keys = Keys(prefix)

        async def joined() -> bool:
            async with EtcdClient([etcd_endpoint]) as client:
                return await client.get(keys.member("loud")) is not None

        eventually(lambda: asyncio.run(joined()), 30, "the member to join")
        added = subprocess.run(
            [sys.executable, "-m", "etcdcron.cli", "add", "x", "--schedule", "@daily", "--prefix", prefix,
             "--endpoints", etcd_endpoint],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        _, stderr = member.communicate(timeout=60)
    finally:
        if member.poll() is None:
            member.kill()
    assert member.returncode == 1
    assert stderr.strip().splitlines()[-1] == "etcdcron: error: control loop failed: RuntimeError: boom"
    assert not asyncio.run(joined()), "the member key outlived the member"


def test_member_failure_is_an_etcdcron_error() -> None:
    assert issubclass(MemberFailure, EtcdCronError)
