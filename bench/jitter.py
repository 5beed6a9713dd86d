"""The top-of-the-second spike, with and without jitter.

For each mode (no jitter, then ``--jitter``), N jobs ``* * * * * *`` are written under a fresh prefix (the
bytes ``JobStore.add`` writes, built from ``StoredJob(...).to_json()``), ``--members`` ``etcdcron member
--sink stdout`` processes start, and after they own every partition, have loaded every job and caught up,
a window of ``--window`` seconds aligned on whole seconds is measured:

- **commits per 100 ms slot**: a watch on ``P/cursors/`` (one put per job per committed tick) counts the
  cursor writes by the 100 ms slot (of wall time, modulo the second) in which the watcher received them;
  the maximum over every slot of the window is the spike etcd sees, and the per-slot profile (mean over
  the window's seconds) shows its shape;
- **deliveries per 100 ms slot**: the same from the ``fired`` stamp of each stdout line (the spike the
  trigger sees);
- **lateness**: ``fired - due`` where ``due = scheduled + offset`` (``offset`` from
  ``etcdcron.job.jitter_offset_ms``, 0 without jitter): how late each firing is for the moment it was
  meant to fire. ``fired - scheduled`` is reported too (the nominal tick: it includes the offset).

Missing (no line by ``--grace`` s after the window) and duplicate ticks are counted. The whole run is bound
by ``--max-seconds`` and always stops etcd and every child.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h
from etcdcron import etcd
from etcdcron.durations import parse_duration
from etcdcron.errors import EtcdUnavailableError
from etcdcron.etcd import EtcdClient
from etcdcron.job import Job, StoredJob, jitter_offset_ms
from etcdcron.keys import Keys, range_end
from etcdcron.localetcd import free_port
from throughput import NotSettled, Reader, sleep_until_ms, wait_caught_up, wait_settled

NAMESPACE = "bench"


def name_of(i: int) -> str:
    return f"tput-{i:07d}"  # the shape Reader parses


async def write_jobs(endpoint: str, prefix: str, n: int, jitter: timedelta | None) -> None:
    keys = Keys(prefix)
    created = datetime.now(UTC).replace(microsecond=0)
    async with EtcdClient([endpoint], timeout=60) as client:
        ops = []
        for i in range(n):
            job = Job(name=name_of(i), schedule="* * * * * *", namespace=NAMESPACE, jitter=jitter)
            value = StoredJob(job, uuid.uuid4().hex, created).to_json()
            ops.append(etcd.put(keys.job(keys.ref(NAMESPACE, job.name)), value))
        for start in range(0, len(ops), 1000):
            await client.txn([], ops[start : start + 1000])


class CommitWatch(threading.Thread):
    """Receive times (ms since the epoch) of every cursor put under a prefix, from a watch."""

    def __init__(self, endpoint: str, prefix: str) -> None:
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.root = Keys(prefix).prefix.encode() + b"/cursors/"
        self.times: list[int] = []
        self.stop = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        asyncio.run(self._watch())

    async def _watch(self) -> None:
        async with EtcdClient([self.endpoint], timeout=10) as client:
            revision = (await client.range(self.root, range_end(self.root), count_only=True)).header.revision
            self.ready.set()
            try:
                async for batch in client.watch(self.root, range_end(self.root), revision + 1):
                    now = time.time_ns() // 1_000_000
                    self.times.extend(now for e in batch.events if e.is_put)
                    if self.stop.is_set():
                        return
            except EtcdUnavailableError:
                if not self.stop.is_set():
                    raise


def slot_profile(times: list[int], w0: int, w1: int) -> tuple[int, list[float]]:
    """(max count in any 100 ms slot of the window, mean count per slot position 0..9 of a second)."""
    slots = Counter((t - w0) // 100 for t in times if w0 <= t < w1)
    n_slots = (w1 - w0) // 100
    peak = max((slots.get(s, 0) for s in range(n_slots)), default=0)
    seconds = max(n_slots // 10, 1)
    shape = [sum(slots.get(s, 0) for s in range(pos, n_slots, 10)) / seconds for pos in range(10)]
    return peak, shape


def run_mode(
    bench_etcd: h.BenchEtcd, n: int, jitter: timedelta | None, args: argparse.Namespace
) -> dict[str, Any]:
    label = f"jitter {jitter.total_seconds():g}s" if jitter else "no jitter"
    prefix = f"/bench-jitter-{'on' if jitter else 'off'}-{os.getpid()}"
    jitter_ms = int(jitter / timedelta(milliseconds=1)) if jitter else 0
    offsets = [jitter_offset_ms(NAMESPACE, name_of(i), jitter_ms) for i in range(n)]
    asyncio.run(write_jobs(bench_etcd.endpoint, prefix, n, jitter))
    h.log(f"{label}: wrote {n} jobs; starting {args.members} members")
    members: list[h.MemberProc] = []
    readers: list[Reader] = []
    watch = CommitWatch(bench_etcd.endpoint, prefix)
    try:
        for i in range(args.members):
            m = h.MemberProc(i, bench_etcd.endpoint, prefix, bench_etcd.tmp, metrics_port=free_port())
            members.append(m)
            r = Reader(m.stdout)
            r.start()
            readers.append(r)
        settle_s, _ = wait_settled(members, n, args.settle_timeout)
        catch_up_s = wait_caught_up(members, n, args.settle_timeout)
        h.log(f"{label}: settled in {settle_s:.1f}s, caught up {catch_up_s:.1f}s later")
        watch.start()
        if not watch.ready.wait(30):
            raise NotSettled("the commit watch did not start")
        w0 = math.ceil(time.time() + args.warmup) * 1000
        w1 = w0 + int(args.window * 1000)
        sleep_until_ms(w0)
        load0 = h.load_average()
        pids = [m.pid for m in members]
        cpu0 = [h.cpu_seconds(p) for p in pids], h.cpu_seconds(bench_etcd.pid)
        m0 = h.scrape_all([m.metrics_port for m in members])
        sleep_until_ms(w1)
        cpu1 = [h.cpu_seconds(p) for p in pids], h.cpu_seconds(bench_etcd.pid)
        m1 = h.scrape_all([m.metrics_port for m in members])
        load1 = h.load_average()
        sleep_until_ms(w1 + int(args.grace * 1000))
    finally:
        watch.stop.set()
        for m in members:
            m.stop()
        for r in readers:
            r.join(10)
    lateness: list[int] = []
    nominal_lateness: list[int] = []
    fired_times: list[int] = []
    seen: set[tuple[int, int]] = set()
    count = 0
    for r in readers:
        for job, sched, fired in zip(r.jobs, r.scheduled, r.fired, strict=True):
            if w0 <= fired < w1:
                fired_times.append(fired)
            if w0 <= sched < w1:
                count += 1
                seen.add((job, sched))
                lateness.append(fired - (sched + offsets[job]))
                nominal_lateness.append(fired - sched)
    lateness.sort()
    nominal_lateness.sort()
    window_s = (w1 - w0) / 1000
    commits = sum(
        (b or {}).get("etcdcron_commits", 0) - (a or {}).get("etcdcron_commits", 0)
        for a, b in zip(m0, m1, strict=True)
    )
    commit_peak, commit_shape = slot_profile(list(watch.times), w0, w1)
    fired_peak, fired_shape = slot_profile(fired_times, w0, w1)
    return {
        "mode": label,
        "jobs": n,
        "window_s": window_s,
        "firings_per_s": round(count / window_s, 1),
        "missing_ticks": n * int(window_s) - len(seen),
        "duplicate_ticks": count - len(seen),
        "commit_txns_per_s": round(commits / window_s, 1),
        "jobs_per_txn": round(count / commits, 1) if commits else None,
        "commits_max_per_100ms": commit_peak,
        "commits_per_100ms_slot": [round(x) for x in commit_shape],
        "fired_max_per_100ms": fired_peak,
        "fired_per_100ms_slot": [round(x) for x in fired_shape],
        "lateness_vs_due_p50_ms": h.percentile(lateness, 0.50),
        "lateness_vs_due_p99_ms": h.percentile(lateness, 0.99),
        "lateness_vs_due_max_ms": lateness[-1] if lateness else None,
        "fired_minus_scheduled_p50_ms": h.percentile(nominal_lateness, 0.50),
        "members_cpu_pct": [round(100 * (b - a) / window_s) for a, b in zip(cpu0[0], cpu1[0], strict=True)],
        "etcd_cpu_pct": round(100 * (cpu1[1] - cpu0[1]) / window_s),
        "load": f"{load0} -> {load1}",
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=3000)
    p.add_argument("--jitter", default="1s", help="the jittered mode's jitter (Go or ISO 8601 duration)")
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--window", type=float, default=10.0, help="measured seconds per mode")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--grace", type=float, default=3.0)
    p.add_argument("--settle-timeout", type=float, default=90.0)
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--max-seconds", type=float, default=600.0, help="hard bound of the whole run")
    args = p.parse_args()
    jitter = parse_duration(args.jitter, "jitter")
    h.install_time_bound(args.max_seconds)
    machine = h.machine()
    bench_etcd = h.BenchEtcd()
    runs: list[dict[str, Any]] = []
    try:
        bench_etcd.start()
        h.log(f"etcd at {bench_etcd.endpoint}; machine {machine}")
        for mode in (None, jitter):
            runs.append(run_mode(bench_etcd, args.jobs, mode, args))
            h.log(json.dumps(runs[-1]))
    except (h.BenchTimeout, KeyboardInterrupt, NotSettled) as e:
        h.log(f"stopped early: {e!r}")
    finally:
        signal.alarm(0)
        bench_etcd.cleanup()
    print(f"\nmachine: {machine}")
    for r in runs:
        print(f"{r['mode']:>12}: " + "; ".join(f"{k} {v}" for k, v in r.items() if k != "mode"))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "runs": runs}, indent=2))
    return 0 if len(runs) == 2 else 1


if __name__ == "__main__":
    sys.exit(main())
