"""The reconciler's side of etcd: read what etcd holds for a resource, and write it, fenced.

Every write is one transaction that compares the leader key's create revision (the fence the reconciler got
when it was elected, as etcd's ``Election.Rev()``): a former leader that was paused past its lease and
thawed can write nothing. Each write also compares the revisions it read (spec, cursor, record), so a
firing commit landing in between makes it read again rather than overwrite the run state.

Besides the job spec and cursor, a resource has a *record* (``Keys.resource``): the uid and generation last
mirrored, so an older generation never replaces a newer one even while no spec is stored (suspended,
complete, invalid). The job's history (written by the members) is read with them, for status only.

A spec, cursor or record that cannot be decoded raises ``BadEntryError`` from ``read`` (nothing is written
over it: the reconciler reports it); a bad history does not (the next settled firing rewrites it), it is
carried in ``Snapshot.bad_history``. ``remove`` decodes nothing, so a resource is deleted whatever etcd
holds for it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from etcdcron import etcd
from etcdcron.decode import BadEntryError, decode_cursor, decode_history, decode_spec
from etcdcron.errors import EtcdCronError
from etcdcron.etcd import EtcdClient, KeyValue
from etcdcron.firing import Cursor, HistoryEntry
from etcdcron.job import Job, StoredJob
from etcdcron.keys import Keys, range_end

TXN_MAX_OPS = 128  # etcd's default --max-txn-ops


class NotLeaderError(EtcdCronError):
    """The fence failed: this replica no longer leads, so it must not write."""


class ConflictError(EtcdCronError):
    """Something moved between our read and our write (a firing commit, another write): read again."""


@dataclass(frozen=True, slots=True)
class Record:
    """Which generation of which resource the etcd state was last made to mirror."""

    uid: str
    generation: int
    job_id: str = ""  # the job version whose cursor is this resource's run state
    rejected: str = ""  # the API server refused this generation's Job template (dry run): why

    def to_json(self) -> bytes:
        doc = {
            "uid": self.uid,
            "generation": self.generation,
            "jobId": self.job_id,
            "rejected": self.rejected,
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, key: bytes, raw: bytes) -> Record:
        """Through the decode boundary: a record that cannot be read is a ``BadEntryError``."""
        try:
            doc = json.loads(raw)
            return cls(
                str(doc["uid"]), int(doc["generation"]), str(doc.get("jobId", "")), doc.get("rejected", "")
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise BadEntryError(key, f"not a resource record: {e}") from None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What etcd holds for one resource, with the revisions a write compares (0: absent)."""

    stored: StoredJob | None = None
    cursor: Cursor | None = None  # as stored, whichever job version wrote it
    record: Record | None = None
    spec_revision: int = 0
    cursor_revision: int = 0
    record_revision: int = 0
    lease: int = 0  # the TTL lease of the stored spec or cursor, revoked when replaced
    history: tuple[str, tuple[HistoryEntry, ...]] | None = None  # (job id, settled firings) as stored
    bad_history: str | None = None  # the history cannot be decoded: why (BadEntryError's text)


def snapshot_of(
    spec: KeyValue | None,
    cursor: KeyValue | None,
    record: KeyValue | None,
    history: KeyValue | None = None,
) -> Snapshot:
    stored = decode_spec(spec.key, spec.value) if spec is not None else None
    past, bad = None, None
    if history is not None:
        try:
            job_id, entries = decode_history(history.key, history.value)
            past = (job_id, tuple(entries))
        except BadEntryError as e:
            bad = str(e)
    return Snapshot(
        stored,
        decode_cursor(cursor.key, cursor.value) if cursor is not None else None,
        Record.decode(record.key, record.value) if record is not None else None,
        *_revisions(spec, cursor, record),
        past,
        bad,
    )


def _revisions(
    spec: KeyValue | None, cursor: KeyValue | None, record: KeyValue | None
) -> tuple[int, int, int, int]:
    return (
        spec.mod_revision if spec is not None else 0,
        cursor.mod_revision if cursor is not None else 0,
        record.mod_revision if record is not None else 0,
        (spec.lease if spec is not None else 0) or (cursor.lease if cursor is not None else 0),
    )


