"""The Kubernetes dispatcher's rules, pure: what an API server's answer means for a firing, what a
resource's Jobs call for before a tick's Job is created (``concurrencyPolicy``) and after (the history
limits), and how often a resource's history is looked at.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class Verdict(enum.Enum):
    CREATED = "created"
    EXISTS = "exists"  # 409 AlreadyExists: this tick's object is there already (a retry, another member)
    FINAL = "final"  # a 4xx no retry can fix (403 namespace terminating, 404, 422 invalid...)
    RETRY = "retry"  # 5xx, 408, 429: a retry may succeed


def verdict(status: int) -> Verdict:
    """What a create's HTTP status means for the firing."""
    if 200 <= status < 300:
        return Verdict.CREATED
    if status == 409:
        return Verdict.EXISTS
    if 400 <= status < 500 and status not in (408, 429):
        return Verdict.FINAL
    return Verdict.RETRY


def namespace_terminating(status: int, document: Any) -> bool:
    """A 403 that says the namespace is being deleted (cause ``NamespaceTerminating``): not a permission
    the operator lacks, and nothing to retry: the namespace's resources leave the pool with it."""
    if status != 403 or not isinstance(document, Mapping):
        return False
    details = document.get("details")
    causes = details.get("causes") if isinstance(details, Mapping) else None
    return isinstance(causes, list) and any(
        isinstance(c, Mapping) and c.get("reason") == "NamespaceTerminating" for c in causes
    )


def without_name(text: str, name: str) -> str:
    """The API server's words without the object's name, so every tick failing the same way says the
    same (one Warning, one condition message, per cause)."""
    if not name:
        return text
    return text.replace(f' "{name}"', "").replace(name, "<name>")


@dataclass(frozen=True, slots=True)
class ListedJob:
    """What the dispatcher needs of one of a resource's Jobs."""

    name: str
    created: str  # RFC 3339, second precision: sorts as text
    outcome: str | None  # "Complete" or "Failed" once finished
    deleting: bool

    @property
    def active(self) -> bool:
        return self.outcome is None and not self.deleting


def outcome(job: Mapping[str, Any]) -> str | None:
    """'Complete' or 'Failed' for a finished Job (a true condition of that type), else None."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return str(cond["type"])
    return None


def owned_jobs(items: Iterable[Mapping[str, Any]], uid: str) -> list[ListedJob]:
    """The listed Jobs (``items`` of a JobList, as JSON) the resource ``uid`` owns: a label can be copied,
    an owner reference names one resource (its uid: not an earlier resource of the same name)."""
    out = []
    for job in items:
        meta = job.get("metadata") or {}
        if any(o.get("uid") == uid for o in meta.get("ownerReferences") or []):
            out.append(
                ListedJob(
                    str(meta["name"]),
                    str(meta.get("creationTimestamp") or ""),
                    outcome(job),
                    meta.get("deletionTimestamp") is not None,
                )
            )
    return out


@dataclass(frozen=True, slots=True)
class BeforeCreate:
    """What a tick's Job calls for under Forbid or Replace, from the resource's Jobs listed just before."""

    exists: bool  # this tick's Job is there already: done
    skip: str | None  # Forbid: the running Job the tick is skipped for
    replace: tuple[str, ...]  # Replace: the running Jobs deleted before the tick's is created


def before_create(jobs: list[ListedJob], name: str, policy: str) -> BeforeCreate:
    if any(j.name == name for j in jobs):
        return BeforeCreate(True, None, ())
    active = [j.name for j in jobs if j.active]
    if active and policy == "Forbid":
        return BeforeCreate(False, active[0], ())
    if active and policy == "Replace":
        return BeforeCreate(False, None, tuple(active))
    return BeforeCreate(False, None, ())


def history_limits(spec: Mapping[str, Any]) -> dict[str, int]:
    """Finished Jobs kept, by outcome (the CRD's defaults: 3 Complete, 1 Failed)."""
    return {
        "Complete": int(spec.get("successfulJobsHistoryLimit", 3)),
        "Failed": int(spec.get("failedJobsHistoryLimit", 1)),
    }


def beyond_history(jobs: list[ListedJob], limits: Mapping[str, int]) -> list[str]:
    """The finished Jobs past their outcome's limit (the oldest; a Job already being deleted is not
    kept): to delete."""
    out: list[str] = []
    for result, limit in limits.items():
        done = [j for j in jobs if j.outcome == result and not j.deleting]
        done.sort(key=lambda j: (j.created, j.name), reverse=True)
        out.extend(j.name for j in done[limit:])
    return out


class HistoryPacer:
    """When a resource's Jobs are next listed to trim its history: at most ``per_second`` lists per
    member, shared by the resources it created Jobs for in the last ``remember`` seconds. One resource
    is looked at after each of its Jobs (as often as a list per tick); 300 every second, each every 300 /
    ``per_second`` seconds: the cost no longer grows with the firings, only with how many Jobs finish."""

    def __init__(self, per_second: float, remember: float = 120.0) -> None:
        if per_second <= 0:
            raise ValueError(f"per_second must be positive, got {per_second}")
        self.per_second = per_second
        self.remember = remember
        self._last: dict[str, float] = {}  # resource uid -> when its history was last listed
        self._seen: dict[str, float] = {}  # resource uid -> when it last created a Job here
        self._swept = 0.0

    def due(self, uid: str, now: float) -> bool:
        """Whether to list ``uid``'s Jobs now (and it counts as listed if so)."""
        if now - self._swept >= self.remember:
            self._seen = {k: t for k, t in self._seen.items() if now - t < self.remember}
            self._last = {k: t for k, t in self._last.items() if k in self._seen}
            self._swept = now
        self._seen[uid] = now
        last = self._last.get(uid)
        if last is not None and now - last < len(self._seen) / self.per_second:
            return False
        self._last[uid] = now
        return True
