"""One exception family for the whole package; the CLI maps it to exit codes (2: bad input, 1: etcd)."""

from __future__ import annotations


class EtcdCronError(Exception):
    """Base of every error this package raises on purpose."""


class ValidationError(EtcdCronError, ValueError):
    """Bad input: carries the offending field so every interface can name it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class EtcdUnavailableError(EtcdCronError):
    """etcd could not be reached or did not answer in time."""


class JobNotFoundError(EtcdCronError, LookupError):
    """No job of that name in that namespace."""

    def __init__(self, namespace: str, name: str) -> None:
        super().__init__(f"job {namespace}/{name} not found")
        self.namespace = namespace
        self.name = name


class JobExistsError(EtcdCronError):
    """``add(..., if_not_exists=True)`` found a job of that name already stored (nothing was written)."""

    def __init__(self, namespace: str, name: str) -> None:
        super().__init__(f"job {namespace}/{name} already exists")
        self.namespace = namespace
        self.name = name
