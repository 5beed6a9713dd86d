"""The stdout sink: one JSON object per firing, one line each, flushed (the CLI's ``--sink stdout``)."""

from __future__ import annotations

import base64
import json
import sys
from typing import Any, TextIO

from etcdcron.firing import Firing
from etcdcron.job import format_time


def firing_record(firing: Firing) -> dict[str, Any]:
    job = firing.job.job
    record: dict[str, Any] = {
        "namespace": job.namespace,
        "name": job.name,
        "type": job.type,
        "scheduled": format_time(firing.scheduled),
        "fired": format_time(firing.fired),
        "run": firing.run,
        "member": firing.member,
    }
    try:
        record["payload"] = firing.payload.decode()
    except UnicodeDecodeError:
        record["payload"] = base64.b64encode(firing.payload).decode()
        record["payloadEncoding"] = "base64"
    record["key"] = firing.key
    if firing.attempt > 1:
        record["attempt"] = firing.attempt
    if firing.redelivery:
        record["redelivery"] = True
    if firing.kind != "scheduled":
        record["kind"], record["token"] = firing.kind, firing.token
    return record


class StdoutSink:
    """A trigger that prints each firing as a JSON line and flushes, so a reader sees it at once."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    async def __call__(self, firing: Firing) -> None:
        self.stream.write(json.dumps(firing_record(firing), separators=(",", ":")) + "\n")
        self.stream.flush()
