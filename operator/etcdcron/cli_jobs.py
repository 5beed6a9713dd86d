"""The job commands of ``etcdcron``: add, get, list, delete, trigger, backfill, history (cli.py holds the
parser, the pool commands and the exit codes)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from etcdcron.decode import BadEntryError, key_text
from etcdcron.durations import parse_duration, parse_expiry, parse_instant
from etcdcron.errors import JobNotFoundError, ValidationError
from etcdcron.etcd import EtcdClient, parse_endpoints
from etcdcron.firing import Cursor, first_after_ms, from_ms, next_scheduled_ms
from etcdcron.job import CatchUp, Job, format_time
from etcdcron.keys import DEFAULT_PREFIX, Keys
from etcdcron.policy import Delivery, FailurePolicy, Overlap
from etcdcron.runs import Runs
from etcdcron.store import JobStatus, JobStore, validate_name_prefix

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def env(name: str, default: str) -> str:
    """A setting's ``ETCDCRON_<NAME>`` variable, or its default."""
    return os.environ.get(f"ETCDCRON_{name}", default)


def add_parsers(
    sub: Any,
    common: Callable[[argparse.ArgumentParser], None],
    tenant: Callable[[argparse.ArgumentParser], None],
) -> dict[str, Handler]:
    """The job commands' parsers, added to ``sub``; returns each command's handler."""
    add = sub.add_parser("add", help="add or replace a job")
    common(add)
    tenant(add)
    add.add_argument("name")
    add.add_argument("--schedule", required=True, help="cron (5 or 6 fields), @hourly..., @every 10s")
    add.add_argument("--type", default="")
    add.add_argument("--payload", default="", help="text handed to every firing")
    add.add_argument("--time-zone", default="UTC", help="IANA name, e.g. Europe/Paris")
    add.add_argument(
        "--ttl", help="delete the job this long after adding it (1h, PT1H) or at this RFC 3339 time"
    )
    start = add.add_mutually_exclusive_group()
    start.add_argument("--start-at", help="no tick before this RFC 3339 time")
    start.add_argument("--delay", help="no tick before now + this duration (90s, PT90S)")
    add.add_argument("--max-runs", type=int, help="the job completes and is removed after N firings")
    add.add_argument(
        "--catch-up", default="all", help="missed ticks: all (within the deadline), latest, none"
    )
    add.add_argument("--catch-up-deadline", default="5m", help="how old a missed tick may be under 'all'")
    add.add_argument(
        "--delivery",
        default="at-least-once",
        help="at-least-once (acknowledged; re-delivered after a crash) or at-most-once (never repeated)",
    )
    policy = add.add_mutually_exclusive_group()
    policy.add_argument(
        "--failure-policy",
        help="drop | constant:INTERVAL:MAX | exponential:INITIAL:MAX_INTERVAL:MAX (default constant:1s:3)",
    )
    policy.add_argument("--retries", type=int, help="shorthand for --failure-policy constant:1s:N")
    add.add_argument(
        "--jitter", help="fire each tick a fixed offset in [0, DURATION) after it, from the job's name (0-1h)"
    )
    add.add_argument(
        "--overlap",
        default="allow",
        help="a tick while an earlier firing is still delivered or retried: allow (deliver it), skip, wait",
    )
    add.add_argument(
        "--if-not-exists",
        action="store_true",
        help="keep a job of that name if there is one: exit 1, 'already exists' (atomic)",
    )

    get = sub.add_parser("get", help="show a job and its run state (JSON)")
    common(get)
    tenant(get)
    get.add_argument("name")

    lst = sub.add_parser("list", help="list the jobs of a namespace")
    common(lst)
    tenant(lst)
    lst.add_argument("-o", "--output", choices=["table", "json"], default="table")

    delete = sub.add_parser("delete", help="delete a job, or every job whose name starts with a prefix")
    common(delete)
    tenant(delete)
    delete.add_argument("name", nargs="?", help="the job to delete")
    delete.add_argument(
        "--name-prefix",
        help="instead of NAME: delete every job of the namespace whose name starts with this; prints how many"
        " (the issue's spelling '--prefix job-' works too: a value without a leading '/' is no key prefix)",
    )

    trig = sub.add_parser("trigger", help="fire a job now, once per --token")
    common(trig)
    tenant(trig)
    trig.add_argument("name")
    trig.add_argument("--payload", help="this firing's payload (default: the job's)")
    trig.add_argument("--token", default="", help="idempotency token (default: a new random one)")

    back = sub.add_parser("backfill", help="fire every tick of the schedule in a range once")
    common(back)
    tenant(back)
    back.add_argument("name")
    back.add_argument("--from", dest="start", required=True, help="RFC 3339 (inclusive)")
    back.add_argument("--to", dest="end", required=True, help="RFC 3339 (inclusive)")
    back.add_argument("--rate", type=float, default=10.0, help="ticks a second (default %(default)s)")

    hist = sub.add_parser("history", help="the job's last firings and their results")
    common(hist)
    tenant(hist)
    hist.add_argument("name")
    hist.add_argument("-o", "--output", choices=["table", "json"], default="table")
    return {
        "add": cmd_add,
        "get": cmd_get,
        "list": cmd_list,
        "delete": cmd_delete,
        "trigger": cmd_trigger,
        "backfill": cmd_backfill,
        "history": cmd_history,
    }


