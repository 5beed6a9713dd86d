"""Write and read kubeconfig files (only the parts this package needs)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

__all__ = ["read_server", "write_kubeconfig"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_pem: bytes,
    client_cert_pem: bytes,
    client_key_pem: bytes,
    user: str,
    cluster: str = "etcdcron-test",
) -> Path:
    """A self-contained kubeconfig (certificates embedded) with one cluster, user and context."""
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": cluster, "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(client_cert_pem),
                    "client-key-data": _b64(client_key_pem),
                },
            }
        ],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
        "preferences": {},
    }
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def read_server(path: Path, context: str | None = None) -> str:
    """The API server URL of ``context`` (default: the current context) in a kubeconfig file."""
    config = yaml.safe_load(path.read_text()) or {}
    name = context or config.get("current-context")
    contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
    clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or []}
    try:
        return str(clusters[contexts[name]["cluster"]]["server"])
    except KeyError:
        raise ValueError(f"{path}: no cluster for context {name!r}") from None
