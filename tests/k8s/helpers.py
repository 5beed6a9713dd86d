"""Helpers of the tests on a real API server: operator processes, resources, waiting with deadlines."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client

from etcdcron.etcd import EtcdClient
from etcdcron.keys import Keys
from etcdcron.localetcd import free_port

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "etcdcron.io_distributedcronjobs.yaml"
RBAC = [ROOT / "deploy" / "operator" / "namespace.yaml", ROOT / "deploy" / "operator" / "rbac.yaml"]
GROUP, VERSION, PLURAL = "etcdcron.io", "v1alpha1", "distributedcronjobs"
SERVICE_ACCOUNT, SYSTEM_NAMESPACE = "etcdcron-operator", "etcdcron-system"


class OperatorProcess:
    """``etcdcron operator`` as a subprocess, logging to a file."""

    def __init__(
        self,
        member_id: str,
        etcd: str,
        prefix: str,
        kubeconfig: str,
        log_dir: Path,
        lease_ttl: int = 2,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.member_id = member_id
        self.log_path = log_dir / f"{member_id}.log"
        self.health_port, self.metrics_port = free_port(), free_port()
        args = [
            sys.executable,
            "-m",
            "etcdcron.cli",
            "operator",
            "-v",
            "--endpoints",
            etcd,
            "--prefix",
            prefix,
            "--member-id",
            member_id,
            "--lease-ttl",
            str(lease_ttl),
            "--metrics-port",
            str(self.metrics_port),
            "--health-port",
            str(self.health_port),
            "--bind-address",
            "127.0.0.1",
            "--kubeconfig",
            kubeconfig,
            *extra,
        ]
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def freeze(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode

    def text(self) -> str:
        return self.log_path.read_text()

    def tail(self) -> str:
        return "".join(self.text().splitlines(keepends=True)[-40:])


def kubectl(kubeconfig: Path | str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        timeout=timeout,
    )


def dcj(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DistributedCronJob",
        "metadata": {"name": name},
        "spec": spec,
    }


def create(crs: client.CustomObjectsApi, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = crs.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, dcj(name, spec)
    )
    return result


def get(crs: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = crs.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return result


def patch_spec(crs: client.CustomObjectsApi, namespace: str, name: str, spec: dict[str, Any]) -> None:
    crs.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": spec})


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return dict(c)
    return {}


def events_of(k8s_api: Any, namespace: str, name: str) -> list[Any]:
    core = client.CoreV1Api(k8s_api)
    items = core.list_namespaced_event(namespace, label_selector=f"etcdcron.io/job={name}").items
    return [e for e in items if e.type == "Normal"]


def warnings_of(k8s_api: Any, namespace: str, name: str) -> list[Any]:
    core = client.CoreV1Api(k8s_api)
    return [
        e
        for e in core.list_namespaced_event(namespace).items
        if e.type == "Warning" and e.involved_object.name == name
    ]


def jobs_of(k8s_api: Any, namespace: str, name: str) -> list[Any]:
    batch = client.BatchV1Api(k8s_api)
    return list(batch.list_namespaced_job(namespace, label_selector=f"etcdcron.io/job={name}").items)


def runs_of(k8s_api: Any, namespace: str, name: str) -> list[int]:
    """The run number of every tick's Event, sorted: each must appear once."""
    return sorted(int(e.metadata.annotations["etcdcron.io/run"]) for e in events_of(k8s_api, namespace, name))


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def leader_of(etcd_endpoint: str, prefix: str = "/operator") -> str:
    async def read() -> str:
        async with EtcdClient([etcd_endpoint]) as c:
            kv = await c.get(Keys(prefix).leader("reconciler"))
            return kv.value.decode() if kv else ""

    return asyncio.run(read())


def fetch(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""
