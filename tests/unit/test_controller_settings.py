"""kopf's diff base as a digest: the lighter essence is exactly kopf's own, and a spec change shows."""

from __future__ import annotations

from typing import Any

import kopf

from etcdcron.controller.settings import PREFIX, DigestDiffBaseStorage, digest


def body(**spec: Any) -> kopf.Body:
    return kopf.Body(
        {
            "apiVersion": "etcdcron.io/v1alpha1",
            "kind": "DistributedCronJob",
            "metadata": {
                "name": "r",
                "namespace": "ns",
                "uid": "u",
                "resourceVersion": "7",
                "generation": 2,
                "labels": {"app": "x"},
                "annotations": {"note": "kept", f"{PREFIX}/handled-digest": "abc", "other.io/x": "y"},
                "managedFields": [{"manager": "kubectl"}],
            },
            "spec": {"schedule": "*/10 * * * * *", **spec},
            "status": {"runCount": 3, "conditions": [{"type": "Ready", "status": "True"}]},
        }
    )


def test_the_essence_is_kopfs_own() -> None:
    ours = DigestDiffBaseStorage(prefix=PREFIX, key="handled-digest")
    theirs = kopf.AnnotationsDiffBaseStorage(prefix=PREFIX, key="handled-digest")
    assert ours.build(body=body(payload={"a": [1, 2]})) == theirs.build(body=body(payload={"a": [1, 2]}))


def test_fetch_returns_the_essence_while_the_spec_is_unchanged_and_differs_after_a_change() -> None:
    storage = DigestDiffBaseStorage(prefix=PREFIX, key="handled-digest")
    handled = body()
    stored = digest(storage.build(body=handled))
    seen = dict(handled)
    seen["metadata"] = {
        **handled["metadata"],
        "annotations": {**handled["metadata"]["annotations"], f"{PREFIX}/handled-digest": stored},
    }
    same = kopf.Body(seen)
    assert storage.fetch(body=same) == storage.build(body=same)
    changed = kopf.Body({**seen, "spec": {"schedule": "@daily"}})
    assert storage.fetch(body=changed) != storage.build(body=changed)
