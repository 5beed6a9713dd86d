"""The public facade, the seed's API made Pythonic::

    async with Cron(endpoints=["127.0.0.1:2379"], namespace="my-app", trigger=fire) as cron:
        await cron.add_job(Job(name="job0", schedule="*/2 * * * * *", type="greet", payload=b"hi"))

``Cron`` joins the pool (fires jobs of its partitions, of every tenant of the prefix, through ``trigger``)
unless ``trigger`` is None, and manages the jobs of its own ``namespace`` only: a tenant never sees or
touches another's jobs. Separate applications sharing one etcd use separate prefixes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from etcdcron.dispatch import ErrorHandler, Trigger, call_handler
from etcdcron.errors import ValidationError
from etcdcron.etcd import DEFAULT_ENDPOINT
from etcdcron.firing import Cursor, HistoryEntry
from etcdcron.job import DEFAULT_NAMESPACE, Job, validate_namespace
from etcdcron.keys import DEFAULT_PARTITIONS, DEFAULT_PREFIX
from etcdcron.pool import Member, MemberFailure
from etcdcron.runs import Runs
from etcdcron.settings import PoolSettings
from etcdcron.store import JobStatus, JobStore, Listing

log = logging.getLogger(__name__)


class Cron:
    def __init__(
        self,
        *,
        endpoints: Sequence[str] = (DEFAULT_ENDPOINT,),
        namespace: str = DEFAULT_NAMESPACE,
        trigger: Trigger | None = None,
        on_error: ErrorHandler | None = None,
        on_etcd_error: ErrorHandler | None = None,
        member_id: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        partitions: int = DEFAULT_PARTITIONS,
        lease_ttl: int = 5,
        timeout: float = 5.0,
    ) -> None:
        self.namespace = validate_namespace(namespace)
        self.settings = PoolSettings(
            tuple(endpoints), prefix, member_id or "", lease_ttl, timeout, partitions
        )
        self.client = self.settings.client()
        self.keys = self.settings.keys
        self.store = JobStore(self.client, self.keys)
        self.runs = Runs(self.client, self.keys)
        self.on_error = on_error
        self.member: Member | None = None
        if trigger is not None:
            self.member = self.settings.member(
                self.client, trigger, on_error=on_error, on_etcd_error=on_etcd_error
            )

    async def __aenter__(self) -> Cron:
        if self.member is not None:
            try:
                await self.member.start()
            except BaseException:
                await self.client.close()
                raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self.member is not None:
                await self.member.stop()
        finally:
            await self.client.close()

    def _own(self, job: Job) -> Job:
        if job.namespace == self.namespace:
            return job
        if job.namespace != DEFAULT_NAMESPACE:
            raise ValidationError(
                "namespace", f"job is in {job.namespace!r} but this Cron manages {self.namespace!r}"
            )
        return replace(job, namespace=self.namespace)

    async def add_job(self, job: Job, *, if_not_exists: bool = False) -> JobStatus:
        """Store a job (replacing one of the same name: the new version starts afresh).

        ``if_not_exists``: keep a job of that name if there is one and raise ``JobExistsError`` (atomic: of
        concurrent adds exactly one succeeds)."""
        stored = await self.store.add(self._own(job), if_not_exists=if_not_exists)
        # As added, not read back: a fast job may have fired, and completed, before a second read.
        return JobStatus(stored, Cursor(stored.id))

    async def get_job(self, name: str) -> JobStatus:
        return await self.store.get(self.namespace, name)

    async def list_jobs(self) -> list[JobStatus]:
        """The tenant's jobs; an entry that cannot be decoded is logged and handed to ``on_error``."""
        listing = await self.list_entries()
        for error in listing.bad:
            log.error("%s", error)
            await call_handler(self.on_error, None, error)
        return listing.jobs

    async def list_entries(self) -> Listing:
        """The tenant's jobs and, apart, every entry of its range that cannot be decoded."""
        return await self.store.list(self.namespace)

    async def trigger_job(self, name: str, *, payload: bytes | None = None, token: str | None = None) -> str:
        """Fire a job now (not counted as a run), once per ``token``; returns the token."""
        token = token or uuid.uuid4().hex
        await self.runs.request_run(self.namespace, name, token, payload)
        return token

    async def backfill(self, name: str, start: datetime, end: datetime, rate: float = 10.0) -> bool:
        """Fire every tick of the job's schedule in ``[start, end]`` once (not counted as runs), ``rate``
        ticks a second; the same range asked again is the same backfill (False)."""
        return await self.runs.request_backfill(self.namespace, name, start, end, rate)

    async def history(self, name: str) -> list[HistoryEntry]:
        """The job's last settled firings, oldest first."""
        return await self.runs.history(self.namespace, name)

    def deliverable(self, *prefixes: str) -> int:
        """A consumer is ready for jobs whose ``<namespace>/<name>`` starts with one of ``prefixes``:
        this process's member delivers the firings it parked for them. Returns how many."""
        return self.member.deliverable(*prefixes) if self.member is not None else 0

    @property
    def failure(self) -> MemberFailure | None:
        """Why this process's pool member left the pool on its own (None while it runs or after stop)."""
        return self.member.failure if self.member is not None else None

    async def delete_job(self, name: str) -> bool:
        return await self.store.delete(self.namespace, name)

    async def delete_prefix(self, name_prefix: str) -> int:
        """Delete every job of this tenant whose name starts with ``name_prefix`` (``job-1`` matches
        ``job-10``); returns how many. Never touches another tenant."""
        return await self.store.delete_prefix(self.namespace, name_prefix)
