"""Dispatch a firing of a DistributedCronJob as a Kubernetes Event or Job, in the resource's own namespace.

The object is named from the firing's identity (resource, scheduled time), so a retry, or a member taking
over after a crash between commit and dispatch, finds it already there: every tick gives exactly one
object. Tenancy: the namespace is the job's tenant, nothing else is ever written or read.

A failure is the pool's to handle (pool/deliveries.py): a retryable one raises ``JobCreateError`` (retried
by the job's failure policy), one the API server will refuse every time raises ``FinalError`` (not retried).
Either way the firing is recorded as failed in the job's history, with the error, and the reconciler shows
it in status (``dispatchFailure``, Ready False) until a later firing succeeds, whichever member fires it.
``on_error`` records one Warning Event per distinct cause, counting the firings that failed so.

The official ``kubernetes`` client is blocking: every call runs in one of the dispatcher's own worker
threads, on a client of its own whose connection pool holds a connection per worker (not the loop's shared
default executor, whose size depends on the machine, nor a pool of another size). A member's dispatch is
bound by this process's CPU (~0.8 ms per Event in the client: TLS, HTTP, JSON, under the GIL), not by
waiting: more threads only add GIL contention (bench/dispatch.py, docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from etcdcron.dispatch import FinalError
from etcdcron.dispatch.k8s_objects import event_body, job_body, object_name, record_warning
from etcdcron.firing import Firing
from etcdcron.job import Job, format_time
from etcdcron.k8s_resource import LABEL_JOB, Envelope, api_error

log = logging.getLogger(__name__)
REPEAT_LOG_SECONDS = 60
DEFAULT_WORKERS = 8
"""Requests in flight per member. A burst of 200 Events took as long with 8 workers as with 32 or 128,
at 775 µs of client CPU per Event against 1.0-2.2 ms with more threads (docs/benchmarks.md)."""


class JobCreateError(Exception):
    """Creating a tick's Event or Job failed in a way a retry may fix (server error, throttling)."""


def _cause(error: ApiException, name: str) -> str:
    """The API server's words without the object's name, so every tick failing the same way says the
    same (one Warning, one condition message, per cause)."""
    return api_error(error).replace(f' "{name}"', "").replace(name, "<name>")


def _final(error: ApiException) -> bool:
    """A 4xx other than a conflict or throttling: the same request can never succeed."""
    return 400 <= int(error.status or 0) < 500 and error.status not in (408, 409, 429)


def _discard(response: Any) -> None:
    """Drop an answer asked for undecoded (``_preload_content=False``, a urllib3 response): read to its
    end, so its connection goes back to the pool instead of a new one (and a TLS handshake) per call."""
    response.drain_conn()
    response.release_conn()


def _finished(job: Any) -> str | None:
    """'Complete' or 'Failed' for a finished Job, else None."""
    for cond in (job.status.conditions or []) if job.status else []:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return str(cond.type)
    return None


