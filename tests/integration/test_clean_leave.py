"""A clean leave (SIGTERM) loses nothing: commits in flight land and are delivered before the lease goes."""

from __future__ import annotations

import asyncio
import collections
import time

from etcdcron.etcd import EtcdClient
from etcdcron.keys import Keys
from etcdcron.store import JobStore
from eventually import eventually

from .firings import add_jobs, assert_exactly_once, everything, job_names, wait_settled


async def sleep_until_just_after_a_second(offset: float) -> None:
    """Commits are sent at the whole second: ``offset`` later they are in flight."""
    now = time.time()
    await asyncio.sleep(1 - (now % 1) + offset)


async def test_sigterm_delivers_every_committed_firing(pool, etcd_endpoint, prefix):
    jobs = 200
    await add_jobs(etcd_endpoint, prefix, jobs)
    printed: collections.Counter[str] = collections.Counter()
    for round_, offset in enumerate((0.005, 0.02, 0.05)):
        member = pool(f"leaver-{round_}")
        await wait_settled(etcd_endpoint, prefix, [f"leaver-{round_}"])
        eventually(lambda m=member: len(m.firings) >= 2 * jobs, 30, "two rounds of firings")
        await sleep_until_just_after_a_second(offset)
        assert member.terminate() == 0, member.log()
        printed.update(f["name"] for f in member.firings)
    async with EtcdClient([etcd_endpoint]) as client:
        listing = await JobStore(client, Keys(prefix)).list("default")
    runs = {s.stored.job.name: s.cursor.runs for s in listing.jobs}
    lost = {name: runs[name] - printed[name] for name in runs if runs[name] != printed[name]}
    assert not lost, f"{len(lost)} jobs committed runs never printed, e.g. {list(lost.items())[:5]}"


async def test_a_rolling_restart_by_sigterm_misses_and_doubles_nothing(pool, etcd_endpoint, prefix):
    jobs = 500
    await add_jobs(etcd_endpoint, prefix, jobs)
    ids = ["r0", "r1", "r2"]
    members = {member_id: pool(member_id) for member_id in ids}
    await wait_settled(etcd_endpoint, prefix, ids, timeout=60)
    start = time.time()
    stopped = []
    for i, old in enumerate(list(ids)):
        await asyncio.sleep(1.5)
        leaving = members.pop(old)
        assert leaving.terminate() == 0, leaving.log()
        stopped.append(leaving)
        new = f"{old}-new"
        ids[i] = new
        members[new] = pool(new)
        await wait_settled(etcd_endpoint, prefix, ids, timeout=60)
    await asyncio.sleep(2)
    end = time.time() - 1.5
    for member in members.values():
        assert member.terminate() == 0, member.log()
    assert_exactly_once(everything([*stopped, *members.values()]), start, end, job_names(jobs))
