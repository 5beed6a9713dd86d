"""A real, throw-away Kubernetes control plane: etcd + kube-apiserver (+ kube-controller-manager),
and on request one real node that runs pods.

    with ControlPlane(controller_manager=True) as cp:
        subprocess.run(["kubectl", "get", "ns"], env={**os.environ, "KUBECONFIG": str(cp.kubeconfig)})

Everything listens on 127.0.0.1 only, on free ports, with a generated CA. ``stop()`` (also on
``__exit__`` and at interpreter exit) kills every process and deletes the temporary directory.

``ControlPlane(node=True)`` (root only; see :mod:`etcdcron.testing.node`) moves the API server to the node
IP on a bridge of its own and adds what a one-node cluster runs: every default controller,
kube-scheduler, containerd, the kubelet, kube-proxy and CoreDNS; ``start()`` returns once the node is
Ready and cluster DNS answers.
"""

from __future__ import annotations

import atexit
import contextlib
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
from typing import TYPE_CHECKING, Any, Self

from etcdcron.localetcd import LocalEtcd

from . import node as nodes
from .binaries import Binaries, resolve
from .crds import apply_crds
from .kubeconfig import read_server, write_kubeconfig
from .pki import CertificateAuthority, KeyPair, write_service_account_key
from .process import ManagedProcess

if TYPE_CHECKING:
    from .images import Image

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


