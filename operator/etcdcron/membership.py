"""This member's lease and registration: join, keep alive, re-join after losing the lease, leave.

A member is a key bound to its lease; everything it owns (partition keys) is bound to the same lease, so a
member that dies or is cut off loses all of it when the lease runs out, and a clean leave (revoking the
lease) hands everything over at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable

from etcdcron import etcd
from etcdcron.errors import EtcdCronError, EtcdUnavailableError
from etcdcron.etcd import EtcdClient
from etcdcron.keys import Keys

log = logging.getLogger(__name__)


BALANCED = "balanced"
"""The ``assignment`` a member key advertises: this member computes the balanced partition assignment
(partitions.py). Members of earlier versions advertise none and compute plain rendezvous; while one of them
is live, every member computes that, so all agree on every owner during a rolling upgrade."""


class MemberIdInUseError(EtcdCronError):
    """Another live process registered the same member id."""


def default_member_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Membership:
    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        member_id: str,
        lease_ttl: int,
        on_lease_lost: Callable[[], Awaitable[None]],
        on_etcd_error: Callable[[Exception], Awaitable[None]],
    ) -> None:
        self.client = client
        self.keys = keys
        self.member_id = member_id
        self.lease_ttl = lease_ttl
        self.lease = 0
        self._on_lease_lost = on_lease_lost
        self._on_etcd_error = on_etcd_error
        self.joined = asyncio.Event()

    async def join(self) -> None:
        """Grant a lease and register under it; fails if the member id is held by a live process."""
        lease = await self.client.grant(self.lease_ttl)
        key = self.keys.member(self.member_id)
        value = json.dumps(
            {"id": self.member_id, "pid": os.getpid(), "host": socket.gethostname(), "assignment": BALANCED}
        ).encode()
        response = await self.client.txn([etcd.create_revision_is(key, 0)], [etcd.put(key, value, lease)])
        if not response.succeeded:
            await self.client.revoke(lease)
            raise MemberIdInUseError(f"member id {self.member_id!r} is already registered by a live member")
        self.lease = lease
        self.joined.set()
        log.info("member %s joined with lease %x", self.member_id, lease)

    async def keep_alive(self) -> None:
        """Refresh the lease at a third of its TTL; re-join with a new lease if it was lost."""
        normal = max(self.lease_ttl / 3, 0.2)
        interval = normal
        while True:
            await asyncio.sleep(interval)
            interval = normal
            try:
                if not self.lease:
                    await self.join()
                    continue
                ttl = await self.client.keep_alive_once(self.lease)
                if ttl > 0:
                    continue
                log.warning("member %s lost its lease %x; re-joining", self.member_id, self.lease)
                self.lease = 0
                self.joined.clear()
                await self._on_lease_lost()
                await self.join()
            except EtcdUnavailableError as e:
                await self._on_etcd_error(e)
                interval = 0.5  # retry soon: the lease may be about to run out
            except MemberIdInUseError:
                # Our old registration is still there (its lease has not run out yet): wait for it.
                interval = 0.5

    async def leave(self) -> None:
        """Revoke the lease: the member key and every partition key go at once, for others to take."""
        if self.lease:
            lease, self.lease = self.lease, 0
            self.joined.clear()
            try:
                await self.client.revoke(lease)
                log.info("member %s left", self.member_id)
            except EtcdUnavailableError as e:
                log.warning("member %s could not revoke its lease (it will expire): %s", self.member_id, e)
