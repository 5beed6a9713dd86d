"""One real Kubernetes node on this machine, for ``ControlPlane(node=True)``: containerd, the kubelet,
kube-proxy and CoreDNS, plus the host preparation and clean-up they need.

Everything the node writes lives under :data:`NODE_ROOT` (fixed, so that a run killed with SIGKILL is
found and cleaned by the next one), except what the kubelet, the CNI plugins and containerd put in
hard-coded places; :func:`clean_host` removes those too. See docs/controlplane.md ("A real node").

Network (nothing leaves the machine):

- the bridge ``etcdcron0`` holds the node IP ``10.201.0.1/32``: the API server, the kubelet and CoreDNS
  listen there; pods reach it through their gateway;
- pods get addresses from ``10.202.0.0/24`` on the bridge ``etcdcron-cni0``, with routes to the node IP
  and the Service range only (no default route);
- the Service range ``10.0.0.0/24`` is routed to ``etcdcron0`` on the host, so an address that
  kube-proxy does not translate goes nowhere instead of out of the machine.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "CLUSTER_DNS",
    "NODE_IP",
    "NODE_NAME",
    "NODE_ROOT",
    "POD_CIDR",
    "SERVICE_CIDR",
    "NodeUnavailable",
    "clean_host",
    "node_problem",
]

NODE_ROOT = Path(os.environ.get("ETCDCRON_NODE_ROOT", "/var/lib/etcdcron-node"))
NODE_NAME = "etcdcron-node"
NODE_BRIDGE = "etcdcron0"
CNI_BRIDGE = "etcdcron-cni0"
CNI_NETWORK = "etcdcron-node"
NODE_IP = "10.201.0.1"
POD_CIDR = "10.202.0.0/24"
SERVICE_CIDR = "10.0.0.0/24"
CLUSTER_DNS = NODE_IP  # CoreDNS runs on the host, on the node IP
CLUSTER_DOMAIN = "cluster.local"
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
#: cgroup parent of every pod (cgroupfs driver): ``/sys/fs/cgroup/<controller>/etcdcron-node/kubepods/...``
CGROUP_ROOT = "etcdcron-node"
#: sysctls that the kubelet (vm.*, kernel.*) and the CNI bridge plugin (ip_forward) change, and that this
#: module sets (bridge-nf-call-iptables); their values before the first start are restored by clean_host.
SYSCTLS = (
    "vm/overcommit_memory",
    "kernel/panic",
    "kernel/panic_on_oops",
    "net/ipv4/ip_forward",
    "net/bridge/bridge-nf-call-iptables",
)
#: containerd's environment: a pull of an image that is not here goes to a closed port on loopback
#: (Go never proxies loopback itself), so the node never reaches out to a registry.
NO_PULL_ENV = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
_LOCK_PATH = Path("/run/etcdcron-node.lock")
_HOST_STATE = "host-state.json"
_RUN_DIRS = "run-dirs"
#: iptables chains created by the kubelet, kube-proxy and the CNI plugins: removed with the jumps to them.
_CHAIN_PREFIXES = ("KUBE-", "CNI-")


class NodeUnavailable(RuntimeError):
    """This machine cannot run the node (the message is the one-line reason)."""


# --- can it run here? ---------------------------------------------------------------------------------


def cni_bin_dir() -> Path | None:
    for d in CNI_BIN_DIRS:
        if (Path(d) / "bridge").is_file() and (Path(d) / "host-local").is_file():
            return Path(d)
    return None


def node_problem() -> str | None:
    """Why a node cannot run on this machine (one line), or None."""
    if not sys.platform.startswith("linux"):
        return "a test node needs Linux"
    if os.geteuid() != 0:
        return "a test node needs root (it runs containerd and the kubelet)"
    missing = [
        t
        for t in ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "ip")
        if not shutil.which(t)
    ]
    if missing:
        return f"a test node needs {', '.join(missing)} (apt-get install containerd runc iptables iproute2)"
    if cni_bin_dir() is None:
        return (
            "a test node needs the CNI plugins in /usr/lib/cni (apt-get install containernetworking-plugins)"
        )
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "a test node needs overlayfs (no 'overlay' in /proc/filesystems)"
    if not Path("/sys/fs/cgroup/memory").is_dir() and not Path("/sys/fs/cgroup/cgroup.controllers").is_file():
        return "a test node needs cgroups mounted under /sys/fs/cgroup"
    return None


# --- one node per machine -------------------------------------------------------------------------------


@contextlib.contextmanager
def machine_lock(timeout: float = 900.0) -> Iterator[None]:
    """Held for a node's whole life: one node per machine; a killed holder releases it (flock)."""
    _LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    with _LOCK_PATH.open("w") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise NodeUnavailable(
                        f"another test node held {_LOCK_PATH} for {timeout:.0f} s"
                    ) from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class MachineLock:
    """:func:`machine_lock` as an object that a ``ControlPlane`` keeps while it runs."""

    def __init__(self) -> None:
        self._cm: contextlib.AbstractContextManager[None] | None = None

    def acquire(self) -> None:
        cm = machine_lock()
        cm.__enter__()
        self._cm = cm

    def release(self) -> None:
        if self._cm is not None:
            cm, self._cm = self._cm, None
            cm.__exit__(None, None, None)


