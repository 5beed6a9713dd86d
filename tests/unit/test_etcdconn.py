"""The etcd client's connection bookkeeping, without an etcd: channels are closed only once unused, and
only a failure gRPC reports before sending counts as "never sent"."""

from __future__ import annotations

import asyncio

import grpc

from etcdcron.etcdconn import Connections, never_sent, task_cancelled


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def test_only_a_failed_pick_counts_as_never_sent() -> None:
    refused = "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Connection refused"
    assert never_sent(rpc_error(grpc.StatusCode.UNAVAILABLE, refused))
    assert not never_sent(rpc_error(grpc.StatusCode.UNAVAILABLE, "Socket closed"))
    assert not never_sent(rpc_error(grpc.StatusCode.UNAVAILABLE, "etcdserver: leader changed"))
    assert not never_sent(rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, refused))
    assert not never_sent(asyncio.CancelledError())


async def test_a_retired_channel_closes_after_its_last_call() -> None:
    connections = Connections(["127.0.0.1:1", "127.0.0.1:2"])
    first = connections.acquire()
    connections.retire(first)
    assert connections.endpoint == "127.0.0.1:2"
    second = connections.acquire()
    assert second is not first
    connections.retire(first)  # a second failure on the old channel moves nothing
    assert connections.acquire() is second
    await asyncio.sleep(0)
    assert not first.closed, "closed under a call still running on it"
    connections.release(first)
    assert first.closed
    connections.release(second)
    connections.release(second)
    await connections.close()
    assert second.closed


async def test_task_cancelled_tells_a_real_cancellation_from_a_dropped_call() -> None:
    assert not task_cancelled()
    seen: list[bool] = []

    async def victim() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append(task_cancelled())
            raise

    task = asyncio.create_task(victim())
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert seen == [True]
