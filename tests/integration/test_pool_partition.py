"""A member cut off from etcd by the network (not killed, not frozen): it runs in a network namespace
whose only link goes down for 3x the lease TTL and comes back.

Guarantee checked: no tick fires twice; the cut-off member's partitions are taken over within the lease
TTL + 1 s; once the link is back the member rejoins and fires again.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from etcdcron.keys import Keys
from etcdcron.localetcd import LocalEtcd
from etcdcron.partitions import assignment
from etcdcron.policy import Delivery
from eventually import eventually_async

from . import netns
from .firings import (
    Tally,
    add_jobs,
    assert_no_double_delivery,
    describe,
    everything,
    job_name,
    last_tick,
    ts,
    wait_settled,
)
from .processes import MemberProcess

JOBS = 100
LEASE_TTL = 2
_serial = itertools.count()


@pytest.fixture
def link() -> Iterator[netns.NetnsLink]:
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)
    netns.remove_leftovers()
    created = netns.NetnsLink(next(_serial)).create()
    try:
        yield created
    finally:
        created.remove()


@pytest.fixture
def members() -> Iterator[list[MemberProcess]]:
    started: list[MemberProcess] = []
    yield started
    for member in started:
        member.stop()


@pytest.fixture
def etcd_on_link(link: netns.NetnsLink, tmp_path: Path) -> Iterator[LocalEtcd]:
    """A single etcd whose client URL is the host end of the pair: reachable from the host and the
    namespace alike, until the namespace's end goes down."""
    with LocalEtcd(tmp_path / "etcd", host=link.host_ip, die_with_parent=True) as server:
        yield server


@pytest.mark.parametrize("delivery", list(Delivery), ids=[d.value for d in Delivery])
async def test_member_cut_off_from_etcd_is_taken_over_and_rejoins(
    link: netns.NetnsLink,
    etcd_on_link: LocalEtcd,
    members: list[MemberProcess],
    prefix: str,
    delivery: Delivery,
) -> None:
    endpoint = etcd_on_link.endpoint
    await add_jobs([endpoint], prefix, JOBS, delivery=delivery)
    cut = MemberProcess("n0", endpoint, prefix, lease_ttl=LEASE_TTL, command_prefix=link.exec_prefix).start()
    members += [cut] + [MemberProcess(f"n{i}", endpoint, prefix, lease_ttl=LEASE_TTL).start() for i in (1, 2)]
    ids = [m.member_id for m in members]
    await wait_settled([endpoint], prefix, ids, timeout=60)
    start = time.time()
    await eventually_async(lambda: all(last_tick(m) >= start + 2 for m in members), 30, "every member firing")
    keys, owners = Keys(prefix), assignment(Keys(prefix).partitions, ids)
    cut_jobs = {
        job_name(i) for i in range(JOBS) if owners[keys.ref("default", job_name(i)).partition] == "n0"
    }
    assert cut_jobs & {f["name"] for f in list(cut.firings)}, "the member in the namespace fired nothing"

    down_at = time.time()
    await asyncio.to_thread(link.down)

    async def restore() -> float:
        await asyncio.sleep(max(0.0, down_at + 3 * LEASE_TTL - time.time()))  # the outage lasts 3 TTLs
        await asyncio.to_thread(link.up)
        return time.time()

    restoring = asyncio.create_task(restore())

    def taken_over() -> float | None:
        fired = [
            ts(f["fired"])
            for m in members[1:]
            for f in list(m.firings)
            if f["name"] in cut_jobs and ts(f["fired"]) > down_at
        ]
        return min(fired) if fired else None

    try:
        first = await eventually_async(taken_over, 30, "the cut-off member's jobs taken over")
    finally:
        up_at = await restoring
    cut_before_up = len([f for f in list(cut.firings) if ts(f["fired"]) < up_at])
    await wait_settled([endpoint], prefix, ids, timeout=60)
    await eventually_async(lambda: last_tick(cut) >= time.time() - 2, 60, "the cut-off member firing again")
    settle = time.time()
    await eventually_async(
        lambda: all(last_tick(m) >= settle + 2 for m in members), 30, "every member firing"
    )
    end = time.time() - 1.5
    for m in members:
        assert m.terminate() == 0, m.log()

    firings = everything(members)
    tally = Tally.of(firings, JOBS, start, end)
    fired_while_cut = [f for f in cut.firings[:cut_before_up] if ts(f["fired"]) > down_at + 0.5]
    takeover = first - down_at
    rejoined = min(ts(f["fired"]) for f in cut.firings if ts(f["fired"]) > up_at)
    print(
        f"\npartition: takeover after {takeover:.2f}s (lease TTL {LEASE_TTL}s); "
        + describe(tally, [f for f in firings if ts(f["scheduled"]) > start], down_at)
        + f"; the cut-off member fired {len(fired_while_cut)} ticks while cut off and fired again"
        f" {rejoined - up_at:.1f}s after the link came back"
    )
    assert_no_double_delivery(firings, JOBS, start, end, delivery)
    assert takeover <= LEASE_TTL + 1, f"took {takeover:.2f}s to take over (lease TTL {LEASE_TTL}s)"
