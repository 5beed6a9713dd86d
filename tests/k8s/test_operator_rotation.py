"""A rotated ServiceAccount token is picked up by both halves of the operator (issue 9, item 7).

Its own module, so that no other operator pool serves the resources it creates. The rotation is forced:
the ServiceAccount is deleted (every token it had dies with it) and created again from the manifests, and
the new account's token is written to the token file the operator was started with."""

from __future__ import annotations

import pytest
import yaml
from helpers import (
    RBAC,
    SERVICE_ACCOUNT,
    SYSTEM_NAMESPACE,
    OperatorProcess,
    condition,
    create,
    events_of,
    get,
    kubectl,
    wait_for,
)

from conftest import issue_token

pytestmark = pytest.mark.k8s


def test_a_rotated_token_file_is_picked_up(
    cluster, operator_credentials, operator_etcd, crs, k8s_api, k8s_namespace, tmp_path
):
    kubeconfig, token_file = operator_credentials
    first = token_file.read_text()
    op = OperatorProcess("rotating", operator_etcd.endpoint, "/rotation", str(kubeconfig), tmp_path)
    try:
        create(crs, k8s_namespace, "before", {"schedule": "* * * * * *"})
        wait_for(
            "firing with the first token", lambda: events_of(k8s_api, k8s_namespace, "before"), timeout=40
        )
        deleted = kubectl(
            cluster.kubeconfig, "delete", "serviceaccount", SERVICE_ACCOUNT, "-n", SYSTEM_NAMESPACE
        )
        assert deleted.returncode == 0, deleted.stderr
        assert kubectl(cluster.kubeconfig, "apply", *(f"-f={p}" for p in RBAC)).returncode == 0
        token_file.write_text(issue_token(cluster.kubeconfig))
        old = yaml.safe_load(kubeconfig.read_text())
        old["users"][0]["user"] = {"token": first}  # only the first token: no tokenFile, no certificate
        old_config = tmp_path / "first-token.kubeconfig"
        old_config.write_text(yaml.safe_dump(old))
        wait_for(
            "the first token to be refused",
            lambda: kubectl(old_config, "get", "dcj", "-A").returncode != 0,
        )
        create(crs, k8s_namespace, "after", {"schedule": "* * * * * *"})
        events = wait_for(
            "firing with the new token", lambda: events_of(k8s_api, k8s_namespace, "after"), timeout=40
        )
        assert all(e.reporting_instance == "rotating" for e in events)
        wait_for(
            "status written with the new token",
            lambda: condition(get(crs, k8s_namespace, "after"), "Ready").get("status") == "True",
            timeout=40,
        )
    finally:
        assert op.stop() == 0, op.tail()