# --- host preparation and clean-up ----------------------------------------------------------------------


def _run(args: list[str], *, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=check)


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name


def _read_sysctl(name: str) -> str | None:
    try:
        return _sysctl_path(name).read_text().strip()
    except OSError:
        return None


def _write_sysctl(name: str, value: str) -> None:
    with contextlib.suppress(OSError):
        _sysctl_path(name).write_text(value + "\n")


def record_run_dir(directory: Path) -> None:
    """A node run's temporary directory, removed by the next clean_host (if this run cannot)."""
    NODE_ROOT.mkdir(parents=True, exist_ok=True)
    with (NODE_ROOT / _RUN_DIRS).open("a") as f:
        f.write(f"{directory}\n")


def save_host_state() -> None:
    """Record the sysctls before the node changes them (only if no earlier run's record is pending)."""
    NODE_ROOT.mkdir(parents=True, exist_ok=True)
    path = NODE_ROOT / _HOST_STATE
    if path.exists():
        return
    state = {name: _read_sysctl(name) for name in SYSCTLS}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"sysctls": state}, indent=1))
    os.replace(tmp, path)


def _node_processes() -> list[int]:
    """PIDs of this node's containerd, shims, kubelet, kube-proxy and CoreDNS (by their NODE_ROOT paths)."""
    marker = str(NODE_ROOT).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


def _cgroup_dirs() -> list[Path]:
    """Every cgroup directory of the node's pods, deepest first, over all hierarchies."""
    out: list[Path] = []
    base = Path("/sys/fs/cgroup")
    if not base.is_dir():
        return out
    for hierarchy in base.iterdir():
        root = hierarchy / CGROUP_ROOT
        if root.is_dir():
            out += [Path(d) for d, _, _ in os.walk(root)]
    return sorted(out, key=lambda p: len(p.parts), reverse=True)


def kill_pods() -> None:
    """SIGKILL every process left in the node's pod cgroups (containers of a killed run)."""
    for _ in range(20):
        pids: set[int] = set()
        for d in _cgroup_dirs():
            with contextlib.suppress(OSError):
                pids |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
        pids.discard(os.getpid())
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def _mounts_under(prefixes: tuple[str, ...]) -> list[str]:
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefixes):
                points.append(point)
    return sorted(set(points), key=len, reverse=True)


def _unmount_all(prefixes: tuple[str, ...]) -> None:
    for _ in range(5):
        points = _mounts_under(prefixes)
        if not points:
            return
        for point in points:
            _run(["umount", "-l", point])


def _iptables_clean() -> None:
    """Remove the KUBE-* and CNI-* chains (and the jumps to them) from every table, IPv4 and IPv6."""
    for tool in ("iptables", "ip6tables"):
        if not shutil.which(tool):
            continue
        for table in ("filter", "nat", "mangle"):
            listing = _run([tool, "-w", "-t", table, "-S"])
            if listing.returncode != 0:
                continue
            chains = []
            for line in listing.stdout.splitlines():
                try:
                    parts = shlex.split(line)  # comments are quoted
                except ValueError:
                    continue
                if len(parts) >= 2 and parts[0] == "-N" and parts[1].startswith(_CHAIN_PREFIXES):
                    chains.append(parts[1])
                elif (
                    len(parts) >= 4
                    and parts[0] == "-A"
                    and not parts[1].startswith(_CHAIN_PREFIXES)
                    and "-j" in parts
                    and parts[parts.index("-j") + 1].startswith(_CHAIN_PREFIXES)
                ):
                    _run([tool, "-w", "-t", table, "-D", *parts[1:]])
            for chain in chains:
                _run([tool, "-w", "-t", table, "-F", chain])
            for chain in chains:
                _run([tool, "-w", "-t", table, "-X", chain])


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _stale_shim_sockets() -> None:
    """containerd 1.6 puts shim sockets in /run/containerd/s, whatever its config: remove the dead ones."""
    directory = Path("/run/containerd/s")
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            try:
                s.connect(str(path))
            except OSError as e:
                if e.errno in (errno.ECONNREFUSED, errno.ENOENT):
                    path.unlink(missing_ok=True)


