"""KubernetesDispatcher's own client: as many pooled connections as workers, the caller's host and
credentials, the caller's client left as it was."""

from __future__ import annotations

import pytest
from kubernetes import client as k8s

from etcdcron.dispatch.kubernetes import DEFAULT_WORKERS, KubernetesDispatcher


def api_client() -> k8s.ApiClient:
    configuration = k8s.Configuration()
    configuration.host = "https://127.0.0.1:6443"
    configuration.api_key = {"BearerToken": "Bearer t0"}
    return k8s.ApiClient(configuration)


@pytest.mark.parametrize("workers", [1, 7, DEFAULT_WORKERS])
def test_the_connection_pool_holds_a_connection_per_worker(workers):
    given = api_client()
    before = given.configuration.connection_pool_maxsize
    dispatcher = KubernetesDispatcher(given, "m", workers=workers)
    own = dispatcher.core.api_client
    assert own is not given
    assert own.configuration.connection_pool_maxsize == workers
    assert own.rest_client.pool_manager.connection_pool_kw["maxsize"] == workers
    assert dispatcher._executor._max_workers == workers
    assert dispatcher.batch.api_client is own
    assert given.configuration.connection_pool_maxsize == before


def test_host_and_credentials_are_the_callers_and_refresh_with_them():
    given = api_client()
    seen = []

    def refresh(conf: k8s.Configuration) -> None:
        seen.append(conf)
        conf.api_key["BearerToken"] = "Bearer t1"

    given.configuration.refresh_api_key_hook = refresh
    own = KubernetesDispatcher(given, "m").core.api_client.configuration
    assert own.host == given.configuration.host
    assert own.get_api_key_with_prefix("BearerToken") == "Bearer t1"  # a rotated token reaches it
    assert seen == [own]


def test_workers_must_be_positive():
    with pytest.raises(ValueError, match="workers"):
        KubernetesDispatcher(api_client(), "m", workers=0)
