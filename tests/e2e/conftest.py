"""A kind cluster running the operator as users install it: the image built from ./Dockerfile, then
``kubectl apply -k deploy/``.

Needs a Docker engine, ``kind`` and ``kubectl``; without them every e2e test is skipped, saying why.
Environment:

- ``ETCDCRON_E2E_CLUSTER``: the kind cluster to use (default ``etcdcron-e2e``). One that already exists is
  reused (the image is loaded again and the operator restarted) and never deleted.
- ``ETCDCRON_E2E_KEEP=1``: keep the cluster this run created, for a look afterwards
  (``kind export kubeconfig --name etcdcron-e2e``); the next run reuses it.
- ``ETCDCRON_E2E_SKIP_BUILD=1``: no ``docker build``; use the ``etcdcron:dev`` image already there.
- ``ETCDCRON_E2E_SKIP=1``: skip the e2e tests even where they could run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from .cluster import IMAGE, SYSTEM_NAMESPACE, Kube, environment_problem, kind_clusters, run

DEFAULT_CLUSTER = "etcdcron-e2e"


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    """The e2e cluster, with the operator and its etcd deployed from deploy/ and ready."""
    problem = environment_problem()
    if problem:
        pytest.skip(problem)

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
    kube = Kube(name, kubeconfig)
    try:
        if os.environ.get("ETCDCRON_E2E_SKIP_BUILD") != "1":
            run(["docker", "build", "-t", IMAGE, "."], timeout=1200)
        run(["kind", "load", "docker-image", IMAGE, "--name", name], timeout=600)
        kube.kubectl("apply", "-k", "deploy/", timeout=180)
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
