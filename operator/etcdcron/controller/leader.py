"""Leader election on etcd: the leader key is bound to the member's lease, so failover takes one lease TTL
after a crash and nothing after a clean leave (the revoked lease deletes the key at once).

etcd is already the pool's source of truth, so electing there needs no extra RBAC and follows the same
lease as the member's partitions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from etcdcron import etcd
from etcdcron.errors import EtcdUnavailableError
from etcdcron.etcd import EtcdClient
from etcdcron.keys import Keys
from etcdcron.membership import Membership

log = logging.getLogger(__name__)


class LeaderElection:
    def __init__(self, client: EtcdClient, keys: Keys, membership: Membership, role: str) -> None:
        self.client = client
        self.key = keys.leader(role)
        self.membership = membership
        self.is_leader = False
        self.fence: int | None = (
            None  # the leader key's create revision while we lead: every write compares it
        )

    async def run(self, lead: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event) -> None:
        """Until ``stop``: campaign; while leading, run ``lead(lost)``; ``lost`` is set when leadership ends.
        Leading when ``stop`` is set, it resigns at once so another replica takes over without delay."""
        while not stop.is_set():
            try:
                if not await _first(self.membership.joined, stop):
                    return
                lease = self.membership.lease
                response = await self.client.txn(
                    [etcd.create_revision_is(self.key, 0)],
                    [etcd.put(self.key, self.membership.member_id.encode(), lease)],
                    [etcd.get(self.key)],
                )
                if response.succeeded:
                    await self._lead(response.header.revision, response.header.revision, lead, stop)
                    continue
                holder = response.responses[0].response_range.kvs
                if holder and holder[0].lease == lease:  # still ours (a watch broke): lead on
                    await self._lead(holder[0].create_revision, response.header.revision, lead, stop)
                else:
                    await self._wait_for_vacancy(response.header.revision, stop)
            except EtcdUnavailableError as e:
                log.warning("leader election: %s", e)
                await asyncio.sleep(0.5)

    async def _lead(
        self,
        fence: int,
        revision: int,
        lead: Callable[[asyncio.Event], Awaitable[None]],
        stop: asyncio.Event,
    ) -> None:
        log.info("%s is the leader", self.membership.member_id)
        self.is_leader, self.fence = True, fence
        lost = asyncio.Event()
        watcher = asyncio.create_task(self._watch_until_gone(revision, lost))
        try:
            await lead(lost)
        finally:
            self.is_leader, self.fence = False, None
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            if stop.is_set():
                await self.resign(fence)
            log.info("%s is no longer the leader", self.membership.member_id)

    async def _watch_until_gone(self, revision: int, lost: asyncio.Event) -> None:
        """Set ``lost`` when our leader key is deleted (lease lost) or etcd cannot confirm it."""
        try:
            async for batch in self.client.watch(self.key, b"", revision + 1):
                if any(not event.is_put for event in batch.events):
                    break
        except EtcdUnavailableError:
            pass
        lost.set()

    async def resign(self, fence: int | None) -> bool:
        """Give up leadership at once (on SIGTERM), so another replica leads without waiting for our lease;
        only our own key is deleted (compare its create revision). True if it was ours."""
        if fence is None:
            return False
        try:
            response = await self.client.txn(
                [etcd.create_revision_is(self.key, fence)], [etcd.delete(self.key)]
            )
        except EtcdUnavailableError as e:
            log.warning("leader election: could not resign: %s", e)
            return False
        if response.succeeded:
            log.info("%s resigned as the leader", self.membership.member_id)
        return bool(response.succeeded)

    async def _wait_for_vacancy(self, revision: int, stop: asyncio.Event) -> None:
        async def vacant() -> None:
            async for batch in self.client.watch(self.key, b"", revision + 1):
                if any(not event.is_put for event in batch.events):
                    return

        waiters = [asyncio.ensure_future(vacant()), asyncio.ensure_future(stop.wait())]
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # an etcd error surfaces to the campaign loop
        finally:
            for task in waiters:
                task.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)


async def _first(wanted: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait for ``wanted`` or ``stop``; True if ``wanted`` is set (and ``stop`` is not)."""
    waiters = [asyncio.ensure_future(wanted.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waiters:
            task.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    return wanted.is_set() and not stop.is_set()
