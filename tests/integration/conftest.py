from collections.abc import Callable, Iterator

import pytest

from .firings import LEASE_TTL
from .processes import MemberProcess


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def pool(etcd_endpoint: str, prefix: str) -> Iterator[Callable[..., MemberProcess]]:
    """Start member processes (``pool("m0")``); every one still running is killed at the end."""
    members: list[MemberProcess] = []

    def start(member_id: str, endpoint: str = etcd_endpoint, lease_ttl: int = LEASE_TTL) -> MemberProcess:
        member = MemberProcess(member_id, endpoint, prefix, lease_ttl=lease_ttl).start()
        members.append(member)
        return member

    yield start
    for member in members:
        member.stop()
