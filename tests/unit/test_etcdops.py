"""The request builders set fields on a fresh message (cheaper than nested constructors): what they build
must be the very message the constructors build, down to the bytes and the oneof chosen."""

from __future__ import annotations

from typing import Any

import pytest
from aetcd import rpc

from etcdcron import etcdops


@pytest.mark.parametrize(
    ("built", "expected", "oneof"),
    [
        (etcdops.put(b"k", b"v"), rpc.RequestOp(request_put=rpc.PutRequest(key=b"k", value=b"v")), "request"),
        (
            etcdops.put(b"k", b"v", 7),
            rpc.RequestOp(request_put=rpc.PutRequest(key=b"k", value=b"v", lease=7)),
            "request",
        ),
        (etcdops.put(b"k", b""), rpc.RequestOp(request_put=rpc.PutRequest(key=b"k")), "request"),
        (
            etcdops.delete(b"k"),
            rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=b"k")),
            "request",
        ),
        (
            etcdops.delete(b"a", b"b"),
            rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=b"a", range_end=b"b")),
            "request",
        ),
        (etcdops.get(b"k"), rpc.RequestOp(request_range=rpc.RangeRequest(key=b"k")), "request"),
        (
            etcdops.get(b"a", b"z", 5),
            rpc.RequestOp(request_range=rpc.RangeRequest(key=b"a", range_end=b"z", limit=5)),
            "request",
        ),
        (
            etcdops.mod_revision_is(b"k", 0),  # 0: the key must not exist; the oneof is still chosen
            rpc.Compare(key=b"k", result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, mod_revision=0),
            "target_union",
        ),
        (
            etcdops.mod_revision_is(b"k", 12),
            rpc.Compare(key=b"k", result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, mod_revision=12),
            "target_union",
        ),
        (
            etcdops.create_revision_is(b"k", 0),
            rpc.Compare(key=b"k", result=rpc.Compare.EQUAL, target=rpc.Compare.CREATE, create_revision=0),
            "target_union",
        ),
    ],
)
def test_builders_build_what_the_constructors_build(built: Any, expected: Any, oneof: str) -> None:
    assert built == expected
    assert built.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)
    assert built.WhichOneof(oneof) == expected.WhichOneof(oneof)


def test_a_transaction_built_in_place_is_the_one_the_builders_describe() -> None:
    txn = etcdops.TxnBuilder()
    txn.create_revision_is(b"/p/partitions/0001", 5)
    txn.mod_revision_is(b"k", 0)
    txn.put(b"k", b"v", 3)
    txn.delete(b"d")
    txn.write(b"w", etcdops.Write(b"x"))
    txn.write(b"gone", etcdops.Write(None))
    assert txn.request == rpc.TxnRequest(
        compare=[etcdops.create_revision_is(b"/p/partitions/0001", 5), etcdops.mod_revision_is(b"k", 0)],
        success=[
            etcdops.put(b"k", b"v", 3),
            etcdops.delete(b"d"),
            etcdops.put(b"w", b"x"),
            etcdops.delete(b"gone"),
        ],
    )
