"""The cluster of the e2e tests (a local node, or kind), and kubectl against it (fixtures in conftest.py)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "etcdcron:dev"
SYSTEM_NAMESPACE = "etcdcron-system"
OPERATOR_SELECTOR = "app.kubernetes.io/name=etcdcron,app.kubernetes.io/component=operator"
SKIP_PREFIX = "kind e2e tests need a Docker engine and kind: skipped"
#: deploy/ plus image names and pull policies only (applied with ``kubectl apply -k``)
OVERLAY = "tests/e2e/overlay"
#: node | kind | existing (KUBECONFIG's cluster); default: node where it can run, else kind
CLUSTER_TYPE_ENV = "ETCDCRON_E2E_CLUSTER_TYPE"

T = TypeVar("T")


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _error_line(text: str) -> str:
    """The line of a tool's output that says what went wrong (the last one naming an error)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "cannot" in line.lower()]
    return (errors or lines or ["no output"])[-1]


@functools.cache
def choose_cluster() -> tuple[str | None, str]:
    """``("node" | "kind", "")`` for the cluster to run on, or ``(None, why not)``; asked once a session.

    The local node (``ControlPlane(node=True)``: root, containerd, runc, CNI plugins) comes first, then kind
    (a Docker engine, kind and kubectl); ``ETCDCRON_E2E_CLUSTER_TYPE`` picks one of them.
    """
    if os.environ.get("ETCDCRON_E2E_SKIP") == "1":
        return None, "e2e tests skipped (ETCDCRON_E2E_SKIP=1)"
    from etcdcron.testing.images import builder_problem
    from etcdcron.testing.node import node_problem

    wanted = os.environ.get(CLUSTER_TYPE_ENV, "")
    if wanted not in ("", "node", "kind", "existing"):
        return None, f"{CLUSTER_TYPE_ENV}={wanted!r}: use node, kind or existing"
    if wanted == "existing" or os.environ.get("ETCDCRON_USE_EXISTING_CLUSTER") == "1":
        return "existing", ""
    node = node_problem() or builder_problem() or (None if shutil.which("kubectl") else "no kubectl on PATH")
    if wanted == "node" or (not wanted and node is None):
        return ("node", "") if node is None else (None, f"e2e tests on a local node: skipped ({node})")
    kind = environment_problem()
    if kind is None:
        return "kind", ""
    if wanted == "kind":
        return None, kind
    return None, f"e2e tests skipped: no local node ({node}) and no kind ({kind})"


@functools.cache
def environment_problem() -> str | None:
    """Why the kind e2e tests can't run here (the skip message), or None if they can."""
    if shutil.which("docker") is None:
        return f"{SKIP_PREFIX} (docker info failed: docker not found on PATH)"
    try:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return f"{SKIP_PREFIX} (docker info failed: no answer from the Docker engine in 30 s)"
    if info.returncode != 0 or not info.stdout.strip():
        return f"{SKIP_PREFIX} (docker info failed: {_error_line(info.stderr + info.stdout)})"
    for tool in ("kind", "kubectl"):
        if shutil.which(tool) is None:
            return f"{SKIP_PREFIX} ({tool} not found on PATH)"
    return None


class CommandError(AssertionError):
    """A command of the test harness failed; the message carries its output."""


def run(
    args: list[str], *, timeout: float = 120, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command from the repository root; with ``check``, raise with its output if it fails."""
    command = " ".join(args)
    try:
        result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired as e:
        raise CommandError(
            f"{command}: no result in {timeout:.0f} s\n{_text(e.stdout)}{_text(e.stderr)}"
        ) from e
    if check and result.returncode != 0:
        raise CommandError(
            f"{command} exited {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


def kind_clusters() -> list[str]:
    return run(["kind", "get", "clusters"], timeout=60).stdout.split()


@dataclass
class Kube:
    """kubectl against the e2e cluster only: its own kubeconfig file, the user's is never touched."""

    cluster: str
    kubeconfig: Path
    kind: str = "kind"  # or "node", "existing"

    @property
    def cache_dir(self) -> Path:
        """kubectl's discovery cache for this cluster only (dropped once the CRD is served)."""
        return self.kubeconfig.parent / "kubectl-cache"

    def kubectl(
        self, *args: str, timeout: float = 120, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.cache_dir), *args],
            timeout=timeout,
            check=check,
            input=input,
        )

    def get(self, *args: str) -> Any:
        """``kubectl get ARGS -o json``, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def items(self, *args: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get(*args)["items"]
        return items

    def apply(self, manifest: dict[str, Any], namespace: str) -> None:
        self.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))

    def diagnostics(self, namespace: str = SYSTEM_NAMESPACE) -> str:
        """Workloads, recent events and operator logs, for a failure message."""
        parts = []
        for args in (
            ["get", "pods,statefulsets,deployments", "-n", namespace, "-o", "wide"],
            ["get", "events", "-n", namespace, "--sort-by=.lastTimestamp"],
            ["logs", "-n", SYSTEM_NAMESPACE, "-l", OPERATOR_SELECTOR, "--tail=50", "--prefix"],
        ):
            result = self.kubectl(*args, check=False, timeout=60)
            parts.append(f"$ kubectl {' '.join(args)}\n{result.stdout}{result.stderr}")
        return "\n".join(parts)[-20000:]

    def wait_ready(self) -> None:
        """Wait until the CRD is served, etcd has formed its cluster, and every operator replica is ready."""
        steps = [
            ["wait", "--for=condition=Established", "--timeout=120s", "crd/distributedcronjobs.etcdcron.io"],
            ["rollout", "status", "-n", SYSTEM_NAMESPACE, "statefulset/etcd", "--timeout=420s"],
            ["rollout", "status", "-n", SYSTEM_NAMESPACE, "deployment/etcdcron-operator", "--timeout=300s"],
        ]
        for step in steps:
            try:
                self.kubectl(*step, timeout=480)
            except CommandError as e:
                raise CommandError(f"{e}\n{self.diagnostics()}") from e
            # discovery cached before the CRD existed would hide it (`kubectl explain dcj`)
            shutil.rmtree(self.cache_dir, ignore_errors=True)
        # Ready pods are not yet a working admission path (the Service's rules reach kube-proxy a moment
        # later; with failurePolicy Fail a create fails until then): wait until a create is admitted.
        wait_for("the admission webhook to admit a valid resource", self._admits, timeout=120)

    def _admits(self) -> bool:
        probe = {
            "apiVersion": "etcdcron.io/v1alpha1",
            "kind": "DistributedCronJob",
            "metadata": {"name": "admission-probe"},
            "spec": {"schedule": "@hourly"},
        }
        args = ("create", "--dry-run=server", "-n", "default", "-f", "-")
        return self.kubectl(*args, check=False, input=json.dumps(probe)).returncode == 0

    def operator_pods(self) -> list[dict[str, Any]]:
        """The operator's pods that are not being deleted."""
        pods = self.items("pods", "-n", SYSTEM_NAMESPACE, "-l", OPERATOR_SELECTOR)
        return [p for p in pods if not p["metadata"].get("deletionTimestamp")]

    def ready_operator_pods(self) -> list[str]:
        """Names of the operator's pods that are Ready and not being deleted."""
        return [
            p["metadata"]["name"]
            for p in self.operator_pods()
            if any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (p.get("status") or {}).get("conditions") or []
            )
        ]


def wait_for(what: str, predicate: Callable[[], T | None], timeout: float, interval: float = 1.0) -> T:
    """Poll ``predicate()`` until it returns something truthy and return that; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