def clean_host(*, keep_images: bool = True) -> None:
    """Undo everything a node (running or killed) did to this machine; idempotent.

    Kills the node's processes (identified by NODE_ROOT in their command line) and its pods' processes
    (its cgroups), unmounts everything under NODE_ROOT and the CNI network namespaces, removes its cgroups,
    bridges, route, iptables chains, the kubelet's and CNI's files in hard-coded places, restores the
    sysctls recorded before the first start, and empties NODE_ROOT except the image store (containerd's
    content and snapshots, kept so that the next start need not import the images again) unless
    ``keep_images`` is false. Call it with the machine lock held.
    """
    kill_pods()  # the containers first: their shims then exit on their own
    for sig, grace in ((signal.SIGTERM, 1.0), (signal.SIGKILL, 2.0)):
        pids = _node_processes()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
            time.sleep(0.1)
    kill_pods()
    netns = [p for p in _mounts_under(("/run/netns/",)) if Path(p).name.startswith("cni-")]
    for point in netns:
        _run(["umount", "-l", point])
        Path(point).unlink(missing_ok=True)
    _unmount_all((str(NODE_ROOT) + "/",))
    for d in _cgroup_dirs():
        with contextlib.suppress(OSError):
            d.rmdir()
    for link in (CNI_BRIDGE, NODE_BRIDGE):
        if _link_exists(link):
            _run(["ip", "link", "delete", link])
    # veth peers of killed pods disappear with their namespaces; the route went with the bridge
    _iptables_clean()
    cni_results = Path("/var/lib/cni/results")
    if cni_results.is_dir():
        for leftover in cni_results.glob(f"{CNI_NETWORK}-*"):
            leftover.unlink(missing_ok=True)
    with contextlib.suppress(FileNotFoundError):
        for entry in Path("/var/log/containers").iterdir():
            if entry.is_symlink() and os.readlink(entry).startswith(str(NODE_ROOT)):
                entry.unlink()
    for path in (Path("/var/lib/kubelet/device-plugins/kubelet.sock"),):
        path.unlink(missing_ok=True)
    for d in (Path("/var/lib/kubelet/device-plugins"), Path("/var/lib/kubelet"), Path("/var/log/containers")):
        with contextlib.suppress(OSError):
            d.rmdir()  # only if empty: never someone else's files
    _stale_shim_sockets()
    for d in (Path("/run/containerd/s"), Path("/run/containerd")):
        with contextlib.suppress(OSError):
            d.rmdir()  # only if empty
    # the temporary directories (certificates, etcd data, logs) of node runs that were killed
    runs = NODE_ROOT / _RUN_DIRS
    with contextlib.suppress(OSError):
        for line in runs.read_text().splitlines():
            if line.startswith(tempfile.gettempdir() + "/etcdcron-controlplane-"):
                shutil.rmtree(line, ignore_errors=True)
    runs.unlink(missing_ok=True)
    state_path = NODE_ROOT / _HOST_STATE
    if state_path.exists():
        with contextlib.suppress(ValueError, OSError):
            state = json.loads(state_path.read_text())
            for name, value in (state.get("sysctls") or {}).items():
                if value is not None and _read_sysctl(name) != value:
                    _write_sysctl(name, value)
        state_path.unlink(missing_ok=True)
    if NODE_ROOT.is_dir():
        keep = {"containerd"} if keep_images else set()
        for entry in NODE_ROOT.iterdir():
            if entry.name in keep:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        containerd_dir = NODE_ROOT / "containerd"
        if containerd_dir.is_dir():  # only the content store and snapshots survive
            for entry in containerd_dir.iterdir():
                if entry.name != "root":
                    shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def prepare_cgroups() -> None:
    """The kubelet's ``cgroupRoot`` in every hierarchy (it must exist); cpuset needs its CPUs and memory
    nodes copied from the parent before anything can join it."""
    base = Path("/sys/fs/cgroup")
    for hierarchy in sorted(base.iterdir()) if base.is_dir() else []:
        if not (hierarchy / "cgroup.procs").exists():
            continue
        root = hierarchy / CGROUP_ROOT
        root.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (hierarchy / name).exists() and not (root / name).read_text().strip():
                (root / name).write_text((hierarchy / name).read_text())


