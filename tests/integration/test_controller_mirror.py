"""The reconciler's etcd writes against a real etcd: fenced on the leader key, and leadership handed over at
once when the leader stops."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from etcdcron import etcd
from etcdcron.controller.leader import LeaderElection
from etcdcron.controller.mirror import ConflictError, Mirror, NotLeaderError
from etcdcron.controller.resource import job_from_resource
from etcdcron.etcd import EtcdClient
from etcdcron.firing import Cursor
from etcdcron.k8s_resource import Envelope
from etcdcron.keys import Keys
from etcdcron.membership import Membership


def resource(generation: int) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "pulse",
            "namespace": "team-a",
            "uid": "u-1",
            "generation": generation,
            "creationTimestamp": "2026-11-28T11:00:00Z",
        },
        "spec": {"schedule": "@daily"},
    }


async def lead(client: EtcdClient, keys: Keys, who: bytes) -> int:
    """Take the leader key (as an elected replica does); returns its create revision, the fence."""
    key = keys.leader("reconciler")
    response = await client.txn([etcd.create_revision_is(key, 0)], [etcd.put(key, who)])
    assert response.succeeded
    return int(response.header.revision)


async def test_a_former_leader_writes_nothing(etcd_client: EtcdClient, prefix: str) -> None:
    keys = Keys(prefix)
    now = datetime.now(UTC)
    fence = {"old": await lead(etcd_client, keys, b"old")}
    old = Mirror(etcd_client, keys, lambda: fence["old"])
    await old.put(await old.read("team-a", "pulse"), job_from_resource(resource(1), now), "u-1", 1, None, now)
    # The old leader is paused past its lease; another replica is elected and mirrors generation 2.
    await etcd_client.delete(keys.leader("reconciler"))
    fence["new"] = await lead(etcd_client, keys, b"new")
    new = Mirror(etcd_client, keys, lambda: fence["new"])
    seen = await new.read("team-a", "pulse")
    await new.put(seen, job_from_resource(resource(2), now), "u-1", 2, None, now)
    # Thawed, the old leader still holds generation 1 and tries to write it back: refused by the fence.
    stale = await old.read("team-a", "pulse")
    with pytest.raises(NotLeaderError):
        await old.put(stale, job_from_resource(resource(1), now), "u-1", 1, None, now)
    with pytest.raises(NotLeaderError):
        await old.park(stale, "team-a", "pulse", "u-1", 1)
    with pytest.raises(NotLeaderError):
        await old.remove("team-a", "pulse")
    with pytest.raises(NotLeaderError):
        await old.remove_tenant("team-a")
    after = await new.read("team-a", "pulse")
    assert after.record is not None and after.record.generation == 2
    assert after.stored is not None and Envelope.from_bytes(after.stored.job.payload).generation == 2


async def test_a_firing_commit_in_between_makes_the_write_read_again(
    etcd_client: EtcdClient, prefix: str
) -> None:
    keys = Keys(prefix)
    now = datetime.now(UTC)
    fence = await lead(etcd_client, keys, b"me")
    mirror = Mirror(etcd_client, keys, lambda: fence)
    stored = await mirror.put(
        await mirror.read("team-a", "pulse"), job_from_resource(resource(1), now), "u-1", 1, None, now
    )
    seen = await mirror.read("team-a", "pulse")
    cursor_key = keys.cursor(keys.ref("team-a", "pulse"))
    await etcd_client.put(cursor_key, Cursor(stored.id, 1, 1, 0, "m:1").to_json())  # a member fired meanwhile
    with pytest.raises(ConflictError):
        await mirror.park(seen, "team-a", "pulse", "u-1", 2)
    await mirror.park(await mirror.read("team-a", "pulse"), "team-a", "pulse", "u-1", 2)
    parked = await mirror.read("team-a", "pulse")
    assert parked.stored is None and parked.cursor is not None and parked.cursor.runs == 1  # kept exactly


async def test_the_leader_resigns_at_once_when_it_stops(etcd_client: EtcdClient, prefix: str) -> None:
    keys = Keys(prefix)

    async def nothing(_: Exception) -> None:
        return None

    async def lost() -> None:
        return None

    membership = Membership(etcd_client, keys, "a", 30, lost, nothing)  # a long lease: no help from expiry
    await membership.join()
    election = LeaderElection(etcd_client, keys, membership, "reconciler")
    stop, leading = asyncio.Event(), asyncio.Event()

    async def work(_: asyncio.Event) -> None:
        leading.set()
        await stop.wait()

    task = asyncio.create_task(election.run(work, stop))
    await asyncio.wait_for(leading.wait(), 10)
    assert await etcd_client.get(keys.leader("reconciler")) is not None
    stop.set()
    await asyncio.wait_for(task, 10)
    assert await etcd_client.get(keys.leader("reconciler")) is None  # vacant now, not in 30 s
    await membership.leave()


async def test_tenants_are_listed_and_removed_with_their_records(
    etcd_client: EtcdClient, prefix: str
) -> None:
    keys = Keys(prefix)
    now = datetime.now(UTC)
    fence = await lead(etcd_client, keys, b"me")
    mirror = Mirror(etcd_client, keys, lambda: fence)
    for namespace in ("team-a", "team-a-1"):
        body = {**resource(1), "metadata": {**resource(1)["metadata"], "namespace": namespace}}
        await mirror.put(
            await mirror.read(namespace, "pulse"), job_from_resource(body, now), "u-1", 1, None, now
        )
    assert await mirror.tenants() == {"team-a", "team-a-1"}
    assert await mirror.remove_tenant("team-a") == 1
    assert await mirror.tenants() == {"team-a-1"}  # a tenant's prefix never touches another's
