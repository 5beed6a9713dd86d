"""``etcdcron``: join the pool, manage jobs, or run a local demo.

Exit codes: 0 success, 1 etcd unreachable (or another runtime failure), 2 bad input (one line naming the
field). Settings come from flags, else ``ETCDCRON_*`` variables, else defaults: all read here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

from etcdcron.cron import Cron
from etcdcron.dispatch.stdout import StdoutSink
from etcdcron.durations import parse_duration
from etcdcron.errors import EtcdCronError, EtcdUnavailableError, JobNotFoundError, ValidationError
from etcdcron.etcd import DEFAULT_ENDPOINT, EtcdClient, parse_endpoints
from etcdcron.firing import first_after_ms, from_ms, next_tick_ms
from etcdcron.job import CatchUp, Job, RetryPolicy, format_time
from etcdcron.keys import DEFAULT_PREFIX, Keys
from etcdcron.membership import default_member_id
from etcdcron.scheduler import Member
from etcdcron.store import JobStatus, JobStore

# The CLI flag of every Job field, so a validation error names what the user typed.
FLAG_OF_FIELD = {
    "name": "NAME",
    "schedule": "--schedule",
    "namespace": "--namespace",
    "type": "--type",
    "payload": "--payload",
    "time_zone": "--time-zone",
    "ttl": "--ttl",
    "start_at": "--start-at",
    "max_runs": "--max-runs",
    "catch_up": "--catch-up",
    "catch_up_deadline": "--catch-up-deadline",
    "endpoints": "--endpoints",
    "prefix": "--prefix",
    "lease_ttl": "--lease-ttl",
    "delay": "--delay",
}


class UsageError(Exception):
    """argparse's own complaints, turned into our one-line exit-2 form."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _env(name: str, default: str) -> str:
    return os.environ.get(f"ETCDCRON_{name}", default)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="etcdcron", description="A distributed, fault-tolerant cron over etcd.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (to stderr)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--endpoints",
            default=_env("ENDPOINTS", DEFAULT_ENDPOINT),
            help="etcd host:port list, comma separated (env ETCDCRON_ENDPOINTS; default %(default)s)",
        )
        p.add_argument("--prefix", default=_env("PREFIX", DEFAULT_PREFIX), help="key prefix of the pool")
        p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for etcd")

    def tenant(p: argparse.ArgumentParser) -> None:
        p.add_argument("--namespace", "-n", default=_env("NAMESPACE", "default"), help="tenant")

    def pool_member(p: argparse.ArgumentParser) -> None:
        common(p)
        p.add_argument("--member-id", default=_env("MEMBER_ID", ""), help="default: <hostname>-<pid>")
        p.add_argument("--lease-ttl", type=int, default=int(_env("LEASE_TTL", "5")), help="seconds")

    member = sub.add_parser("member", help="join the pool and fire the jobs of the partitions it owns")
    pool_member(member)
    member.add_argument("--sink", choices=["stdout", "log"], default="stdout", help="where firings go")
    member.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port")

    add = sub.add_parser("add", help="add or replace a job")
    common(add)
    tenant(add)
    add.add_argument("name")
    add.add_argument("--schedule", required=True, help="cron (5 or 6 fields), @hourly..., @every 10s")
    add.add_argument("--type", default="")
    add.add_argument("--payload", default="", help="text handed to every firing")
    add.add_argument("--time-zone", default="UTC", help="IANA name, e.g. Europe/Paris")
    add.add_argument("--ttl", help="delete the job this long after adding it, e.g. 1h")
    start = add.add_mutually_exclusive_group()
    start.add_argument("--start-at", help="no tick before this RFC 3339 time")
    start.add_argument("--delay", help="no tick before now + this duration")
    add.add_argument("--max-runs", type=int, help="the job completes and is removed after N firings")
    add.add_argument(
        "--catch-up", default="all", help="missed ticks: all (within the deadline), latest, none"
    )
    add.add_argument("--catch-up-deadline", default="5m", help="how old a missed tick may be under 'all'")
    add.add_argument("--retries", type=int, default=3, help="retries of a failing trigger")

    get = sub.add_parser("get", help="show a job and its run state (JSON)")
    common(get)
    tenant(get)
    get.add_argument("name")

    lst = sub.add_parser("list", help="list the jobs of a namespace")
    common(lst)
    tenant(lst)
    lst.add_argument("-o", "--output", choices=["table", "json"], default="table")

    delete = sub.add_parser("delete", help="delete a job and its run state")
    common(delete)
    tenant(delete)
    delete.add_argument("name")

    op = sub.add_parser("operator", help="run the Kubernetes operator (pool member + elected reconciler)")
    pool_member(op)
    op.add_argument("--metrics-port", type=int, default=int(_env("METRICS_PORT", "9090")), help="0: off")
    op.add_argument("--health-port", type=int, default=int(_env("HEALTH_PORT", "8080")), help="0: off")
    op.add_argument(
        "--kubeconfig",
        help="kubeconfig file (default: $KUBECONFIG, else the pod's own credentials when run in a pod, "
        "else ~/.kube/config)",
    )
    op.add_argument(
        "--bind-address",
        default=_env("BIND_ADDRESS", "0.0.0.0"),
        help="address of the metrics and health ports (env ETCDCRON_BIND_ADDRESS; default %(default)s)",
    )
    op.add_argument(
        "--webhook-port",
        type=int,
        default=int(_env("WEBHOOK_PORT", "0")),
        help="serve the validating admission webhook on this port and register it with the API server "
        "(ValidatingWebhookConfiguration etcdcron.io; env ETCDCRON_WEBHOOK_PORT; 0: off)",
    )
    op.add_argument(
        "--webhook-host",
        default=_env("WEBHOOK_HOST", "") or None,
        help="the host name or address the API server calls the webhook at (default: --bind-address)",
    )
    op.add_argument(
        "-v", "--verbose", action="count", default=0, dest="operator_verbose", help="more logging"
    )

    dev = sub.add_parser("dev", help="demo: a local etcd, a pool of members and a sample job, firing")
    dev.add_argument("--members", type=int, default=3)
    dev.add_argument("--seconds", type=float, default=0, help="stop after this long (0: until Ctrl-C)")
    dev.add_argument("--schedule", default="*/2 * * * * *")
    return parser


