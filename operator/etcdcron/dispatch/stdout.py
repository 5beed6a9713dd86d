"""The stdout sink: one JSON object per firing, one line each, flushed (the CLI's ``--sink stdout``)."""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import stat
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from etcdcron.firing import SCHEDULED, Firing
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


def _widen_pipe(stream: TextIO, size: int) -> None:
    """A pipe holds 64 KiB by default: a tick of a few hundred lines fills it, and a write then waits
    for the reader with the whole member stopped. Ask for more where the OS allows (Linux: up to
    /proc/sys/fs/pipe-max-size); a file or terminal is left as it is."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    try:
        fd = stream.fileno()
        if set_size is None or not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return
        fcntl.fcntl(fd, set_size, size)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # not a real pipe, or not allowed (an unprivileged limit): the default size works, slower


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


class LineEncoder:
    """``firing_record`` as one JSON line, byte for byte, in a few microseconds: a tick's firings are
    written one after the other, and what a job's lines share (names, payload, key) and what a tick's
    share (the second of their times) is encoded once. Unusual firings (a retry, a run-now request, a
    re-delivery) take the plain path."""

    CACHED = 100_000

    def __init__(self) -> None:
        self._jobs: dict[str, tuple[str, str]] = {}  # job id -> (fields before the times, key prefix)
        self._members: dict[str, str] = {}
        self._seconds: dict[int, str] = {}

    def line(self, firing: Firing) -> str:
        if (
            firing.attempt > 1
            or firing.redelivery
            or firing.kind != SCHEDULED
            or firing.payload_override is not None
            or firing.scheduled.tzinfo is not UTC
            or firing.fired.tzinfo is not UTC
        ):
            return _json(firing_record(firing)) + "\n"
        stored = firing.job
        parts = self._jobs.get(stored.id)
        if parts is None:
            parts = self._job_parts(firing)
        head, payload_and_key = parts
        member = self._members.get(firing.member)
        if member is None:
            member = self._members[firing.member] = _json(firing.member)
        scheduled = firing.scheduled
        tick_ms = int(scheduled.timestamp()) * 1000 + scheduled.microsecond // 1000
        return (
            f'{head}"scheduled":"{self._time(scheduled)}","fired":"{self._time(firing.fired)}",'
            f'"run":{firing.run},"member":{member},{payload_and_key}{tick_ms}"}}\n'
        )

    def _job_parts(self, firing: Firing) -> tuple[str, str]:
        if len(self._jobs) >= self.CACHED:
            self._jobs.clear()
        record = firing_record(firing)
        head = "{" + "".join(f"{_json(k)}:{_json(record[k])}," for k in ("namespace", "name", "type"))
        fields = [k for k in ("payload", "payloadEncoding") if k in record]
        payload = "".join(f"{_json(k)}:{_json(record[k])}," for k in fields)
        key = firing.key
        key_prefix = _json(key[: key.rindex("/") + 1])[:-1]  # the key without its tick and closing quote
        parts = self._jobs[firing.job.id] = (head, f'{payload}"key":{key_prefix}')
        return parts

    def _time(self, t: datetime) -> str:
        """``format_time`` of a UTC time, its second's text made once."""
        second = int(t.timestamp())
        text = self._seconds.get(second)
        if text is None:
            if len(self._seconds) >= 64:
                self._seconds.clear()
            text = self._seconds[second] = format_time(t.replace(microsecond=0))[:-5]
        return f"{text}.{t.microsecond // 1000:03d}Z"


class StdoutSink:
    """A trigger that prints each firing as a JSON line, flushed after each tick's lines (one write for a
    few hundred lines instead of one each: under load a syscall can cost tens of microseconds)."""

    PIPE_BYTES = 1 << 20

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.encoder = LineEncoder()
        _widen_pipe(self.stream, self.PIPE_BYTES)

    async def __call__(self, firing: Firing) -> None:
        self.stream.write(self.encoder.line(firing))  # flushed by ``flush``, once per tick's group

    def flush(self) -> None:
        """The pool calls this after a group of calls and before acknowledging any of them: a firing
        counts as delivered once its line is written and flushed."""
        self.stream.flush()
