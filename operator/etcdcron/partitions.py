"""Which member owns which partition: rendezvous (highest-random-weight) hashing, pure maths.

Rendezvous hashing moves only the partitions the joining (or leaving) member wins (or held): about 1/N
of them, and every other member keeps firing the rest without a pause.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def _weight(member_id: str, partition: int) -> int:
    digest = hashlib.blake2b(f"{member_id}#{partition}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(partition: int, members: Iterable[str]) -> str | None:
    """The member that should own ``partition``; ties (practically impossible) go to the smaller id."""
    best: tuple[int, str] | None = None
    for member_id in members:
        candidate = (_weight(member_id, partition), member_id)
        if best is None or candidate[0] > best[0] or (candidate[0] == best[0] and member_id < best[1]):
            best = candidate
    return None if best is None else best[1]


def assignment(partitions: int, members: Iterable[str]) -> dict[int, str]:
    """Owner of every partition for a given member set (empty set: no owners)."""
    member_list = sorted(set(members))
    result: dict[int, str] = {}
    for p in range(partitions):
        chosen = owner(p, member_list)
        if chosen is not None:
            result[p] = chosen
    return result


def owned_by(member_id: str, partitions: int, members: Iterable[str]) -> frozenset[int]:
    """The partitions ``member_id`` should own, given every live member (itself included or not)."""
    member_set = set(members) | {member_id}
    return frozenset(p for p, m in assignment(partitions, member_set).items() if m == member_id)
