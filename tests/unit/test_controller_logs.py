"""kopf's lines about an object name it."""

from __future__ import annotations

import logging

from etcdcron.controller.logs import ObjectPrefix, QuietEventHandlers


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


def test_event_handlers_succeeding_show_only_at_debug() -> None:
    quiet = QuietEventHandlers()
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.INFO)
        requests = logging.LogRecord(
            "kopf.objects", logging.INFO, __file__, 1, "[ns/x] Handler 'requests' succeeded.", None, None
        )
        assert not quiet.filter(requests)
        assert quiet.filter(record())  # a change handler's line stays
        failed = logging.LogRecord(
            "kopf.objects", logging.ERROR, __file__, 1, "Handler 'requests' failed", None, None
        )
        assert quiet.filter(failed)
        root.setLevel(logging.DEBUG)
        assert quiet.filter(requests)
    finally:
        root.setLevel(level)
