"""A small async etcd v3 client over aetcd's gRPC stubs: what the pool needs and nothing else.

aetcd's high-level client shares one watch stream between all watches and hides revisions and paging;
the pool needs each watch to fail on its own, ranges read page by page at one revision, and raw
transactions with many compares. Every failure surfaces as ``EtcdUnavailableError`` (or one of its
subclasses below) so callers have one thing to catch; ``asyncio.CancelledError`` only ever means that
the caller's own task was cancelled.

Failover, and why writes are treated differently from reads:

* Every attempt first waits for its channel to connect. If it cannot (refused, unreachable, timed out
  while connecting), nothing was sent, so *any* call -- writes included -- moves on to the next endpoint.
* The channel may break between that check and the call. gRPC then fails the call in its load balancer,
  before any stream exists, with "failed to connect to all addresses": not sent either (``never_sent``).
* Once a request has been sent, a broken connection or a timeout leaves its outcome unknown. Reads and
  lease calls are idempotent (a retried grant at worst leaves an unused lease to expire; revoking a lease
  that is already gone counts as done), so they are retried on the next endpoint. A put, delete or txn
  is not retried: it raises ``OutcomeUnknownError`` and the caller decides (the pool re-sends the same
  commit, whose compares tell whether the first attempt landed). The status code alone (UNAVAILABLE)
  cannot tell "never sent" from "sent, then the connection broke": hence the two checks above.
* Each call tries every endpoint at most once; when all failed, the error says so and lists each one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from aetcd import rpc

from etcdcron.errors import EtcdUnavailableError, ValidationError
from etcdcron.etcdconn import ENDPOINT_FAILURES, Connection, Connections, never_sent, task_cancelled
from etcdcron.etcdops import (
    Compare,
    KeyValue,
    RequestOp,
    TxnRequest,
    WatchBatch,
    WatchEvent,
    create_revision_is,
    delete,
    get,
    mod_revision_is,
    parse_endpoints,
    put,
)

__all__ = [
    "DEFAULT_ENDPOINT",
    "CompactedError",
    "Compare",
    "EtcdClient",
    "EtcdRefusedError",
    "KeyValue",
    "OutcomeUnknownError",
    "RequestOp",
    "WatchBatch",
    "WatchEvent",
    "create_revision_is",
    "delete",
    "get",
    "mod_revision_is",
    "parse_endpoints",
    "put",
]

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "127.0.0.1:2379"


T = TypeVar("T")
REQUIRE_LEADER = (("hasleader", "true"),)
"""Watch metadata: etcd cancels the watch when its member loses the leader, so we re-watch elsewhere."""


class OutcomeUnknownError(EtcdUnavailableError):
    """A write was sent but its answer was lost: it may or may not have been applied."""


class EtcdRefusedError(EtcdUnavailableError):
    """etcd answered and refused the request (e.g. a malformed txn): retrying elsewhere would not help."""

    def __init__(self, message: str, code: grpc.StatusCode) -> None:
        super().__init__(message)
        self.code = code


class CompactedError(EtcdUnavailableError):
    """A watch asked for history etcd has already compacted: reload, then watch from the new revision."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted up to {compact_revision}")
        self.compact_revision = compact_revision


