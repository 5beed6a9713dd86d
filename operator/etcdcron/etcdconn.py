"""The etcd client's connections: one gRPC channel at a time, moved to the next endpoint on failure.

A channel is never closed under a call. gRPC cancels every call on a channel it closes, and those calls
see ``asyncio.CancelledError``, which looks to their callers like their own task being cancelled: a loop
that rightly lets cancellation through then ends for good. So a failed channel is only *retired*: new calls
go to a fresh channel, and the old one is closed once its last call (a watch, a keep-alive) has finished.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
from aetcd import rpc

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]

ENDPOINT_FAILURES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,  # connection lost, or etcd: no leader / leader changed / timed out
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,  # the channel went away under the call
        grpc.StatusCode.UNKNOWN,  # e.g. "Stream removed": the connection broke mid-call
        grpc.StatusCode.INTERNAL,  # "Internal error from Core": gRPC's transport, not etcd's answer
    }
)
"""gRPC codes that blame the endpoint (move on); any other code is etcd's answer to the request."""


def never_sent(error: BaseException) -> bool:
    """True if gRPC failed the call before sending it: no connected transport was there to pick.

    This status comes from gRPC's load-balancing pick, which runs before a stream is opened; a call that
    was sent and then lost its connection fails with a stream error instead ("Socket closed", "Stream
    removed"). Should a gRPC release word it differently, the call counts as sent: safe, only slower.
    """
    return (
        isinstance(error, grpc.aio.AioRpcError)
        and error.code() == grpc.StatusCode.UNAVAILABLE
        and (error.details() or "").startswith("failed to connect to all addresses")
    )


def _local(endpoint: str) -> bool:
    host = endpoint.rpartition(":")[0].strip("[]")
    return host == "localhost" or host.startswith(("127.", "169.254.")) or host == "::1"


def channel_options(endpoint: str) -> list[tuple[str, int]]:
    """gRPC honours ``http_proxy`` like a browser would; an etcd on this machine or link is never behind
    one (and a proxy set for the rest of the world must not break ``etcdcron dev`` or the tests)."""
    return CHANNEL_OPTIONS + ([("grpc.enable_http_proxy", 0)] if _local(endpoint) else [])


def task_cancelled() -> bool:
    """True if the current task has been asked to cancel, i.e. a ``CancelledError`` is genuine.

    A ``CancelledError`` while nobody cancelled the task came from gRPC cancelling the call itself (its
    channel was closed): that is a failed call, not a cancelled caller.
    """
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


class Connection:
    """One channel to one endpoint and the stubs on it; counts the calls that use it."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.channel = grpc.aio.insecure_channel(endpoint, options=channel_options(endpoint))
        self.kv: Any = rpc.KVStub(self.channel)
        self.lease: Any = rpc.LeaseStub(self.channel)
        self.watch: Any = rpc.WatchStub(self.channel)
        self.maintenance: Any = rpc.MaintenanceStub(self.channel)
        self.cluster: Any = rpc.ClusterStub(self.channel)
        self.calls = 0
        self.retired = False
        self.closed = False

    async def ready(self, timeout: float) -> bool:
        """Wait for the channel to connect. False: it could not, so nothing was sent on it.

        A channel in TRANSIENT_FAILURE has just failed to connect (refused, unreachable): give up at once
        rather than wait out gRPC's reconnect backoff; the caller moves on to the next endpoint.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        state = self.channel.get_state(try_to_connect=True)
        while state != grpc.ChannelConnectivity.READY:
            if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN):
                return False
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self.channel.wait_for_state_change(state), remaining)
            except TimeoutError:
                return False
            state = self.channel.get_state(try_to_connect=True)
        return True


class Connections:
    """The current connection, rotation over the endpoints, and deferred closing of retired channels."""

    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = endpoints
        self.index = 0
        self._current: Connection | None = None
        self._retired: set[Connection] = set()
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def endpoint(self) -> str:
        return self._current.endpoint if self._current is not None else self.endpoints[self.index]

    def acquire(self) -> Connection:
        """The current connection (opened on demand), counted as used until ``release``."""
        if self._current is None:
            self._current = Connection(self.endpoints[self.index])
        self._current.calls += 1
        return self._current

    def release(self, conn: Connection) -> None:
        conn.calls -= 1
        if conn.retired and conn.calls == 0:
            self._close_later(conn)

    def retire(self, conn: Connection) -> None:
        """``conn`` failed: later calls go to the next endpoint. A no-op if another call already moved on."""
        if conn is not self._current:
            return
        self._current = None
        self.index = (self.endpoints.index(conn.endpoint) + 1) % len(self.endpoints)
        conn.retired = True
        if conn.calls == 0:
            self._close_later(conn)
        else:
            self._retired.add(conn)

    def _close_later(self, conn: Connection) -> None:
        self._retired.discard(conn)
        if conn.closed:
            return
        conn.closed = True
        task = asyncio.get_running_loop().create_task(conn.channel.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close every channel now: calls still running end with ``EtcdUnavailableError``."""
        conns = [c for c in (self._current, *self._retired) if c is not None]
        self._current = None
        self._retired.clear()
        for conn in conns:
            conn.retired = conn.closed = True
            await conn.channel.close()
        for task in list(self._closing):
            with contextlib.suppress(Exception):
                await task
