"""The etcd client against a 3-node cluster whose leader is killed under load: no CancelledError escapes,
every call either succeeds (retried on a survivor) or raises EtcdUnavailableError, and the survivors serve."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any

from etcdcron import etcd
from etcdcron.errors import EtcdUnavailableError
from etcdcron.etcd import EtcdClient, OutcomeUnknownError
from etcdcron.keys import range_end
from etcdcron.localetcd import LocalEtcdCluster
from eventually import eventually_async

WORKERS = 8  # of each kind


async def test_leader_killed_under_concurrent_calls(etcd_cluster: LocalEtcdCluster, prefix: str) -> None:
    leader = etcd_cluster.leader()
    endpoints = [leader.endpoint] + [n.endpoint for n in etcd_cluster.nodes if n is not leader]
    root = f"{prefix}/k/".encode()
    end = range_end(root)
    stop = asyncio.Event()
    ok: collections.Counter[str] = collections.Counter()
    failed: collections.Counter[str] = collections.Counter()
    errors: list[tuple[str, EtcdUnavailableError]] = []

    async with EtcdClient(endpoints, timeout=3) as client:
        lease = await client.grant(30)

        async def loop(kind: str, call: Callable[[int], Awaitable[Any]]) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    await call(i)
                    ok[kind] += 1
                except EtcdUnavailableError as e:
                    failed[kind] += 1
                    errors.append((kind, e))
                    await asyncio.sleep(0.05)

        async def watch(_: int) -> None:
            head = await client.range(root, end, limit=1)
            async for _batch in client.watch(root, end, head.header.revision + 1):
                ok["watch-batch"] += 1
                if stop.is_set():
                    return

        kinds: dict[str, Callable[[int], Awaitable[Any]]] = {
            "range": lambda i: client.range(root, end, limit=10),
            "put": lambda i: client.put(root + b"p%d" % (i % 50), b"v"),
            "txn": lambda i: client.txn([], [etcd.put(root + b"t%d" % (i % 50), b"v")]),
            "read-txn": lambda i: client.txn([], [etcd.get(root + b"t1")]),
            "keep-alive": lambda i: client.keep_alive_once(lease),
            "watch": watch,
        }
        tasks = [
            asyncio.create_task(loop(kind, call), name=f"{kind}-{n}")
            for kind, call in kinds.items()
            for n in range(WORKERS if kind != "watch" else 2)
        ]
        await eventually_async(lambda: all(ok[k] > 5 for k in ("range", "put", "txn")), 30, "calls flowing")
        before = dict(ok)
        leader.kill()
        # Every kind of call succeeds again on the survivors, without any task dying on the way.
        await eventually_async(
            lambda: all(
                ok[k] > before.get(k, 0) + 20 for k in ("range", "put", "txn", "read-txn", "keep-alive")
            ),
            60,
            "every kind of call succeeding on the survivors",
        )
        await eventually_async(lambda: ok["watch-batch"] > before.get("watch-batch", 0), 30, "watch events")
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)

    escaped = [(t.get_name(), repr(r)) for t, r in zip(tasks, results, strict=True) if r is not None]
    assert not escaped, f"exceptions escaped the client: {escaped[:5]}"
    assert not any(t.cancelled() for t in tasks)
    # Only writes may lose their answer; reads were retried instead. The failed endpoint is the one named.
    unknown = {kind for kind, e in errors if isinstance(e, OutcomeUnknownError)}
    assert unknown <= {"put", "txn"}, f"reads reported an unknown outcome: {unknown}"
    texts = [str(e) for _, e in errors]
    assert not texts or any(leader.endpoint in t for t in texts), f"leader never named: {texts[:5]}"
    print(f"\nleader kill: ok={dict(ok)} failed={dict(failed)} e.g. {texts[:3]}")


async def test_a_read_in_flight_on_the_killed_leader_is_retried_on_a_survivor(
    etcd_cluster: LocalEtcdCluster, prefix: str
) -> None:
    """Reads are idempotent: a read whose endpoint dies is answered by the next one, not failed."""
    leader = etcd_cluster.leader()
    follower = next(n for n in etcd_cluster.nodes if n is not leader)
    key = f"{prefix}/r".encode()
    async with EtcdClient([leader.endpoint, follower.endpoint], timeout=5) as client:
        await client.put(key, b"v")
        leader.kill()
        got = await eventually_async(_get_or_none(client, key), 30, "a read answered by the follower")
        assert got.value == b"v"
        assert client.endpoint == follower.endpoint


def _get_or_none(client: EtcdClient, key: bytes) -> Callable[[], Awaitable[Any]]:
    async def attempt() -> Any:
        try:
            return await client.get(key)
        except OutcomeUnknownError:
            raise
        except EtcdUnavailableError:
            return None  # an election in progress: every endpoint said "leader changed"

    return attempt
