"""kopf's lines about an object name it."""

from __future__ import annotations

import logging

from etcdcron.controller.logs import ObjectPrefix


def record(**extra: object) -> logging.LogRecord:
    rec = logging.LogRecord(
        "kopf.objects", logging.INFO, __file__, 1, "Handler 'mirror' succeeded.", None, None
    )
    rec.__dict__.update(extra)
    return rec


def test_an_object_record_is_prefixed_once() -> None:
    rec = record(k8s_ref={"namespace": "team-a", "name": "pulse", "uid": "u"})
    ObjectPrefix().filter(rec)
    ObjectPrefix().filter(rec)
    assert rec.getMessage() == "[team-a/pulse] Handler 'mirror' succeeded."


def test_other_records_are_left_alone() -> None:
    rec = record()
    ObjectPrefix().filter(rec)
    assert rec.getMessage() == "Handler 'mirror' succeeded."
