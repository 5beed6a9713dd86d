"""The operator's Kubernetes credentials, loaded once and kept fresh.

In a pod, ServiceAccount tokens are projected and rotated: the kubernetes client's in-cluster loader
re-reads the token file (its refresh hook). A kubeconfig whose user has a ``tokenFile`` gets the same here
(the client reads it once). kopf logs in through ``connection_info``, which asks the client for the
current token each time, and kopf calls it again whenever the API server answers 401.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kopf
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from etcdcron.errors import EtcdCronError


class CredentialsError(EtcdCronError):
    """No usable Kubernetes credentials: names the file or the flag."""


def kubeconfig_path(flag: str | None) -> str | None:
    """``--kubeconfig``, else ``$KUBECONFIG``, else in-cluster in a pod, else ``~/.kube/config``."""
    if flag:
        return flag
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"].split(os.pathsep)[0]
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    return str(Path.home() / ".kube" / "config")


def kubernetes_api(kubeconfig: str | None, connections: int = 0) -> k8s.ApiClient:
    """An API client for ``kubeconfig`` (None: in-cluster); one line naming the file if it is unusable.
    ``connections``: kept open for reuse (0: the client's default, 5 per core), as many as threads use it."""
    configuration = k8s.Configuration()
    if connections:
        configuration.connection_pool_maxsize = connections
    if kubeconfig is None:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException as e:
            raise CredentialsError(f"in-cluster credentials: {e}") from None
        return k8s.ApiClient(configuration)
    if not Path(kubeconfig).is_file():
        raise CredentialsError(f"--kubeconfig {kubeconfig}: no such file (in a pod, omit it for in-cluster)")
    try:
        k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    except Exception as e:  # the loader raises ConfigException, TypeError, yaml errors... on a bad file
        why = " ".join(str(e).split()) or type(e).__name__  # one line, whatever the loader said
        raise CredentialsError(f"--kubeconfig {kubeconfig}: not a usable kubeconfig ({why})") from None
    token_file = _token_file(kubeconfig)
    if token_file is not None:
        _refresh_from(configuration, token_file)
    return k8s.ApiClient(configuration)


def _token_file(kubeconfig: str) -> Path | None:
    """The current context's user's ``tokenFile``, if any (resolved against the kubeconfig's folder)."""
    try:
        doc = yaml.safe_load(Path(kubeconfig).read_text()) or {}
        context = next(c["context"] for c in doc["contexts"] if c["name"] == doc["current-context"])
        user = next(u["user"] for u in doc["users"] if u["name"] == context["user"])
    except (OSError, KeyError, StopIteration, TypeError, yaml.YAMLError):
        return None
    name = user.get("tokenFile")
    return (Path(kubeconfig).parent / name) if name else None


def _refresh_from(configuration: k8s.Configuration, token_file: Path) -> None:
    """Re-read the token file whenever it changed (rotation), before every request."""
    seen: dict[str, Any] = {"mtime": None}

    def refresh(conf: k8s.Configuration) -> None:
        try:
            mtime = token_file.stat().st_mtime_ns
        except OSError:
            return  # keep the last token; the API server will say if it is no good
        if mtime != seen["mtime"]:
            token = token_file.read_text().strip()
            if token:
                conf.api_key["BearerToken"] = f"Bearer {token}"
                conf.api_key.pop("authorization", None)
                seen["mtime"] = mtime

    refresh(configuration)
    configuration.refresh_api_key_hook = refresh


def connection_info(api: k8s.ApiClient) -> kopf.ConnectionInfo:
    """kopf's credentials from the client's: the current token, fetched through the refresh hook."""
    conf = api.configuration
    header = conf.get_api_key_with_prefix("BearerToken") or conf.get_api_key_with_prefix("authorization")
    scheme, token = None, None
    if header:
        parts = header.split(" ", 1)
        scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
    return kopf.ConnectionInfo(
        server=conf.host,
        ca_path=conf.ssl_ca_cert,
        insecure=not conf.verify_ssl,
        certificate_path=conf.cert_file,
        private_key_path=conf.key_file,
        scheme=scheme,
        token=token,
        default_namespace=None,
    )
