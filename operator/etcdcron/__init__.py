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
from etcdcron.job import CatchUp, Job, StoredJob
from etcdcron.policy import Delivery, FailurePolicy, Overlap, RetryPolicy, TriggerResult

__all__ = [
    "CatchUp",
    "Cron",
    "Delivery",
    "EtcdCronError",
    "EtcdUnavailableError",
    "FailurePolicy",
    "Firing",
    "Job",
    "JobExistsError",
    "JobNotFoundError",
    "Overlap",
    "RetryPolicy",
    "StoredJob",
    "TriggerResult",
    "ValidationError",
]
