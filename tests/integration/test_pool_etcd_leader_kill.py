"""The pool through the loss of etcd's leader: a 3-node cluster, its leader first in every member's
endpoint list and killed while 300 jobs fire every second on 3 member processes.

Guarantee checked: no tick fires twice; no tick goes missing outside the election window (from the
kill until a new leader, plus a few seconds to reconnect); every member keeps firing afterwards, and a
job added after the kill fires.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from etcdcron.etcd import EtcdClient
from etcdcron.job import Job
from etcdcron.keys import Keys
from etcdcron.localetcd import LocalEtcdCluster
from etcdcron.policy import Delivery
from etcdcron.store import JobStore
from eventually import eventually_async

from .firings import (
    Tally,
    add_jobs,
    assert_no_double_delivery,
    describe,
    everything,
    last_tick,
    ts,
    wait_settled,
)
from .processes import MemberProcess

JOBS = 300
LEASE_TTL = 3
RECONNECT = 3.0  # seconds after the new leader is elected for members to be firing on time again


@pytest.fixture
def members() -> Iterator[list[MemberProcess]]:
    started: list[MemberProcess] = []
    yield started
    for member in started:
        member.stop()


@pytest.mark.parametrize("delivery", list(Delivery), ids=[d.value for d in Delivery])
async def test_etcd_leader_killed_under_300_jobs_a_second(
    etcd_cluster: LocalEtcdCluster, members: list[MemberProcess], prefix: str, delivery: Delivery
) -> None:
    leader = await asyncio.to_thread(etcd_cluster.leader)
    endpoints = [leader.endpoint] + [n.endpoint for n in etcd_cluster.nodes if n is not leader]
    survivors = endpoints[1:]
    await add_jobs(endpoints, prefix, JOBS, delivery=delivery)
    ids = ["l0", "l1", "l2"]
    members += [MemberProcess(i, ",".join(endpoints), prefix, lease_ttl=LEASE_TTL).start() for i in ids]
    await wait_settled(endpoints, prefix, ids, timeout=60)
    start = time.time()
    await eventually_async(lambda: all(last_tick(m) >= start + 2 for m in members), 30, "every member firing")

    killed_at = time.time()
    await asyncio.to_thread(leader.kill)
    await asyncio.to_thread(etcd_cluster.leader, 60)
    elected_at = time.time()
    async with EtcdClient(survivors, timeout=5) as client:
        await JobStore(client, Keys(prefix)).add(Job(name="added-after-kill", schedule="* * * * * *"))
    await eventually_async(
        lambda: any(f["name"] == "added-after-kill" for f in everything(members)),
        60,
        "the job added after the kill firing",
    )
    settle = time.time()
    await eventually_async(
        lambda: all(last_tick(m) >= settle + 3 for m in members), 60, "every member firing after the kill"
    )
    end = time.time() - 1.5
    alive = {m.member_id: m.process is not None and m.process.poll() is None for m in members}
    for m in members:
        assert m.terminate() == 0, m.log()

    firings = [f for f in everything(members) if f["name"] != "added-after-kill"]
    tally = Tally.of(firings, JOBS, start, end)
    window = (killed_at - 1, elected_at + RECONNECT)
    print(
        f"\netcd leader kill: new leader after {elected_at - killed_at:.2f}s; "
        + describe(tally, [f for f in firings if ts(f["scheduled"]) > start], killed_at)
    )
    assert all(alive.values()), f"members died: {alive}"
    assert_no_double_delivery(firings, JOBS, start, end, delivery)
    outside = tally.missing_outside(*window)
    assert not outside, f"{len(outside)} ticks missing outside the election window: {sorted(outside)[:5]}"
    for m in members:
        assert last_tick(m) >= settle + 3, f"{m.member_id} stopped firing: {m.log()}"
