"""Which member owns which partition, pure maths: a balanced assignment built on rendezvous hashing.

Each member ranks every partition by ``blake2b(member#partition)`` (rendezvous, highest random weight).
Plain rendezvous gives each partition to its top-ranked member: a join moves exactly what the newcomer
wins and nothing moves between the others, but the split is only as even as 256 coin tosses (over 3
members 93 / 88 / 75 partitions in the scale benchmark; 1.09x the mean on average and up to 1.24x, worse with
more members). The balanced assignment takes the (member, partition) pairs from the highest weight down
and gives each partition to the first member that still has room, room being ``ceil(P/N)`` for the first
``P mod N`` members to fill up and ``floor(P/N)`` for the rest: every member owns P/N ± 1 partitions, and a
join or leave still moves close to the minimum (1.03-1.27x the 1/N share on average from 2 to 8 members, up
to ~1.8x seen with 9-12; measured in
docs/benchmarks.md), a few of them between members that stay.

Every member must compute the same assignment, so a member uses the balanced one only when every live
member says it does too (``membership.py`` writes it in the member key); otherwise plain rendezvous, as
older members compute it.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable


def _weight(member_id: str, partition: int) -> int:
    digest = hashlib.blake2b(f"{member_id}#{partition}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(partition: int, members: Iterable[str]) -> str | None:
    """The top-ranked member of ``partition`` (plain rendezvous); ties (practically impossible) go to the
    smaller id."""
    best: tuple[int, str] | None = None
    for member_id in members:
        candidate = (_weight(member_id, partition), member_id)
        if best is None or candidate[0] > best[0] or (candidate[0] == best[0] and member_id < best[1]):
            best = candidate
    return None if best is None else best[1]


def assignment(partitions: int, members: Iterable[str], *, balanced: bool = True) -> dict[int, str]:
    """Owner of every partition for a given member set (empty set: no owners)."""
    member_set = frozenset(members)
    if balanced:
        return dict(_balanced(partitions, member_set))
    result: dict[int, str] = {}
    for p in range(partitions):
        chosen = owner(p, sorted(member_set))
        if chosen is not None:
            result[p] = chosen
    return result


def owned_by(
    member_id: str, partitions: int, members: Iterable[str], *, balanced: bool = True
) -> frozenset[int]:
    """The partitions ``member_id`` should own, given every live member (itself included or not)."""
    member_set = frozenset(members) | {member_id}
    if balanced:
        return _balanced_owned(member_id, partitions, member_set)
    return frozenset(
        p for p, m in assignment(partitions, member_set, balanced=False).items() if m == member_id
    )


@functools.lru_cache(maxsize=64)
def _balanced_owned(member_id: str, partitions: int, members: frozenset[str]) -> frozenset[int]:
    return frozenset(p for p, m in _balanced(partitions, members).items() if m == member_id)


@functools.lru_cache(maxsize=16)
def _balanced(partitions: int, members: frozenset[str]) -> dict[int, str]:
    """Cached (a member asks on every reconcile and before each acquisition); callers copy or only read."""
    if not members:
        return {}
    base, extra = divmod(partitions, len(members))
    pairs = sorted(((_weight(m, p), m, p) for m in members for p in range(partitions)), key=_rank)
    counts = dict.fromkeys(members, 0)
    full = 0  # members holding base + 1 (only ``extra`` of them may)
    result: dict[int, str] = {}
    for _, m, p in pairs:
        if p in result:
            continue
        count = counts[m]
        if count > base or (count == base and (extra == 0 or full == extra)):
            continue
        result[p] = m
        counts[m] = count + 1
        full += count == base
    return result


def _rank(pair: tuple[int, str, int]) -> tuple[int, str, int]:
    weight, member, partition = pair
    return -weight, member, partition
