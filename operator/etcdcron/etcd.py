"""A small async etcd v3 client over aetcd's gRPC stubs: what the pool needs and nothing else.

aetcd's high-level client shares one watch stream between all watches and hides revisions and paging;
the pool needs each watch to fail on its own, ranges read page by page at one revision, and raw
transactions with many compares. Every gRPC failure surfaces as ``EtcdUnavailableError`` (or
``CompactedError``) so callers have one thing to catch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from aetcd import rpc

from etcdcron.errors import EtcdUnavailableError, ValidationError

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "127.0.0.1:2379"
KeyValue = Any  # rpc.KeyValue protobuf message: key, value, create_revision, mod_revision, version, lease
RequestOp = Any
Compare = Any


class CompactedError(EtcdUnavailableError):
    """A watch asked for history etcd has already compacted: reload, then watch from the new revision."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted up to {compact_revision}")
        self.compact_revision = compact_revision


def parse_endpoints(text: str, field: str = "endpoints") -> list[str]:
    """``host:port[,host:port...]`` (an ``http://`` scheme is tolerated and dropped)."""
    endpoints = []
    for raw in text.split(","):
        item = raw.strip().removeprefix("http://")
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValidationError(field, f"{raw.strip()!r} is not host:port")
        endpoints.append(item)
    if not endpoints:
        raise ValidationError(field, "at least one host:port is needed")
    return endpoints


# -- request builders (pure) ----------------------------------------------------------------------------
def put(key: bytes, value: bytes, lease: int = 0) -> RequestOp:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))


def delete(key: bytes, range_end: bytes = b"") -> RequestOp:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key, range_end=range_end))


def get(key: bytes, range_end: bytes = b"", limit: int = 0) -> RequestOp:
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key, range_end=range_end, limit=limit))


def create_revision_is(key: bytes, revision: int) -> Compare:
    """True while ``key`` is the very key created at ``revision`` (0: the key does not exist)."""
    return rpc.Compare(key=key, result=rpc.Compare.EQUAL, target=rpc.Compare.CREATE, create_revision=revision)


def mod_revision_is(key: bytes, revision: int) -> Compare:
    """True while ``key`` is unchanged since ``revision`` (0: the key does not exist)."""
    return rpc.Compare(key=key, result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, mod_revision=revision)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    is_put: bool
    kv: KeyValue


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """One watch response: events in order, and the revision the stream has reached."""

    revision: int
    events: tuple[WatchEvent, ...]


