"""Prometheus metrics of a pool member (served by ``etcdcron member --metrics-port`` and the operator)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

FIRINGS = Counter("etcdcron_firings_total", "Ticks fired (committed and handed to the trigger)")
MISSED = Counter("etcdcron_missed_ticks_total", "Ticks given up by the catch-up policy")
LATENESS = Histogram(
    "etcdcron_firing_lateness_seconds",
    "Fired minus scheduled time of each firing",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
COMMITS = Counter("etcdcron_commits_total", "Firing commit transactions sent to etcd")
COMMIT_CONFLICTS = Counter(
    "etcdcron_commit_conflicts_total", "Firing commits refused by their fence or cursor compare"
)
PARTITIONS_OWNED = Gauge("etcdcron_partitions_owned", "Partitions this member owns")
JOBS_LOADED = Gauge("etcdcron_jobs_loaded", "Jobs in the partitions this member owns")
DISPATCH_ERRORS = Counter("etcdcron_dispatch_errors_total", "Firings whose trigger failed after all retries")
ETCD_ERRORS = Counter("etcdcron_etcd_errors_total", "etcd calls that failed")
BAD_ENTRIES = Gauge(
    "etcdcron_bad_entries", "Entries in etcd this member skips because they cannot be decoded (never deleted)"
)
SETTLEMENTS = Counter(
    "etcdcron_settlements_total", "Acknowledgements, retry states and history records written to etcd"
)
SKIPPED = Counter(
    "etcdcron_firings_skipped_total", "Ticks not delivered: an earlier firing of the job was (overlap skip)"
)
PARKED = Gauge("etcdcron_parked_firings", "Firings parked as undeliverable, waiting for a consumer")
