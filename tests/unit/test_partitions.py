from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from etcdcron.partitions import assignment, owned_by, owner

members = st.lists(
    st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True), min_size=1, max_size=12, unique=True
)


@given(members)
@settings(deadline=None)
def test_every_partition_has_exactly_one_owner(ids: list[str]) -> None:
    plan = assignment(64, ids)
    assert set(plan) == set(range(64))
    assert set(plan.values()) <= set(ids)
    owned = [owned_by(m, 64, ids) for m in ids]
    assert sum(len(o) for o in owned) == 64
    assert frozenset().union(*owned) == frozenset(range(64))


@given(members, st.from_regex(r"new-[a-z0-9]{1,8}", fullmatch=True))
@settings(max_examples=50, deadline=None)
def test_a_join_moves_only_what_the_newcomer_wins(ids: list[str], newcomer: str) -> None:
    before = assignment(1024, ids)
    after = assignment(1024, [*ids, newcomer])
    moved = [p for p in range(1024) if before[p] != after[p]]
    assert all(after[p] == newcomer for p in moved)  # nothing moves between old members


@given(members.filter(lambda ids: len(ids) >= 2))
@settings(max_examples=50, deadline=None)
def test_a_leave_moves_only_the_leavers_partitions(ids: list[str]) -> None:
    leaver = ids[0]
    before = assignment(1024, ids)
    after = assignment(1024, ids[1:])
    assert all(before[p] == leaver for p in range(1024) if before[p] != after[p])


def test_balance_is_about_one_nth() -> None:
    ids = [f"member-{i}" for i in range(4)]
    counts = [len(owned_by(m, 1024, ids)) for m in ids]
    assert all(abs(c - 256) < 256 * 0.25 for c in counts), counts
    after = assignment(1024, [*ids, "member-4"])
    moved = sum(1 for p, m in after.items() if m == "member-4")
    assert 1024 / 5 * 0.7 < moved < 1024 / 5 * 1.3


def test_no_members_no_owner() -> None:
    assert owner(3, []) is None
    assert assignment(8, []) == {}