class EtcdClient:
    """One gRPC channel to the first endpoint that answers; rotates to the next on failure."""

    def __init__(self, endpoints: Sequence[str] = (DEFAULT_ENDPOINT,), timeout: float = 5.0) -> None:
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._index = 0
        self._channel: grpc.aio.Channel | None = None
        self._kv: Any = None
        self._lease: Any = None
        self._watch: Any = None

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._index]

    def _ensure(self) -> None:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                self.endpoint,
                options=[
                    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                    ("grpc.keepalive_time_ms", 10_000),
                    ("grpc.keepalive_timeout_ms", 5_000),
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1_000),
                ],
            )
            self._kv = rpc.KVStub(self._channel)
            self._lease = rpc.LeaseStub(self._channel)
            self._watch = rpc.WatchStub(self._channel)

    def _failed(self, error: grpc.aio.AioRpcError) -> EtcdUnavailableError:
        """Turn a gRPC error into ours; on a connection failure switch to the next endpoint."""
        unreachable = error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        if unreachable and len(self.endpoints) > 1 and self._channel is not None:
            channel, self._channel = self._channel, None
            self._index = (self._index + 1) % len(self.endpoints)
            asyncio.get_running_loop().create_task(channel.close())
        return EtcdUnavailableError(f"etcd at {self.endpoint}: {error.code().name}: {error.details()}")

    async def close(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, stub_name: str, method: str, request: Any, timeout: float | None = None) -> Any:
        self._ensure()
        try:
            return await getattr(getattr(self, stub_name), method)(request, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as e:
            raise self._failed(e) from e

    # -- KV ------------------------------------------------------------------------------------------------
    async def get(self, key: bytes) -> KeyValue | None:
        response = await self._call("_kv", "Range", rpc.RangeRequest(key=key))
        return response.kvs[0] if response.kvs else None

    async def range(
        self, key: bytes, range_end: bytes, *, revision: int = 0, limit: int = 0, count_only: bool = False
    ) -> Any:
        request = rpc.RangeRequest(
            key=key, range_end=range_end, revision=revision, limit=limit, count_only=count_only
        )
        return await self._call("_kv", "Range", request)

    async def range_pages(
        self, key: bytes, range_end: bytes, *, page: int = 2000, revision: int = 0
    ) -> AsyncIterator[tuple[int, Sequence[KeyValue]]]:
        """Every key in ``[key, range_end)`` at one revision, page by page: yields (revision, kvs)."""
        start = key
        while True:
            response = await self.range(start, range_end, revision=revision, limit=page)
            revision = response.header.revision if revision == 0 else revision
            yield revision, response.kvs
            if not response.more or not response.kvs:
                return
            start = response.kvs[-1].key + b"\0"

    async def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        response = await self._call("_kv", "Put", rpc.PutRequest(key=key, value=value, lease=lease))
        return int(response.header.revision)

    async def delete(self, key: bytes, range_end: bytes = b"") -> int:
        response = await self._call(
            "_kv", "DeleteRange", rpc.DeleteRangeRequest(key=key, range_end=range_end)
        )
        return int(response.deleted)

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[RequestOp] = (),
        failure: Sequence[RequestOp] = (),
        timeout: float | None = None,
    ) -> Any:
        request = rpc.TxnRequest(compare=list(compare), success=list(success), failure=list(failure))
        return await self._call("_kv", "Txn", request, timeout)

    async def compact(self, revision: int) -> None:
        await self._call("_kv", "Compact", rpc.CompactionRequest(revision=revision, physical=True))

    # -- leases --------------------------------------------------------------------------------------------
    async def grant(self, ttl: int) -> int:
        response = await self._call("_lease", "LeaseGrant", rpc.LeaseGrantRequest(TTL=ttl))
        if response.error:
            raise EtcdUnavailableError(f"lease grant failed: {response.error}")
        return int(response.ID)

    async def revoke(self, lease: int) -> None:
        await self._call("_lease", "LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease))

    async def keep_alive_once(self, lease: int) -> int:
        """Refresh a lease; returns its new TTL in seconds (<= 0: the lease is gone)."""
        self._ensure()

        async def requests() -> AsyncIterator[Any]:
            yield rpc.LeaseKeepAliveRequest(ID=lease)

        try:
            call = self._lease.LeaseKeepAlive(requests(), timeout=self.timeout)
            async for reply in call:
                return int(reply.TTL)
        except grpc.aio.AioRpcError as e:
            raise self._failed(e) from e
        return 0

    # -- watch ---------------------------------------------------------------------------------------------
    async def watch(
        self, key: bytes, range_end: bytes, start_revision: int, *, progress_notify: bool = True
    ) -> AsyncIterator[WatchBatch]:
        """Events in ``[key, range_end)`` from ``start_revision`` on, until cancelled or failed.

        Raises ``CompactedError`` when ``start_revision`` is no longer available, ``EtcdUnavailableError``
        when the stream breaks: callers reload and watch again.
        """
        self._ensure()
        create = rpc.WatchCreateRequest(
            key=key, range_end=range_end, start_revision=start_revision, progress_notify=progress_notify
        )
        queue: asyncio.Queue[Any] = asyncio.Queue()
        await queue.put(rpc.WatchRequest(create_request=create))

        async def requests() -> AsyncIterator[Any]:
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item

        call = self._watch.Watch(requests())
        try:
            async for response in call:
                if response.compact_revision:
                    raise CompactedError(int(response.compact_revision))
                if response.canceled:
                    raise EtcdUnavailableError(f"watch cancelled by etcd: {response.cancel_reason}")
                events = tuple(WatchEvent(event.type == rpc.Event.PUT, event.kv) for event in response.events)
                yield WatchBatch(int(response.header.revision), events)
            raise EtcdUnavailableError("watch stream ended")
        except grpc.aio.AioRpcError as e:
            raise self._failed(e) from e
        finally:
            await queue.put(None)
            call.cancel()
