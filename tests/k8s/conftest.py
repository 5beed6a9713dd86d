"""Fixtures for tests against a real kube-apiserver (see docs/controlplane.md).

``pytest_plugins`` is only allowed in the top-level conftest, so the fixtures (and the hook that
builds missing binaries right after collection) are imported here instead.

The operator processes run with the credentials of ``deploy/operator/rbac.yaml``: its ServiceAccount,
ClusterRole and binding are applied from the manifests and the operator logs in with the account's own
token (``kubectl create token``, read from a ``tokenFile``), so a verb missing there fails a test here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import CRD, RBAC, SERVICE_ACCOUNT, SYSTEM_NAMESPACE, OperatorProcess, kubectl
from kubernetes import client

from etcdcron.localetcd import LocalEtcd
from etcdcron.testing.pytest_plugin import (
    control_plane,
    k8s_api,
    k8s_namespace,
    pytest_collection_finish,
)

__all__ = ["control_plane", "k8s_api", "k8s_namespace", "pytest_collection_finish"]


def service_account_kubeconfig(admin: Path, folder: Path, token_file: Path) -> Path:
    """The admin kubeconfig's cluster, with the operator's ServiceAccount token as the only user."""
    doc = yaml.safe_load(admin.read_text())
    context = next(c["context"] for c in doc["contexts"] if c["name"] == doc["current-context"])
    cluster = next(c for c in doc["clusters"] if c["name"] == context["cluster"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"tokenFile": str(token_file)}}],
        "contexts": [{"name": "operator", "context": {"cluster": cluster["name"], "user": SERVICE_ACCOUNT}}],
        "current-context": "operator",
    }
    path = folder / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def issue_token(admin: Path, *bound: str) -> str:
    result = kubectl(
        admin, "create", "token", SERVICE_ACCOUNT, "-n", SYSTEM_NAMESPACE, "--duration=2h", *bound
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="session")
def cluster(control_plane: Any) -> Any:
    control_plane.apply_crds([CRD])
    applied = kubectl(control_plane.kubeconfig, "apply", *(f"-f={p}" for p in RBAC))
    assert applied.returncode == 0, applied.stderr
    return control_plane


@pytest.fixture(scope="session")
def operator_credentials(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(kubeconfig, token file) of the operator's ServiceAccount, as deploy/ grants it."""
    folder = tmp_path_factory.mktemp("operator-credentials")
    token_file = folder / "token"
    token_file.write_text(issue_token(cluster.kubeconfig))
    return service_account_kubeconfig(cluster.kubeconfig, folder, token_file), token_file


@pytest.fixture(scope="module")
def operator_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEtcd]:
    with LocalEtcd(tmp_path_factory.mktemp("operator-etcd")) as server:
        yield server


@pytest.fixture(scope="module")
def start_operator(
    cluster: Any,
    operator_credentials: tuple[Path, Path],
    operator_etcd: LocalEtcd,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []
    log_dir = tmp_path_factory.mktemp("operator-logs")

    def start(
        member_id: str, prefix: str = "/operator", kubeconfig: Path | None = None, lease_ttl: int = 2
    ) -> OperatorProcess:
        config = str(kubeconfig or operator_credentials[0])
        op = OperatorProcess(member_id, operator_etcd.endpoint, prefix, config, log_dir, lease_ttl)
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()
    denied = f'system:serviceaccount:{SYSTEM_NAMESPACE}:{SERVICE_ACCOUNT}" cannot'
    for op in started:  # whatever the shipped RBAC lacks shows up as a denial in some replica's log
        assert denied not in op.text(), op.tail()


@pytest.fixture(scope="module")
def operators(start_operator: Callable[..., OperatorProcess]) -> list[OperatorProcess]:
    """Two operator replicas shared by the tests of a module (each test uses its own namespace)."""
    return [start_operator("op-a"), start_operator("op-b")]


@pytest.fixture
def crs(k8s_api: Any) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(k8s_api)
