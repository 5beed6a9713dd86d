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
from etcdcron.policy import Delivery
from etcdcron.store import JobStore
from eventually import eventually_async

from .processes import MemberProcess


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def iso(epoch_s: int) -> str:
    return format_time(datetime.fromtimestamp(epoch_s, UTC))


def job_name(i: int) -> str:
    return f"job-{i:03d}"


JOBS = 100
LEASE_TTL = 2


def job_names(count: int = JOBS, first: int = 0) -> list[str]:
    return [job_name(i) for i in range(first, first + count)]


def _endpoints(endpoints: str | Sequence[str]) -> list[str]:
    return [endpoints] if isinstance(endpoints, str) else list(endpoints)


async def add_jobs(
    endpoints: str | Sequence[str],
    prefix: str,
    count: int = JOBS,
    schedule: str = "* * * * * *",
    first: int = 0,
    delivery: Delivery = Delivery.AT_LEAST_ONCE,
) -> None:
    """Add jobs ``job-<first>`` ... ``job-<first + count - 1>``."""
    async with EtcdClient(_endpoints(endpoints), timeout=10) as client:
        store = JobStore(client, Keys(prefix))
        for start in range(first, first + count, 50):
            batch = range(start, min(start + 50, first + count))
            jobs = [Job(name=job_name(i), schedule=schedule, delivery=delivery) for i in batch]
            await asyncio.gather(*(store.add(job) for job in jobs))


async def partition_holders(client: EtcdClient, keys: Keys) -> dict[int, tuple[str, int]]:
    """Partition -> (holder, create revision of its key) as etcd has it now."""
    response = await client.range(keys.partitions_root(), range_end(keys.partitions_root()))
    return {keys.partition_of_key(kv.key): (kv.value.decode(), kv.create_revision) for kv in response.kvs}


async def wait_settled(
    endpoints: str | Sequence[str], prefix: str, members: Iterable[str], timeout: float = 30
) -> None:
    """Until etcd shows every partition held by the member rendezvous hashing gives it to."""
    keys = Keys(prefix)
    expected = dict(assignment(keys.partitions, members))
    root = keys.partitions_root()

    async with EtcdClient(_endpoints(endpoints), timeout=2) as client:

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
    expected = {(name, iso(t)) for name in names for t in range(int(start) + 1, int(end) + 1)}
    return expected - counts.keys()


def assert_exactly_once(
    all_firings: list[dict[str, Any]], start: float, end: float, names: Iterable[str] | None = None
) -> None:
    twice = duplicates(all_firings)
    example = [f for f in all_firings if (f["name"], f["scheduled"]) in list(twice)[:1]]
    assert not twice, f"{len(twice)} ticks fired more than once, e.g. {list(twice.items())[:5]}: {example}"
    missing = missing_ticks(all_firings, start, end, job_names() if names is None else names)
    assert not missing, f"{len(missing)} ticks never fired, e.g. {sorted(missing)[:5]}"


def first_deliveries(firings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Firings less re-deliveries (at-least-once: a firing found unsettled after a crash or a takeover)."""
    return [f for f in firings if not f.get("redelivery")]


def assert_at_least_once(
    all_firings: list[dict[str, Any]], start: float, end: float, names: Iterable[str] | None = None
) -> None:
    """Nothing missing; a tick fired twice only as a re-delivery, and at most once more."""
    twice = duplicates(first_deliveries(all_firings))
    assert not twice, f"{len(twice)} ticks first-delivered twice, e.g. {list(twice.items())[:5]}"
    thrice = {k: n for k, n in duplicates(all_firings).items() if n > 2}
    assert not thrice, f"{len(thrice)} ticks delivered three times or more, e.g. {list(thrice.items())[:5]}"
    missing = missing_ticks(all_firings, start, end, job_names() if names is None else names)
    assert not missing, f"{len(missing)} ticks never fired, e.g. {sorted(missing)[:5]}"


def assert_no_double_delivery(
    firings: list[dict[str, Any]], jobs: int, start: float, end: float, delivery: Delivery
) -> None:
    """At-most-once: no tick twice. At-least-once: a tick delivered but not acknowledged may be re-delivered
    (flagged, once); nothing is first-delivered twice."""
    firsts = Tally.of(first_deliveries(firings), jobs, start, end).duplicates
    assert not firsts, f"{len(firsts)} ticks fired twice: {list(firsts)[:5]}"
    every = Tally.of(firings, jobs, start, end).duplicates
    if delivery is Delivery.AT_MOST_ONCE:
        assert not every, f"{len(every)} ticks fired twice: {list(every)[:5]}"
    assert all(n <= 2 for n in every.values()), "a tick re-delivered more than once"