# -- job <-> flags / JSON ---------------------------------------------------------------------------------
def job_from_args(args: argparse.Namespace) -> Job:
    start_at = None
    if args.start_at:
        try:
            start_at = datetime.fromisoformat(args.start_at.replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError("start_at", f"{args.start_at!r} is not an RFC 3339 time") from None
        if start_at.tzinfo is None:
            raise ValidationError("start_at", "needs a UTC offset or Z, e.g. 2026-12-01T09:00:00Z")
    elif args.delay:
        start_at = datetime.now(UTC) + parse_duration(args.delay, "delay")
    return Job(
        name=args.name,
        schedule=args.schedule,
        namespace=args.namespace,
        type=args.type,
        payload=args.payload.encode(),
        time_zone=args.time_zone,
        ttl=parse_duration(args.ttl, "ttl") if args.ttl else None,
        start_at=start_at,
        max_runs=args.max_runs,
        catch_up=_catch_up(args.catch_up),
        catch_up_deadline=parse_duration(args.catch_up_deadline, "catch_up_deadline"),
        retry=RetryPolicy(retries=args.retries),
    )


def _catch_up(text: str) -> CatchUp:
    try:
        return CatchUp(text.lower())
    except ValueError:
        raise ValidationError("catch_up", f"must be all, latest or none; got {text!r}") from None


def status_document(status: JobStatus) -> dict[str, Any]:
    stored, cursor = status.stored, status.cursor
    job = stored.job
    schedule = stored.schedule()
    nxt = next_tick_ms(schedule, first_after_ms(stored, cursor), stored)
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
        "runs": cursor.runs,
        "missed": cursor.missed,
        "lastScheduled": format_time(from_ms(cursor.last_tick_ms)) if cursor.last_tick_ms else None,
        "nextScheduled": format_time(from_ms(nxt)) if nxt is not None else None,
    }
    return doc


# -- commands ---------------------------------------------------------------------------------------------
def _keys(args: argparse.Namespace) -> Keys:
    try:
        return Keys(args.prefix)
    except ValueError as e:
        raise ValidationError("prefix", str(e)) from None


async def _with_store(args: argparse.Namespace, action: Callable[[JobStore], Awaitable[int]]) -> int:
    client = EtcdClient(parse_endpoints(args.endpoints), timeout=args.timeout)
    try:
        return await action(JobStore(client, _keys(args)))
    finally:
        await client.close()


async def cmd_add(args: argparse.Namespace) -> int:
    job = job_from_args(args)

    async def action(store: JobStore) -> int:
        stored = await store.add(job)
        print(json.dumps(status_document(await store.get(job.namespace, stored.job.name))))
        return 0

    return await _with_store(args, action)


async def cmd_get(args: argparse.Namespace) -> int:
    async def action(store: JobStore) -> int:
        print(json.dumps(status_document(await store.get(args.namespace, args.name)), indent=2))
        return 0

    return await _with_store(args, action)


