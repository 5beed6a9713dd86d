"""``python -m etcdcron.testing build|serve|images|clean-node`` — see docs/controlplane.md."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from .binaries import BUILT_COMPONENTS, BinariesNotFound, build, find_etcd, resolve
from .controlplane import ControlPlane, ControlPlaneError


def _build(args: argparse.Namespace) -> int:
    result = build(force=args.force, progress=sys.stderr)
    print(f"version: {result.version}")
    print(f"bin-dir: {result.bin_dir}")
    for component in BUILT_COMPONENTS:
        print(f"{component}: {result.path(component)}")
    print(f"etcd: {find_etcd()}")
    print(f"cache: {'hit' if result.cache_hit else 'built'} ({result.seconds:.1f} s)")
    return 0


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _images(args: argparse.Namespace) -> int:
    from . import images

    builds = (
        images.pause_image,
        images.busybox_image,
        images.base_image,
        images.operator_image,
        images.etcd_image,
    )
    for build_one in builds:
        image = build_one(sys.stderr)
        state = "built" if image.built else "cache hit"
        print(f"{image.name}: {image.tarball} ({state}, {image.seconds:.1f} s)", flush=True)
    return 0


def _clean_node(args: argparse.Namespace) -> int:
    from . import node

    problem = node.node_problem()
    if problem:
        print(f"nothing to clean: {problem}", file=sys.stderr)
        return 0
    with node.machine_lock(timeout=args.wait):
        node.clean_host(keep_images=not args.images)
    print("clean")
    return 0


def _serve(args: argparse.Namespace) -> int:
    node_images = []
    if args.node and args.images:
        from . import images

        node_images = [
            images.busybox_image(sys.stderr),
            images.operator_image(sys.stderr),
            images.etcd_image(sys.stderr),
        ]
    binaries = resolve(controller_manager=not args.no_controller_manager, node=args.node, progress=sys.stderr)
    signal.signal(signal.SIGTERM, _on_sigterm)
    cp = ControlPlane(
        controller_manager=not args.no_controller_manager,
        node=args.node,
        images=node_images,
        binaries=binaries,
    )
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
        if args.node:
            phases = ", ".join(f"{k} {v:.1f} s" for k, v in cp.timings.items())
            print(f"node ready ({phases})")
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
    p_serve.add_argument(
        "--node",
        action="store_true",
        help="also a real node (root only): scheduler, containerd, kubelet, kube-proxy, CoreDNS",
    )
    p_serve.add_argument(
        "--images",
        action="store_true",
        help="with --node: build (or take from the cache) and import etcdcron:dev, the e2e etcd and busybox",
    )
    p_serve.set_defaults(func=_serve)
    p_images = sub.add_parser("images", help="build (or find in the cache) the node's image tarballs")
    p_images.set_defaults(func=_images)
    p_clean = sub.add_parser("clean-node", help="undo whatever a (killed) test node left on this machine")
    p_clean.add_argument("--images", action="store_true", help="also drop containerd's image store")
    p_clean.add_argument("--wait", type=float, default=60.0, help="seconds to wait for a running node to end")
    p_clean.set_defaults(func=_clean_node)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (BinariesNotFound, ControlPlaneError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
