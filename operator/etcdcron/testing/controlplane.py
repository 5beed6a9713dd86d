"""A real, throw-away Kubernetes control plane: etcd + kube-apiserver (+ kube-controller-manager).

    with ControlPlane(controller_manager=True) as cp:
        subprocess.run(["kubectl", "get", "ns"], env={**os.environ, "KUBECONFIG": str(cp.kubeconfig)})

Everything listens on 127.0.0.1 only, on free ports, with a generated CA. ``stop()`` (also on
``__exit__`` and at interpreter exit) kills every process and deletes the temporary directory.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from .binaries import Binaries, resolve
from .crds import apply_crds
from .kubeconfig import read_server, write_kubeconfig
from .pki import CertificateAuthority, write_service_account_key
from .process import ManagedProcess

__all__ = [
    "CONTROLLERS",
    "ControlPlane",
    "ControlPlaneError",
    "ExistingCluster",
    "KubeCluster",
    "cluster_from_env",
]

LOOPBACK = "127.0.0.1"
USE_EXISTING_ENV = "ETCDCRON_USE_EXISTING_CLUSTER"
KEEP_ENV = "ETCDCRON_CONTROLPLANE_KEEP"

#: kube-controller-manager controllers started by ``ControlPlane(controller_manager=True)``.
CONTROLLERS = (
    "garbage-collector-controller",
    "job-controller",
    "cronjob-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
)


class ControlPlaneError(RuntimeError):
    """A component failed to start or become ready."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class KubeCluster:
    """Something with a kubeconfig: a local ``ControlPlane`` or an ``ExistingCluster``."""

    kubeconfig: Path
    server: str

    def api_client(self) -> Any:
        """A new ``kubernetes.client.ApiClient`` for this cluster (close it, or use ``with``)."""
        from kubernetes import config

        new_client: Any = config.new_client_from_config  # unannotated in the client
        return new_client(config_file=str(self.kubeconfig))

    def apply_crds(self, paths: Iterable[str | os.PathLike[str]], timeout: float = 30.0) -> list[str]:
        """Create or update the CRDs in ``paths`` (files or directories of YAML) and wait until
        each is Established and served; returns their names."""
        with self.api_client() as api:
            return apply_crds(api, [Path(p) for p in paths], timeout=timeout)

    def env(self) -> dict[str, str]:
        """``os.environ`` plus ``KUBECONFIG`` pointing at this cluster (for kubectl and friends)."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def stop(self) -> None:
        """Release the cluster (a no-op for clusters this package did not start)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class ExistingCluster(KubeCluster):
    """A cluster someone else runs, reached through a kubeconfig file (never started or stopped here)."""

    def __init__(self, kubeconfig: str | os.PathLike[str]) -> None:
        self.kubeconfig = Path(kubeconfig).expanduser()
        self.server = read_server(self.kubeconfig)

    def __repr__(self) -> str:
        return f"ExistingCluster(server={self.server!r}, kubeconfig={str(self.kubeconfig)!r})"


_live: weakref.WeakSet[ControlPlane] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for cp in list(_live):
        with contextlib.suppress(Exception):
            cp.stop()