def prepare_network() -> None:
    """The node bridge with the node IP and the Service range routed into it; bridged traffic through
    iptables."""
    if not _link_exists(NODE_BRIDGE):
        _run(["ip", "link", "add", NODE_BRIDGE, "type", "bridge"], check=True)
    _run(["ip", "addr", "replace", f"{NODE_IP}/32", "dev", NODE_BRIDGE], check=True)
    _run(["ip", "link", "set", NODE_BRIDGE, "up"], check=True)
    _run(["ip", "route", "replace", SERVICE_CIDR, "dev", NODE_BRIDGE], check=True)
    # Pod -> Service -> pod on the same bridge: the reply must pass conntrack to be un-NATed.
    if shutil.which("modprobe"):
        _run(["modprobe", "br_netfilter"])
    _write_sysctl("net/bridge/bridge-nf-call-iptables", "1")


# --- configuration files --------------------------------------------------------------------------------


class Paths:
    """The node's files, all under NODE_ROOT."""

    def __init__(self, root: Path = NODE_ROOT) -> None:
        self.root = root
        self.containerd = root / "containerd"
        self.containerd_root = self.containerd / "root"  # kept across runs: the images
        self.containerd_state = self.containerd / "state"
        self.containerd_config = self.containerd / "config.toml"
        self.containerd_socket = self.containerd / "containerd.sock"
        self.cni_conf_dir = root / "cni" / "net.d"
        self.cni_data_dir = root / "cni" / "networks"
        self.kubelet_root = root / "kubelet"
        self.kubelet_config = root / "kubelet-config.yaml"
        self.pod_logs = root / "pod-logs"
        self.volume_plugins = root / "volume-plugins"
        self.resolv_conf = root / "resolv.conf"
        self.kube_proxy_config = root / "kube-proxy-config.yaml"
        self.corefile = root / "Corefile"
        self.volumes = root / "volumes"
        self.logs = root / "logs"

    @property
    def runtime_endpoint(self) -> str:
        return f"unix://{self.containerd_socket}"


def write_containerd_config(paths: Paths, sandbox_image: str) -> None:
    cni = cni_bin_dir()
    paths.containerd.mkdir(parents=True, exist_ok=True)
    paths.cni_conf_dir.mkdir(parents=True, exist_ok=True)
    paths.containerd_config.write_text(
        f"""version = 2
root = "{paths.containerd_root}"
state = "{paths.containerd_state}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
]
[grpc]
  address = "{paths.containerd_socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{paths.containerd_root}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # REQUIRED on this machine (no CAP_SYS_RESOURCE): the CRI gives sandboxes oom_score_adj -998, which runc
  # cannot write ("can't get final child's PID from pipe: EOF"); this clamps it to containerd's own value.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{paths.containerd_state}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni}"
    conf_dir = "{paths.cni_conf_dir}"
"""
    )
    conflist = {
        "cniVersion": "0.4.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": CNI_BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(paths.cni_data_dir),
                    "ranges": [[{"subnet": POD_CIDR}]],
                    # No default route: pods reach the node IP and the Services, nothing else.
                    "routes": [{"dst": f"{NODE_IP}/32"}, {"dst": SERVICE_CIDR}],
                },
            }
        ],
    }
    (paths.cni_conf_dir / "10-etcdcron-node.conflist").write_text(json.dumps(conflist, indent=1))


