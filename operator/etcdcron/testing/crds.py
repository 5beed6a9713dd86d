"""Apply CustomResourceDefinitions and wait until the API server serves them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

__all__ = ["apply_crds", "load_crds"]


def _yaml_files(path: Path) -> Iterator[Path]:
    if path.is_dir():
        yield from sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
    else:
        yield path


def load_crds(paths: list[Path]) -> list[dict[str, Any]]:
    """Every ``CustomResourceDefinition`` document in ``paths`` (files or directories)."""
    crds: list[dict[str, Any]] = []
    for path in paths:
        for file in _yaml_files(path):
            for doc in yaml.safe_load_all(file.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    crds.append(doc)
    if not crds:
        raise ValueError(f"no CustomResourceDefinition in {[str(p) for p in paths]}")
    return crds


def _condition(crd: Any, kind: str) -> Any:
    for condition in (crd.status.conditions if crd.status else None) or []:
        if condition.type == kind:
            return condition
    return None


def apply_crds(api_client: Any, paths: list[Path], timeout: float = 30.0) -> list[str]:
    """Create (or replace) the CRDs, then wait until each is Established and its resources answer.

    ``api_client`` is a ``kubernetes.client.ApiClient``. Raises ``TimeoutError`` with the CRD's
    conditions if the API server does not accept and serve one within ``timeout`` seconds.
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    # Any: the client accepts plain dicts where its annotations say model objects
    ext: Any = client.ApiextensionsV1Api(api_client)
    custom: Any = client.CustomObjectsApi(api_client)
    names: list[str] = []
    crds = load_crds(paths)
    for body in crds:
        name = body["metadata"]["name"]
        try:
            ext.create_custom_resource_definition(body)
        except ApiException as e:
            if e.status != 409:
                raise
            current = ext.read_custom_resource_definition(name)
            body = {
                **body,
                "metadata": {**body["metadata"], "resourceVersion": current.metadata.resource_version},
            }
            ext.replace_custom_resource_definition(name, body)
        names.append(name)

    deadline = time.monotonic() + timeout
    for body in crds:
        name = body["metadata"]["name"]
        spec = body["spec"]
        while True:
            crd = ext.read_custom_resource_definition(name)
            established = _condition(crd, "Established")
            if established is not None and established.status == "True":
                break
            if time.monotonic() > deadline:
                conditions = [(c.type, c.status, c.reason, c.message) for c in crd.status.conditions or []]
                raise TimeoutError(f"CRD {name} not Established after {timeout} s: {conditions}")
            time.sleep(0.1)
        for version in (v["name"] for v in spec["versions"] if v.get("served", True)):
            while True:
                try:
                    custom.list_cluster_custom_object(
                        spec["group"], version, spec["names"]["plural"], limit=1
                    )
                    break
                except ApiException as e:
                    if e.status != 404 or time.monotonic() > deadline:
                        raise
                time.sleep(0.1)
    return names