class ControlPlane(KubeCluster):
    """etcd and kube-apiserver, optionally kube-controller-manager, as local subprocesses."""

    def __init__(
        self,
        *,
        controller_manager: bool = False,
        binaries: Binaries | None = None,
        start_timeout: float = 60.0,
        keep: bool | None = None,
    ) -> None:
        self.controller_manager = controller_manager
        self._binaries = binaries
        self.start_timeout = start_timeout
        self.keep = os.environ.get(KEEP_ENV) == "1" if keep is None else keep
        self.directory: Path | None = None
        self._processes: list[ManagedProcess] = []
        self.server = ""
        self.kubeconfig = Path()
        self.startup_seconds = 0.0

    def __repr__(self) -> str:
        return f"ControlPlane(server={self.server!r}, kubeconfig={str(self.kubeconfig)!r})"

    @property
    def binaries(self) -> Binaries:
        if self._binaries is None:
            self._binaries = resolve(controller_manager=self.controller_manager)
        return self._binaries

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes if p.pid is not None]

    @property
    def running(self) -> bool:
        return bool(self._processes) and all(p.alive() for p in self._processes)

    def __enter__(self) -> Self:
        if self.directory is None:
            self.start()
        return self

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        if self.directory is not None:
            raise ControlPlaneError("already started")
        binaries = self.binaries
        if self.controller_manager and binaries.kube_controller_manager is None:
            raise ControlPlaneError("no kube-controller-manager binary")
        started = time.monotonic()
        self.directory = Path(tempfile.mkdtemp(prefix="etcdcron-controlplane-"))
        _live.add(self)
        try:
            self._start(binaries, started + self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _start(self, binaries: Binaries, deadline: float) -> None:
        assert self.directory is not None
        pki_dir = self.directory / "pki"
        logs = self.directory / "logs"
        ca = CertificateAuthority(pki_dir)
        serving = ca.issue_serving(
            "apiserver",
            ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
            [LOOPBACK, "10.0.0.1"],
        )
        admin = ca.issue_client("admin", "etcdcron-admin", ["system:masters"])
        sa_key, sa_pub = write_service_account_key(pki_dir)

        etcd_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
        etcd_url = f"http://{LOOPBACK}:{etcd_port}"
        peer_url = f"http://{LOOPBACK}:{peer_port}"
        etcd = ManagedProcess(
            "etcd",
            [
                str(binaries.etcd),
                "--name=default",
                f"--data-dir={self.directory / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            logs / "etcd.log",
        )
        self._launch(etcd)
        self._wait(etcd, lambda: _etcd_healthy(etcd_url), deadline, "etcd /health")

        self.server = f"https://{LOOPBACK}:{api_port}"
        admission = [] if self.controller_manager else ["--disable-admission-plugins=ServiceAccount"]
        apiserver = ManagedProcess(
            "kube-apiserver",
            [
                str(binaries.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={LOOPBACK}",
                f"--advertise-address={LOOPBACK}",
                # A loopback advertise address cannot back the "kubernetes" Service's endpoints; nothing here
                # needs them, so the endpoint reconciler is off (as in envtest's own configuration).
                "--endpoint-reconciler-type=none",
                f"--secure-port={api_port}",
                f"--cert-dir={self.directory / 'apiserver-certs'}",
                f"--tls-cert-file={serving.cert_path}",
                f"--tls-private-key-file={serving.key_path}",
                f"--client-ca-file={ca.cert_path}",
                f"--service-account-issuer={self.server}",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                *admission,
            ],
            logs / "kube-apiserver.log",
        )
        self._launch(apiserver)
        context = ssl.create_default_context(cafile=str(ca.cert_path))
        context.load_cert_chain(str(admin.cert_path), str(admin.key_path))
        self._wait(
            apiserver, lambda: _https_ok(f"{self.server}/readyz", context), deadline, "kube-apiserver /readyz"
        )
        self.kubeconfig = write_kubeconfig(
            self.directory / "admin.kubeconfig",
            server=self.server,
            ca_pem=ca.cert_pem,
            client_cert_pem=admin.cert_pem,
            client_key_pem=admin.key_pem,
            user="etcdcron-admin",
        )

        if self.controller_manager:
            assert binaries.kube_controller_manager is not None
            kcm_cert = ca.issue_client(
                "controller-manager", "etcdcron-kube-controller-manager", ["system:masters"]
            )
            kcm_kubeconfig = write_kubeconfig(
                self.directory / "controller-manager.kubeconfig",
                server=self.server,
                ca_pem=ca.cert_pem,
                client_cert_pem=kcm_cert.cert_pem,
                client_key_pem=kcm_cert.key_pem,
                user="etcdcron-kube-controller-manager",
            )
            kcm_port = _free_port()
            kcm = ManagedProcess(
                "kube-controller-manager",
                [
                    str(binaries.kube_controller_manager),
                    f"--kubeconfig={kcm_kubeconfig}",
                    f"--authentication-kubeconfig={kcm_kubeconfig}",
                    f"--authorization-kubeconfig={kcm_kubeconfig}",
                    f"--bind-address={LOOPBACK}",
                    f"--secure-port={kcm_port}",
                    f"--cert-dir={self.directory / 'controller-manager-certs'}",
                    f"--controllers={','.join(CONTROLLERS)}",
                    "--leader-elect=false",
                    f"--service-account-private-key-file={sa_key}",
                    f"--root-ca-file={ca.cert_path}",
                    "--profiling=false",
                ],
                logs / "kube-controller-manager.log",
            )
            self._launch(kcm)
            insecure = ssl.create_default_context()
            insecure.check_hostname = False
            insecure.verify_mode = ssl.CERT_NONE  # its self-signed serving certificate
            self._wait(
                kcm,
                lambda: _https_ok(f"https://{LOOPBACK}:{kcm_port}/healthz", insecure),
                deadline,
                "kube-controller-manager /healthz",
            )

    def _launch(self, process: ManagedProcess) -> None:
        self._processes.append(process)
        process.start()

    def _wait(self, process: ManagedProcess, probe: Callable[[], bool], deadline: float, what: str) -> None:
        delay = 0.05
        while True:
            if not process.alive():
                raise ControlPlaneError(
                    f"{process.name} exited with {process.returncode()} before {what} answered; "
                    f"last lines of its log:\n{process.log_tail()}"
                )
            if probe():
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{what} not ready after {self.start_timeout:.0f} s; last lines of the "
                    f"{process.name} log:\n{process.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def logs(self) -> dict[str, str]:
        """The full log of each component (empty once stopped, unless ``keep``)."""
        out: dict[str, str] = {}
        for p in self._processes:
            with contextlib.suppress(FileNotFoundError):
                out[p.name] = p.log_path.read_text(errors="replace")
        return out

    def stop(self) -> None:
        """Stop every component (newest first) and remove the temporary directory. Idempotent."""
        for process in reversed(self._processes):
            process.stop()
        self._processes = []
        _live.discard(self)
        if self.directory is not None and not self.keep:
            shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None


_NO_PROXY = urllib.request.ProxyHandler({})  # loopback only, whatever HTTP(S)_PROXY says


def _etcd_healthy(url: str) -> bool:
    try:
        with urllib.request.build_opener(_NO_PROXY).open(f"{url}/health", timeout=2) as response:
            return bool(json.load(response).get("health") == "true")
    except (OSError, ValueError):
        return False


def _https_ok(url: str, context: ssl.SSLContext) -> bool:
    try:
        opener = urllib.request.build_opener(_NO_PROXY, urllib.request.HTTPSHandler(context=context))
        with opener.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


def cluster_from_env(*, controller_manager: bool = True) -> KubeCluster:
    """An ``ExistingCluster`` if ``ETCDCRON_USE_EXISTING_CLUSTER=1`` (using ``KUBECONFIG``, default
    ``~/.kube/config``), else a started ``ControlPlane``."""
    if os.environ.get(USE_EXISTING_ENV) == "1":
        kubeconfig = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
        first = kubeconfig.split(os.pathsep)[0]
        if not Path(first).expanduser().is_file():
            raise ControlPlaneError(f"{USE_EXISTING_ENV}=1 but there is no kubeconfig at {first}")
        return ExistingCluster(first)
    return ControlPlane(controller_manager=controller_manager).start()
