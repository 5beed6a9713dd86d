"""The firing protocol under real failures: member processes killed, frozen and joined; etcd restarted."""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pytest

from etcdcron.etcd import EtcdClient
from etcdcron.job import Job, format_time
from etcdcron.keys import Keys, range_end
from etcdcron.localetcd import LocalEtcd
from etcdcron.partitions import assignment
from etcdcron.store import JobStore

from .processes import MemberProcess

JOBS = 100
LEASE_TTL = 2


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def add_jobs(endpoint: str, prefix: str, count: int = JOBS, schedule: str = "* * * * * *") -> None:
    async with EtcdClient([endpoint]) as client:
        store = JobStore(client, Keys(prefix))
        await asyncio.gather(*(store.add(Job(name=f"job-{i:03d}", schedule=schedule)) for i in range(count)))


async def wait_settled(endpoint: str, prefix: str, members: Iterable[str], timeout: float = 30) -> None:
    """Wait until etcd shows every partition held by the member rendezvous hashing gives it to."""
    keys = Keys(prefix)
    expected = {p: m for p, m in assignment(keys.partitions, members).items()}
    async with EtcdClient([endpoint]) as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = await client.range(keys.partitions_root(), range_end(keys.partitions_root()))
            held = {keys.partition_of_key(kv.key): kv.value.decode() for kv in response.kvs}
            if held == expected:
                await asyncio.sleep(0.5)  # loading follows acquisition within milliseconds
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"pool did not settle on {sorted(members)} within {timeout}s")


def ticks_in(firings: list[dict[str, Any]], start: float, end: float) -> collections.Counter[tuple[str, str]]:
    """How often each (job, scheduled tick) with start <= tick <= end fired."""
    return collections.Counter(
        (f["name"], f["scheduled"]) for f in firings if start <= ts(f["scheduled"]) <= end
    )


def assert_exactly_once(all_firings: list[dict[str, Any]], start: float, end: float) -> None:
    counts = ticks_in(all_firings, start, end)
    twice = {k: n for k, n in counts.items() if n > 1}
    assert not twice, f"{len(twice)} ticks fired more than once, e.g. {list(twice.items())[:5]}"
    first, last = int(start) + 1, int(end)
    expected = {(f"job-{i:03d}", _iso(t)) for i in range(JOBS) for t in range(first, last + 1)}
    missing = expected - counts.keys()
    assert not missing, f"{len(missing)} ticks never fired, e.g. {sorted(missing)[:5]}"


def _iso(epoch_s: int) -> str:
    return format_time(datetime.fromtimestamp(epoch_s, UTC))


@pytest.fixture
def pool(etcd_endpoint: str, prefix: str):  # type: ignore[no-untyped-def]
    members: list[MemberProcess] = []

    def start(member_id: str, endpoint: str = etcd_endpoint) -> MemberProcess:
        member = MemberProcess(member_id, endpoint, prefix, lease_ttl=LEASE_TTL).start()
        members.append(member)
        return member

    yield start
    for member in members:
        member.stop()


def everything(members: list[MemberProcess]) -> list[dict[str, Any]]:
    return [f for m in members for f in m.firings]


async def test_kill_9_one_of_three_members_fires_every_tick_exactly_once(pool, etcd_endpoint, prefix):
    await add_jobs(etcd_endpoint, prefix)
    members = [pool(f"m{i}") for i in range(3)]
    await wait_settled(etcd_endpoint, prefix, ["m0", "m1", "m2"])
    start = time.time()
    await asyncio.sleep(3)
    victim = members[0]
    victim_jobs = {f["name"] for f in victim.firings}
    assert victim_jobs, "the victim fired nothing before being killed"
    victim.kill()
    killed_at = time.time()
    await wait_settled(etcd_endpoint, prefix, ["m1", "m2"], timeout=LEASE_TTL + 10)
    await asyncio.sleep(3)
    end = time.time() - 1.5  # leave in-flight ticks out of the window
    for m in members[1:]:
        assert m.terminate() == 0, m.log()
    firings = everything(members)
    assert_exactly_once(firings, start, end)
    # The dead member's jobs resumed within its lease TTL plus one second.
    resumed = min(
        ts(f["fired"])
        for f in firings
        if f["name"] in victim_jobs and f["member"] != "m0" and ts(f["fired"]) > killed_at
    )
    assert resumed - killed_at <= LEASE_TTL + 1, f"took {resumed - killed_at:.2f}s to resume"


