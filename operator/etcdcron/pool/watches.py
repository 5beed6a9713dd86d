"""The watches that feed a member's control loop: the member set, the partition keys and the job specs.

Each loop survives etcd's absence (reports it, waits, reads a fresh snapshot and watches again) and never
ends on its own; anything else it raises is a bug that takes the member out (see ``member.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from etcdcron.decode import BadEntryError, member_assignment, member_id, partition_number
from etcdcron.errors import EtcdUnavailableError
from etcdcron.etcd import EtcdClient, KeyValue, WatchBatch, WatchEvent
from etcdcron.keys import Keys, range_end
from etcdcron.membership import BALANCED
from etcdcron.pool.messages import JobEvents, JobsWatchRestarted, Message, RunRequests
from etcdcron.pool.ownership import Holder, Ownership
from etcdcron.pool.reporting import Reporter

RETRY_SECONDS = 0.5


async def _mirror(
    client: EtcdClient,
    root: bytes,
    reset: Callable[[], None],
    apply: Callable[[KeyValue, bool], None],
    seen: Callable[[int], None],
    changed: Callable[[], None],
    reporter: Reporter,
) -> None:
    """Keep a small prefix mirrored in memory: snapshot, then watch; ``seen`` is told how far it has read
    (snapshot or watch revision) and ``changed`` is called after each batch."""
    while True:
        try:
            snapshot = await client.range(root, range_end(root))
            reset()
            for kv in snapshot.kvs:
                apply(kv, True)
            seen(snapshot.header.revision)
            changed()
            async for batch in client.watch(root, range_end(root), snapshot.header.revision + 1):
                for event in batch.events:
                    apply(event.kv, event.is_put)
                seen(batch.revision)
                changed()
        except EtcdUnavailableError as e:
            await reporter.etcd_error(e)
            await asyncio.sleep(RETRY_SECONDS)


async def mirror_members(
    client: EtcdClient, keys: Keys, ownership: Ownership, changed: Callable[[], None], reporter: Reporter
) -> None:
    def reset() -> None:
        ownership.members.clear()
        ownership.rendezvous_only.clear()

    def apply(kv: KeyValue, put: bool) -> None:
        try:
            member = member_id(keys, kv.key)
            if put and not kv.lease:
                raise BadEntryError(kv.key, "a member key not bound to a lease is no live member")
        except BadEntryError as e:
            if put:
                reporter.bad_entry(e, kv.mod_revision)
            return
        (ownership.members.add if put else ownership.members.discard)(member)
        rendezvous = put and member_assignment(kv.value) != BALANCED
        (ownership.rendezvous_only.add if rendezvous else ownership.rendezvous_only.discard)(member)

    await _mirror(client, keys.members_root(), reset, apply, lambda _: None, changed, reporter)


async def mirror_holders(
    client: EtcdClient, keys: Keys, ownership: Ownership, changed: Callable[[], None], reporter: Reporter
) -> None:
    def reset() -> None:
        ownership.holders.clear()

    def seen(revision: int) -> None:
        ownership.holders_revision = revision

    def apply(kv: KeyValue, put: bool) -> None:
        try:
            p = partition_number(keys, kv.key)
        except BadEntryError as e:
            if put:
                reporter.bad_entry(e, kv.mod_revision)
            return
        if put:
            holder = kv.value.decode("utf-8", "backslashreplace")
            ownership.holders[p] = Holder(holder, kv.create_revision, kv.lease)
        else:
            ownership.holders.pop(p, None)

    await _mirror(client, keys.partitions_root(), reset, apply, seen, changed, reporter)


async def _watch(
    client: EtcdClient,
    root: bytes,
    restarted: Callable[[], Awaitable[int]],
    changed: Callable[[WatchBatch], Awaitable[None]],
    reporter: Reporter,
) -> None:
    """Watch a prefix forever; ``restarted`` runs before each (re)start and gives the revision to watch
    after; etcd's absence is reported and waited out."""
    while True:
        try:
            revision = await restarted()
            async for batch in client.watch(root, range_end(root), revision + 1):
                if batch.events:
                    await changed(batch)
        except EtcdUnavailableError as e:
            await reporter.etcd_error(e)
            await asyncio.sleep(RETRY_SECONDS)


async def watch_requests(
    client: EtcdClient, keys: Keys, post: Callable[[Message], Awaitable[None]], reporter: Reporter
) -> None:
    """Run-now requests as they are written; those written before a (re)load are served by the load."""
    root = keys.requests_root()

    async def restarted() -> int:  # what was written while no watch ran is served from a fresh read
        head = await client.range(root, range_end(root))
        events = tuple(WatchEvent(True, kv) for kv in head.kvs)
        await post(RunRequests(WatchBatch(head.header.revision, events)))
        return int(head.header.revision)

    async def changed(batch: WatchBatch) -> None:
        await post(RunRequests(batch))

    await _watch(client, root, restarted, changed, reporter)


async def watch_jobs(
    client: EtcdClient, keys: Keys, post: Callable[[Message], Awaitable[None]], reporter: Reporter
) -> None:
    """One watch over every job spec; the job table ignores events of partitions we do not own."""
    root = keys.jobs_root()

    async def restarted() -> int:  # partitions loaded before this revision are reloaded
        head = await client.range(root, range_end(root), limit=1, count_only=True)
        await post(JobsWatchRestarted(head.header.revision))
        return int(head.header.revision)

    async def changed(batch: WatchBatch) -> None:
        await post(JobEvents(batch))

    await _watch(client, root, restarted, changed, reporter)