def _free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
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
    """etcd and kube-apiserver, optionally kube-controller-manager, as local subprocesses; with ``node``,
    a whole one-node cluster (see the module docstring)."""

    def __init__(
        self,
        *,
        controller_manager: bool = False,
        node: bool = False,
        images: Iterable[Image] = (),
        binaries: Binaries | None = None,
        start_timeout: float | None = None,
        keep: bool | None = None,
        apiserver_args: Iterable[str] = (),
        controller_manager_args: Iterable[str] = (),
    ) -> None:
        self.node = node
        #: extra flags, after the defaults (a benchmark's audit log, a controller's client QPS)
        self.apiserver_args = list(apiserver_args)
        self.controller_manager_args = list(controller_manager_args)
        self.controller_manager = controller_manager or node
        self._binaries = binaries
        self.images = list(images)
        self.start_timeout = start_timeout if start_timeout is not None else (300.0 if node else 60.0)
        self.keep = os.environ.get(KEEP_ENV) == "1" if keep is None else keep
        self.directory: Path | None = None
        self._processes: list[ManagedProcess] = []
        self.server = ""
        self.kubeconfig = Path()
        self.startup_seconds = 0.0
        #: seconds of each start-up phase (node mode), for reports
        self.timings: dict[str, float] = {}
        self._lock: nodes.MachineLock | None = None
        self._host_touched = False

    def __repr__(self) -> str:
        return f"ControlPlane(server={self.server!r}, kubeconfig={str(self.kubeconfig)!r})"

    @property
    def binaries(self) -> Binaries:
        if self._binaries is None:
            self._binaries = resolve(controller_manager=self.controller_manager, node=self.node)
        return self._binaries

    @property
    def host(self) -> str:
        """Where the API server listens: 127.0.0.1, or the node IP with ``node``."""
        return nodes.NODE_IP if self.node else LOOPBACK

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes if p.pid is not None]

    def pid_of(self, name: str) -> int | None:
        """The pid of one component (``etcd``, ``kube-apiserver``, ``kube-controller-manager``...)."""
        return next((p.pid for p in self._processes if p.name == name), None)

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
        if self.node:
            problem = nodes.node_problem()
            if problem:
                raise ControlPlaneError(problem)
        binaries = self.binaries
        if self.controller_manager and binaries.kube_controller_manager is None:
            raise ControlPlaneError("no kube-controller-manager binary")
        started = time.monotonic()
        self.directory = Path(tempfile.mkdtemp(prefix="etcdcron-controlplane-"))
        _live.add(self)
        try:
            if self.node:
                self._lock = nodes.MachineLock()
                self._lock.acquire()
                self._host_touched = True
                phase = time.monotonic()
                nodes.clean_host()  # whatever an earlier, killed run left
                if not self.keep:
                    nodes.record_run_dir(self.directory)
                nodes.save_host_state()
                nodes.prepare_network()
                nodes.prepare_cgroups()
                self.timings["host clean-up and network"] = time.monotonic() - phase
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
            [
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            [LOOPBACK, "10.0.0.1", *([nodes.NODE_IP] if self.node else [])],
        )
        admin = ca.issue_client("admin", "etcdcron-admin", ["system:masters"])
        sa_key, sa_pub = write_service_account_key(pki_dir)

        api_port = _free_port()
        store = LocalEtcd(
            self.directory / "etcd",
            name="default",
            binary=binaries.etcd,
            log_path=logs / "etcd.log",
            extra_args=("--unsafe-no-fsync=true",),
        )
        store.data_dir.mkdir(parents=True, exist_ok=True)
        etcd_url = store.client_url
        etcd = ManagedProcess("etcd", store.command(), logs / "etcd.log")
        self._launch(etcd)
        self._wait(etcd, store.healthy, deadline, "etcd /health")

        self.server = f"https://{self.host}:{api_port}"
        admission = [] if self.controller_manager else ["--disable-admission-plugins=ServiceAccount"]
        if self.node:
            kubelet_client = ca.issue_client(
                "apiserver-kubelet-client", "kube-apiserver-kubelet-client", ["system:masters"]
            )
            api_flags = [
                # The kubernetes Service's endpoint is this address: pods reach the API server through it.
                f"--bind-address={nodes.NODE_IP}",
                f"--advertise-address={nodes.NODE_IP}",
                f"--kubelet-client-certificate={kubelet_client.cert_path}",
                f"--kubelet-client-key={kubelet_client.key_path}",
                f"--kubelet-certificate-authority={ca.cert_path}",
                "--kubelet-preferred-address-types=InternalIP",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
            ]
        else:
            api_flags = [
                f"--bind-address={LOOPBACK}",
                f"--advertise-address={LOOPBACK}",
                # A loopback advertise address cannot back the "kubernetes" Service's endpoints; nothing here
                # needs them, so the endpoint reconciler is off (as in envtest's own configuration).
                "--endpoint-reconciler-type=none",
                "--authorization-mode=RBAC",
            ]
        apiserver = ManagedProcess(
            "kube-apiserver",
            [
                str(binaries.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                *api_flags,
                f"--secure-port={api_port}",
                f"--cert-dir={self.directory / 'apiserver-certs'}",
                f"--tls-cert-file={serving.cert_path}",
                f"--tls-private-key-file={serving.key_path}",
                f"--client-ca-file={ca.cert_path}",
                f"--service-account-issuer={self.server}",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                *admission,
                *self.apiserver_args,
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
                    *self._controller_flags(ca),
                    "--leader-elect=false",
                    f"--service-account-private-key-file={sa_key}",
                    f"--root-ca-file={ca.cert_path}",
                    "--profiling=false",
                    *self.controller_manager_args,
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
        if self.node:
            self._start_node(binaries, ca, deadline)

    def _controller_flags(self, ca: CertificateAuthority) -> list[str]:
        if not self.node:
            return [f"--controllers={','.join(CONTROLLERS)}"]
        # Every default controller, as a real cluster runs them (node lifecycle removes the not-ready
        # taint; deployment, replicaset, statefulset, endpointslice, persistentvolume-binder, podgc,
        # ttl-after-finished, ...), each with its own service account.
        return [
            "--controllers=*",
            "--use-service-account-credentials",
            f"--cluster-signing-cert-file={ca.cert_path}",
            f"--cluster-signing-key-file={ca.directory / 'ca.key'}",
            "--node-monitor-period=2s",
        ]

    # -- the node --------------------------------------------------------------------------------

    def _kubeconfig_for(self, ca: CertificateAuthority, stem: str, user: str, groups: list[str]) -> Path:
        assert self.directory is not None
        cert: KeyPair = ca.issue_client(stem, user, groups)
        return write_kubeconfig(
            self.directory / f"{stem}.kubeconfig",
            server=self.server,
            ca_pem=ca.cert_pem,
            client_cert_pem=cert.cert_pem,
            client_key_pem=cert.key_pem,
            user=user,
        )

    def _start_node(self, binaries: Binaries, ca: CertificateAuthority, deadline: float) -> None:
        assert self.directory is not None
        from . import images as image_builds

        paths = nodes.Paths()
        logs = self.directory / "logs"
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE

        phase = time.monotonic()
        scheduler_port = _free_port()
        scheduler_kubeconfig = self._kubeconfig_for(ca, "kube-scheduler", "system:kube-scheduler", [])
        scheduler = ManagedProcess(
            "kube-scheduler",
            [
                str(binaries.node_binary("kube-scheduler")),
                f"--kubeconfig={scheduler_kubeconfig}",
                f"--authentication-kubeconfig={scheduler_kubeconfig}",
                f"--authorization-kubeconfig={scheduler_kubeconfig}",
                "--leader-elect=false",
                f"--bind-address={LOOPBACK}",
                f"--secure-port={scheduler_port}",
                "--profiling=false",
            ],
            logs / "kube-scheduler.log",
        )
        self._launch(scheduler)

        pause = image_builds.pause_image()
        nodes.write_containerd_config(paths, image_builds.PAUSE_IMAGE)
        containerd = ManagedProcess(
            "containerd",
            ["containerd", "--config", str(paths.containerd_config)],
            logs / "containerd.log",
            # Nothing is ever pulled from outside: an image missing here fails at a dead local proxy.
            env={**os.environ, **nodes.NO_PULL_ENV},
        )
        self._launch(containerd)
        if not nodes.wait_socket(paths.containerd_socket, deadline):
            raise ControlPlaneError(
                f"containerd did not listen on {paths.containerd_socket}:\n{containerd.log_tail()}"
            )
        nodes.remove_leftover_containers(paths)
        self.timings["kube-scheduler, containerd"] = time.monotonic() - phase

        phase = time.monotonic()
        for image in [pause, *self.images]:
            names = _image_names(image)
            nodes.import_image(paths, image.tarball, names, image.key)
        self.timings["image import"] = time.monotonic() - phase

        phase = time.monotonic()
        kubelet_serving = ca.issue_serving(
            "kubelet", [nodes.NODE_NAME, "localhost"], [nodes.NODE_IP, LOOPBACK]
        )
        kubelet_kubeconfig = self._kubeconfig_for(
            ca, "kubelet-client", f"system:node:{nodes.NODE_NAME}", ["system:nodes"]
        )
        kubelet_port, kubelet_healthz = _free_port(), _free_port()
        nodes.write_kubelet_config(
            paths,
            port=kubelet_port,
            healthz_port=kubelet_healthz,
            ca=ca.cert_path,
            cert=kubelet_serving.cert_path,
            key=kubelet_serving.key_path,
        )
        kubelet = ManagedProcess(
            "kubelet",
            [
                str(binaries.node_binary("kubelet")),
                f"--config={paths.kubelet_config}",
                f"--kubeconfig={kubelet_kubeconfig}",
                f"--root-dir={paths.kubelet_root}",
                f"--cert-dir={paths.root / 'kubelet-pki'}",
                f"--hostname-override={nodes.NODE_NAME}",
                f"--node-ip={nodes.NODE_IP}",
                "--v=1",
            ],
            logs / "kubelet.log",
        )
        self._launch(kubelet)

        proxy_kubeconfig = self._kubeconfig_for(ca, "kube-proxy", "system:kube-proxy", [])
        proxy_healthz, proxy_metrics = _free_port(), _free_port()
        nodes.write_kube_proxy_config(
            paths, kubeconfig=proxy_kubeconfig, healthz_port=proxy_healthz, metrics_port=proxy_metrics
        )
        proxy = ManagedProcess(
            "kube-proxy",
            [str(binaries.node_binary("kube-proxy")), f"--config={paths.kube_proxy_config}"],
            logs / "kube-proxy.log",
        )
        self._launch(proxy)

        dns_health, dns_ready = _free_port(), _free_port()
        nodes.write_corefile(paths, kubeconfig=self.kubeconfig, health_port=dns_health, ready_port=dns_ready)
        coredns = ManagedProcess(
            "coredns",
            [str(binaries.node_binary("coredns")), "-conf", str(paths.corefile)],
            logs / "coredns.log",
        )
        self._launch(coredns)

        context = ssl.create_default_context(cafile=str(ca.cert_path))
        self._wait(kubelet, lambda: self._node_ready(), deadline, f"node {nodes.NODE_NAME} Ready")
        self.timings["kubelet start to node Ready"] = time.monotonic() - phase
        self._wait(
            coredns, lambda: _http_ok(f"http://{LOOPBACK}:{dns_ready}/ready"), deadline, "CoreDNS /ready"
        )
        self._wait(
            proxy,
            lambda: _http_ok(f"http://{LOOPBACK}:{proxy_healthz}/healthz"),
            deadline,
            "kube-proxy /healthz",
        )
        self._wait(
            scheduler,
            lambda: _https_ok(f"https://{LOOPBACK}:{scheduler_port}/healthz", insecure),
            deadline,
            "kube-scheduler /healthz",
        )
        del context

    def _node_ready(self) -> bool:
        from kubernetes import client

        with self.api_client() as api:
            core: Any = client.CoreV1Api(api)
            try:
                node = core.read_node(nodes.NODE_NAME)
            except Exception:
                return False
            for condition in (node.status.conditions if node.status else None) or []:
                if condition.type == "Ready":
                    ready = condition.status == "True"
                    taints = [t.key for t in node.spec.taints or [] if t.effect == "NoSchedule"]
                    return ready and not taints
        return False

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
        if self._host_touched:
            # The pods first: their open watches would hold kube-apiserver's graceful shutdown for 10 s.
            started = time.monotonic()
            nodes.kill_pods()
            self.timings["stop: pods"] = time.monotonic() - started
        for process in reversed(self._processes):
            started = time.monotonic()
            process.stop()
            self.timings[f"stop {process.name}"] = time.monotonic() - started
        self._processes = []
        if self._host_touched:
            started = time.monotonic()
            try:
                nodes.clean_host()
            finally:
                self.timings["stop: host clean-up"] = time.monotonic() - started
                self._host_touched = False
                if self._lock is not None:
                    self._lock.release()
                    self._lock = None
        _live.discard(self)
        if self.directory is not None and not self.keep:
            shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None


_NO_PROXY = urllib.request.ProxyHandler({})  # loopback only, whatever HTTP(S)_PROXY says


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.build_opener(_NO_PROXY).open(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


def _image_names(image: Image) -> list[str]:
    from . import images as image_builds

    return {
        "pause": [image_builds.PAUSE_IMAGE],
        "etcdcron": [image_builds.OPERATOR_IMAGE],
        "etcd": [image_builds.ETCD_IMAGE],
        "base": [image_builds.BASE_IMAGE],
        "busybox": [image_builds.BUSYBOX_IMAGE],
    }.get(image.name, [image.name])


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
