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

    async def run(self, lead: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        """Forever: campaign; while leading, run ``lead(lost)``; ``lost`` is set when leadership ends."""
        while True:
            try:
                await self.membership.joined.wait()
                lease = self.membership.lease
                response = await self.client.txn(
                    [etcd.create_revision_is(self.key, 0)],
                    [etcd.put(self.key, self.membership.member_id.encode(), lease)],
                    [etcd.get(self.key)],
                )
                if response.succeeded:
                    await self._lead(response.header.revision, lead)
                    continue
                holder = response.responses[0].response_range.kvs
                if holder and holder[0].lease == lease:  # still ours (a watch broke): lead on
                    await self._lead(response.header.revision, lead)
                else:
                    await self._wait_for_vacancy(response.header.revision)
            except EtcdUnavailableError as e:
                log.warning("leader election: %s", e)
                await asyncio.sleep(0.5)

    async def _lead(self, revision: int, lead: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        log.info("%s is the leader", self.membership.member_id)
        self.is_leader = True
        lost = asyncio.Event()
        watcher = asyncio.create_task(self._watch_until_gone(revision, lost))
        try:
            await lead(lost)
        finally:
            self.is_leader = False
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
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

    async def _wait_for_vacancy(self, revision: int) -> None:
        async for batch in self.client.watch(self.key, b"", revision + 1):
            if any(not event.is_put for event in batch.events):
                return
