"""What the pool tests share: jobs firing every second, waiting for ownership to settle, and the
exactly-once check over the firings that member processes printed."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from etcdcron.etcd import EtcdClient
from etcdcron.job import Job, format_time
from etcdcron.keys import Keys, range_end
from etcdcron.partitions import assignment
from etcdcron.store import JobStore

from .processes import MemberProcess

JOBS = 100
LEASE_TTL = 2


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def job_names(count: int = JOBS) -> list[str]:
    return [f"job-{i:03d}" for i in range(count)]


async def add_jobs(
    endpoint: str, prefix: str, count: int = JOBS, schedule: str = "* * * * * *", first: int = 0
) -> None:
    """Add jobs ``job-<first>`` ... ``job-<first + count - 1>``."""
    async with EtcdClient([endpoint]) as client:
        store = JobStore(client, Keys(prefix))
        for start in range(first, first + count, 100):
            names = job_names(first + count)[start : min(start + 100, first + count)]
            await asyncio.gather(*(store.add(Job(name=name, schedule=schedule)) for name in names))


async def partition_holders(client: EtcdClient, keys: Keys) -> dict[int, tuple[str, int]]:
    """Partition -> (holder, create revision of its key) as etcd has it now."""
    response = await client.range(keys.partitions_root(), range_end(keys.partitions_root()))
    return {keys.partition_of_key(kv.key): (kv.value.decode(), kv.create_revision) for kv in response.kvs}


async def wait_settled(endpoint: str, prefix: str, members: Iterable[str], timeout: float = 30) -> None:
    """Wait until etcd shows every partition held by the member rendezvous hashing gives it to."""
    keys = Keys(prefix)
    expected = assignment(keys.partitions, members)
    async with EtcdClient([endpoint]) as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            held = {p: holder for p, (holder, _) in (await partition_holders(client, keys)).items()}
            if held == expected:
                await asyncio.sleep(0.5)  # loading follows acquisition; a late load only fires late
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"pool did not settle on {sorted(members)} within {timeout}s")


def ticks_in(firings: list[dict[str, Any]], start: float, end: float) -> collections.Counter[tuple[str, str]]:
    """How often each (job, scheduled tick) with start <= tick <= end fired."""
    return collections.Counter(
        (f["name"], f["scheduled"]) for f in firings if start <= ts(f["scheduled"]) <= end
    )


def duplicates(firings: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    counts = collections.Counter((f["name"], f["scheduled"]) for f in firings)
    return {k: n for k, n in counts.items() if n > 1}


def missing_ticks(
    firings: list[dict[str, Any]], start: float, end: float, names: Iterable[str]
) -> set[tuple[str, str]]:
    """Every-second ticks of ``names`` in [start, end] that never fired."""
    counts = ticks_in(firings, start, end)
    first, last = int(start) + 1, int(end)
    expected = {(name, _iso(t)) for name in names for t in range(first, last + 1)}
    return expected - counts.keys()


def assert_exactly_once(
    all_firings: list[dict[str, Any]], start: float, end: float, names: Iterable[str] | None = None
) -> None:
    twice = duplicates(all_firings)
    assert not twice, f"{len(twice)} ticks fired more than once, e.g. {list(twice.items())[:5]}"
    missing = missing_ticks(all_firings, start, end, job_names() if names is None else names)
    assert not missing, f"{len(missing)} ticks never fired, e.g. {sorted(missing)[:5]}"


def _iso(epoch_s: int) -> str:
    return format_time(datetime.fromtimestamp(epoch_s, UTC))


def everything(members: list[MemberProcess]) -> list[dict[str, Any]]:
    return [f for m in members for f in m.firings]
