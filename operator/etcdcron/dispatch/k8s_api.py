"""The Kubernetes API over asyncio (aiohttp), for the dispatcher: requests as coroutines on the member's
event loop instead of the blocking client in threads. Creating an Event costs ~340 µs of this process's
CPU this way against ~800 µs through the kubernetes client in threads, which also take turns on the GIL
around every socket call (docs/benchmarks.md, "Dispatch to Kubernetes").

The credentials are the kubernetes client's ``Configuration`` the operator loaded (a kubeconfig, or
in-cluster): its host, CA, client certificate and proxy, and its token, asked for at every request so
its refresh hook runs as it does in the kubernetes client (a rotated projected ServiceAccount token, or a
kubeconfig's ``tokenFile``, is re-read).
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes import client as k8s
from kubernetes.client.rest import should_bypass_proxies

USER_AGENT = "etcdcron-dispatch"
CONNECT_SECONDS = 10.0
READ_SECONDS = 30.0


class Unreachable(Exception):
    """No answer from the API server (connection refused or reset, TLS, timeout): a retry may succeed."""


@dataclass(frozen=True, slots=True)
class Answer:
    """An API server's answer (``status``, ``reason``, ``body``: what ``k8s_resource.api_error`` reads)."""

    status: int
    reason: str
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body)


def ssl_context(conf: k8s.Configuration) -> ssl.SSLContext:
    """TLS as the kubernetes client sets it up: the configured CA (file or data), the client certificate,
    ``verify_ssl`` and ``assert_hostname=False``."""
    ctx = ssl.create_default_context(
        cafile=conf.ssl_ca_cert or None, cadata=getattr(conf, "ca_cert_data", None) or None
    )
    if conf.cert_file:
        ctx.load_cert_chain(conf.cert_file, conf.key_file or None)
    if not conf.verify_ssl:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif conf.assert_hostname is False:
        ctx.check_hostname = False
    return ctx


def proxy_of(conf: k8s.Configuration) -> str | None:
    """The configured HTTP proxy, unless ``no_proxy`` bypasses it for the host; SOCKS is refused loudly."""
    if not conf.proxy or should_bypass_proxies(conf.host, conf.no_proxy or ""):
        return None
    if not conf.proxy.startswith(("http://", "https://")):
        raise ValueError(f"proxy {conf.proxy!r}: only an HTTP(S) proxy is supported by the dispatcher")
    return str(conf.proxy)


def auth_headers(conf: k8s.Configuration) -> dict[str, str]:
    """The credentials' headers now (the token through its refresh hook, as the kubernetes client asks)."""
    return {
        str(a["key"]): str(a["value"])
        for a in conf.auth_settings().values()
        if a.get("in") == "header" and a.get("value")
    }


class ApiSession:
    """One aiohttp session to the API server: at most ``in_flight`` requests at once (as many pooled
    connections; the rest wait for one), created on first use in the running loop, ``close``d by its owner.
    """

    def __init__(self, conf: k8s.Configuration, in_flight: int) -> None:
        if in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, got {in_flight}")
        self.conf = conf
        self.in_flight = in_flight
        self.host = conf.host.rstrip("/")
        self.proxy = proxy_of(conf)
        self._ssl = ssl_context(conf) if self.host.startswith("https:") else None
        self._server_name = conf.tls_server_name or (
            conf.assert_hostname if isinstance(conf.assert_hostname, str) else None
        )
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.in_flight, ssl=self._ssl or False),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=CONNECT_SECONDS, sock_read=READ_SECONDS
                ),
                headers={"Accept": "application/json", "User-Agent": USER_AGENT},
            )
        return self._session

    async def request(
        self, method: str, path: str, body: Any = None, *, params: dict[str, str] | None = None,
        merge: bool = False,
    ) -> Answer:  # fmt: skip
        """Send one request (``body`` as JSON; ``merge``: a JSON merge patch) and read its whole answer
        (its connection goes back to the pool)."""
        headers = auth_headers(self.conf)
        data = None
        if body is not None:
            headers["Content-Type"] = "application/merge-patch+json" if merge else "application/json"
            data = json.dumps(body, separators=(",", ":")).encode()
        extra: dict[str, Any] = {"server_hostname": self._server_name} if self._server_name else {}
        try:
            async with self._open().request(
                method, self.host + path, data=data, params=params, headers=headers, proxy=self.proxy,
                **extra,
            ) as resp:  # fmt: skip
                return Answer(resp.status, resp.reason or "", await resp.read())
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise Unreachable(f"{method} {path}: {type(e).__name__}: {e}".rstrip(": ")) from None

    async def close(self) -> None:
        """Close the pooled connections; the session can be opened again by a later request."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
