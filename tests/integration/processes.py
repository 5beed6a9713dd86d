"""Real member processes (``etcdcron member --sink stdout``) whose firings are collected line by line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class MemberProcess:
    member_id: str
    endpoint: str
    prefix: str
    lease_ttl: int = 2
    command_prefix: tuple[str, ...] = ()  # e.g. ("ip", "netns", "exec", name): run it inside a namespace
    extra_args: tuple[str, ...] = ()  # more flags of ``etcdcron member``
    firings: list[dict[str, Any]] = field(default_factory=list)
    stderr_lines: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None

    def start(self) -> MemberProcess:
        args = [
            *self.command_prefix,
            sys.executable,
            "-m",
            "etcdcron.cli",
            "-v",
            "member",
            "--endpoints",
            self.endpoint,
            "--prefix",
            self.prefix,
            "--member-id",
            self.member_id,
            "--lease-ttl",
            str(self.lease_ttl),
            "--sink",
            "stdout",
            *self.extra_args,
        ]
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        return self

    def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.firings.append(json.loads(line))

    def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_lines.append(line)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.process is not None
        self.process.wait()

    def terminate(self, timeout: float = 15) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()

    def log(self, limit: int | None = 50) -> str:
        """The member's stderr: its last ``limit`` lines (None: all of it)."""
        return "".join(self.stderr_lines[-limit:] if limit else self.stderr_lines)