# -- job <-> flags / JSON ---------------------------------------------------------------------------------
def job_from_args(args: argparse.Namespace) -> Job:
    now = datetime.now(UTC)
    start_at = None
    if args.start_at:
        start_at = parse_instant(args.start_at, "start_at")
    elif args.delay:
        start_at = now + parse_duration(args.delay, "delay")
    return Job(
        name=args.name,
        schedule=args.schedule,
        namespace=args.namespace,
        type=args.type,
        payload=args.payload.encode(),
        time_zone=args.time_zone,
        ttl=parse_expiry(args.ttl, now, "ttl") if args.ttl else None,
        start_at=start_at,
        max_runs=args.max_runs,
        catch_up=_catch_up(args.catch_up),
        catch_up_deadline=parse_duration(args.catch_up_deadline, "catch_up_deadline"),
        failure_policy=_failure_policy(args),
        delivery=_delivery(args.delivery),
        jitter=parse_duration(args.jitter, "jitter") if args.jitter else None,
        overlap=_overlap(args.overlap),
    )


def _failure_policy(args: argparse.Namespace) -> FailurePolicy:
    if args.failure_policy is not None:
        return FailurePolicy.parse(args.failure_policy)
    return FailurePolicy.constant(max_retries=args.retries) if args.retries is not None else FailurePolicy()


def _delivery(text: str) -> Delivery:
    try:
        return Delivery(text.lower())
    except ValueError:
        raise ValidationError("delivery", f"must be at-least-once or at-most-once; got {text!r}") from None


def _overlap(text: str) -> Overlap:
    try:
        return Overlap(text.lower())
    except ValueError:
        raise ValidationError("overlap", f"must be allow, skip or wait; got {text!r}") from None


def _catch_up(text: str) -> CatchUp:
    try:
        return CatchUp(text.lower())
    except ValueError:
        raise ValidationError("catch_up", f"must be all, latest or none; got {text!r}") from None


def status_document(status: JobStatus) -> dict[str, Any]:
    stored, cursor = status.stored, status.cursor
    job = stored.job
    schedule = stored.schedule()
    nxt = next_scheduled_ms(schedule, first_after_ms(stored, cursor), stored)
    doc: dict[str, Any] = {
        "namespace": job.namespace,
        "name": job.name,
        "id": stored.id,
        "schedule": job.schedule,
        "timeZone": job.time_zone,
        "type": job.type,
        "payload": job.payload.decode(errors="replace"),
        "created": format_time(stored.created_at),
        "startAt": format_time(job.start_at) if job.start_at else None,
        "ttl": job.ttl.total_seconds() if job.ttl else None,
        "expiresAt": format_time(stored.expires_at) if stored.expires_at else None,
        "maxRuns": job.max_runs,
        "catchUp": job.catch_up.value,
        "delivery": job.delivery.value,
        "failurePolicy": job.failure_policy.text(),
        "overlap": job.overlap.value,
        "runs": cursor.runs,
        "missed": cursor.missed,
        "lastScheduled": format_time(from_ms(cursor.last_tick_ms)) if cursor.last_tick_ms else None,
        "nextScheduled": format_time(from_ms(nxt)) if nxt is not None else None,
        "jitter": job.jitter.total_seconds() if job.jitter is not None else None,
        # when the next tick fires: nextScheduled plus the job's fixed jitter offset
        "nextDue": format_time(from_ms(nxt + stored.offset_ms)) if nxt is not None else None,
    }
    return doc


# -- commands ---------------------------------------------------------------------------------------------
def keys_of(args: argparse.Namespace) -> Keys:
    try:
        return Keys(args.prefix)
    except ValueError as e:
        raise ValidationError("prefix", str(e)) from None


async def _with_store(args: argparse.Namespace, action: Callable[[JobStore], Awaitable[int]]) -> int:
    client = EtcdClient(parse_endpoints(args.endpoints), timeout=args.timeout)
    try:
        return await action(JobStore(client, keys_of(args)))
    finally:
        await client.close()


async def cmd_add(args: argparse.Namespace) -> int:
    job = job_from_args(args)

    async def action(store: JobStore) -> int:
        stored = await store.add(job, if_not_exists=args.if_not_exists)
        # As added, not read back: a fast job may have fired, and completed, before a second read.
        print(json.dumps(status_document(JobStatus(stored, Cursor(stored.id)))))
        return 0

    return await _with_store(args, action)


