"""kopf's settings for the reconciler, and where kopf keeps its state on a resource.

kopf's default diff base is a full copy of the last handled spec in an annotation: with a large payload it
passes the 256 KiB limit of all annotations together, every patch fails, and deletion hangs on the
finalizer. Here the diff base is a digest of that spec: kopf still tells a change from none (the only
thing our handlers need; they read the new spec, never the old one), in 64 bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, cast

import kopf

PREFIX = "etcdcron.io"
FINALIZER = f"{PREFIX}/finalizer"


def digest(essence: Any) -> str:
    return hashlib.sha256(json.dumps(essence, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class DigestDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base as a digest: the body's own essence if unchanged, else a stand-in that differs."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        """kopf's essence, without deep-copying the status and system metadata it then throws away (the
        reconciler's own status writes make most watch events: this runs for each of them, twice)."""
        if extra_fields:
            return super().build(body=body, extra_fields=extra_fields)
        meta = body.get("metadata") or {}
        light = {k: v for k, v in body.items() if k not in ("metadata", "status")}
        light["metadata"] = {k: meta[k] for k in ("labels", "annotations") if k in meta}
        return super().build(body=kopf.Body(cast(kopf.RawBody, light)))

    def fetch(self, *, body: Any) -> Any:
        for key in self.make_keys(self.key, body=body):
            stored = body.metadata.annotations.get(key)
            if stored is None:
                continue
            essence = self.build(body=body)
            if digest(essence) == stored.strip():
                return essence
            return {"spec": {f"{PREFIX}/handled-digest": stored.strip()}}  # differs from any real spec
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        for key in self.make_keys(self.key, body=body):
            patch.metadata.annotations[key] = digest(essence)
        self._store_marker(prefix=self.prefix, patch=patch, body=body)


def configure(settings: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = DigestDiffBaseStorage(prefix=PREFIX, key="handled-digest")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 120
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.batching.error_delays = [1, 2, 5, 10]
    # A daemon that exits on its own (TTL deletion) is noticed at once, not after kopf's 60 s default.
    settings.background.cancellation_polling = 1
    settings.background.instant_exit_timeout = 0.5
