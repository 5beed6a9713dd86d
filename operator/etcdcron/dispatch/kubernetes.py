"""Dispatch a firing of a DistributedCronJob as a Kubernetes Event or Job, in the resource's own namespace.

The object is named from the firing's identity (resource, scheduled time), so a retry, or a member taking
over after a crash between commit and dispatch, finds it already there: every tick gives exactly one
object. Tenancy: the namespace is the job's tenant, nothing else is ever written or read.

A failure is the pool's to handle (pool/deliveries.py): a retryable one (5xx, 408, 429, no answer) raises
``JobCreateError`` (retried by the job's failure policy), one the API server will refuse every time raises
``FinalError`` (not retried). Either way the firing is recorded as failed in the job's history, with the
error, and the reconciler shows it in status (``dispatchFailure``, Ready False) until a later firing
succeeds, whichever member fires it. ``on_error`` records one Warning Event per distinct cause, counting
the firings that failed so.

Requests are coroutines on the member's loop (``k8s_api.ApiSession``, aiohttp), at most ``in_flight`` at
once: the blocking kubernetes client in threads cost ~0.8 ms of CPU per Event under the GIL, the bound
of a member's dispatch (bench/dispatch.py, docs/benchmarks.md). A Job is created first (AlreadyExists is
done): the resource's Jobs are listed before only when ``concurrencyPolicy`` Forbid or Replace needs to
know what runs, and after, to trim the history, paced (``k8s_rules.HistoryPacer``) rather than per tick
and from the API server's watch cache (a LIST read through reads every Job of the namespace from etcd).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from kubernetes import client as k8s

from etcdcron.dispatch import FinalError
from etcdcron.dispatch.k8s_api import Answer, ApiSession, Unreachable
from etcdcron.dispatch.k8s_objects import event_body, job_body, object_name, repeat_patch, warning_event
from etcdcron.dispatch.k8s_rules import (
    HistoryPacer,
    ListedJob,
    Verdict,
    before_create,
    beyond_history,
    history_limits,
    namespace_terminating,
    owned_jobs,
    verdict,
    without_name,
)
from etcdcron.firing import Firing
from etcdcron.job import Job, format_time
from etcdcron.k8s_resource import LABEL_JOB, Envelope, api_error

log = logging.getLogger(__name__)
REPEAT_LOG_SECONDS = 60
DEFAULT_IN_FLIGHT = 32
"""Requests in flight per member (as many connections); the rest of a tick's firings wait for one."""
HISTORY_LISTS_PER_SECOND = 5.0
"""Lists of a resource's Jobs per member to trim the history (besides Forbid/Replace's, one per tick)."""


class JobCreateError(Exception):
    """Creating a tick's Event or Job failed in a way a retry may fix (server error, throttling)."""


