"""What a member finds in a partition it loads besides the jobs: firings another member (or an earlier
life of this one) left unsettled, which it delivers again with the same ``firing.key``, and run-now
requests and backfills not yet served, which it serves.

A firing whose job was replaced before it was settled is delivered as the job is now (its tick was
committed: a run, never lost); one whose job was deleted is dropped (reported once). A final run's firing
carries its job's spec, so it survives the job's removal.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from etcdcron import etcd
from etcdcron.decode import BadEntryError, decode_inflight, decode_job, decode_request
from etcdcron.errors import EtcdUnavailableError
from etcdcron.etcd import EtcdClient, KeyValue
from etcdcron.firing import BACKFILL, MANUAL, Firing, InFlight, RunRequest, from_ms
from etcdcron.job import StoredJob
from etcdcron.keys import Keys
from etcdcron.policy import Delivery
from etcdcron.pool.backfill import Backfills
from etcdcron.pool.deliveries import Deliveries
from etcdcron.pool.handoffs import Handoff
from etcdcron.pool.jobtable import JobTable
from etcdcron.pool.reporting import Reporter
from etcdcron.pool.settlements import Settlements
from etcdcron.store import PartitionSnapshot

log = logging.getLogger("etcdcron.pool")


class Recovery:
    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        table: JobTable,
        deliveries: Deliveries,
        settlements: Settlements,
        reporter: Reporter,
        member_id: str,
        clock: Callable[[], int],
        backfills: Backfills,
    ) -> None:
        self.backfills = backfills
        self.client = client
        self.keys = keys
        self.table = table
        self.deliveries = deliveries
        self.settlements = settlements
        self.reporter = reporter
        self.member_id = member_id
        self.clock = clock

    def _spec_key(self, key: bytes, kind: str) -> tuple[bytes, str]:
        """(job spec key, tag) of an ``inflight`` or ``requests`` key."""
        rest = key[len(f"{self.keys.prefix}/{kind}/") :]
        head, _, tag = rest.rpartition(b"/")
        return self.keys.jobs_root() + head, tag.decode("utf-8", "backslashreplace")

    def _job(
        self, p: int, spec_key: bytes, job_id: str | None, specs: dict[bytes, KeyValue]
    ) -> StoredJob | None:
        """The job stored under ``spec_key``: version ``job_id`` only, or any (None)."""
        state = self.table.partitions.get(p)
        loaded = state.jobs.get(spec_key) if state is not None else None
        if loaded is not None and job_id in (None, loaded.stored.id):
            return loaded.stored
        kv = specs.get(spec_key)
        if kv is not None:
            try:
                _, stored = decode_job(self.keys, kv.key, kv.value)
            except BadEntryError:
                return None
            if job_id in (None, stored.id):
                return stored
        return None

    async def restore(self, p: int, snapshot: PartitionSnapshot) -> None:
        specs = {kv.key: kv for kv in snapshot.jobs} if snapshot.inflight else {}
        for kv in snapshot.inflight:
            # Ours in progress, or settled here with the acknowledgement not yet written: not again.
            settling = self.settlements.settling(p, kv.key, snapshot.revision)
            if not self.deliveries.is_active(kv.key) and not settling:
                self._redeliver(p, kv, specs)
        for kv in snapshot.requests:
            await self.serve(p, kv)

    def _redeliver(self, p: int, kv: KeyValue, specs: dict[bytes, KeyValue]) -> None:
        try:
            record = decode_inflight(kv.key, kv.value)
        except BadEntryError as e:
            self.reporter.bad_entry(e, kv.mod_revision)
            return
        spec_key, _ = self._spec_key(kv.key, "inflight")
        stored = self._job(p, spec_key, record.job_id, specs)
        if stored is None and record.spec is not None:
            try:
                _, stored = decode_job(self.keys, spec_key, record.spec)
            except BadEntryError as e:
                self.reporter.bad_entry(e, kv.mod_revision)
                return
        if stored is None and (stored := self._job(p, spec_key, None, specs)) is not None:
            # Replaced since the commit: the tick was committed (a run), so it fires, as the job is now.
            log.info(
                "unsettled firing %s: its job was replaced since; delivered as it is now", kv.key.decode()
            )
        if stored is None:
            log.warning("dropping unsettled firing %s: its job was deleted", kv.key.decode())
            self.settlements.delete(p, kv.key)
            return
        firing = dataclasses.replace(self._firing(stored, record), redelivery=True)
        handoff = Handoff(firing, p, spec_key, kv.key, record, True)
        if record.parked:
            self.deliveries.park(handoff)
        else:
            self.deliveries.start([handoff], record.next_attempt_ms)

    def _firing(self, stored: StoredJob, record: InFlight) -> Firing:
        tick = from_ms(record.tick_ms)
        last = record.spec is not None
        return Firing(
            stored, tick, tick, record.run, self.member_id, last, record.kind, record.token, 1, record.payload
        )

    async def serve(self, p: int, kv: KeyValue) -> None:
        """Fire a run-now request once: mark it done and (at-least-once) record the firing in one fenced
        transaction, then deliver it."""
        try:
            request = decode_request(kv.key, kv.value)
        except BadEntryError as e:
            self.reporter.bad_entry(e, kv.mod_revision)
            return
        state = self.table.partitions.get(p)
        if request.done or state is None:
            return
        spec_key, token = self._spec_key(kv.key, "requests")
        if request.kind == BACKFILL:
            self.backfills.start(p, spec_key, kv, request)
            return
        job = state.jobs.get(spec_key)
        if job is None:
            return  # not loaded (complete, bad, or not yet seen): served when it is
        now = self.clock()
        record = InFlight(job.stored.id, now, 0, MANUAL, token, payload=request.payload)
        inflight_key = self.keys.sibling(spec_key, "inflight") + b"/" + record.tag.encode()
        done = RunRequest(request.token, request.requested_ms, request.payload, True, self.member_id)
        at_least_once = job.stored.job.delivery is Delivery.AT_LEAST_ONCE
        ops = [etcd.put(kv.key, done.to_json(), kv.lease)]
        if at_least_once:
            ops.append(etcd.put(inflight_key, record.to_json(), job.stored.lease))
        compares = [
            etcd.create_revision_is(self.keys.partition(p), state.fence),
            etcd.mod_revision_is(kv.key, kv.mod_revision),
        ]
        try:
            response = await self.client.txn(compares, ops)
        except EtcdUnavailableError as e:
            await self.reporter.etcd_error(e, job.stored.job)
            return  # served after the next reload of the partition (the watch restarts)
        if not response.succeeded:
            return  # served by someone else, or changed: the watch brings the change
        firing = self._firing(job.stored, record)
        self.deliveries.start([Handoff(firing, p, spec_key, inflight_key, record, at_least_once)], now)
