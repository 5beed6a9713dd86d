"""``etcdcron operator``: every replica is a pool member dispatching Events and Jobs and, with
``--webhook-port``, answers admission reviews; the elected one also runs the kopf reconciler and keeps the
webhook's configuration. Health (``/healthz``, ``/readyz``) and Prometheus metrics are served on their own
ports, on one configurable address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import kopf
from aiohttp import web
from prometheus_client import Gauge, start_http_server

from etcdcron.controller import handlers, logs
from etcdcron.controller.credentials import kubernetes_api
from etcdcron.controller.keeper import StatusKeeper
from etcdcron.controller.leader import LeaderElection
from etcdcron.controller.mirror import Mirror
from etcdcron.controller.reconcile import Context
from etcdcron.controller.webhook import Webhook
from etcdcron.controller.webhook_config import Keeper
from etcdcron.dispatch.kubernetes import KubernetesDispatcher
from etcdcron.errors import EtcdCronError, EtcdUnavailableError
from etcdcron.etcd import EtcdClient
from etcdcron.keys import Keys
from etcdcron.pool import Member
from etcdcron.settings import PoolSettings

log = logging.getLogger(__name__)
LEADER = Gauge("etcdcron_reconciler_leader", "1 while this replica is the elected reconciler, else 0")
ETCD_PROBE_TIMEOUT = 2.0
CLIENT_THREADS = 16
"""Threads of the blocking Kubernetes client (each tick's Event or Job is created in one): asyncio's default
of min(32, cores + 4), 6 on 2 cores, would cap a replica at 6 requests in flight; many more only queue at
the API server (and meet its 429 once 200 writes are in flight)."""
KOPF_STOP_TIMEOUT = 15.0


class PortInUseError(EtcdCronError):
    """A port flag names a port that is taken (or an address that cannot be bound)."""


@dataclass(frozen=True)
class OperatorSettings:
    endpoints: list[str]
    prefix: str
    member_id: str
    lease_ttl: int
    metrics_port: int
    health_port: int
    kubeconfig: str | None = None
    bind_address: str = "0.0.0.0"
    webhook_port: int = 0  # 0: no admission webhook
    webhook_host: str | None = None  # how the API server reaches it (default: the bind address)


@dataclass
class Readiness:
    """``/readyz``: a settled pool member, etcd answering now, the admission webhook answering, and, on the
    leader, kopf watching the API and the webhook's configuration kept."""

    member: Member
    client: EtcdClient
    keys: Keys
    election: LeaderElection | None = None
    watching: asyncio.Event | None = None
    webhook: Webhook | None = None
    keeper: Keeper | None = None

    async def check(self) -> str | None:
        """None when ready, else why not (one line)."""
        if not self.member.membership.joined.is_set():
            return "not a pool member (etcd unreachable?)"
        if not self.member.settled.is_set():
            return "pool member not settled (taking over partitions)"
        try:
            await asyncio.wait_for(self.client.get(self.keys.leader("reconciler")), ETCD_PROBE_TIMEOUT)
        except (EtcdUnavailableError, TimeoutError) as e:
            return f"etcd unreachable: {e or 'timeout'}"
        if self.webhook is not None and not self.webhook.serving.is_set():
            return "the admission webhook is not serving"
        leading = self.election is not None and self.election.is_leader
        if leading and (self.watching is None or not self.watching.is_set()):
            return "leader, but the reconciler is not watching the API yet"
        if leading and self.keeper is not None and not self.keeper.kept.is_set():
            return "leader, but the webhook configuration is not kept yet"
        return None


async def _serve_health(address: str, port: int, readiness: Readiness) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")  # the process and its event loop are alive

    async def readyz(_: web.Request) -> web.Response:
        problem = await readiness.check()
        return web.Response(text="ready") if problem is None else web.Response(status=503, text=problem)

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, address, port).start()
    except OSError as e:
        await runner.cleanup()
        raise PortInUseError(
            f"--health-port {port}: cannot listen on {address}:{port}: {e.strerror}"
        ) from None
    return runner


