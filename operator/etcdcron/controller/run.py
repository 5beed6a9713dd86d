"""``etcdcron operator``: every replica is a pool member dispatching Events and Jobs; the elected one also
runs the kopf reconciler. Health (``/healthz``, ``/readyz``) and Prometheus metrics are served on their own
ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass

import kopf
from aiohttp import web
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from prometheus_client import start_http_server

from etcdcron.controller import handlers
from etcdcron.controller.leader import LeaderElection
from etcdcron.dispatch.kubernetes import KubernetesDispatcher
from etcdcron.etcd import EtcdClient
from etcdcron.job import Job
from etcdcron.keys import Keys
from etcdcron.pool import Member
from etcdcron.store import JobStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperatorSettings:
    endpoints: list[str]
    prefix: str
    member_id: str
    lease_ttl: int
    metrics_port: int
    health_port: int
    kubeconfig: str | None = None


def kubernetes_api(kubeconfig: str | None) -> k8s.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (``KUBECONFIG`` or the flag)."""
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        k8s_config.load_incluster_config()
        return k8s.ApiClient()
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return k8s.ApiClient(configuration)


async def _serve_health(port: int, member: Member) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")  # the process and its event loop are alive

    async def readyz(_: web.Request) -> web.Response:
        if member.membership.joined.is_set():
            return web.Response(text="ready")
        return web.Response(status=503, text="not a pool member (etcd unreachable?)")

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner


async def run_operator(settings: OperatorSettings, stop: asyncio.Event) -> None:
    client = EtcdClient(settings.endpoints)
    keys = Keys(settings.prefix)
    api = kubernetes_api(settings.kubeconfig)

    async def on_error(job: Job | None, error: Exception) -> None:
        name = f"{job.namespace}/{job.name}" if job else "?"
        log.error("dispatch of %s failed: %s", name, error)

    member = Member(
        client,
        keys,
        KubernetesDispatcher(api, settings.member_id),
        member_id=settings.member_id,
        lease_ttl=settings.lease_ttl,
        on_error=on_error,
    )
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    health = await _serve_health(settings.health_port, member) if settings.health_port else None
    memo = kopf.Memo(context=handlers.Context(JobStore(client, keys), api))

    async def lead(lost: asyncio.Event) -> None:
        kopf_stop = asyncio.Event()
        reconciler = asyncio.create_task(
            kopf.operator(
                registry=handlers.registry,
                clusterwide=True,
                standalone=True,
                stop_flag=kopf_stop,
                memo=memo,
            )
        )
        waiters = [asyncio.create_task(lost.wait()), asyncio.create_task(stop.wait())]
        done, _ = await asyncio.wait([reconciler, *waiters], return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        if reconciler in done:
            stop.set()  # kopf stopped on its own (it traps SIGTERM/SIGINT while it runs): shut down
        kopf_stop.set()
        with contextlib.suppress(Exception):
            await reconciler
        _install_signals(stop)

    await member.start()
    election = asyncio.create_task(LeaderElection(client, keys, member.membership, "reconciler").run(lead))
    try:
        await stop.wait()
    finally:
        election.cancel()
        await asyncio.gather(election, return_exceptions=True)
        await member.stop()
        if health is not None:
            await health.cleanup()
        await client.close()
        await asyncio.to_thread(api.close)


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def main(settings: OperatorSettings) -> int:
    stop = asyncio.Event()
    _install_signals(stop)
    await run_operator(settings, stop)
    return 0