class KubernetesDispatcher:
    """A trigger for pool members in the operator: creates the Event or Job of each firing."""

    def __init__(self, api_client: k8s.ApiClient, member: str, *, workers: int = DEFAULT_WORKERS) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        configuration = copy.copy(api_client.configuration)  # same host and credentials (and token refresh)
        configuration.connection_pool_maxsize = workers
        client = k8s.ApiClient(configuration)
        self.core = k8s.CoreV1Api(client)
        self.batch = k8s.BatchV1Api(client)
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=f"dispatch-{member}"[:32])
        self.member = member
        self._logged: dict[tuple[str, str, str], float] = {}

    async def __call__(self, firing: Firing) -> None:
        envelope = Envelope.from_bytes(firing.job.job.payload)
        create = self._create_job if envelope.kind == "Job" else self._create_event
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, create, firing, envelope)
        except ApiException as e:  # one line (the client's own text dumps every HTTP header)
            cause = _cause(e, object_name(firing, envelope.uid))
            raise JobCreateError(f"creating the {envelope.kind} failed: {cause}") from None

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
        reason = f"{envelope.kind}CreateFailed"
        args = (job.name, job.namespace, envelope.uid, self.member, reason, message, message)
        try:
            await asyncio.to_thread(record_warning, self.core, *args)
        except ApiException as e:
            self._log_once(job.namespace, job.name, f"could not record a Warning: {api_error(e)}")
        self._log_once(job.namespace, job.name, message)

    def _create_event(self, firing: Firing, envelope: Envelope) -> None:
        body = event_body(firing, envelope, self.member)
        job = firing.job.job
        try:  # the answer is not read into models, only its status matters (~70 of ~800 µs per create)
            _discard(self.core.create_namespaced_event(job.namespace, body, _preload_content=False))
        except ApiException as e:
            if e.status == 409:
                return  # this tick's Event exists already (a retry after a crash)
            if _final(e):  # e.g. 403 "namespace is being terminated": no retry can succeed
                self._log_once(job.namespace, job.name, f"Event not created: {api_error(e)}")
                return
            raise JobCreateError(
                f"creating the Event failed: {_cause(e, body['metadata']['name'])}"
            ) from None

    def _create_job(self, firing: Firing, envelope: Envelope) -> None:
        spec = envelope.target.get("job") or {}
        policy = spec.get("concurrencyPolicy", "Allow")
        job = firing.job.job
        name = object_name(firing, envelope.uid)
        selector = f"{LABEL_JOB}={job.name}"
        ours = [
            j
            for j in self.batch.list_namespaced_job(job.namespace, label_selector=selector).items
            if any(o.uid == envelope.uid for o in (j.metadata.owner_references or []))
        ]
        if any(j.metadata.name == name for j in ours):
            return  # this tick's Job exists already (a retry after a crash)
        active = [j for j in ours if _finished(j) is None and j.metadata.deletion_timestamp is None]
        if active and policy == "Forbid":
            log.info(
                "job %s/%s: tick %s skipped, %d Job(s) still running (Forbid)",
                job.namespace,
                job.name,
                format_time(firing.scheduled),
                len(active),
            )
            self._warn(
                firing,
                envelope,
                "ForbidConcurrent",
                f"tick {format_time(firing.scheduled)} skipped: {active[0].metadata.name} is still running",
                key="still running",
            )
            return
        if active and policy == "Replace":
            for old in active:
                self._delete_job(job.namespace, old.metadata.name)
        try:
            self.batch.create_namespaced_job(job.namespace, job_body(firing, envelope))
        except ApiException as e:
            if e.status == 409:
                pass  # this tick's Job exists already
            elif _final(e):  # the request itself is wrong: retrying cannot help
                raise FinalError(f"the API server refused the Job: {_cause(e, name)}") from None
            else:
                raise JobCreateError(f"creating the Job failed: {_cause(e, name)}") from None
        self._trim_history(job.namespace, ours, spec)

    def _trim_history(self, namespace: str, jobs: list[Any], spec: dict[str, Any]) -> None:
        limits = {
            "Complete": int(spec.get("successfulJobsHistoryLimit", 3)),
            "Failed": int(spec.get("failedJobsHistoryLimit", 1)),
        }
        for outcome, limit in limits.items():
            done = sorted(
                (j for j in jobs if _finished(j) == outcome),
                key=lambda j: j.metadata.creation_timestamp,
                reverse=True,
            )
            for old in done[limit:]:
                self._delete_job(namespace, old.metadata.name)

    def _delete_job(self, namespace: str, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        except ApiException as e:
            if e.status != 404:
                raise

    def _warn(self, firing: Firing, envelope: Envelope, reason: str, message: str, key: str) -> None:
        job = firing.job.job
        try:
            record_warning(
                self.core, job.name, job.namespace, envelope.uid, self.member, reason, message, key
            )
        except ApiException as e:
            self._log_once(job.namespace, job.name, f"could not record a Warning: {api_error(e)}")

    def _log_once(self, namespace: str, name: str, message: str) -> None:
        """A failure that repeats every tick is logged once per ``REPEAT_LOG_SECONDS``, not per tick."""
        now = time.monotonic()
        key = (namespace, name, message)
        if now - self._logged.get(key, -REPEAT_LOG_SECONDS) >= REPEAT_LOG_SECONDS:
            self._logged = {k: t for k, t in self._logged.items() if now - t < REPEAT_LOG_SECONDS}
            self._logged[key] = now
            log.warning(
                "job %s/%s: %s (repeats are not logged for %ds)", namespace, name, message, REPEAT_LOG_SECONDS
            )