async def cmd_get(args: argparse.Namespace) -> int:
    async def action(store: JobStore) -> int:
        doc = status_document(await store.get(args.namespace, args.name))
        history = await Runs(store.client, store.keys).history(args.namespace, args.name)
        doc["recent"] = [entry.document() for entry in history[-5:]]
        failed = [entry for entry in history if entry.result == "failed"]
        doc["lastFailure"] = failed[-1].document() if failed else None
        print(json.dumps(doc, indent=2))
        return 0

    return await _with_store(args, action)


def bad_entry_document(keys: Keys, error: BadEntryError) -> dict[str, Any]:
    """A stored entry that cannot be decoded, as ``list -o json`` shows it: where it is and why."""
    parts = key_text(error.key)[len(keys.jobs_root().decode()) :].split("/")
    return {
        "key": key_text(error.key),
        "namespace": parts[1] if len(parts) > 1 else None,
        "name": "/".join(parts[2:]) if len(parts) > 2 else None,
        "error": error.reason,
    }


async def cmd_list(args: argparse.Namespace) -> int:
    async def action(store: JobStore) -> int:
        listing = await store.list(args.namespace)
        docs = [status_document(s) for s in listing.jobs]
        bad = [bad_entry_document(store.keys, e) for e in listing.bad]
        if args.output == "json":
            print(json.dumps(docs + bad, indent=2))
            return 0
        columns = ["name", "schedule", "timeZone", "runs", "lastScheduled", "nextScheduled"]
        rows = [[str(d[c] if d[c] is not None else "-") for c in columns] for d in docs]
        widths = [max([len(c.upper())] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
        for row in [[c.upper() for c in columns], *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        for doc in bad:
            print(f"error: {doc['key']}: {doc['error']}", file=sys.stderr)
        return 0

    return await _with_store(args, action)


def name_prefix_of(args: argparse.Namespace) -> str | None:
    """The name prefix ``delete`` acts on, if any; also settles what ``--prefix`` meant.

    ``--prefix`` is the pool's etcd key prefix in every command, and a key prefix starts with '/'; a job
    name never contains one. So the issue's spelling ``delete --prefix job-`` is unambiguous: with no NAME
    and no ``--name-prefix``, a ``--prefix`` without a leading '/' is the name prefix, and the key prefix
    comes from ``ETCDCRON_PREFIX`` or the default. Every command line valid before means what it meant;
    only one that was an error gains a meaning."""
    if args.name is not None and args.name_prefix is not None:
        raise ValidationError("name_prefix", "give NAME or --name-prefix, not both")
    if args.name_prefix is not None:
        return validate_name_prefix(args.name_prefix)
    if args.name is not None:
        return None
    if not args.prefix.startswith("/"):
        prefix, args.prefix = args.prefix, env("PREFIX", DEFAULT_PREFIX)
        return validate_name_prefix(prefix, "prefix")
    raise ValidationError("name", "give the job's NAME, or --name-prefix P to delete every job named P...")


async def cmd_delete(args: argparse.Namespace) -> int:
    name_prefix = name_prefix_of(args)

    async def action(store: JobStore) -> int:
        if name_prefix is not None:
            count = await store.delete_prefix(args.namespace, name_prefix)
            noun = "job" if count == 1 else "jobs"
            print(f"deleted {count} {noun} of {args.namespace} whose name starts with {name_prefix!r}")
            return 0
        if not await store.delete(args.namespace, args.name):
            raise JobNotFoundError(args.namespace, args.name)
        print(f"deleted {args.namespace}/{args.name}")
        return 0

    return await _with_store(args, action)


async def cmd_trigger(args: argparse.Namespace) -> int:
    """Fire a job now, once per token (the same token again fires nothing more)."""
    token = args.token or uuid.uuid4().hex
    payload = args.payload.encode() if args.payload is not None else None

    async def action(store: JobStore) -> int:
        made = await Runs(store.client, store.keys).request_run(args.namespace, args.name, token, payload)
        print(json.dumps({"namespace": args.namespace, "name": args.name, "token": token, "new": made}))
        return 0

    return await _with_store(args, action)


async def cmd_backfill(args: argparse.Namespace) -> int:
    start, end = parse_instant(args.start, "from"), parse_instant(args.end, "to")

    async def action(store: JobStore) -> int:
        made = await Runs(store.client, store.keys).request_backfill(
            args.namespace, args.name, start, end, args.rate
        )
        doc = {
            "namespace": args.namespace,
            "name": args.name,
            "from": format_time(start),
            "to": format_time(end),
        }
        print(json.dumps({**doc, "new": made}))
        return 0

    return await _with_store(args, action)


async def cmd_history(args: argparse.Namespace) -> int:
    async def action(store: JobStore) -> int:
        docs = [
            entry.document()
            for entry in await Runs(store.client, store.keys).history(args.namespace, args.name)
        ]
        if args.output == "json":
            print(json.dumps(docs, indent=2))
            return 0
        columns = ["scheduled", "fired", "run", "result", "attempts", "member", "kind", "error"]
        rows = [[str(d.get(c, "")) for c in columns] for d in docs]
        widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
        for row in [[c.upper() for c in columns], *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        return 0

    return await _with_store(args, action)
