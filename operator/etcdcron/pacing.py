"""A token bucket: the one way this project bounds a rate of writes (history rewrites in a member, status
writes in the reconciler). Pure arithmetic on a clock the caller passes, so it is table-tested; ``take``
is the awaiting form."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up (it starts full)."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1 (got {rate}, {burst})")
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.at = burst, clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + max(now - self.at, 0.0) * self.rate)
        self.at = now

    def take_up_to(self, wanted: int) -> int:
        """Take as many whole tokens as there are, up to ``wanted``; how many were taken."""
        self._refill()
        taken = min(wanted, int(self.tokens))
        self.tokens -= taken
        return max(taken, 0)

    def wait_seconds(self) -> float:
        """Seconds until a whole token is there (0: now)."""
        self._refill()
        return max(1 - self.tokens, 0.0) / self.rate

    async def take(self) -> None:
        """Wait until a token is there, and take it."""
        while True:
            if self.take_up_to(1):
                return
            await asyncio.sleep(self.wait_seconds())
