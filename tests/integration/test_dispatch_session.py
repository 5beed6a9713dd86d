"""The dispatcher's aiohttp session against a real HTTP server on loopback: no more requests in flight
than asked, the token asked for at every request (a rotated one is sent), no answer is ``Unreachable``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from kubernetes import client as k8s

from etcdcron.dispatch.k8s_api import ApiSession, Unreachable
from etcdcron.localetcd import free_port
from eventually import eventually_async


class Server:
    """Holds every request until ``release`` is set; counts those in flight at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.now = self.most = 0
        self.tokens: list[str] = []
        self.bodies: list[Any] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.now += 1
        self.most = max(self.most, self.now)
        self.tokens.append(request.headers.get("Authorization", ""))
        self.bodies.append(await request.json() if request.can_read_body else None)
        try:
            await self.release.wait()
        finally:
            self.now -= 1
        return web.json_response({"kind": "Status", "code": 201}, status=201)


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, str]]:
    state = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield state, f"http://127.0.0.1:{port}"
    finally:
        state.release.set()
        await runner.cleanup()


def configuration(host: str) -> k8s.Configuration:
    conf = k8s.Configuration()
    conf.host = host
    conf.api_key = {"BearerToken": "t0"}
    conf.api_key_prefix = {"BearerToken": "Bearer"}
    return conf


async def test_no_more_requests_in_flight_than_asked_and_a_fresh_token_each(server):
    state, host = server
    conf = configuration(host)
    issued = iter(range(1, 100))

    def refresh(c: k8s.Configuration) -> None:  # a projected token rotated between any two requests
        c.api_key["BearerToken"] = f"t{next(issued)}"

    conf.refresh_api_key_hook = refresh
    session = ApiSession(conf, in_flight=3)
    try:
        sent = [asyncio.create_task(session.request("POST", "/api/v1/x", {"i": i})) for i in range(10)]
        await eventually_async(lambda: state.now == 3, 10, "3 requests held by the server")
        assert not any(t.done() for t in sent)
        state.release.set()
        answers = await asyncio.gather(*sent)
    finally:
        await session.close()
    assert [(a.status, a.ok, a.json()["code"]) for a in answers] == [(201, True, 201)] * 10
    assert state.most == 3
    assert sorted(state.tokens, key=lambda t: int(t[8:])) == [f"Bearer t{i}" for i in range(1, 11)]
    assert sorted(b["i"] for b in state.bodies) == list(range(10))


async def test_no_answer_is_unreachable_and_names_the_request():
    session = ApiSession(configuration(f"http://127.0.0.1:{free_port()}"), in_flight=1)
    try:
        with pytest.raises(Unreachable, match="POST /api/v1/namespaces/n/events: ClientConnectorError"):
            await session.request("POST", "/api/v1/namespaces/n/events", {})
    finally:
        await session.close()


async def test_closed_sessions_reopen_for_a_later_request(server):
    state, host = server
    state.release.set()
    session = ApiSession(configuration(host), in_flight=1)
    assert (await session.request("GET", "/a")).status == 201
    await session.close()
    assert (await session.request("GET", "/b")).status == 201
    await session.close()
    await session.close()  # twice is harmless
