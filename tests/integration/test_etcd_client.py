"""The small etcd client against a real etcd: paging at one revision, compaction, unreachable endpoints."""

from __future__ import annotations

import asyncio

import pytest

from etcdcron import etcd
from etcdcron.errors import EtcdUnavailableError
from etcdcron.etcd import CompactedError, EtcdClient
from etcdcron.keys import range_end
from etcdcron.localetcd import LocalEtcd, free_port


async def test_range_pages_reads_one_revision(etcd_client: EtcdClient, prefix: str) -> None:
    root = f"{prefix}/k/".encode()
    for i in range(25):
        await etcd_client.put(root + f"{i:03d}".encode(), b"v")
    pages, revisions, keys = [], set(), []
    async for revision, page in etcd_client.range_pages(root, range_end(root), page=10):
        pages.append(len(page))
        revisions.add(revision)
        keys += [kv.key for kv in page]
        await etcd_client.put(root + b"zzz-late", b"written while paging")  # not seen: same revision
    assert pages == [10, 10, 5]
    assert len(revisions) == 1
    assert root + b"zzz-late" not in keys


async def test_watch_from_compacted_history_raises_compacted(etcd_client: EtcdClient, prefix: str) -> None:
    key = f"{prefix}/compacted".encode()
    first = await etcd_client.put(key, b"1")
    latest = await etcd_client.put(key, b"2")
    await etcd_client.compact(latest)
    with pytest.raises(CompactedError) as err:
        async for _ in etcd_client.watch(key, b"", first):
            pass
    assert err.value.compact_revision >= latest


async def test_a_dead_first_endpoint_is_skipped_for_reads_and_writes(etcd_endpoint: str, prefix: str) -> None:
    """Nothing was sent to the dead endpoint (it never connected), so even writes move on."""
    key = f"{prefix}/x".encode()
    for first in ("get", "put", "txn"):
        async with EtcdClient([f"127.0.0.1:{free_port()}", etcd_endpoint], timeout=1) as client:
            if first == "get":
                assert await client.get(key) is None
            elif first == "put":
                assert await client.put(key, b"1") > 0
            else:
                assert (await client.txn([], [etcd.put(key, b"2")])).succeeded
            assert client.endpoint == etcd_endpoint


async def test_every_endpoint_down_says_so_and_names_each(prefix: str) -> None:
    dead = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    async with EtcdClient(dead, timeout=1) as client:
        with pytest.raises(EtcdUnavailableError) as err:
            await client.get(f"{prefix}/x".encode())
    assert "all 3 endpoints failed" in str(err.value)
    assert all(d in str(err.value) for d in dead)


async def test_closing_the_client_ends_a_watch_with_unavailable_not_cancelled(
    etcd_endpoint: str, prefix: str
) -> None:
    key = f"{prefix}/w".encode()
    client = EtcdClient([etcd_endpoint])
    revision = await client.put(key, b"0")
    watching = asyncio.Event()

    async def watch() -> None:
        async for _ in client.watch(key, b"", revision):
            watching.set()

    task = asyncio.create_task(watch())
    await asyncio.wait_for(watching.wait(), 10)
    await client.close()
    with pytest.raises(EtcdUnavailableError):
        await asyncio.wait_for(task, 10)


async def test_cancelling_the_caller_still_cancels(etcd_client: EtcdClient, prefix: str) -> None:
    """Only cancellations the client caused become errors; the caller's own cancellation goes through."""
    key = f"{prefix}/c".encode()
    revision = await etcd_client.put(key, b"0")

    async def watch() -> None:
        async for _ in etcd_client.watch(key, b"", revision + 1):
            pass

    task = asyncio.create_task(watch())
    await asyncio.sleep(0.2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert await etcd_client.get(key) is not None  # the client is fine afterwards


def test_launcher_and_client_ignore_http_proxy(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    """A proxy meant for the outside world must not be asked for etcd on this machine."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "grpc_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{free_port()}")
    with LocalEtcd(die_with_parent=True) as server:
        assert server.healthy() and server.is_leader()

        async def roundtrip() -> bytes:
            async with EtcdClient([server.endpoint], timeout=5) as client:
                await client.put(f"{prefix}/p".encode(), b"direct")
                kv = await client.get(f"{prefix}/p".encode())
                return bytes(kv.value)

        assert asyncio.run(roundtrip()) == b"direct"
