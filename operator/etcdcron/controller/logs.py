"""Log lines a person can use: kopf's lines about an object name it, as ``[namespace/name]``."""

from __future__ import annotations

import logging


class ObjectPrefix(logging.Filter):
    """Prefix kopf's per-object records (they carry ``k8s_ref``) with the object they are about."""

    def filter(self, record: logging.LogRecord) -> bool:
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict) and not getattr(record, "etcdcron_prefixed", False):
            where = "/".join(str(ref[k]) for k in ("namespace", "name") if ref.get(k))
            if where:
                record.msg = f"[{where}] {record.msg}"
                record.etcdcron_prefixed = True
        return True


def install() -> None:
    """On every root handler, so whatever the format, the object is named."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ObjectPrefix) for f in handler.filters):
            handler.addFilter(ObjectPrefix())