class KubernetesDispatcher:
    """A trigger for pool members in the operator: creates the Event or Job of each firing. ``close`` it
    once the member has stopped."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        member: str,
        *,
        in_flight: int = DEFAULT_IN_FLIGHT,
        history_lists_per_second: float = HISTORY_LISTS_PER_SECOND,
    ) -> None:
        self.api = ApiSession(api_client.configuration, in_flight)  # same host, credentials, token refresh
        self.member = member
        self._pacer = HistoryPacer(history_lists_per_second)
        self._trims: set[asyncio.Task[None]] = set()
        self._logged: dict[tuple[str, str, str], float] = {}

    async def __call__(self, firing: Firing) -> None:
        envelope = Envelope.from_bytes(firing.job.job.payload)
        if envelope.kind == "Job":
            await self._create_job(firing, envelope)
        else:
            await self._create_event(firing, envelope)

    async def close(self) -> None:
        """Stop the history trims under way and close the connections."""
        for task in list(self._trims):
            task.cancel()
        await asyncio.gather(*self._trims, return_exceptions=True)
        await self.api.close()

    async def on_error(self, job: Job | None, error: Exception) -> None:
        """A firing failed for good (its failure policy gave up, or the API server refuses it): one Warning
        Event per distinct cause on the resource, counting repeats, as Kubernetes aggregates them."""
        if job is None:  # a bad entry or the member's own failure: the pool has logged it once already
            log.debug("pool error: %s", error)
            return
        try:
            envelope = Envelope.from_bytes(job.payload)
        except (ValueError, KeyError, TypeError):
            log.error("dispatch of %s/%s failed: %s", job.namespace, job.name, error)
            return
        message = str(error)
        await self._warn(job, envelope.uid, f"{envelope.kind}CreateFailed", message, key=message)
        self._log_once(job.namespace, job.name, message)

    async def _send(
        self, what: str, method: str, path: str, name: str, body: Any = None, **params: str
    ) -> Answer:
        try:
            return await self.api.request(method, path, body, params=params or None)
        except Unreachable as e:
            raise JobCreateError(f"{what} failed: {without_name(str(e), name)}") from None

    async def _create_event(self, firing: Firing, envelope: Envelope) -> None:
        job = firing.job.job
        body = event_body(firing, envelope, self.member)
        name = body["metadata"]["name"]
        path = f"/api/v1/namespaces/{job.namespace}/events"
        answer = await self._send("creating the Event", "POST", path, name, body)
        result = verdict(answer.status)
        if self._namespace_going(answer, firing, "Event"):
            return
        if result is Verdict.FINAL:  # e.g. 403 "namespace is being terminated": no retry can succeed
            self._log_once(job.namespace, job.name, f"Event not created: {_cause(answer, name)}")
        elif result is Verdict.RETRY:
            raise JobCreateError(f"creating the Event failed: {_cause(answer, name)}")
        # CREATED, or EXISTS: this tick's Event is there already (a retry, or another member's)

    async def _create_job(self, firing: Firing, envelope: Envelope) -> None:
        spec = envelope.target.get("job") or {}
        policy = spec.get("concurrencyPolicy", "Allow")
        job = firing.job.job
        name = object_name(firing, envelope.uid)
        listed = None
        if policy in ("Forbid", "Replace"):  # what still runs must be known before creating
            listed = await self._list_jobs(job, envelope.uid)
            plan = before_create(listed, name, policy)
            if plan.exists:
                return  # this tick's Job exists already (a retry after a crash)
            if plan.skip is not None:
                when = format_time(firing.scheduled)
                log.info("job %s/%s: tick %s skipped, %s still running (Forbid)", job.namespace, job.name,
                         when, plan.skip)  # fmt: skip
                message = f"tick {when} skipped: {plan.skip} is still running"
                await self._warn(job, envelope.uid, "ForbidConcurrent", message, key="still running")
                return
            for old in plan.replace:
                await self._delete_job(job.namespace, old)
        path = f"/apis/batch/v1/namespaces/{job.namespace}/jobs"
        answer = await self._send("creating the Job", "POST", path, name, job_body(firing, envelope))
        result = verdict(answer.status)
        if self._namespace_going(answer, firing, "Job"):
            return
        if result is Verdict.FINAL:  # the request itself is wrong: retrying cannot help
            raise FinalError(f"the API server refused the Job: {_cause(answer, name)}")
        if result is Verdict.RETRY:
            raise JobCreateError(f"creating the Job failed: {_cause(answer, name)}")
        if listed is not None or self._pacer.due(envelope.uid, time.monotonic()):
            task = asyncio.create_task(self._trim(job, envelope.uid, history_limits(spec), listed))
            self._trims.add(task)
            task.add_done_callback(self._trims.discard)

    async def _list_jobs(self, job: Job, uid: str, *, cached: bool = False) -> list[ListedJob]:
        """The resource's Jobs: read through to etcd for Forbid/Replace (a Job created a moment ago
        counts), or ``cached`` from the API server's watch cache (resourceVersion 0: no etcd range read
        of every Job in the namespace, which decides the API server's cost; a moment behind at most)."""
        path = f"/apis/batch/v1/namespaces/{job.namespace}/jobs"
        query = {"labelSelector": f"{LABEL_JOB}={job.name}", **({"resourceVersion": "0"} if cached else {})}
        answer = await self._send("listing its Jobs", "GET", path, job.name, **query)
        if not answer.ok:
            raise JobCreateError(f"listing its Jobs failed: {api_error(answer)}")
        return owned_jobs(answer.json().get("items") or [], uid)

    async def _delete_job(self, namespace: str, name: str) -> None:
        path = f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}"
        answer = await self._send(f"deleting Job {name}", "DELETE", path, "", propagationPolicy="Background")
        if not answer.ok and answer.status != 404:
            raise JobCreateError(f"deleting Job {name} failed: {api_error(answer)}")

    async def _trim(self, job: Job, uid: str, limits: dict[str, int], listed: list[ListedJob] | None) -> None:
        """Delete the finished Jobs past the history limits. Not the firing's failure (its Job exists):
        logged once per cause, and looked at again at the resource's next turn."""
        try:
            jobs = listed if listed is not None else await self._list_jobs(job, uid, cached=True)
            for old in beyond_history(jobs, limits):
                await self._delete_job(job.namespace, old)
        except JobCreateError as e:
            self._log_once(job.namespace, job.name, f"Job history not trimmed: {e}")
        except Exception:
            log.exception("job %s/%s: trimming the Job history failed", job.namespace, job.name)

    async def _warn(self, job: Job, uid: str, reason: str, message: str, key: str) -> None:
        """One Warning Event per distinct ``key``; a repeat counts on it (``k8s_objects.record_warning``,
        over this session)."""
        body = warning_event(job.name, job.namespace, uid, self.member, reason, message, key)
        path = f"/api/v1/namespaces/{job.namespace}/events"
        try:
            answer = await self.api.request("POST", path, body)
            if answer.status == 409:
                path = f"{path}/{body['metadata']['name']}"
                answer = await self.api.request("GET", path)
                if answer.ok:
                    patch = repeat_patch(answer.json().get("count"), body)
                    answer = await self.api.request("PATCH", path, patch, merge=True)
            why = "" if answer.ok else api_error(answer)
        except Unreachable as e:
            why = str(e)
        if why:
            self._log_once(job.namespace, job.name, f"could not record a Warning: {why}")

    def _namespace_going(self, answer: Answer, firing: Firing, kind: str) -> bool:
        """The tick's namespace is being deleted: said once (at INFO: nothing is wrong), not retried, no
        Warning (it could not be written there either)."""
        try:
            document = answer.json()
        except ValueError:
            return False
        if not namespace_terminating(answer.status, document):
            return False
        job = firing.job.job
        message = f"namespace is being deleted: its ticks' {kind}s are not created"
        self._log_once(job.namespace, job.name, message, logging.INFO)
        return True

    def _log_once(self, namespace: str, name: str, message: str, level: int = logging.WARNING) -> None:
        """A failure that repeats every tick is logged once per ``REPEAT_LOG_SECONDS``, not per tick."""
        now = time.monotonic()
        key = (namespace, name, message)
        if now - self._logged.get(key, -REPEAT_LOG_SECONDS) >= REPEAT_LOG_SECONDS:
            self._logged = {k: t for k, t in self._logged.items() if now - t < REPEAT_LOG_SECONDS}
            self._logged[key] = now
            log.log(
                level,
                "job %s/%s: %s (repeats are not logged for %ds)",
                namespace,
                name,
                message,
                REPEAT_LOG_SECONDS,
            )


def _cause(answer: Answer, name: str) -> str:
    """The API server's answer in one line, without the object's name."""
    return without_name(api_error(answer), name)
