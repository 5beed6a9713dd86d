"""JobStore: add, get, list and delete the jobs of one tenant; read a partition for the member that owns it.

Every write that changes a job touches its spec key, so a firing commit (which compares the spec's mod
revision) can never land on a deleted or replaced job.
"""

from __future__ import annotations

import builtins
import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from etcdcron import etcd
from etcdcron.decode import BadEntryError, cursor_for, decode_job
from etcdcron.errors import EtcdUnavailableError, JobExistsError, JobNotFoundError, ValidationError
from etcdcron.etcd import EtcdClient, KeyValue
from etcdcron.firing import Cursor, to_ms
from etcdcron.job import NAME_MAX, Job, StoredJob, validate_namespace
from etcdcron.keys import JobRef, Keys, range_end

TXN_MAX_OPS = 128  # etcd's default --max-txn-ops
_NAME_START = re.compile(r"[a-z0-9][-a-z0-9.]*")


def validate_name_prefix(prefix: str, field_name: str = "name_prefix") -> str:
    """A non-empty start of a job name (a DNS-1123 subdomain): what ``delete_prefix`` may match."""
    if not prefix:
        raise ValidationError(field_name, "must not be empty (it would match every job of the namespace)")
    if len(prefix) > NAME_MAX:
        raise ValidationError(field_name, f"must be at most {NAME_MAX} characters, got {len(prefix)}")
    if not _NAME_START.fullmatch(prefix):
        raise ValidationError(
            field_name,
            f"{prefix!r} does not start a job name (lowercase letters, digits, '-' and '.', "
            "starting with a letter or digit)",
        )
    return prefix


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A stored job with its run state, for get/list."""

    stored: StoredJob
    cursor: Cursor


@dataclass(frozen=True, slots=True)
class Listing:
    """A tenant's jobs, and the entries of its key range that could not be decoded (never dropped)."""

    jobs: builtins.list[JobStatus]
    bad: builtins.list[BadEntryError]


@dataclass(frozen=True, slots=True)
class PartitionSnapshot:
    """Every job of one partition and what belongs to each, at one revision."""

    revision: int
    jobs: Sequence[KeyValue]
    cursors: dict[bytes, KeyValue]  # job key -> its cursor's key-value
    inflight: Sequence[KeyValue] = ()  # unsettled firings
    requests: Sequence[KeyValue] = ()  # run-now requests, done or not


