"""What the fire loop, recovery and backfills hand to the deliveries: a firing and where its in-flight record
lives; and the deliveries' own records of a tick's group (what succeeded at once, what an ``overlap`` job
holds back)."""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass

from etcdcron.firing import Firing, InFlight
from etcdcron.policy import Delivery


@dataclass(slots=True)
class Handoff:
    """A firing to deliver, with where its in-flight record lives and whether etcd holds it yet."""

    firing: Firing
    partition: int
    spec_key: bytes
    inflight_key: bytes
    record: InFlight
    stored: bool  # the record is in etcd: at-least-once, or retrying or parked

    @property
    def at_least_once(self) -> bool:
        return self.firing.job.job.delivery is Delivery.AT_LEAST_ONCE

    @property
    def name(self) -> str:
        job = self.firing.job.job
        return f"{job.namespace}/{job.name}"


@dataclass(slots=True)
class Done:
    """A firing whose trigger succeeded without waiting, to settle after the tick's other triggers."""

    handoff: Handoff
    fired_ms: int
    attempts: int


@dataclass(slots=True)
class Hold:
    """A firing of an ``overlap`` skip/wait job being delivered, and the later ticks waiting for it."""

    holder: bytes  # its in-flight key
    waiting: collections.deque[Handoff] = dataclasses.field(default_factory=collections.deque)
