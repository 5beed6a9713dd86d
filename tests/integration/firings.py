"""What a pool of member processes fired, checked against what it should have: jobs written in bulk,
the pool settled on its partitions, duplicates and missing ticks counted per (job, scheduled tick)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from etcdcron.errors import EtcdUnavailableError
from etcdcron.etcd import EtcdClient
from etcdcron.job import Job, format_time
from etcdcron.keys import Keys, range_end
from etcdcron.partitions import assignment
from etcdcron.store import JobStore
from eventually import eventually_async

from .processes import MemberProcess


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def iso(epoch_s: int) -> str:
    return format_time(datetime.fromtimestamp(epoch_s, UTC))


def job_name(i: int) -> str:
    return f"job-{i:03d}"


async def add_jobs(endpoints: Sequence[str], prefix: str, count: int, schedule: str = "* * * * * *") -> None:
    async with EtcdClient(endpoints, timeout=10) as client:
        store = JobStore(client, Keys(prefix))
        for start in range(0, count, 50):
            batch = range(start, min(start + 50, count))
            await asyncio.gather(*(store.add(Job(name=job_name(i), schedule=schedule)) for i in batch))


async def wait_settled(endpoints: Sequence[str], prefix: str, members: Iterable[str], timeout: float) -> None:
    """Until etcd shows every partition held by the member rendezvous hashing gives it to."""
    keys = Keys(prefix)
    expected = dict(assignment(keys.partitions, members))
    root = keys.partitions_root()

    async with EtcdClient(endpoints, timeout=2) as client:

        async def settled() -> bool:
            try:
                response = await client.range(root, range_end(root))
            except EtcdUnavailableError:
                return False
            held = {keys.partition_of_key(kv.key): kv.value.decode() for kv in response.kvs}
            return held == expected

        await eventually_async(settled, timeout, f"the pool settled on {sorted(expected.values())[:1]}...")


def everything(members: Iterable[MemberProcess]) -> list[dict[str, Any]]:
    return [f for m in members for f in list(m.firings)]


def last_tick(member: MemberProcess) -> float:
    return max((ts(f["scheduled"]) for f in list(member.firings)), default=0.0)


@dataclass(frozen=True)
class Tally:
    """Ticks of ``jobs`` jobs scheduled in (start, end]: which fired twice, which never fired."""

    duplicates: dict[tuple[str, str], int]
    missing: set[tuple[str, str]]

    @staticmethod
    def of(firings: list[dict[str, Any]], jobs: int, start: float, end: float) -> Tally:
        counts = collections.Counter((f["name"], f["scheduled"]) for f in firings)
        twice = {k: n for k, n in counts.items() if n > 1}
        expected = {(job_name(i), iso(t)) for i in range(jobs) for t in range(int(start) + 1, int(end) + 1)}
        return Tally(twice, expected - counts.keys())

    def missing_outside(self, window_start: float, window_end: float) -> set[tuple[str, str]]:
        return {k for k in self.missing if not window_start <= ts(k[1]) <= window_end}

    def missing_span(self) -> tuple[float, float] | None:
        ticks = [ts(k[1]) for k in self.missing]
        return (min(ticks), max(ticks)) if ticks else None


def describe(tally: Tally, firings: list[dict[str, Any]], t0: float) -> str:
    """Duplicates, missing ticks and ticks fired over 1 s late, with their spans relative to ``t0``."""

    def span(ticks: list[float]) -> str:
        return f" (scheduled {min(ticks) - t0:+.1f}..{max(ticks) - t0:+.1f}s)" if ticks else ""

    lateness = [(ts(f["scheduled"]), ts(f["fired"]) - ts(f["scheduled"])) for f in firings]
    late = [tick for tick, delay in lateness if delay > 1]
    worst = max((delay for _, delay in lateness), default=0.0)
    missing = [ts(k[1]) for k in tally.missing]
    return (
        f"{len(tally.duplicates)} duplicates; {len(missing)} ticks missing{span(missing)}; "
        f"{len(late)} fired over 1 s late{span(late)}, worst {worst:.2f}s"
    )
