"""plan_ownership: what a member drops, releases, frees and acquires, from what it sees."""

from __future__ import annotations

import pytest

from etcdcron.partitions import assignment
from etcdcron.pool.ownership import Holder, plan_ownership

N = 16
MEMBERS = {"a", "b"}
A_OWNS = frozenset(p for p, m in assignment(N, MEMBERS).items() if m == "a")
B_OWNS = frozenset(range(N)) - A_OWNS
PA, PB = min(A_OWNS), min(B_OWNS)
LEASE = 7


def plan(members=MEMBERS, lease=LEASE, holders=None, revision=100, held=None):  # type: ignore[no-untyped-def]
    return plan_ownership("a", lease, N, members, holders or {}, revision, held or {})


def test_a_new_member_acquires_its_free_partitions() -> None:
    result = plan()
    assert set(result.acquire) == A_OWNS and result.desired == A_OWNS
    assert not (result.drop or result.release or result.free)


def test_partitions_held_by_others_are_waited_for_not_taken() -> None:
    result = plan(holders={PA: Holder("c", 5, 99)})
    assert PA not in result.acquire


@pytest.mark.parametrize(
    ("holder", "revision", "dropped"),
    [
        (None, 100, True),  # our key is gone (lease lost, deleted): stop firing at once
        (Holder("c", 60, 99), 100, True),  # someone else's key now
        (Holder("a", 50, LEASE), 100, False),  # still ours
        (None, 40, False),  # the mirror has not yet read as far as our key's creation
    ],
)
def test_a_partition_whose_key_is_no_longer_ours_is_dropped(
    holder: Holder | None, revision: int, dropped: bool
) -> None:
    holders = {PA: holder} if holder else {}
    result = plan(holders=holders, revision=revision, held={PA: 50})
    assert (PA in result.drop) == dropped


def test_a_partition_another_member_should_own_is_released() -> None:
    result = plan(holders={PB: Holder("a", 50, LEASE)}, held={PB: 50})
    assert result.release == (PB,) and not result.drop


def test_keys_on_our_lease_we_do_not_track_are_freed() -> None:
    result = plan(holders={PA: Holder("a", 50, LEASE)})
    assert result.free == ((PA, 50),) and PA not in result.acquire


def test_a_key_with_no_lease_is_freed_by_the_member_that_should_own_it() -> None:
    assert plan(holders={PA: Holder("x", 9, 0)}).free == ((PA, 9),)
    assert plan(holders={PB: Holder("x", 9, 0)}).free == ()  # b's to free


def test_without_a_lease_nothing_is_desired_and_everything_is_released() -> None:
    result = plan(lease=0, holders={PA: Holder("a", 50, LEASE)}, held={PA: 50})
    assert result.desired == frozenset() and result.release == (PA,) and not result.acquire


def test_while_any_member_computes_plain_rendezvous_everyone_does() -> None:
    members = {"a", "b", "c"}
    rendezvous = frozenset(p for p, m in assignment(256, members, balanced=False).items() if m == "a")
    balanced = frozenset(p for p, m in assignment(256, members).items() if m == "a")
    assert rendezvous != balanced
    common = {"member_id": "a", "lease": LEASE, "partitions": 256, "members": members, "holders": {}}
    assert plan_ownership(**common, holders_revision=1, held={}, balanced=False).desired == rendezvous
    assert plan_ownership(**common, holders_revision=1, held={}).desired == balanced
