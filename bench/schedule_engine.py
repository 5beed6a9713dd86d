"""Schedule engine micro-benchmark: the per-job schedule work of ``bench/scale.py``'s 1M-job load, in process.

Usage (from the repository root; PYTHONPATH picks the engine to measure)::

    PYTHONPATH=operator .venv/bin/python bench/schedule_engine.py [--jobs 1000000] [--repeat 3]

``load``: for N jobs of ``bench/scale.py``'s daily mix (``M H * * *`` over 60 minutes x 24 hours x 8 zones,
11,520 distinct schedules, one creation instant), what a member does per job when it loads it:
``parse_schedule`` twice (validation, then ``StoredJob.schedule()``) and ``next_after(created - 1 ms)``.
Caches start cold, so the 11,520 first ticks are computed and the rest come from the tick windows.
``cold``: ``next_after`` with nothing remembered (a fresh copy of the schedule per call), per expression.
Figures are process CPU time (not wall time: the machine is shared), the best of ``--repeat`` runs; compare
engines in one session, alternating them.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from datetime import UTC, datetime, timedelta

from etcdcron.schedule import parse_schedule

TIME_ZONES = (  # bench/_harness.py TIME_ZONES
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Asia/Tokyo",
    "Australia/Sydney",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Europe/London",
)
CREATED = datetime(2026, 11, 28, 4, 42, 17, tzinfo=UTC)
COLD = [
    ("30 2 * * *", "America/New_York"),
    ("17 9 * * *", "Europe/Paris"),
    ("0 9 * * MON-FRI", "UTC"),
    ("0 0 1 * *", "Australia/Sydney"),
    ("*/5 * * * *", "America/New_York"),
    ("0 * * * *", "Australia/Sydney"),
    ("*/2 * * * * *", "UTC"),
    ("*/2 * * * * *", "America/New_York"),
]


def load(n: int) -> float:
    """CPU seconds for the per-job schedule work of loading ``n`` jobs, caches cold."""
    for cache in ("_parse", "_parse_cron"):  # the engine before issue 8 had only the second
        if cache in parse_schedule.__globals__:
            parse_schedule.__globals__[cache].cache_clear()
    specs = []
    for i in range(n):
        c = i % (60 * 24 * len(TIME_ZONES))
        specs.append((f"{c % 60} {(c // 60) % 24} * * *", TIME_ZONES[(c // 1440) % len(TIME_ZONES)]))
    after = CREATED - timedelta(milliseconds=1)
    t0 = time.process_time()
    for expr, zone in specs:
        parse_schedule(expr, zone)
        parse_schedule(expr, zone, anchor=CREATED).next_after(after)
    return time.process_time() - t0


def cold(expr: str, zone: str, calls: int) -> float:
    """µs per ``next_after`` computed from nothing remembered, over instants spread across a year."""
    s = parse_schedule(expr, zone)
    queries = [CREATED + timedelta(seconds=7919 * k + 0.25) for k in range(calls)]
    copies = [dataclasses.replace(s) for _ in queries]
    t0 = time.process_time()
    for c, q in zip(copies, queries, strict=True):
        c.next_after(q)
    return (time.process_time() - t0) / calls * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--calls", type=int, default=4000, help="next_after calls per cold expression")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    best = min(load(args.jobs) for _ in range(args.repeat))
    print(f"load {args.jobs:,} jobs: {best:.2f} s ({best / args.jobs * 1e6:.2f} µs/job)")
    for expr, zone in COLD:
        us = min(cold(expr, zone, args.calls) for _ in range(args.repeat))
        print(f"cold next_after {expr!r:20} {zone:18} {us:6.1f} µs")


if __name__ == "__main__":
    main()