def write_kubelet_config(
    paths: Paths, *, port: int, healthz_port: int, ca: Path, cert: Path, key: Path
) -> None:
    paths.pod_logs.mkdir(parents=True, exist_ok=True)
    paths.volume_plugins.mkdir(parents=True, exist_ok=True)
    paths.kubelet_root.mkdir(parents=True, exist_ok=True)
    # Pods with dnsPolicy Default, and the search path of the others: only the node's CoreDNS.
    paths.resolv_conf.write_text(f"nameserver {CLUSTER_DNS}\n")
    config: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # REQUIRED on this machine (cgroup v1): from v1.35 the kubelet refuses cgroup v1 hosts by default.
        "failCgroupV1": False,
        "failSwapOn": False,
        "cgroupDriver": "cgroupfs",  # containerd has SystemdCgroup = false
        "cgroupRoot": f"/{CGROUP_ROOT}",
        "containerRuntimeEndpoint": paths.runtime_endpoint,
        "address": NODE_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(cert),
        "tlsPrivateKeyFile": str(key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [CLUSTER_DNS],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(paths.resolv_conf),
        "podLogsDir": str(paths.pod_logs),
        "volumePluginDir": str(paths.volume_plugins),
        # The images cannot be pulled again: never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "nodeStatusUpdateFrequency": "2s",
        "syncFrequency": "10s",
        "serializeImagePulls": False,
        "maxPods": 60,
        "registerNode": True,
        "staticPodPath": "",
    }
    paths.kubelet_config.write_text(json.dumps(config, indent=1))


def write_kube_proxy_config(paths: Paths, *, kubeconfig: Path, healthz_port: int, metrics_port: int) -> None:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "nodePortAddresses": [f"{NODE_IP}/32"],
        # Leave the host's sysctls alone: no route_localnet, no conntrack table size or timeouts.
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        "conntrack": {
            "maxPerCore": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
            "udpTimeout": "0s",
            "udpStreamTimeout": "0s",
        },
    }
    paths.kube_proxy_config.write_text(json.dumps(config, indent=1))


def write_corefile(paths: Paths, *, kubeconfig: Path, health_port: int, ready_port: int) -> None:
    """CoreDNS answers for the cluster domain (and reverse lookups) only; it forwards nothing."""
    paths.corefile.write_text(
        f"""{CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {CLUSTER_DNS}
    errors
    health 127.0.0.1:{health_port}
    ready 127.0.0.1:{ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} etcdcron-test
        pods insecure
        ttl 5
    }}
    loadbalance
}}
"""
    )


# --- containerd's images ----------------------------------------------------------------------------


def ctr(
    paths: Paths, *args: str, timeout: float = 300, stdin: IO[bytes] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ctr", "--address", str(paths.containerd_socket), "--namespace", "k8s.io", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=stdin,
    )


def image_labels(paths: Paths) -> dict[str, str]:
    """Image name -> the value of its ``etcdcron.io/source-key`` label (empty if none)."""
    result = ctr(paths, "images", "ls")
    out: dict[str, str] = {}
    for line in result.stdout.splitlines()[1:]:
        parts = line.split()
        if not parts:
            continue
        label = next((p.split("=", 1)[1] for p in parts if p.startswith("etcdcron.io/source-key=")), "")
        out[parts[0]] = label
    return out


def import_image(paths: Paths, tarball: Path, names: list[str], key: str) -> bool:
    """Import a docker-archive into containerd unless ``names`` are there with this ``key``; True if it
    imported."""
    present = image_labels(paths)
    if all(present.get(n) == key for n in names):
        return False
    with tarball.open("rb") as f:
        result = ctr(paths, "images", "import", "--no-unpack", "-", timeout=600, stdin=f)
    if result.returncode != 0:
        raise RuntimeError(f"ctr images import {tarball} failed: {result.stderr.strip()}")
    for name in names:
        ctr(paths, "images", "label", name, f"etcdcron.io/source-key={key}")
    return True


def tag_image(paths: Paths, source: str, target: str) -> None:
    ctr(paths, "images", "tag", "--force", source, target)


def remove_leftover_containers(paths: Paths) -> None:
    """Tasks and containers that a killed run left in containerd's metadata (before the kubelet starts)."""
    tasks = ctr(paths, "tasks", "ls", "-q").stdout.split()
    for task in tasks:
        ctr(paths, "tasks", "kill", "-s", "SIGKILL", task, timeout=30)
    for task in tasks:
        ctr(paths, "tasks", "delete", "--force", task, timeout=30)
    containers = ctr(paths, "containers", "ls", "-q").stdout.split()
    if containers:
        ctr(paths, "containers", "delete", *containers, timeout=60)


def wait_socket(path: Path, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if path.exists():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                try:
                    s.connect(str(path))
                    return True
                except OSError:
                    pass
        time.sleep(0.1)
    return False