async def test_frozen_member_fires_nothing_another_member_fired(pool, etcd_endpoint, prefix):
    await add_jobs(etcd_endpoint, prefix)
    members = [pool(f"z{i}") for i in range(3)]
    await wait_settled(etcd_endpoint, prefix, ["z0", "z1", "z2"])
    start = time.time()
    await asyncio.sleep(2)
    zombie = members[0]
    zombie.signal(signal.SIGSTOP)
    frozen_at = time.time()
    await wait_settled(etcd_endpoint, prefix, ["z1", "z2"], timeout=LEASE_TTL + 10)
    await asyncio.sleep(LEASE_TTL + 1)
    before_thaw = len(zombie.firings)
    zombie.signal(signal.SIGCONT)
    # The zombie wakes up with a timer queue full of due ticks and a stale view: it must fire none of them.
    await wait_settled(etcd_endpoint, prefix, ["z0", "z1", "z2"], timeout=LEASE_TTL + 15)
    await asyncio.sleep(3)
    end = time.time() - 1.5
    for m in members:
        assert m.terminate() == 0, m.log()
    firings = everything(members)
    assert_exactly_once(firings, start, end)
    late_zombie = [f for f in zombie.firings[before_thaw:] if ts(f["scheduled"]) < frozen_at + LEASE_TTL]
    stolen = {(f["name"], f["scheduled"]) for f in late_zombie} & {
        (f["name"], f["scheduled"]) for m in members[1:] for f in m.firings
    }
    assert not stolen


async def test_member_joining_a_running_pool_never_pauses_the_others(pool, etcd_endpoint, prefix):
    await add_jobs(etcd_endpoint, prefix)
    members = [pool("j0"), pool("j1")]
    await wait_settled(etcd_endpoint, prefix, ["j0", "j1"])
    start = time.time()
    await asyncio.sleep(2)
    joined_at = time.time()
    members.append(pool("j2"))
    await wait_settled(etcd_endpoint, prefix, ["j0", "j1", "j2"])
    await asyncio.sleep(3)
    end = time.time() - 1.5
    for m in members:
        assert m.terminate() == 0, m.log()
    firings = everything(members)
    assert_exactly_once(firings, start, end)
    keys = Keys(prefix)
    before = assignment(keys.partitions, ["j0", "j1"])
    after = assignment(keys.partitions, ["j0", "j1", "j2"])
    stayed = {
        f"job-{i:03d}"
        for i in range(JOBS)
        if before[keys.ref("default", f"job-{i:03d}").partition]
        == after[keys.ref("default", f"job-{i:03d}").partition]
    }
    moved = keys.partitions - sum(before[p] == after[p] for p in range(keys.partitions))
    assert 0 < moved < keys.partitions * 0.6, f"{moved} partitions moved"
    around_join = [
        f for f in firings if f["name"] in stayed and joined_at - 1 <= ts(f["scheduled"]) <= joined_at + 4
    ]
    assert around_join
    worst = max(ts(f["fired"]) - ts(f["scheduled"]) for f in around_join)
    assert worst < 0.5, f"a member whose partitions did not move fired {worst:.3f}s late during the join"


async def test_etcd_killed_and_restarted_loses_no_job_and_firing_resumes(pool, prefix, tmp_path):
    server = LocalEtcd(tmp_path / "etcd")
    server.start()
    try:
        await add_jobs(server.endpoint, prefix)
        members = [pool(f"e{i}", server.endpoint) for i in range(3)]
        await wait_settled(server.endpoint, prefix, ["e0", "e1", "e2"])
        start = time.time()
        await asyncio.sleep(2)
        server.kill()
        await asyncio.sleep(3)
        server.start()
        restarted_at = time.time()
        await wait_settled(server.endpoint, prefix, ["e0", "e1", "e2"], timeout=30)
        await asyncio.sleep(3)
        end = time.time() - 1.5
        for m in members:
            assert m.terminate() == 0, m.log()
        firings = everything(members)
        assert_exactly_once(firings, start, end)
        assert any(ts(f["fired"]) > restarted_at for f in firings)
        async with EtcdClient([server.endpoint]) as client:
            assert len((await JobStore(client, Keys(prefix)).list("default")).jobs) == JOBS
    finally:
        server.cleanup()