class EtcdClient:
    """One gRPC channel at a time, to the first endpoint that works; see the module doc for failover."""

    def __init__(self, endpoints: Sequence[str] = (DEFAULT_ENDPOINT,), timeout: float = 5.0) -> None:
        self.endpoints = list(endpoints)
        if not self.endpoints:
            raise ValidationError("endpoints", "at least one host:port is needed")
        self.timeout = timeout
        self._connections = Connections(self.endpoints)

    @property
    def endpoint(self) -> str:
        """The endpoint the next call goes to first."""
        return self._connections.endpoint

    async def close(self) -> None:
        await self._connections.close()

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _all_failed(self, failures: list[str]) -> EtcdUnavailableError:
        if len(self.endpoints) == 1:
            return EtcdUnavailableError(f"etcd at {failures[-1]}")
        tried = {f.split(": ", 1)[0] for f in failures}
        scope = f"all {len(self.endpoints)} endpoints" if tried == set(self.endpoints) else "endpoints"
        return EtcdUnavailableError(f"{scope} failed: " + "; ".join(failures))

    async def _ready(self, timeout: float, failures: list[str]) -> Connection:
        """A connected channel (acquired: ``release`` it), trying each endpoint at most once."""
        while len(failures) < len(self.endpoints):
            conn = self._connections.acquire()
            try:
                if await conn.ready(timeout):
                    return conn
            except asyncio.CancelledError:
                self._connections.release(conn)
                if task_cancelled():
                    raise
            except BaseException:
                self._connections.release(conn)
                raise
            else:
                self._connections.release(conn)
            failures.append(f"{conn.endpoint}: could not connect")
            self._connections.retire(conn)
        raise self._all_failed(failures)

    def _broken(self, conn: Connection, error: BaseException) -> str:
        """Describe a failure after sending; retire the channel if the endpoint is to blame."""
        if isinstance(error, grpc.aio.AioRpcError):
            if error.code() not in ENDPOINT_FAILURES:
                raise EtcdRefusedError(
                    f"etcd at {conn.endpoint}: {error.code().name}: {error.details()}", error.code()
                ) from error
            what = f"{error.code().name}: {error.details()}"
        else:
            what = "call cancelled under the client"
        self._connections.retire(conn)
        return f"{conn.endpoint}: {what}"

    async def _call(
        self,
        name: str,
        invoke: Callable[[Connection, float], Awaitable[T]],
        *,
        idempotent: bool,
        timeout: float | None = None,
    ) -> T:
        timeout = timeout or self.timeout
        failures: list[str] = []
        while len(failures) < len(self.endpoints):
            conn = await self._ready(timeout, failures)
            try:
                return await invoke(conn, timeout)
            except (grpc.aio.AioRpcError, asyncio.CancelledError) as e:
                if isinstance(e, asyncio.CancelledError) and task_cancelled():
                    raise
                failure = self._broken(conn, e)
                if not idempotent and not never_sent(e):
                    raise OutcomeUnknownError(f"etcd at {failure} ({name} may have applied or not)") from e
                failures.append(failure)
            except grpc.aio.UsageError as e:  # the channel was closed before the call began: not sent
                failures.append(f"{conn.endpoint}: {e}")
                self._connections.retire(conn)
            finally:
                self._connections.release(conn)
        raise self._all_failed(failures)

    async def _unary(
        self, stub: str, method: str, request: Any, *, idempotent: bool, timeout: float | None = None
    ) -> Any:
        async def invoke(conn: Connection, t: float) -> Any:
            return await getattr(getattr(conn, stub), method)(request, timeout=t)

        return await self._call(method, invoke, idempotent=idempotent, timeout=timeout)

    # -- KV ------------------------------------------------------------------------------------------------
    async def get(self, key: bytes) -> KeyValue | None:
        response = await self.range(key, b"")
        return response.kvs[0] if response.kvs else None

    async def range(
        self, key: bytes, range_end: bytes, *, revision: int = 0, limit: int = 0, count_only: bool = False
    ) -> Any:
        request = rpc.RangeRequest(
            key=key, range_end=range_end, revision=revision, limit=limit, count_only=count_only
        )
        return await self._unary("kv", "Range", request, idempotent=True)

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
        request = rpc.PutRequest(key=key, value=value, lease=lease)
        response = await self._unary("kv", "Put", request, idempotent=False)
        return int(response.header.revision)

    async def delete(self, key: bytes, range_end: bytes = b"") -> int:
        request = rpc.DeleteRangeRequest(key=key, range_end=range_end)
        response = await self._unary("kv", "DeleteRange", request, idempotent=False)
        return int(response.deleted)

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[RequestOp] = (),
        failure: Sequence[RequestOp] = (),
        timeout: float | None = None,
    ) -> Any:
        """Raises ``OutcomeUnknownError`` if it was sent and its answer lost; a read-only txn is retried."""
        request = rpc.TxnRequest(compare=list(compare), success=list(success), failure=list(failure))
        return await self.send_txn(request, timeout)

    async def send_txn(self, request: TxnRequest, timeout: float | None = None) -> Any:
        """``txn`` of a request built already (``etcdops.TxnBuilder``)."""
        ops = [*request.success, *request.failure]
        read_only = all(op.WhichOneof("request") == "request_range" for op in ops)
        return await self._unary("kv", "Txn", request, idempotent=read_only, timeout=timeout)

    async def compact(self, revision: int) -> None:
        request = rpc.CompactionRequest(revision=revision, physical=True)
        await self._unary("kv", "Compact", request, idempotent=True)

    # -- leases --------------------------------------------------------------------------------------------
    async def grant(self, ttl: int) -> int:
        request = rpc.LeaseGrantRequest(TTL=ttl)
        response = await self._unary("lease", "LeaseGrant", request, idempotent=True)
        if response.error:
            raise EtcdUnavailableError(f"lease grant failed: {response.error}")
        return int(response.ID)

    async def revoke(self, lease: int) -> None:
        """Revoke a lease; one that is already gone (expired, or revoked by a lost attempt) counts as done."""
        try:
            await self._unary("lease", "LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease), idempotent=True)
        except EtcdRefusedError as e:
            if e.code != grpc.StatusCode.NOT_FOUND:
                raise

    async def keep_alive_once(self, lease: int) -> int:
        """Refresh a lease; returns its new TTL in seconds (<= 0: the lease is gone)."""

        async def invoke(conn: Connection, timeout: float) -> int:
            async def requests() -> AsyncIterator[Any]:
                yield rpc.LeaseKeepAliveRequest(ID=lease)

            call = conn.lease.LeaseKeepAlive(requests(), timeout=timeout)
            try:
                async for reply in call:
                    return int(reply.TTL)
                return 0
            finally:
                call.cancel()

        return await self._call("LeaseKeepAlive", invoke, idempotent=True)

    # -- cluster -------------------------------------------------------------------------------------------
    async def status(self) -> Any:
        """The maintenance status of the endpoint that answers: ``header.member_id``, ``leader``, sizes."""
        return await self._unary("maintenance", "Status", rpc.StatusRequest(), idempotent=True)

    async def member_list(self) -> Any:
        return await self._unary("cluster", "MemberList", rpc.MemberListRequest(), idempotent=True)

    # -- watch ---------------------------------------------------------------------------------------------
    async def watch(
        self, key: bytes, range_end: bytes, start_revision: int, *, progress_notify: bool = True
    ) -> AsyncIterator[WatchBatch]:
        """Events in ``[key, range_end)`` from ``start_revision`` on, until cancelled or failed.

        Raises ``CompactedError`` when ``start_revision`` is no longer available, ``EtcdUnavailableError``
        when the stream breaks (its endpoint is then retired): callers reload and watch again, which
        goes to the next endpoint.
        """
        conn = await self._ready(self.timeout, [])
        create = rpc.WatchCreateRequest(
            key=key, range_end=range_end, start_revision=start_revision, progress_notify=progress_notify
        )
        queue: asyncio.Queue[Any] = asyncio.Queue()
        queue.put_nowait(rpc.WatchRequest(create_request=create))

        async def requests() -> AsyncIterator[Any]:
            while (item := await queue.get()) is not None:
                yield item

        call = conn.watch.Watch(requests(), metadata=REQUIRE_LEADER)
        try:
            async for response in call:
                if response.compact_revision:
                    raise CompactedError(int(response.compact_revision))
                if response.canceled:
                    self._connections.retire(conn)  # e.g. "no leader": that member is cut off
                    raise EtcdUnavailableError(
                        f"watch cancelled by etcd at {conn.endpoint}: {response.cancel_reason}"
                    )
                events = tuple(WatchEvent(event.type == rpc.Event.PUT, event.kv) for event in response.events)
                yield WatchBatch(int(response.header.revision), events)
            raise EtcdUnavailableError(f"watch stream from {conn.endpoint} ended")
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as e:
            if isinstance(e, asyncio.CancelledError) and task_cancelled():
                raise
            raise EtcdUnavailableError(f"watch broken: etcd at {self._broken(conn, e)}") from e
        finally:
            queue.put_nowait(None)
            call.cancel()
            self._connections.release(conn)
