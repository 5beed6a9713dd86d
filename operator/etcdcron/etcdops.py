"""Requests and responses of the etcd client, as pure values: endpoint lists, txn ops and compares,
watch batches. Kept apart from the client so that building a commit needs no connection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aetcd import rpc

from etcdcron.errors import ValidationError

KeyValue = Any  # rpc.KeyValue protobuf message: key, value, create_revision, mod_revision, version, lease
RequestOp = Any
Compare = Any
TxnRequest = Any


def parse_endpoints(text: str, field: str = "endpoints") -> list[str]:
    """``host:port[,host:port...]`` (an ``http://`` scheme is tolerated and dropped)."""
    endpoints = []
    for raw in text.split(","):
        item = raw.strip().removeprefix("http://")
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValidationError(field, f"{raw.strip()!r} is not host:port")
        endpoints.append(item)
    if not endpoints:
        raise ValidationError(field, "at least one host:port is needed")
    return endpoints


# Built by assigning fields of a fresh message: with protobuf's upb backend that is 2.5x cheaper than
# nested constructors (0.8 against 1.9 µs a put), and a firing commit builds several per job.
def put(key: bytes, value: bytes, lease: int = 0) -> RequestOp:
    op = rpc.RequestOp()
    request = op.request_put
    request.key, request.value = key, value
    if lease:
        request.lease = lease
    return op


def delete(key: bytes, range_end: bytes = b"") -> RequestOp:
    op = rpc.RequestOp()
    request = op.request_delete_range
    request.key = key
    if range_end:
        request.range_end = range_end
    return op


def get(key: bytes, range_end: bytes = b"", limit: int = 0) -> RequestOp:
    op = rpc.RequestOp()
    request = op.request_range
    request.key = key
    if range_end:
        request.range_end = range_end
    if limit:
        request.limit = limit
    return op


def create_revision_is(key: bytes, revision: int) -> Compare:
    """True while ``key`` is the very key created at ``revision`` (0: the key does not exist)."""
    compare = rpc.Compare()
    compare.key, compare.result, compare.target = key, rpc.Compare.EQUAL, rpc.Compare.CREATE
    compare.create_revision = revision
    return compare


def mod_revision_is(key: bytes, revision: int) -> Compare:
    """True while ``key`` is unchanged since ``revision`` (0: the key does not exist)."""
    compare = rpc.Compare()
    compare.key, compare.result, compare.target = key, rpc.Compare.EQUAL, rpc.Compare.MOD
    compare.mod_revision = revision
    return compare


@dataclass(frozen=True, slots=True)
class Write:
    """A put of ``value`` (a delete when None) waiting to join a transaction: a plain value, so queued
    writes cost no protobuf message until the one they are built into."""

    value: bytes | None
    lease: int = 0


class TxnBuilder:
    """A transaction built in place: ops and compares are added to the request's own repeated fields,
    never built apart and copied in (the copy cost more than building: 8.8 against 15.6 µs for a job's
    two compares and two puts). A firing commit is built this way."""

    __slots__ = ("_compares", "_success", "request")

    def __init__(self) -> None:
        self.request = rpc.TxnRequest()
        self._compares = self.request.compare
        self._success = self.request.success

    def put(self, key: bytes, value: bytes, lease: int = 0) -> None:
        request = self._success.add().request_put
        request.key, request.value = key, value
        if lease:
            request.lease = lease

    def delete(self, key: bytes) -> None:
        self._success.add().request_delete_range.key = key

    def write(self, key: bytes, write: Write) -> None:
        if write.value is None:
            self.delete(key)
        else:
            self.put(key, write.value, write.lease)

    def mod_revision_is(self, key: bytes, revision: int) -> None:
        compare = self._compares.add()
        compare.key, compare.result, compare.target = key, rpc.Compare.EQUAL, rpc.Compare.MOD
        compare.mod_revision = revision

    def create_revision_is(self, key: bytes, revision: int) -> None:
        compare = self._compares.add()
        compare.key, compare.result, compare.target = key, rpc.Compare.EQUAL, rpc.Compare.CREATE
        compare.create_revision = revision


@dataclass(frozen=True, slots=True)
class WatchEvent:
    is_put: bool
    kv: KeyValue


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """One watch response: events in order, and the revision the stream has reached."""

    revision: int
    events: tuple[WatchEvent, ...]