def _check_port(address: str, port: int, flag: str) -> None:
    """Fail at start, naming the flag, if the port is taken (kopf would only log it, later, in a loop).
    Bound as kopf's server binds it (``SO_REUSEPORT``): operators of the same user on one host may share
    the port, as replicas share a Service."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind((address, port))
        except OSError as e:
            raise PortInUseError(f"{flag} {port}: cannot listen on {address}: {e.strerror}") from None


def _serve_metrics(address: str, port: int) -> None:
    try:
        start_http_server(port, addr=address)
    except OSError as e:
        raise PortInUseError(
            f"--metrics-port {port}: cannot listen on {address}:{port}: {e.strerror}"
        ) from None


async def run_operator(settings: OperatorSettings, stop: asyncio.Event) -> None:
    # First: a credentials problem is one line, nothing started. A connection per thread that uses it.
    api = kubernetes_api(settings.kubeconfig, connections=CLIENT_THREADS + StatusKeeper.WORKERS)
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(CLIENT_THREADS, thread_name_prefix="kubernetes")
    )
    if settings.metrics_port:
        _serve_metrics(settings.bind_address, settings.metrics_port)
    hook = None
    if settings.webhook_port:
        _check_port(settings.bind_address, settings.webhook_port, "--webhook-port")
        hook = Webhook(api, settings.webhook_port, settings.webhook_host, settings.bind_address)
        await hook.start()  # the certificate: one line naming its Secret if it cannot be had
    pool = PoolSettings(tuple(settings.endpoints), settings.prefix, settings.member_id, settings.lease_ttl)
    client = pool.client()
    keys = pool.keys

    dispatcher = KubernetesDispatcher(api, settings.member_id)
    member = pool.member(client, dispatcher, on_error=dispatcher.on_error)
    election = LeaderElection(client, keys, member.membership, "reconciler")
    readiness = Readiness(member, client, keys, election, webhook=hook)
    health = None
    if settings.health_port:
        health = await _serve_health(settings.bind_address, settings.health_port, readiness)
    served, hook_stop = None, asyncio.Event()
    if hook is not None:
        served = asyncio.create_task(hook.serve(hook_stop))  # every replica, leader or not
        served.add_done_callback(lambda _: stop.set())  # it ends only by failing: stop, loudly
    memo = kopf.Memo(context=Context(Mirror(client, keys, lambda: election.fence), api))

    async def lead(lost: asyncio.Event) -> None:
        LEADER.set(1)
        kopf_stop, watching = asyncio.Event(), asyncio.Event()
        readiness.watching = watching
        configuration = hook.keeper() if hook is not None else None  # the leader alone writes it
        readiness.keeper = configuration
        keeping = asyncio.create_task(configuration.run(kopf_stop)) if configuration is not None else None
        keeper = StatusKeeper(memo.context)
        memo.keeper = keeper  # before kopf starts: its handlers feed it
        writer = asyncio.create_task(keeper.run())
        reconciler = asyncio.create_task(
            kopf.operator(
                registry=handlers.registry,
                clusterwide=True,
                standalone=True,
                stop_flag=kopf_stop,
                ready_flag=watching,
                memo=memo,
            )
        )
        waiters = [asyncio.create_task(lost.wait()), asyncio.create_task(stop.wait())]
        try:
            done, _ = await asyncio.wait([reconciler, writer, *waiters], return_when=asyncio.FIRST_COMPLETED)
            if writer in done:  # only an unexpected error ends it: loud, and the replica stops
                why = "cancelled" if writer.cancelled() else repr(writer.exception())
                log.error("the status writer stopped: %s", why)
                stop.set()
            elif reconciler in done:
                stop.set()  # kopf stopped on its own (it traps SIGTERM/SIGINT while it runs): shut down
            elif lost.is_set():
                log.warning("%s lost the reconciler lease: the reconciler stops here", settings.member_id)
        finally:
            for waiter in waiters:
                waiter.cancel()
            kopf_stop.set()
            writer.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(reconciler, KOPF_STOP_TIMEOUT)
            if keeping is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(keeping, KOPF_STOP_TIMEOUT)
            readiness.keeper = None
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer
            LEADER.set(0)
            _install_signals(stop)

    await member.start()
    campaign = asyncio.create_task(election.run(lead, stop))
    failed = asyncio.create_task(member.done.wait())  # a member that failed left the pool: stop loudly
    failed.add_done_callback(lambda _: stop.set())
    try:
        await stop.wait()
        # Leading, the election resigns once kopf stopped, so another replica leads at once.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(campaign), KOPF_STOP_TIMEOUT + 5)
    finally:
        campaign.cancel()
        failed.cancel()
        await asyncio.gather(campaign, failed, return_exceptions=True)
        await member.stop()
        await dispatcher.close()  # nothing dispatches once the member stopped: its connections go
        if served is not None:  # the last to go: a review routed here while stopping still gets its answer
            hook_stop.set()
            await asyncio.gather(served, return_exceptions=True)
        if health is not None:
            await health.cleanup()
        await client.close()
        await asyncio.to_thread(api.close)
    if member.failure is not None:
        raise member.failure  # `etcdcron operator` exits 1 with this one line
    if served is not None and not served.cancelled() and served.exception() is not None:
        raise served.exception()  # type: ignore[misc]  # the webhook server failed: loud


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def main(settings: OperatorSettings) -> int:
    logs.install()
    stop = asyncio.Event()
    _install_signals(stop)
    await run_operator(settings, stop)
    return 0
