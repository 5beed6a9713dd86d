"""The token bucket every paced writer uses: whole tokens, refilled by the clock, capped at the burst."""

from __future__ import annotations

import pytest

from etcdcron.pacing import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("rate", "burst", "steps", "expected"),
    [
        # (seconds passed, tokens wanted) -> tokens taken
        (10.0, 10.0, [(0, 4), (0, 10), (0, 1)], [4, 6, 0]),  # starts full, never below zero
        (10.0, 10.0, [(0, 10), (0.25, 10), (0.05, 10)], [10, 2, 0]),  # whole tokens only (0.5 waits)
        (10.0, 10.0, [(0, 10), (60, 100)], [10, 10]),  # a long quiet spell saves up only the burst
        (2.0, 1.0, [(0, 1), (0.4, 1), (0.1, 1)], [1, 0, 1]),
        (10.0, 10.0, [(0, 10), (-5, 1)], [10, 0]),  # a clock that steps back adds nothing
    ],
)
def test_take_up_to(rate: float, burst: float, steps: list[tuple[float, int]], expected: list[int]) -> None:
    clock = Clock()
    bucket = TokenBucket(rate, burst, clock)
    taken = []
    for passed, wanted in steps:
        clock.now += passed
        taken.append(bucket.take_up_to(wanted))
    assert taken == expected


def test_wait_seconds_is_the_time_to_the_next_whole_token() -> None:
    clock = Clock()
    bucket = TokenBucket(4.0, 2.0, clock)
    assert bucket.wait_seconds() == 0
    assert bucket.take_up_to(5) == 2
    assert bucket.wait_seconds() == pytest.approx(0.25)
    clock.now += 0.125
    assert bucket.wait_seconds() == pytest.approx(0.125)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 5), (5, 0.5)])
def test_a_bucket_that_could_never_give_a_token_is_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="rate > 0 and burst >= 1"):
        TokenBucket(rate, burst)


async def test_take_waits_for_a_token() -> None:
    bucket = TokenBucket(50.0, 1.0)
    await bucket.take()
    await bucket.take()  # the second waits ~20 ms for its token
    assert bucket.tokens < 1
