"""Fixtures for tests against a real kube-apiserver (see docs/controlplane.md).

``pytest_plugins`` is only allowed in the top-level conftest, so the fixtures (and the hook that
builds missing binaries right after collection) are imported here instead.
"""

from etcdcron.testing.pytest_plugin import (
    control_plane,
    k8s_api,
    k8s_namespace,
    pytest_collection_finish,
)

__all__ = ["control_plane", "k8s_api", "k8s_namespace", "pytest_collection_finish"]
