"""Ownership: which partitions this member should hold, and the moves that get it there.

``plan_ownership`` is pure (table-tested): from the live members, the partition keys as mirrored and the
partitions this member holds, it returns what to drop (the key is gone or another's: stop firing at once),
release (another member should own it: hand it over), free (a key on our lease we no longer track, or a
key with no lease that would block a partition forever) and acquire. ``Ownership`` carries the plan out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence, Set
from dataclasses import dataclass

from etcdcron import etcd
from etcdcron.errors import EtcdUnavailableError
from etcdcron.etcd import EtcdClient
from etcdcron.keys import Keys
from etcdcron.partitions import owned_by
from etcdcron.pool.jobtable import JobTable, Loaded

log = logging.getLogger("etcdcron.pool")

ACQUIRE_AHEAD = 2
"""Partitions acquired and loaded at once: parsing one's jobs holds the event loop, the next one's
transaction and reads are in flight meanwhile, so etcd and the member work at the same time."""


@dataclass(frozen=True, slots=True)
class Holder:
    """A partition key as mirrored: who wrote it, its create revision (the fence) and its lease."""

    member_id: str
    create_revision: int
    lease: int


@dataclass(frozen=True, slots=True)
class OwnershipPlan:
    drop: tuple[int, ...]
    release: tuple[int, ...]
    free: tuple[tuple[int, int], ...]  # (partition, create revision of the key to delete)
    acquire: tuple[int, ...]
    desired: frozenset[int]


def plan_ownership(
    member_id: str,
    lease: int,
    partitions: int,
    members: Set[str],
    holders: Mapping[int, Holder],
    holders_revision: int,
    held: Mapping[int, int],
    balanced: bool = True,
) -> OwnershipPlan:
    """``held`` maps the partitions we hold to their fences; ``holders_revision`` is how far the mirror of
    partition keys has read (a key we created after it is not known to be missing); ``balanced``: every
    live member computes the balanced assignment (partitions.py)."""
    desired = owned_by(member_id, partitions, members, balanced=balanced) if lease else frozenset()
    drop, release = [], []
    for p, fence in sorted(held.items()):
        holder = holders.get(p)
        if holders_revision >= fence and (holder is None or holder.create_revision != fence):
            drop.append(p)
        elif p not in desired:
            release.append(p)
    free = []
    for p, holder in sorted(holders.items()):
        ours_on_paper = bool(lease) and holder.lease == lease and p not in held
        if ours_on_paper or (holder.lease == 0 and p in desired):
            free.append((p, holder.create_revision))
    acquire = tuple(sorted(p for p in desired - held.keys() if p not in holders))
    return OwnershipPlan(tuple(drop), tuple(release), tuple(free), acquire, desired)


class Ownership:
    """Acquires, releases and drops partitions; the job table holds what is owned."""

    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        table: JobTable,
        member_id: str,
        handover: Callable[[int, int], Awaitable[None]],
    ) -> None:
        self.handover = handover  # settles what is in progress in a partition before it is released
        self.client = client
        self.keys = keys
        self.table = table
        self.member_id = member_id
        self.members: set[str] = set()
        self.rendezvous_only: set[str] = set()  # live members that do not compute the balanced assignment
        self.holders: dict[int, Holder] = {}
        self.holders_revision = 0

    def plan(self, lease: int) -> OwnershipPlan:
        return plan_ownership(
            self.member_id,
            lease,
            self.keys.partitions,
            self.members,
            self.holders,
            self.holders_revision,
            self.table.fences(),
            self.balanced,
        )

    @property
    def balanced(self) -> bool:
        """Every live member computes the balanced assignment (older ones compute plain rendezvous)."""
        return not self.rendezvous_only & self.members

    def should_acquire(self, p: int, lease: int) -> bool:
        """Still free and still ours by the member set as it is now (loading earlier ones took a while)."""
        return (
            bool(lease)
            and p not in self.holders
            and p in owned_by(self.member_id, self.keys.partitions, self.members, balanced=self.balanced)
        )

    def drop(self, p: int, why: str) -> None:
        if self.table.remove(p):
            log.info("member %s gives up partition %d (%s)", self.member_id, p, why)

    def drop_all(self, why: str) -> None:
        if self.table.partitions:
            count = len(self.table.partitions)
            log.warning("member %s gives up all %d partitions (%s)", self.member_id, count, why)
        self.table.clear()

    async def release(self, p: int) -> None:
        state = self.table.partitions.get(p)
        if state is None:
            return
        self.drop(p, "handed over")
        await self.handover(p, state.fence)
        key = self.keys.partition(p)
        await self.client.txn([etcd.create_revision_is(key, state.fence)], [etcd.delete(key)])

    async def free(self, p: int, create_revision: int) -> None:
        key = self.keys.partition(p)
        await self.client.txn([etcd.create_revision_is(key, create_revision)], [etcd.delete(key)])

    async def acquire(self, p: int, lease: int) -> Loaded | None:
        """Take a free partition (a key bound to our lease: its create revision is our fence) and load it."""
        key = self.keys.partition(p)
        response = await self.client.txn(
            [etcd.create_revision_is(key, 0)], [etcd.put(key, self.member_id.encode(), lease)]
        )
        if not response.succeeded:
            return None
        self.table.add(p, response.header.revision)
        log.debug("member %s acquired partition %d", self.member_id, p)
        try:
            return await self.table.load(p)
        except BaseException:
            # Never loaded, it would sit owned and silent: give it up; the next reconcile frees the key (ours,
            # untracked) and takes the partition again.
            self.drop(p, "its first load failed")
            raise

    async def acquire_all(
        self,
        partitions: Sequence[int],
        lease: Callable[[], int],
        loaded: Callable[[int, Loaded | None], Awaitable[None]],
        closing: Callable[[], bool],
    ) -> None:
        """Acquire and load ``partitions``, ``ACQUIRE_AHEAD`` at a time, each checked just before it is taken
        (``should_acquire``: loading the earlier ones took a while); ``loaded`` is told of each. After a
        failure no more are taken, the ones in progress finish, and the failure is raised."""
        todo = iter(partitions)
        failed = False

        async def worker() -> None:
            nonlocal failed
            for p in todo:
                if failed or closing() or not self.should_acquire(p, lease()):
                    continue
                try:
                    await loaded(p, await self.acquire(p, lease()))
                except Exception:
                    failed = True
                    raise

        await _all([worker() for _ in range(min(ACQUIRE_AHEAD, len(partitions)))])

    async def release_all(self, partitions: Sequence[int]) -> None:
        """Hand ``partitions`` over at once: each waits up to ``HANDOVER_SECONDS`` for its commits and
        deliveries, so one after the other, the balanced assignment's few moves between staying members
        would keep the new owner waiting seconds each."""
        await _all([self.release(p) for p in partitions])


async def _all(steps: Sequence[Awaitable[None]]) -> None:
    """Run ``steps`` together to the end; then raise the first failure, a bug's before etcd's absence."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    errors = sorted((r for r in results if isinstance(r, BaseException)), key=_etcd_unavailable)
    if errors:
        raise errors[0]


def _etcd_unavailable(error: BaseException) -> bool:
    return isinstance(error, EtcdUnavailableError)
