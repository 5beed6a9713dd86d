"""The small etcd client against a real etcd: paging at one revision, compaction, unreachable endpoints."""

from __future__ import annotations

import pytest

from etcdcron.errors import EtcdUnavailableError
from etcdcron.etcd import CompactedError, EtcdClient
from etcdcron.keys import range_end
from etcdcron.localetcd import free_port


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


async def test_failover_to_the_next_endpoint(etcd_endpoint: str, prefix: str) -> None:
    async with EtcdClient([f"127.0.0.1:{free_port()}", etcd_endpoint], timeout=1) as client:
        with pytest.raises(EtcdUnavailableError):
            await client.get(f"{prefix}/x".encode())
        assert client.endpoint == etcd_endpoint
        assert await client.get(f"{prefix}/x".encode()) is None
