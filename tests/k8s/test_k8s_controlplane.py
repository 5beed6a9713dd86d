"""The local Kubernetes control plane (etcdcron.testing) against real binaries."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from etcdcron.testing import ControlPlane, ExistingCluster, KubeCluster, binaries, cluster_from_env
from etcdcron.testing.controlplane import USE_EXISTING_ENV

pytestmark = pytest.mark.k8s

FIXTURES = Path(__file__).parent / "fixtures"
WIDGETS_CRD = FIXTURES / "widgets-crd.yaml"
REPO = Path(__file__).resolve().parents[2]

uses_existing_cluster = os.environ.get(USE_EXISTING_ENV) == "1"
local_only = pytest.mark.skipif(uses_existing_cluster, reason="starts its own control plane")
builds_here = pytest.mark.skipif(
    uses_existing_cluster or bool(os.environ.get(binaries.KUBEBUILDER_ASSETS)),
    reason="binaries come from elsewhere",
)


def _our_temp_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("etcdcron-controlplane-*"))


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(proc.name))
    return found


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@local_only
def test_starts_and_stops_cleanly_twice() -> None:
    before = _our_temp_dirs()
    for _ in range(2):
        with ControlPlane() as cp:
            directory = cp.directory
            assert directory is not None and directory.is_dir()
            pids = cp.pids
            assert len(pids) == 2  # etcd, kube-apiserver
            assert cp.running
            assert cp.server.startswith("https://127.0.0.1:")
            port = int(cp.server.rsplit(":", 1)[1])
            assert cp.startup_seconds < 30, cp.startup_seconds
            with cp.api_client() as api:
                version: Any = client.VersionApi(api).get_code()
                assert version.git_version == binaries.pinned_version()
        assert cp.directory is None
        assert not directory.exists()
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert _processes_mentioning(str(directory)) == []
        assert not _port_open(port)
    assert _our_temp_dirs() == before


def test_crd_is_served(control_plane: KubeCluster, k8s_api: Any, k8s_namespace: str) -> None:
    assert control_plane.apply_crds([WIDGETS_CRD]) == ["widgets.test.etcdcron.io"]
    custom: Any = client.CustomObjectsApi(k8s_api)
    body = {
        "apiVersion": "test.etcdcron.io/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"schedule": "*/5 * * * *", "replicas": 3},
    }
    custom.create_namespaced_custom_object("test.etcdcron.io", "v1", k8s_namespace, "widgets", body)
    got = custom.get_namespaced_custom_object("test.etcdcron.io", "v1", k8s_namespace, "widgets", "w1")
    assert got["spec"] == {"schedule": "*/5 * * * *", "replicas": 3}
    # applying again updates in place
    assert control_plane.apply_crds([FIXTURES]) == ["widgets.test.etcdcron.io"]


def test_schema_violation_is_rejected_by_the_api_server(
    control_plane: KubeCluster, k8s_api: Any, k8s_namespace: str
) -> None:
    control_plane.apply_crds([WIDGETS_CRD])
    custom: Any = client.CustomObjectsApi(k8s_api)
    body = {
        "apiVersion": "test.etcdcron.io/v1",
        "kind": "Widget",
        "metadata": {"name": "bad"},
        "spec": {"replicas": 42},
    }
    with pytest.raises(ApiException) as info:
        custom.create_namespaced_custom_object("test.etcdcron.io", "v1", k8s_namespace, "widgets", body)
    assert info.value.status == 422
    status = json.loads(info.value.body)  # the API server's metav1.Status, verbatim
    assert status["reason"] == "Invalid"
    message = status["message"]
    assert 'Widget.test.etcdcron.io "bad" is invalid' in message
    assert (
        "spec.replicas: Invalid value: 42: spec.replicas in body should be less than or equal to 10"
        in message
    )
    assert "spec.schedule: Required value" in message


def test_kubectl_talks_to_it(control_plane: KubeCluster, k8s_namespace: str) -> None:
    kubectl = "/usr/bin/kubectl" if os.path.exists("/usr/bin/kubectl") else "kubectl"
    out = subprocess.run(
        [kubectl, "get", "ns", "-o", "name"],
        env=control_plane.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert "namespace/default" in out
    assert f"namespace/{k8s_namespace}" in out


@pytest.mark.timeout(150)
def test_cronjob_creates_a_job_within_its_minute(k8s_api: Any, k8s_namespace: str) -> None:
    batch: Any = client.BatchV1Api(k8s_api)
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "every-minute"},
        "spec": {
            "schedule": "* * * * *",
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "noop", "image": "registry.invalid/noop:1"}],
                        }
                    }
                }
            },
        },
    }
    created = batch.create_namespaced_cron_job(k8s_namespace, cronjob)
    deadline = time.monotonic() + 75
    jobs: list[Any] = []
    while time.monotonic() < deadline:
        jobs = batch.list_namespaced_job(k8s_namespace).items
        if jobs:
            break
        time.sleep(1)
    assert jobs, "kube-controller-manager's cronjob controller created no Job within 75 s"
    owners = jobs[0].metadata.owner_references or []
    assert [(o.kind, o.uid) for o in owners] == [("CronJob", created.metadata.uid)]


@builds_here
def test_second_build_is_a_cache_hit() -> None:
    first = binaries.build()  # the collection hook already built them, if they were missing
    mtimes = {c: first.path(c).stat().st_mtime_ns for c in binaries.BUILT_COMPONENTS}
    started = time.monotonic()
    second = binaries.build()
    elapsed = time.monotonic() - started
    assert second.cache_hit
    assert elapsed < 2.0, elapsed
    assert second.bin_dir == first.bin_dir
    assert {c: second.path(c).stat().st_mtime_ns for c in binaries.BUILT_COMPONENTS} == mtimes
    for c in binaries.BUILT_COMPONENTS:
        assert second.path(c).stat().st_mode & stat.S_IXUSR

    started = time.monotonic()
    cli = subprocess.run(
        [sys.executable, "-m", "etcdcron.testing", "build"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "cache: hit" in cli.stdout, cli.stdout + cli.stderr
    assert f"kube-apiserver: {second.path('kube-apiserver')}" in cli.stdout
    assert time.monotonic() - started < 10
    assert {c: second.path(c).stat().st_mtime_ns for c in binaries.BUILT_COMPONENTS} == mtimes


def test_kubebuilder_assets_take_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("kube-apiserver", "etcd", "kube-controller-manager"):
        fake = tmp_path / name
        fake.write_text("#!/bin/sh\nexit 0\n")
        fake.chmod(0o755)
    monkeypatch.setenv(binaries.KUBEBUILDER_ASSETS, str(tmp_path))
    found = binaries.resolve(allow_build=False)
    assert found.origin == "KUBEBUILDER_ASSETS"
    assert (found.kube_apiserver, found.etcd, found.kube_controller_manager) == (
        tmp_path / "kube-apiserver",
        tmp_path / "etcd",
        tmp_path / "kube-controller-manager",
    )
    (tmp_path / "kube-apiserver").unlink()
    with pytest.raises(binaries.BinariesNotFound, match="no executable kube-apiserver"):
        binaries.resolve(allow_build=False)


def test_existing_cluster_from_kubeconfig(
    control_plane: KubeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(USE_EXISTING_ENV, "1")
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    cluster = cluster_from_env()
    assert isinstance(cluster, ExistingCluster)
    assert cluster.server == control_plane.server
    with cluster, cluster.api_client() as api:
        core: Any = client.CoreV1Api(api)
        names = [n.metadata.name for n in core.list_namespace().items]
    assert "kube-system" in names