async def cmd_list(args: argparse.Namespace) -> int:
    async def action(store: JobStore) -> int:
        docs = [status_document(s) for s in await store.list(args.namespace)]
        if args.output == "json":
            print(json.dumps(docs, indent=2))
            return 0
        columns = ["name", "schedule", "timeZone", "runs", "lastScheduled", "nextScheduled"]
        rows = [[str(d[c] if d[c] is not None else "-") for c in columns] for d in docs]
        widths = [max([len(c.upper())] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
        for row in [[c.upper() for c in columns], *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        return 0

    return await _with_store(args, action)


async def cmd_delete(args: argparse.Namespace) -> int:
    async def action(store: JobStore) -> int:
        if not await store.delete(args.namespace, args.name):
            raise JobNotFoundError(args.namespace, args.name)
        print(f"deleted {args.namespace}/{args.name}")
        return 0

    return await _with_store(args, action)


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def cmd_member(args: argparse.Namespace) -> int:
    client = EtcdClient(parse_endpoints(args.endpoints), timeout=args.timeout)
    if args.lease_ttl < 1:
        raise ValidationError("lease_ttl", f"must be at least 1 second, got {args.lease_ttl}")
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr="127.0.0.1")

    async def log_sink(firing: Any) -> None:
        logging.getLogger("etcdcron.firing").info("fired %s run %d", firing.key, firing.run)

    member = Member(
        client,
        _keys(args),
        StdoutSink() if args.sink == "stdout" else log_sink,
        member_id=args.member_id or default_member_id(),
        lease_ttl=args.lease_ttl,
    )
    try:
        await member.start()
        try:
            await _until_signalled()
        finally:
            await member.stop()
    finally:
        await client.close()
    return 0


async def cmd_dev(args: argparse.Namespace) -> int:
    """The embedded default: a throwaway etcd, ``--members`` members, one sample job; firings on stdout."""
    from etcdcron.localetcd import LocalEtcd

    with LocalEtcd() as etcd:
        print(f"# etcd running at {etcd.endpoint} (data in {etcd.data_dir})", file=sys.stderr)
        crons = [
            Cron(endpoints=[etcd.endpoint], trigger=StdoutSink(), member_id=f"member-{i}", lease_ttl=3)
            for i in range(args.members)
        ]
        async with contextlib.AsyncExitStack() as stack:
            for cron in crons:
                await stack.enter_async_context(cron)
            job = Job(name="hello", schedule=args.schedule, type="greeting", payload=b"hello from etcd-cron")
            await crons[0].add_job(job)
            print(f"# {args.members} members; job 'hello' fires on {args.schedule!r}", file=sys.stderr)
            if args.seconds:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_until_signalled(), args.seconds)
            else:
                await _until_signalled()
    return 0


async def cmd_operator(args: argparse.Namespace) -> int:
    """Startup problems are one line naming the flag or file: exit 2 for bad input, 1 for the rest."""
    from etcdcron.controller.credentials import CredentialsError, kubeconfig_path
    from etcdcron.controller.run import OperatorSettings, PortInUseError, main

    if args.lease_ttl < 1:
        raise ValidationError("lease_ttl", f"must be at least 1 second, got {args.lease_ttl}")
    ports = [("--metrics-port", args.metrics_port), ("--health-port", args.health_port)]
    for flag, port in [*ports, ("--webhook-port", args.webhook_port)]:
        if not 0 <= port <= 65535:
            raise ValidationError(flag, f"must be a port number (0: off), got {port}")
    settings = OperatorSettings(
        endpoints=parse_endpoints(args.endpoints),
        prefix=_keys(args).prefix,
        member_id=args.member_id or default_member_id(),
        lease_ttl=args.lease_ttl,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        kubeconfig=kubeconfig_path(args.kubeconfig),
        bind_address=args.bind_address,
        webhook_port=args.webhook_port,
        webhook_host=args.webhook_host,
    )
    try:
        return await main(settings)
    except CredentialsError as e:
        print(f"etcdcron: error: {e}", file=sys.stderr)
        return 2
    except PortInUseError as e:
        print(f"etcdcron: error: {e}", file=sys.stderr)
        return 1


COMMANDS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "member": cmd_member,
    "add": cmd_add,
    "get": cmd_get,
    "list": cmd_list,
    "delete": cmd_delete,
    "dev": cmd_dev,
    "operator": cmd_operator,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        print(f"etcdcron: error: {e}", file=sys.stderr)
        return 2
    verbose = args.verbose + getattr(args, "operator_verbose", 0)  # `etcdcron -v operator` = `operator -v`
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return asyncio.run(COMMANDS[args.command](args))
    except ValidationError as e:
        print(f"etcdcron: error: {FLAG_OF_FIELD.get(e.field, e.field)}: {e.reason}", file=sys.stderr)
        return 2
    except JobNotFoundError as e:
        print(f"etcdcron: error: {e}", file=sys.stderr)
        return 1
    except EtcdUnavailableError as e:
        print(f"etcdcron: error: cannot reach etcd ({e})", file=sys.stderr)
        return 1
    except EtcdCronError as e:
        print(f"etcdcron: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
