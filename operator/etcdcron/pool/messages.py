"""What the control loop of a member is told, as typed values (one ``match`` handles them all)."""

from __future__ import annotations

from dataclasses import dataclass

from etcdcron.etcd import WatchBatch


@dataclass(frozen=True, slots=True)
class Reconcile:
    """Members or partition keys changed (or a second passed): bring ownership in line."""


@dataclass(frozen=True, slots=True)
class JobEvents:
    """Job specs changed: apply them to the partitions we own."""

    batch: WatchBatch


@dataclass(frozen=True, slots=True)
class JobsWatchRestarted:
    """The jobs watch restarted at ``revision``: partitions loaded before it may have missed events."""

    revision: int


@dataclass(frozen=True, slots=True)
class RunRequests:
    """Run-now requests were written: serve those of partitions we own."""

    batch: WatchBatch


@dataclass(frozen=True, slots=True)
class LeaseLost:
    """Our lease ran out: every partition key went with it."""


@dataclass(frozen=True, slots=True)
class FenceLost:
    """A commit found ``partition``'s key no longer ours."""

    partition: int


Message = Reconcile | JobEvents | JobsWatchRestarted | RunRequests | LeaseLost | FenceLost
