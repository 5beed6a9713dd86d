"""Runs outside the schedule and what ran: run-now requests, backfills, and each job's history.

A request is a key under ``P/requests/`` that the member owning the job serves (pool/recovery.py,
pool/backfill.py); it stays, marked done, so the same token (or range) never fires twice.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from etcdcron import etcd
from etcdcron.decode import decode_history, decode_job
from etcdcron.errors import JobNotFoundError, ValidationError
from etcdcron.etcd import EtcdClient
from etcdcron.firing import BACKFILL, HistoryEntry, RunRequest, to_ms
from etcdcron.job import PAYLOAD_MAX, format_time, validate_namespace
from etcdcron.keys import Keys

TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
"""A run-now request token: it names a key, so it is kept short and plain."""


class Runs:
    """Stateless apart from the client: cheap to create."""

    def __init__(self, client: EtcdClient, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    async def request_run(self, namespace: str, name: str, token: str, payload: bytes | None) -> bool:
        """Ask the pool to fire a job now, once per ``token``: True if this call made the request, False if
        that token was requested before (done or not). The member owning the job fires it."""
        validate_namespace(namespace)
        if not TOKEN.fullmatch(token):
            raise ValidationError("token", f"{token!r} is not 1-63 letters, digits, '-', '_' or '.'")
        if payload is not None and len(payload) > PAYLOAD_MAX:
            raise ValidationError("payload", f"must be at most {PAYLOAD_MAX} bytes, got {len(payload)}")
        ref = self.keys.ref(namespace, name)
        job_key, request_key = self.keys.job(ref), self.keys.request(ref, token)
        spec = await self.client.get(job_key)
        if spec is None:
            raise JobNotFoundError(namespace, name)
        request = RunRequest(token, to_ms(datetime.now(UTC)), payload)
        response = await self.client.txn(
            [etcd.create_revision_is(request_key, 0), etcd.mod_revision_is(job_key, spec.mod_revision)],
            [etcd.put(request_key, request.to_json(), spec.lease)],
            [etcd.get(request_key), etcd.get(job_key)],
        )
        if response.succeeded:
            return True
        requested, job = (r.response_range.kvs for r in response.responses)
        if requested:
            return False
        if not job:
            raise JobNotFoundError(namespace, name)
        return await self.request_run(namespace, name, token, payload)  # the job changed: ask again

    async def request_backfill(
        self, namespace: str, name: str, start: datetime, end: datetime, rate: float = 10.0
    ) -> bool:
        """Ask the pool to fire every tick of the job's schedule in ``[start, end]`` once, ``rate`` ticks a
        second. The range names the request, so the same backfill asked twice runs once: True if this call
        made it."""
        validate_namespace(namespace)
        if start.tzinfo is None or end.tzinfo is None:
            raise ValidationError("from", "times need a UTC offset or Z")
        if not start < end:
            raise ValidationError("to", f"must be after --from ({format_time(start)})")
        if not 0 < rate <= 10_000:
            raise ValidationError("rate", f"must be more than 0 and at most 10000 ticks a second, got {rate}")
        ref = self.keys.ref(namespace, name)
        first, last = to_ms(start), to_ms(end)
        token = f"backfill-{first}-{last}"
        spec = await self.client.get(self.keys.job(ref))
        if spec is None:
            raise JobNotFoundError(namespace, name)
        request = RunRequest(
            token, to_ms(datetime.now(UTC)), None, False, "", BACKFILL, first, last, rate, first - 1
        )
        key = self.keys.request(ref, token)
        response = await self.client.txn(
            [etcd.create_revision_is(key, 0), etcd.mod_revision_is(self.keys.job(ref), spec.mod_revision)],
            [etcd.put(key, request.to_json(), spec.lease)],
            [etcd.get(key)],
        )
        if response.succeeded:
            return True
        if response.responses[0].response_range.kvs:
            return False
        return await self.request_backfill(namespace, name, start, end, rate)  # the job changed: again

    async def history(self, namespace: str, name: str) -> list[HistoryEntry]:
        """The job's settled firings, oldest first. Kept after the job completes (its last version's);
        empty for a job re-added since (a new version starts a new history)."""
        validate_namespace(namespace)
        ref = self.keys.ref(namespace, name)
        response = await self.client.txn([], [etcd.get(self.keys.history(ref)), etcd.get(self.keys.job(ref))])
        histories, specs = (r.response_range.kvs for r in response.responses)
        if not histories:
            if not specs:
                raise JobNotFoundError(namespace, name)
            return []
        job_id, entries = decode_history(histories[0].key, histories[0].value)
        if specs:
            _, stored = decode_job(self.keys, specs[0].key, specs[0].value)
            if stored.id != job_id:
                return []
        return entries
