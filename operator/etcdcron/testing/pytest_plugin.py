"""pytest fixtures for tests against a real Kubernetes API server.

Only a top-level conftest may use ``pytest_plugins``, so a test directory imports what it needs::

    # tests/k8s/conftest.py
    from etcdcron.testing.pytest_plugin import (  # noqa: F401
        control_plane, k8s_api, k8s_namespace, pytest_collection_finish,
    )

- ``control_plane`` (session): a :class:`~etcdcron.testing.KubeCluster` — a fresh local control plane
  with kube-controller-manager, or, with ``ETCDCRON_USE_EXISTING_CLUSTER=1``, the cluster that
  ``KUBECONFIG`` points at.
- ``k8s_api`` (session): a ``kubernetes.client.ApiClient`` for it.
- ``k8s_namespace``: a unique namespace per test, deleted afterwards.
- ``pytest_collection_finish``: builds missing binaries once after collection, when tests marked
  ``k8s`` were selected, so that a first build does not count against a test's timeout.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from .binaries import KUBEBUILDER_ASSETS, build
from .controlplane import USE_EXISTING_ENV, KubeCluster, cluster_from_env

__all__ = ["control_plane", "k8s_api", "k8s_namespace", "pytest_collection_finish"]

NAMESPACE_LABEL = "etcdcron.test/owned"


def pytest_collection_finish(session: pytest.Session) -> None:
    if os.environ.get(USE_EXISTING_ENV) == "1" or os.environ.get(KUBEBUILDER_ASSETS):
        return
    if not any(item.get_closest_marker("k8s") for item in session.items):
        return
    capture = session.config.pluginmanager.get_plugin("capturemanager")
    if capture is None:
        build(progress=sys.stderr)
        return
    with capture.global_and_fixture_disabled():
        build(progress=sys.stderr)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[KubeCluster]:
    cluster = cluster_from_env(controller_manager=True)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def k8s_api(control_plane: KubeCluster) -> Iterator[Any]:
    with control_plane.api_client() as api:
        yield api


@pytest.fixture
def k8s_namespace(k8s_api: Any) -> Iterator[str]:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core: Any = client.CoreV1Api(k8s_api)
    name = f"etcdcron-test-{uuid.uuid4().hex[:10]}"
    core.create_namespace({"metadata": {"name": name, "labels": {NAMESPACE_LABEL: "true"}}})
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name, propagation_policy="Background")
        except ApiException as e:
            if e.status != 404:
                raise
