"""The etcd key layout, in one place: no other module builds a key string.

Layout under a prefix P (default ``/etcdcron``)::

    P/jobs/<pppp>/<tenant>/<name>      job spec (JSON), written by add/delete
    P/cursors/<pppp>/<tenant>/<name>   run state (JSON), written only by fenced firing commits
    P/inflight/<pppp>/<tenant>/<name>/<tag>   a firing committed but not yet acknowledged (at-least-once),
                                       or retrying, or parked; tag: t<tick ms> | m<token>
    P/history/<pppp>/<tenant>/<name>   the job's last firings and their results (JSON list, bounded)
    P/requests/<pppp>/<tenant>/<name>/<token>  a run-now request, kept (done) so a token fires once
    P/members/<member-id>              one per live member, bound to its lease
    P/partitions/<pppp>                owner of partition pppp, bound to the owner's lease
    P/leaders/<role>                   the one member doing <role> (the operator's reconciler), on its lease
    P/resources/<tenant>/<name>        the operator's record of the resource a job mirrors (uid, generation)

The partition comes first so a member loads and watches only what it owns. Every prefix used for a range
ends with ``/`` so tenant ``test`` never matches ``test-1``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

DEFAULT_PREFIX = "/etcdcron"
DEFAULT_PARTITIONS = 256


def partition_of(tenant: str, name: str, partitions: int) -> int:
    """Stable partition of a job: the same on every member, every run, every Python version."""
    digest = hashlib.blake2b(f"{tenant}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def cursor_of_job_key(job_key: bytes) -> bytes:
    """The cursor key of a job spec key (``P/jobs/<pppp>/<tenant>/<name>``, as ``Keys.job`` builds it): the
    same as ``Keys.cursor`` of its ref, without the partition hash. Tenants and names hold no ``/``, so the
    last three segments are the job's wherever the prefix says ``jobs``."""
    head, pppp, tenant, name = job_key.rsplit(b"/", 3)
    if not head.endswith(b"/jobs"):
        raise ValueError(f"not a job key: {job_key!r}")
    return b"/".join((head[:-4] + b"cursors", pppp, tenant, name))