class JobStore:
    """Tenant-scoped job CRUD over etcd. Stateless apart from the client: cheap to create."""

    def __init__(self, client: EtcdClient, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    async def add(
        self,
        job: Job,
        *,
        now: datetime | None = None,
        progress: Cursor | None = None,
        keep_progress: bool = False,
        if_not_exists: bool = False,
    ) -> StoredJob:
        """Store ``job``, replacing any job of the same name.

        The new version starts afresh unless ``progress`` gives its run state (runs, missed, last tick), or
        ``keep_progress`` carries the replaced version's over (an edit of a running job keeps its count).
        With ``if_not_exists`` an existing job is left alone and ``JobExistsError`` raised: one transaction
        that writes only while the spec key does not exist, so of two concurrent adds exactly one wins.
        """
        ref = self.keys.ref(job.namespace, job.name)
        job_key, cursor_key = self.keys.job(ref), self.keys.cursor(ref)
        now = now or datetime.now(UTC)
        created = now.replace(microsecond=now.microsecond // 1000 * 1000)  # stored with ms precision
        lease = await self.client.grant(math.ceil(job.ttl.total_seconds())) if job.ttl else 0
        stored = StoredJob(job, uuid.uuid4().hex, created, lease)
        if if_not_exists:
            await self._create(stored, job_key, cursor_key, progress)
            return stored
        created_ms = to_ms(created)
        while True:
            response = await self.client.txn([], [etcd.get(job_key), etcd.get(cursor_key)])
            specs, cursors = (r.response_range.kvs for r in response.responses)
            previous = specs[0] if specs else None
            old = self._cursor_of(job_key, cursor_key, previous, cursors[0] if cursors else None)
            carried = progress
            if keep_progress and old is not None and old != Cursor(old.job_id):
                carried = old  # a fresh cursor carries nothing
            ops = [etcd.put(job_key, stored.to_json(), lease)]
            if carried is not None:
                fresh = Cursor(stored.id, carried.last_tick_ms, carried.runs, carried.missed)
                ops.append(etcd.put(cursor_key, fresh.to_json(), lease))
            elif old is not None and old.last_tick_ms is not None and old.last_tick_ms >= created_ms:
                # The replaced version already committed a tick at or after this one's start (commits go
                # out ahead of their tick): the new version starts afresh after it, never firing it again.
                ops.append(etcd.put(cursor_key, Cursor(stored.id, old.last_tick_ms).to_json(), lease))
            else:
                ops.append(etcd.delete(cursor_key))
            seen = previous.mod_revision if previous is not None else 0
            seen_cursor = cursors[0].mod_revision if cursors else 0
            compares = [etcd.mod_revision_is(job_key, seen), etcd.mod_revision_is(cursor_key, seen_cursor)]
            if (await self.client.txn(compares, ops)).succeeded:
                break  # else the job or its run state changed between our read and write: read again
        if previous is not None and previous.lease:
            await self.client.revoke(previous.lease)  # the old version's TTL no longer applies
        return stored

    async def _create(
        self, stored: StoredJob, job_key: bytes, cursor_key: bytes, progress: Cursor | None
    ) -> None:
        """Write a job only if its spec key does not exist. A cursor left without a spec (a deleted or
        completed job) belongs to no version: it is replaced or removed in the same transaction."""
        lease = stored.lease
        cursor_op = (
            etcd.put(
                cursor_key,
                Cursor(stored.id, progress.last_tick_ms, progress.runs, progress.missed).to_json(),
                lease,
            )
            if progress is not None
            else etcd.delete(cursor_key)
        )
        # An unanswered call raises with the lease kept: the job may be stored on it (its TTL ends it).
        response = await self.client.txn(
            [etcd.create_revision_is(job_key, 0)], [etcd.put(job_key, stored.to_json(), lease), cursor_op]
        )
        if not response.succeeded:
            if lease:
                await self._revoke(lease)  # granted for a job that was never written
            raise JobExistsError(stored.job.namespace, stored.job.name)

    async def _revoke(self, lease: int) -> None:
        """Revoke a TTL lease; one already gone (expired, or revoked by a concurrent delete) is fine."""
        try:
            await self.client.revoke(lease)
        except EtcdUnavailableError as e:
            if "lease not found" not in str(e):
                raise

    def _cursor_of(
        self, job_key: bytes, cursor_key: bytes, spec: KeyValue | None, cursor: KeyValue | None
    ) -> Cursor | None:
        """The run state of the version about to be replaced (None: none, or unreadable)."""
        if spec is None or cursor is None:
            return None
        try:
            _, stored = decode_job(self.keys, job_key, spec.value)
            return cursor_for(stored, cursor_key, cursor.value)
        except BadEntryError:
            return None

    async def get(self, namespace: str, name: str) -> JobStatus:
        validate_namespace(namespace)
        ref = self.keys.ref(namespace, name)
        response = await self.client.txn([], [etcd.get(self.keys.job(ref)), etcd.get(self.keys.cursor(ref))])
        jobs, cursors = (r.response_range.kvs for r in response.responses)
        if not jobs:
            raise JobNotFoundError(namespace, name)
        _, stored = decode_job(self.keys, jobs[0].key, jobs[0].value)
        cursor_key = self.keys.cursor(ref)
        return JobStatus(stored, cursor_for(stored, cursor_key, cursors[0].value if cursors else None))

    async def list(self, namespace: str) -> Listing:
        """Every job of a tenant: one range per partition, batched into as few transactions as etcd allows.
        Entries that cannot be decoded are returned apart, each with its key and reason."""
        validate_namespace(namespace)
        tenant = f"{namespace}/".encode()
        job_ops = [
            etcd.get(prefix, range_end(prefix))
            for p in range(self.keys.partitions)
            for prefix in [self.keys.jobs_of_tenant_in_partition(namespace, p)]
        ]
        cursor_ops = [
            etcd.get(prefix, range_end(prefix))
            for p in range(self.keys.partitions)
            for prefix in [self.keys.cursors_of_partition(p) + tenant]
        ]
        job_kvs = await self._ranges(job_ops)
        cursors = {kv.key: kv.value for kv in await self._ranges(cursor_ops)}
        jobs, bad = [], []
        for kv in job_kvs:
            try:
                ref, stored = decode_job(self.keys, kv.key, kv.value)
                cursor_key = self.keys.cursor(ref)
                jobs.append(JobStatus(stored, cursor_for(stored, cursor_key, cursors.get(cursor_key))))
            except BadEntryError as e:
                bad.append(e)
        return Listing(sorted(jobs, key=lambda s: s.stored.job.name), bad)

    async def _ranges(self, ops: Sequence[etcd.RequestOp]) -> builtins.list[KeyValue]:
        """Run many range reads in as few transactions as etcd allows; their key-values in order."""
        kvs: builtins.list[KeyValue] = []
        for start in range(0, len(ops), TXN_MAX_OPS):
            response = await self.client.txn([], ops[start : start + TXN_MAX_OPS])
            for r in response.responses:
                kvs.extend(r.response_range.kvs)
        return kvs

    async def delete(self, namespace: str, name: str) -> bool:
        """Delete a job and its run state; False if there was none."""
        validate_namespace(namespace)
        ref = self.keys.ref(namespace, name)
        previous = await self.client.get(self.keys.job(ref))
        response = await self.client.txn([], self._delete_ops(ref))
        deleted = bool(response.responses[0].response_delete_range.deleted)
        if previous is not None and previous.lease:
            await self.client.revoke(previous.lease)
        return deleted

    def _delete_ops(self, ref: JobRef) -> builtins.list[etcd.RequestOp]:
        """A job and everything that belongs to it: run state, unsettled firings, history, requests."""
        inflight, requests = self.keys.inflight_of_job(ref), self.keys.requests_of_job(ref)
        return [
            etcd.delete(self.keys.job(ref)),
            etcd.delete(self.keys.cursor(ref)),
            etcd.delete(inflight, range_end(inflight)),
            etcd.delete(self.keys.history(ref)),
            etcd.delete(requests, range_end(requests)),
        ]

    async def delete_tenant(self, namespace: str) -> int:
        """Delete every job of a tenant (its Kubernetes namespace went away); returns how many."""
        validate_namespace(namespace)
        kinds = ("cursors", "inflight", "history", "requests")
        ops = [
            etcd.delete(prefix, range_end(prefix))
            for p in range(self.keys.partitions)
            for jobs in [self.keys.jobs_of_tenant_in_partition(namespace, p)]
            for prefix in (jobs, *(self.keys.sibling(jobs, kind) for kind in kinds))
        ]
        deleted = 0
        step = TXN_MAX_OPS // 5 * 5  # each partition's five ranges in one transaction; jobs first
        for start in range(0, len(ops), step):
            response = await self.client.txn([], ops[start : start + step])
            deleted += sum(r.response_delete_range.deleted for r in response.responses[::5])
        return deleted

    async def delete_prefix(self, namespace: str, name_prefix: str) -> int:
        """Delete every job of a tenant whose name starts with ``name_prefix``, with its run state and its
        TTL lease; returns how many jobs were deleted.

        One key range per partition (``P/jobs/<pppp>/<tenant>/<prefix>``: the tenant segment ends in '/', so
        tenant ``t`` never touches ``t-1``), in transactions of up to 128 operations: each reads the matching
        job keys (keys only: their leases) and deletes them and their cursors at one revision, so the leases
        revoked are exactly those of the jobs deleted. A job added under the prefix meanwhile is deleted if
        its partition's transaction comes after it (as with any delete racing an add)."""
        validate_namespace(namespace)
        validate_name_prefix(name_prefix)
        ops = []
        kinds = ("cursors", "inflight", "history", "requests")  # and what belongs to each job
        for p in range(self.keys.partitions):
            jobs = self.keys.jobs_of_tenant_in_partition(namespace, p) + name_prefix.encode()
            read = etcd.get(jobs, range_end(jobs))
            read.request_range.keys_only = True  # the leases, not the (up to 256 KiB) values
            siblings = [self.keys.sibling(jobs, kind) for kind in kinds]
            ops += [read, *(etcd.delete(k, range_end(k)) for k in (jobs, *siblings))]
        width = 2 + len(kinds)
        per_txn = TXN_MAX_OPS // width * width  # a partition's operations stay in one transaction
        deleted = 0
        leases: set[int] = set()
        for start in range(0, len(ops), per_txn):
            response = await self.client.txn([], ops[start : start + per_txn])
            reads, deletes = response.responses[0::width], response.responses[1::width]
            for read, jobs_deleted in zip(reads, deletes, strict=True):
                leases.update(kv.lease for kv in read.response_range.kvs if kv.lease)
                deleted += jobs_deleted.response_delete_range.deleted
        for lease in sorted(leases):
            await self._revoke(lease)
        return deleted

    async def read_partition(self, partition: int) -> PartitionSnapshot:
        """Every job of one partition with its cursor, unsettled firings and run-now requests, read page
        by page at a single revision (histories are read when a job first settles a firing)."""
        jobs_prefix = self.keys.jobs_of_partition(partition)
        jobs: list[KeyValue] = []
        revision = 0
        async for page_revision, page in self.client.range_pages(jobs_prefix, range_end(jobs_prefix)):
            revision = page_revision
            jobs.extend(page)

        async def read(prefix: bytes) -> list[KeyValue]:
            kvs: list[KeyValue] = []
            async for _, page in self.client.range_pages(prefix, range_end(prefix), revision=revision):
                kvs.extend(page)
            return kvs

        def by_job(prefix: bytes, kvs: list[KeyValue]) -> dict[bytes, KeyValue]:
            return {jobs_prefix + kv.key[len(prefix) :]: kv for kv in kvs}

        cursors_prefix = self.keys.cursors_of_partition(partition)
        return PartitionSnapshot(
            revision,
            jobs,
            by_job(cursors_prefix, await read(cursors_prefix)),
            await read(self.keys.inflight_of_partition(partition)),
            await read(self.keys.requests_of_partition(partition)),
        )
