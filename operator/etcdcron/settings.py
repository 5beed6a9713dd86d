"""A pool member's settings, and the one place a member is wired from them: ``etcdcron member``, ``dev``,
the operator and ``Cron`` all build theirs here (flags and ``ETCDCRON_*`` variables are read in cli.py)."""

from __future__ import annotations

from dataclasses import dataclass

from etcdcron.dispatch import ErrorHandler, Trigger
from etcdcron.errors import ValidationError
from etcdcron.etcd import DEFAULT_ENDPOINT, EtcdClient
from etcdcron.keys import DEFAULT_PARTITIONS, DEFAULT_PREFIX, Keys
from etcdcron.membership import default_member_id
from etcdcron.pool import Member


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Validated at construction, each error naming its setting."""

    endpoints: tuple[str, ...] = (DEFAULT_ENDPOINT,)
    prefix: str = DEFAULT_PREFIX
    member_id: str = ""  # default: <hostname>-<pid>
    lease_ttl: int = 5
    timeout: float = 5.0
    partitions: int = DEFAULT_PARTITIONS

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValidationError("endpoints", "at least one host:port is needed")
        if self.lease_ttl < 1:
            raise ValidationError("lease_ttl", f"must be at least 1 second, got {self.lease_ttl}")
        if not self.timeout > 0:
            raise ValidationError("timeout", f"must be more than 0 seconds, got {self.timeout}")
        try:
            Keys(self.prefix, self.partitions)
        except ValueError as e:
            raise ValidationError("prefix", str(e)) from None
        if "/" in self.member_id:
            raise ValidationError("member_id", f"must not contain '/', got {self.member_id!r}")
        if not self.member_id:
            object.__setattr__(self, "member_id", default_member_id())

    @property
    def keys(self) -> Keys:
        return Keys(self.prefix, self.partitions)

    def client(self) -> EtcdClient:
        return EtcdClient(self.endpoints, timeout=self.timeout)

    def member(
        self,
        client: EtcdClient,
        trigger: Trigger,
        *,
        on_error: ErrorHandler | None = None,
        on_etcd_error: ErrorHandler | None = None,
    ) -> Member:
        return Member(
            client,
            self.keys,
            trigger,
            member_id=self.member_id,
            lease_ttl=self.lease_ttl,
            on_error=on_error,
            on_etcd_error=on_etcd_error,
        )
