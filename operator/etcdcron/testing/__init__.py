"""Test support: a real Kubernetes control plane (etcd + kube-apiserver [+ kube-controller-manager]).

The Python counterpart of controller-runtime's envtest. See docs/controlplane.md.

- :class:`ControlPlane` starts one from pinned binaries (:mod:`etcdcron.testing.binaries`).
- :class:`ExistingCluster` wraps a cluster you already have (``KUBECONFIG``).
- :func:`cluster_from_env` picks one of the two (``ETCDCRON_USE_EXISTING_CLUSTER=1``).
- ``python -m etcdcron.testing build`` / ``serve``: build binaries ahead of time / run one by hand.
- :mod:`etcdcron.testing.pytest_plugin`: the ``control_plane`` and ``k8s_namespace`` fixtures.
"""

from .binaries import Binaries, BinariesNotFound, BuildResult, build, pinned_version, resolve
from .controlplane import (
    CONTROLLERS,
    ControlPlane,
    ControlPlaneError,
    ExistingCluster,
    KubeCluster,
    cluster_from_env,
)

__all__ = [
    "CONTROLLERS",
    "Binaries",
    "BinariesNotFound",
    "BuildResult",
    "ControlPlane",
    "ControlPlaneError",
    "ExistingCluster",
    "KubeCluster",
    "build",
    "cluster_from_env",
    "pinned_version",
    "resolve",
]