def range_end(prefix: bytes) -> bytes:
    """The exclusive end of the key range that holds exactly the keys starting with ``prefix``."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b"\0"
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


@dataclass(frozen=True, slots=True)
class JobRef:
    """Where a job lives: tenant, name and the partition derived from them."""

    tenant: str
    name: str
    partition: int


@dataclass(frozen=True, slots=True)
class Keys:
    """Every key and prefix of one pool (one prefix, one partition count)."""

    prefix: str = DEFAULT_PREFIX
    partitions: int = DEFAULT_PARTITIONS

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise ValueError(f"prefix must start with '/' and not end with it: {self.prefix!r}")
        if not 1 <= self.partitions <= 9999:
            raise ValueError(f"partitions must be in 1..9999, got {self.partitions}")

    def ref(self, tenant: str, name: str) -> JobRef:
        return JobRef(tenant, name, partition_of(tenant, name, self.partitions))

    # -- jobs and cursors -------------------------------------------------------------------------------
    def job(self, ref: JobRef) -> bytes:
        return f"{self.prefix}/jobs/{ref.partition:04d}/{ref.tenant}/{ref.name}".encode()

    def cursor(self, ref: JobRef) -> bytes:
        return f"{self.prefix}/cursors/{ref.partition:04d}/{ref.tenant}/{ref.name}".encode()

    def jobs_root(self) -> bytes:
        return f"{self.prefix}/jobs/".encode()

    def jobs_of_partition(self, partition: int) -> bytes:
        return f"{self.prefix}/jobs/{partition:04d}/".encode()

    def cursors_of_partition(self, partition: int) -> bytes:
        return f"{self.prefix}/cursors/{partition:04d}/".encode()

    def jobs_of_tenant_in_partition(self, tenant: str, partition: int) -> bytes:
        return f"{self.prefix}/jobs/{partition:04d}/{tenant}/".encode()

    def inflight(self, ref: JobRef, tag: str) -> bytes:
        return f"{self.prefix}/inflight/{ref.partition:04d}/{ref.tenant}/{ref.name}/{tag}".encode()

    def inflight_of_job(self, ref: JobRef) -> bytes:
        return f"{self.prefix}/inflight/{ref.partition:04d}/{ref.tenant}/{ref.name}/".encode()

    def inflight_of_partition(self, partition: int) -> bytes:
        return f"{self.prefix}/inflight/{partition:04d}/".encode()

    def history(self, ref: JobRef) -> bytes:
        return f"{self.prefix}/history/{ref.partition:04d}/{ref.tenant}/{ref.name}".encode()

    def history_of_partition(self, partition: int) -> bytes:
        return f"{self.prefix}/history/{partition:04d}/".encode()

    def request(self, ref: JobRef, token: str) -> bytes:
        return f"{self.prefix}/requests/{ref.partition:04d}/{ref.tenant}/{ref.name}/{token}".encode()

    def requests_of_job(self, ref: JobRef) -> bytes:
        return f"{self.prefix}/requests/{ref.partition:04d}/{ref.tenant}/{ref.name}/".encode()

    def requests_root(self) -> bytes:
        return f"{self.prefix}/requests/".encode()

    def requests_of_partition(self, partition: int) -> bytes:
        return f"{self.prefix}/requests/{partition:04d}/".encode()

    def sibling(self, job_key: bytes, kind: str) -> bytes:
        """The key of kind ``inflight``, ``history``, ``requests`` or ``cursors`` of a job key."""
        root = self.jobs_root()
        return f"{self.prefix}/{kind}/".encode() + job_key[len(root) :]

    def partition_of_sibling(self, key: bytes, kind: str) -> int | None:
        """The partition of a ``P/<kind>/<pppp>/...`` key (None: not such a key)."""
        root = f"{self.prefix}/{kind}/".encode()
        segment = key[len(root) : len(root) + 4]
        if not key.startswith(root) or len(segment) != 4 or not segment.isdigit():
            return None
        return int(segment)

    def parse_job_key(self, key: bytes) -> JobRef:
        """Inverse of ``job``; raises ValueError on a key outside the layout."""
        root = self.jobs_root()
        if not key.startswith(root):
            raise ValueError(f"not a job key: {key!r}")
        part, tenant, name = key[len(root) :].decode().split("/", 2)
        return JobRef(tenant, name, int(part))

    # -- membership and ownership -------------------------------------------------------------------------
    def members_root(self) -> bytes:
        return f"{self.prefix}/members/".encode()

    def member(self, member_id: str) -> bytes:
        return f"{self.prefix}/members/{member_id}".encode()

    def member_id_of(self, key: bytes) -> str:
        return key[len(self.members_root()) :].decode()

    def partitions_root(self) -> bytes:
        return f"{self.prefix}/partitions/".encode()

    def partition(self, partition: int) -> bytes:
        return f"{self.prefix}/partitions/{partition:04d}".encode()

    def partition_of_key(self, key: bytes) -> int:
        return int(key[len(self.partitions_root()) :])

    def leader(self, role: str) -> bytes:
        """The key a leader of ``role`` (e.g. the operator's reconciler) holds, bound to its member lease."""
        return f"{self.prefix}/leaders/{role}".encode()

    # -- the operator's records -------------------------------------------------------------------------
    def resource(self, tenant: str, name: str) -> bytes:
        """The operator's record of the DistributedCronJob that job ``tenant/name`` mirrors."""
        return f"{self.prefix}/resources/{tenant}/{name}".encode()

    def resources_root(self) -> bytes:
        return f"{self.prefix}/resources/".encode()

    def resources_of_tenant(self, tenant: str) -> bytes:
        return f"{self.prefix}/resources/{tenant}/".encode()
