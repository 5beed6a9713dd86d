"""Log lines a person can use: kopf's lines about an object name it, as ``[namespace/name]``, and its
"succeeded" line after each call of a watch-event handler (one per event of every resource: every status
write) only shows at DEBUG."""

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


EVENT_HANDLERS = ("requests", "tenant-cleanup")
"""Ids of the reconciler's watch-event handlers (handlers.py)."""


class QuietEventHandlers(logging.Filter):
    """Drop kopf's "Handler 'x' succeeded." of watch-event handlers unless the level is DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "kopf.objects" or record.levelno != logging.INFO:
            return True
        message = str(record.msg)
        if not any(f"Handler '{h}' succeeded." in message for h in EVENT_HANDLERS):
            return True
        return logging.getLogger().getEffectiveLevel() <= logging.DEBUG


def install() -> None:
    """On every root handler, so whatever the format, the object is named."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ObjectPrefix) for f in handler.filters):
            handler.addFilter(ObjectPrefix())
        if not any(isinstance(f, QuietEventHandlers) for f in handler.filters):
            handler.addFilter(QuietEventHandlers())
