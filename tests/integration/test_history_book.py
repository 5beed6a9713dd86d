"""A job's history is rewritten at most once per REWRITE_SECONDS, routine rewrites are paced; forced
partitions and urgent entries are written at once."""

from __future__ import annotations

from dataclasses import replace

from etcdcron.decode import decode_history
from etcdcron.etcd import EtcdClient
from etcdcron.firing import HISTORY_LENGTH, HistoryEntry
from etcdcron.keys import Keys
from etcdcron.pool.history import REWRITE_SECONDS, HistoryBook
from etcdcron.pool.reporting import Reporter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def entry(run: int) -> HistoryEntry:
    return HistoryEntry(run * 1000, run * 1000 + 5, "m", run, "success", 1, "scheduled")


async def test_a_history_waits_for_its_next_rewrite(etcd_client: EtcdClient, prefix: str) -> None:
    keys = Keys(prefix)
    ref = keys.ref("t", "j")
    spec_key, clock = keys.job(ref), Clock()
    book = HistoryBook(etcd_client, keys, Reporter("m", None, None), clock)

    async def write() -> list[int]:
        puts = await book.writes()
        for _, key, write in puts:
            assert write.value is not None
            await etcd_client.put(key, write.value)
        got = await etcd_client.get(keys.sibling(spec_key, "history"))
        return [e.run for e in decode_history(got.key, got.value)[1]] if puts and got else []

    assert book.due_in() is None
    book.add(ref.partition, spec_key, "id", 0, entry(1))
    assert book.due_in() == 0 and await write() == [1]  # a first write goes at once
    book.add(ref.partition, spec_key, "id", 0, entry(2))
    assert await write() == [] and book.due_in() == REWRITE_SECONDS  # then waits
    clock.now += REWRITE_SECONDS - 1
    book.add(ref.partition, spec_key, "id", 0, entry(3))
    assert await write() == [] and book.due_in() == 1
    clock.now += 1
    assert await write() == [1, 2, 3] and book.due_in() is None  # both waiting entries, in one write
    book.add(ref.partition, spec_key, "id", 0, entry(4))
    assert await book.writes() == []
    forced = await book.writes(every=[ref.partition])  # a hand-over or a leave: written now
    assert [key for _, key, _ in forced] == [keys.sibling(spec_key, "history")] and book.due_in() is None


async def test_an_entry_that_is_not_a_routine_success_is_written_at_once(
    etcd_client: EtcdClient, prefix: str
) -> None:
    keys = Keys(prefix)
    ref = keys.ref("t", "k")
    spec_key = keys.job(ref)
    book = HistoryBook(etcd_client, keys, Reporter("m", None, None), Clock())
    book.add(ref.partition, spec_key, "id", 0, entry(1))
    assert len(await book.writes()) == 1
    book.add(ref.partition, spec_key, "id", 0, entry(2))
    assert await book.writes() == [] and book.due_in() == REWRITE_SECONDS
    book.add(ref.partition, spec_key, "id", 0, replace(entry(3), result="failed"))
    assert book.due_in() == 0
    (_, key, write), *more = await book.writes()
    assert not more and key == keys.sibling(spec_key, "history")
    assert write.value is not None
    await etcd_client.put(key, write.value)
    got = await etcd_client.get(key)
    assert got is not None and [e.run for e in decode_history(got.key, got.value)[1]] == [1, 2, 3]


async def test_the_first_success_after_a_failure_is_written_at_once(
    etcd_client: EtcdClient, prefix: str
) -> None:
    keys = Keys(prefix)
    ref = keys.ref("t", "r")
    spec_key = keys.job(ref)
    book = HistoryBook(etcd_client, keys, Reporter("m", None, None), Clock())
    book.add(ref.partition, spec_key, "id", 0, replace(entry(1), result="failed"))
    assert len(await book.writes()) == 1
    book.add(ref.partition, spec_key, "id", 0, entry(2))  # the failure is over: the status must say so
    assert book.due_in() == 0 and len(await book.writes()) == 1
    book.add(ref.partition, spec_key, "id", 0, entry(3))  # routine again
    assert await book.writes() == [] and book.due_in() == REWRITE_SECONDS


async def test_routine_rewrites_are_paced_longest_waiting_first(etcd_client: EtcdClient, prefix: str) -> None:
    keys, clock = Keys(prefix), Clock()
    book = HistoryBook(etcd_client, keys, Reporter("m", None, None), clock, rate=2)
    refs = [keys.ref("t", f"j{i}") for i in range(5)]
    for ref in refs:  # each job's first routine entry, a second apart
        book.add(ref.partition, keys.job(ref), "id", 0, entry(1))
        clock.now += 1
    history = [keys.sibling(keys.job(ref), "history") for ref in refs]
    assert [key for _, key, _ in await book.writes()] == history[:2]  # the pace: 2 now (its burst)
    assert book.due_in() == 0.5  # the next token (never sooner than BUDGET_GATHER_SECONDS)
    clock.now += 1
    urgent = keys.ref("t", "urgent")
    book.add(urgent.partition, keys.job(urgent), "id", 0, replace(entry(1), result="failed"))
    written = [key for _, key, _ in await book.writes()]
    assert written == [keys.sibling(keys.job(urgent), "history"), *history[2:4]]  # urgent goes unpaced
    clock.now += 0.5
    assert [key for _, key, _ in await book.writes()] == history[4:] and book.due_in() is None


async def test_a_long_wait_keeps_only_what_the_history_would(etcd_client: EtcdClient, prefix: str) -> None:
    keys, clock = Keys(prefix), Clock()
    book = HistoryBook(etcd_client, keys, Reporter("m", None, None), clock)
    ref = keys.ref("t", "busy")
    book.add(ref.partition, keys.job(ref), "id", 0, entry(0))
    await book.writes()
    for run in range(1, 3 * HISTORY_LENGTH):
        book.add(ref.partition, keys.job(ref), "id", 0, entry(run))
    assert len(book._pending[keys.sibling(keys.job(ref), "history")].entries) == HISTORY_LENGTH
    clock.now += REWRITE_SECONDS
    ((_, key, write),) = await book.writes()
    assert write.value is not None
    await etcd_client.put(key, write.value)
    got = await etcd_client.get(key)
    assert got is not None
    runs = [e.run for e in decode_history(got.key, got.value)[1]]
    assert runs == list(range(2 * HISTORY_LENGTH, 3 * HISTORY_LENGTH))
