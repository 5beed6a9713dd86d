"""How a committed firing reaches its trigger: the delivery mode, what a trigger may answer, and the
failure policy that decides whether (and when) a failed firing is tried again. Pure values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from etcdcron.durations import format_duration, parse_duration
from etcdcron.errors import ValidationError

FIELD = "failure_policy"
MAX_RETRIES = 100
MAX_INTERVAL = timedelta(hours=24)


class Delivery(StrEnum):
    """``at-least-once``: a firing is recorded as in flight by its commit and removed when the trigger
    succeeds; a member taking over re-delivers what was never acknowledged (same ``firing.key``).
    ``at-most-once``: delivered once after the commit, never repeated (a crash may lose it)."""

    AT_LEAST_ONCE = "at-least-once"
    AT_MOST_ONCE = "at-most-once"


class Overlap(StrEnum):
    """What a tick does while an earlier firing of the same job is still being delivered (its trigger
    running, or retrying by the failure policy) on the member: ``allow`` delivers it on time anyway;
    ``skip`` does not deliver it (settled as ``skipped`` in the history, like a CronJob's Forbid);
    ``wait`` delivers it once the earlier one settled, in tick order. A parked firing does not hold
    later ticks back."""

    ALLOW = "allow"
    SKIP = "skip"
    WAIT = "wait"


class TriggerResult(StrEnum):
    """What a trigger returns (returning None means success; raising an exception means failed)."""

    SUCCESS = "success"
    FAILED = "failed"
    UNDELIVERABLE = "undeliverable"  # no consumer now: park the firing until one registers


class Backoff(StrEnum):
    DROP = "drop"
    CONSTANT = "constant"
    EXPONENTIAL = "exponential"


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """``drop``: a failed firing is reported and given up; ``constant``: retried every ``interval`` up to
    ``max_retries`` times; ``exponential``: retried after ``interval``, doubling up to ``max_interval``."""

    backoff: Backoff = Backoff.CONSTANT
    interval: timedelta = timedelta(seconds=1)
    max_retries: int = 3
    max_interval: timedelta = timedelta(minutes=1)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "backoff", Backoff(self.backoff))
        except ValueError:
            raise ValidationError(
                FIELD, f"must be drop, constant or exponential, got {self.backoff!r}"
            ) from None
        if not 0 <= self.max_retries <= MAX_RETRIES:
            raise ValidationError(
                FIELD, f"retries must be between 0 and {MAX_RETRIES}, got {self.max_retries}"
            )
        if not timedelta(0) <= self.interval <= MAX_INTERVAL:
            raise ValidationError(FIELD, f"interval must be between 0 and 24h, got {self.interval}")
        if not self.interval <= self.max_interval <= MAX_INTERVAL:
            raise ValidationError(
                FIELD, f"max interval must be between the interval and 24h, got {self.max_interval}"
            )

    @classmethod
    def constant(cls, interval: timedelta = timedelta(seconds=1), max_retries: int = 3) -> FailurePolicy:
        return cls(Backoff.CONSTANT, interval, max_retries, max(interval, timedelta(minutes=1)))

    @classmethod
    def drop(cls) -> FailurePolicy:
        return cls(Backoff.DROP, timedelta(0), 0, timedelta(0))

    @classmethod
    def exponential(cls, initial: timedelta, max_interval: timedelta, max_retries: int) -> FailurePolicy:
        return cls(Backoff.EXPONENTIAL, initial, max_retries, max_interval)

    def delay(self, retry: int) -> timedelta | None:
        """The wait before retry number ``retry`` (1: the first retry); None when none is left."""
        if self.backoff is Backoff.DROP or retry > self.max_retries:
            return None
        if self.backoff is Backoff.CONSTANT:
            return self.interval
        grown: timedelta = self.interval * 2 ** min(retry - 1, 40)
        return min(grown, self.max_interval)

    def text(self) -> str:
        """The CLI form: ``drop``, ``constant:INTERVAL:MAX`` or ``exponential:INITIAL:MAX_INTERVAL:MAX``."""
        if self.backoff is Backoff.DROP:
            return "drop"
        if self.backoff is Backoff.CONSTANT:
            return f"constant:{format_duration(self.interval)}:{self.max_retries}"
        initial, most = format_duration(self.interval), format_duration(self.max_interval)
        return f"exponential:{initial}:{most}:{self.max_retries}"

    @classmethod
    def parse(cls, text: str) -> FailurePolicy:
        parts = text.strip().split(":")
        kind, args = parts[0].lower(), parts[1:]
        usage = "drop, constant:INTERVAL:MAX or exponential:INITIAL:MAX_INTERVAL:MAX"
        try:
            if kind == "drop" and not args:
                return cls.drop()
            if kind == "constant" and len(args) == 2:
                return cls.constant(parse_duration(args[0], FIELD), _count(args[1]))
            if kind == "exponential" and len(args) == 3:
                return cls.exponential(
                    parse_duration(args[0], FIELD), parse_duration(args[1], FIELD), _count(args[2])
                )
        except ValidationError as e:
            raise ValidationError(FIELD, f"{text!r}: {e.reason}") from None
        raise ValidationError(FIELD, f"{text!r} is not {usage}")


def _count(text: str) -> int:
    if not text.isdigit():
        raise ValidationError(FIELD, f"{text!r} is not a number of retries")
    return int(text)


def RetryPolicy(retries: int = 3, interval: timedelta = timedelta(seconds=1)) -> FailurePolicy:
    """The policy of earlier versions: retry ``retries`` times, ``interval`` apart (``constant``)."""
    return FailurePolicy.constant(interval, retries)
