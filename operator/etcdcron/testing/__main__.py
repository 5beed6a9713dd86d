"""``python -m etcdcron.testing build|serve`` — see docs/controlplane.md."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from .binaries import BinariesNotFound, build, find_etcd, resolve
from .controlplane import ControlPlane, ControlPlaneError


def _build(args: argparse.Namespace) -> int:
    result = build(force=args.force, progress=sys.stderr)
    print(f"version: {result.version}")
    print(f"bin-dir: {result.bin_dir}")
    for component in ("kube-apiserver", "kube-controller-manager"):
        print(f"{component}: {result.path(component)}")
    print(f"etcd: {find_etcd()}")
    print(f"cache: {'hit' if result.cache_hit else 'built'} ({result.seconds:.1f} s)")
    return 0


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _serve(args: argparse.Namespace) -> int:
    binaries = resolve(controller_manager=not args.no_controller_manager, progress=sys.stderr)
    signal.signal(signal.SIGTERM, _on_sigterm)
    cp = ControlPlane(controller_manager=not args.no_controller_manager, binaries=binaries)
    try:
        cp.start()
        if args.crd:
            for name in cp.apply_crds(args.crd):
                print(f"crd established: {name}", flush=True)
        kubeconfig = cp.kubeconfig
        if args.kubeconfig_out:
            kubeconfig = Path(args.kubeconfig_out)
            kubeconfig.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cp.kubeconfig, kubeconfig)
            kubeconfig.chmod(0o600)
        print(f"kube-apiserver {cp.server} ready in {cp.startup_seconds:.1f} s ({binaries.origin} binaries)")
        print(f"export KUBECONFIG={kubeconfig}", flush=True)
        print("press Ctrl-C to stop", file=sys.stderr, flush=True)
        while cp.running:
            time.sleep(0.5)
        print("a component exited; logs:", file=sys.stderr)
        for name, log in cp.logs().items():
            print(f"--- {name}\n{log[-4000:]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        cp.stop()
        if args.kubeconfig_out:
            Path(args.kubeconfig_out).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m etcdcron.testing", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="build (or find in the cache) the pinned binaries; print paths")
    p_build.add_argument("--force", action="store_true", help="rebuild even if the cache is current")
    p_build.set_defaults(func=_build)
    p_serve = sub.add_parser("serve", help="run a control plane in the foreground until Ctrl-C")
    p_serve.add_argument("--no-controller-manager", action="store_true", help="etcd + kube-apiserver only")
    p_serve.add_argument("--crd", action="append", default=[], help="CRD file or directory to apply")
    p_serve.add_argument("--kubeconfig-out", help="also copy the admin kubeconfig here (removed on exit)")
    p_serve.set_defaults(func=_serve)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (BinariesNotFound, ControlPlaneError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
