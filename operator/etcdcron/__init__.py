"""etcd-cron: a distributed, fault-tolerant cron over etcd."""

from etcdcron.cron import Cron
from etcdcron.errors import (
    EtcdCronError,
    EtcdUnavailableError,
    JobExistsError,
    JobNotFoundError,
    ValidationError,
)
from etcdcron.firing import Firing
from etcdcron.job import CatchUp, Job, RetryPolicy, StoredJob

__all__ = [
    "CatchUp",
    "Cron",
    "EtcdCronError",
    "EtcdUnavailableError",
    "Firing",
    "Job",
    "JobExistsError",
    "JobNotFoundError",
    "RetryPolicy",
    "StoredJob",
    "ValidationError",
]