class Mirror:
    """Fenced reads and writes of one pool's jobs on behalf of the elected reconciler."""

    def __init__(self, client: EtcdClient, keys: Keys, fence: Callable[[], int | None]) -> None:
        self.client = client
        self.keys = keys
        self.fence = fence

    def _keys(self, namespace: str, name: str) -> tuple[bytes, bytes, bytes]:
        ref = self.keys.ref(namespace, name)
        return self.keys.job(ref), self.keys.cursor(ref), self.keys.resource(namespace, name)

    def _fence(self) -> etcd.Compare:
        fence = self.fence()
        if fence is None:
            raise NotLeaderError("not the leader")
        return etcd.create_revision_is(self.keys.leader("reconciler"), fence)

    async def _read(self, namespace: str, name: str) -> list[KeyValue | None]:
        spec_key, cursor_key, record_key = self._keys(namespace, name)
        history_key = self.keys.history(self.keys.ref(namespace, name))
        keys = (spec_key, cursor_key, record_key, history_key)
        response = await self.client.txn([], [etcd.get(key) for key in keys])
        return [r.response_range.kvs[0] if r.response_range.kvs else None for r in response.responses]

    async def read(self, namespace: str, name: str) -> Snapshot:
        """What etcd holds for the resource; raises ``BadEntryError`` for an entry that cannot be used."""
        return snapshot_of(*await self._read(namespace, name))

    async def revisions(self, namespace: str, name: str) -> Snapshot:
        """Only the revisions and lease a write compares (nothing decoded)."""
        spec, cursor, record, _ = await self._read(namespace, name)
        return Snapshot(None, None, None, *_revisions(spec, cursor, record))

    async def _commit(self, seen: Snapshot, namespace: str, name: str, ops: list[etcd.RequestOp]) -> None:
        spec_key, cursor_key, record_key = self._keys(namespace, name)
        compares = [
            self._fence(),
            etcd.mod_revision_is(spec_key, seen.spec_revision),
            etcd.mod_revision_is(cursor_key, seen.cursor_revision),
            etcd.mod_revision_is(record_key, seen.record_revision),
        ]
        response = await self.client.txn(compares, ops, [etcd.get(self.keys.leader("reconciler"))])
        if response.succeeded:
            if seen.lease:
                await self.client.revoke(seen.lease)  # the replaced version's TTL no longer applies
            return
        holder = response.responses[0].response_range.kvs
        if not holder or holder[0].create_revision != self.fence():
            raise NotLeaderError("the leader key is no longer ours")
        raise ConflictError(f"{namespace}/{name} changed while being mirrored")

    async def put(
        self, seen: Snapshot, job: Job, uid: str, generation: int, progress: Cursor | None, now: datetime
    ) -> StoredJob:
        """Store a new version of the job (fresh id), carrying ``progress`` as its run state."""
        spec_key, cursor_key, record_key = self._keys(job.namespace, job.name)
        created = now.replace(microsecond=now.microsecond // 1000 * 1000)
        lease = await self.client.grant(math.ceil(job.ttl.total_seconds())) if job.ttl else 0
        stored = StoredJob(job, uuid.uuid4().hex, created, lease)
        record = Record(uid, generation, stored.id)
        ops = [etcd.put(spec_key, stored.to_json(), lease), etcd.put(record_key, record.to_json())]
        if progress is not None:
            cursor = Cursor(
                stored.id, progress.last_tick_ms, progress.runs, progress.missed, "", progress.fired_ms
            )
            ops.append(etcd.put(cursor_key, cursor.to_json(), lease))
        else:
            ops.append(etcd.delete(cursor_key))
        try:
            await self._commit(seen, job.namespace, job.name, ops)
        except EtcdCronError:
            if lease:
                await self.client.revoke(lease)
            raise
        return stored

    async def park(
        self, seen: Snapshot, namespace: str, name: str, uid: str, generation: int, rejected: str = ""
    ) -> None:
        """Take the job out of the pool (suspended, complete, invalid) and keep its cursor exactly as is."""
        spec_key, _, record_key = self._keys(namespace, name)
        job_id = seen.stored.id if seen.stored is not None else seen.record.job_id if seen.record else ""
        record = Record(uid, generation, job_id, rejected)
        ops = [etcd.delete(spec_key), etcd.put(record_key, record.to_json())]
        await self._commit(dataclasses.replace(seen, lease=0), namespace, name, ops)

    async def remove(self, namespace: str, name: str) -> None:
        """The resource is gone: delete its job, cursor and record, and its history, unsettled firings and
        run-now and backfill requests (a resource re-created under the name starts afresh: its tokens too).
        Nothing is decoded: an entry that cannot be read never keeps a resource from being deleted."""
        spec_key, cursor_key, record_key = self._keys(namespace, name)
        ref = self.keys.ref(namespace, name)
        inflight, requests = self.keys.inflight_of_job(ref), self.keys.requests_of_job(ref)
        ops = [
            etcd.delete(spec_key),
            etcd.delete(cursor_key),
            etcd.delete(record_key),
            etcd.delete(self.keys.history(ref)),
            etcd.delete(inflight, range_end(inflight)),
            etcd.delete(requests, range_end(requests)),
        ]
        for attempt in range(5):
            try:
                return await self._commit(await self.revisions(namespace, name), namespace, name, ops)
            except ConflictError:
                if attempt == 4:
                    raise  # a firing commit landed between each read and write: kopf retries the handler

    async def tenants(self) -> set[str]:
        """Every tenant with a resource record (read only: no fence needed)."""
        root = self.keys.resources_root()
        found: set[str] = set()
        async for _, page in self.client.range_pages(root, range_end(root)):
            found.update(kv.key[len(root) :].split(b"/", 1)[0].decode() for kv in page)
        return found

    async def remove_tenant(self, namespace: str) -> int:
        """A namespace is gone: delete its tenant's jobs, cursors, records, histories, unsettled firings and
        requests; returns the jobs deleted."""
        tenant = f"{namespace}/".encode()
        records = self.keys.resources_of_tenant(namespace)
        ops = [etcd.delete(records, range_end(records))]
        for p in range(self.keys.partitions):
            jobs = self.keys.jobs_of_tenant_in_partition(namespace, p)
            cursors = self.keys.cursors_of_partition(p) + tenant
            ops += [etcd.delete(jobs, range_end(jobs)), etcd.delete(cursors, range_end(cursors))]
            for kind in ("history", "inflight", "requests"):  # so a namespace re-created starts afresh
                prefix = self.keys.sibling(jobs, kind)
                ops.append(etcd.delete(prefix, range_end(prefix)))
        deleted = 0
        for start in range(0, len(ops), TXN_MAX_OPS):
            response = await self.client.txn([self._fence()], ops[start : start + TXN_MAX_OPS])
            if not response.succeeded:
                raise NotLeaderError("the leader key is no longer ours")
            for op, r in zip(ops[start : start + TXN_MAX_OPS], response.responses, strict=True):
                if op.request_delete_range.key.startswith(self.keys.jobs_root()):
                    deleted += r.response_delete_range.deleted
        return deleted
