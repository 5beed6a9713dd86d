"""Start-up at scale: time for a 3-member pool to own every partition and schedule 1,000,000 stored jobs.

Usage (from the repository root)::

    .venv/bin/python bench/scale.py --jobs 100000                 # try the small size first
    .venv/bin/python bench/scale.py --jobs 100000,1000000 --json /tmp/scale.json
    .venv/bin/python bench/scale.py --jobs 1000000 --profile /tmp/prof   # py-spy on the members while loading

For each N in ``--jobs`` (a fresh etcd each, temp dir, removed afterwards):

1. Writes N job specs with daily schedules ``M H * * *`` spread over minutes, hours and 8 time zones
   (``--distinct`` (schedule, zone) pairs, 11,520 at most) across 10 tenants, straight into etcd in
   transactions of ``--txn-ops`` puts from ``--write-workers`` processes (the bytes ``JobStore.add`` writes,
   no cursor, no TTL). Reports the write time and etcd's db size.
2. Starts ``--members`` (3) ``etcdcron member --metrics-port`` processes at once and polls their metrics
   and etcd's partition keys: the time from spawning them to "every partition owned and the sum of
   ``etcdcron_jobs_loaded`` == N" (all jobs scheduled), how many partition acquisitions that took (256 if
   no partition moved during start-up), how often a member lost its lease (``--lease-ttl``, default 5 s,
   as the CLI), and each member's peak RSS (VmHWM) after ``--hold`` more seconds. ``--logs DIR`` keeps the
   members' logs (``--verbose``: at INFO, with every partition handover).

Also per member: **bytes per job**, the growth of its RSS while loading divided by the jobs it loaded (from
its first sample with a job loaded to the settled one: the interpreter, gRPC and most of the schedule caches
are not counted), and the **spread**: the busiest member's jobs over the mean.

Targets (issue 11): all N = 1,000,000 jobs scheduled within 30 s; peak RSS <= 300 MB on the busiest member.
Each size is bounded by ``--settle-timeout`` and the whole run by ``--max-seconds``; etcd and the members
are always stopped and their temp dirs removed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h
from etcdcron.etcd import EtcdClient
from etcdcron.keys import DEFAULT_PARTITIONS, Keys
from etcdcron.localetcd import free_port

PREFIX = "/bench-scale"
TARGET_SETTLE_S = 30
TARGET_RSS_MB = 300


async def watch_startup(
    etcd: h.BenchEtcd, members: list[h.MemberProc], n: int, timeout: float, hold: float, t0: float
) -> dict[str, Any]:
    """Poll metrics, partition owners and /proc until settled (plus ``hold`` seconds) or ``timeout``;
    times are seconds since ``t0`` (when the members were spawned)."""
    keys = Keys(PREFIX)
    owners: dict[int, str] = {}
    acquisitions = 0
    timeline: list[dict[str, Any]] = []
    settled_at = None
    first_owned_at = None
    last_line = -1.0
    async with EtcdClient([etcd.endpoint], timeout=10) as client:
        while True:
            now = time.monotonic() - t0
            for m in members:
                if m.proc.poll() is not None:
                    raise RuntimeError(f"{m.member_id} exited with {m.proc.returncode}:\n{m.log_tail()}")
            current = await h.partition_owners(client, keys)
            for p, who in current.items():
                if owners.get(p) != who:
                    acquisitions += 1
            owners = current
            if current and first_owned_at is None:
                first_owned_at = now
            samples = await asyncio.to_thread(h.scrape_all, [m.metrics_port for m in members])
            loaded = [int(s.get("etcdcron_jobs_loaded", 0)) if s else -1 for s in samples]
            owned = [int(s.get("etcdcron_partitions_owned", 0)) if s else -1 for s in samples]
            rss = [h.memory_kb(m.pid).get("VmRSS", 0) // 1024 for m in members]
            if now - last_line >= 2.0:
                last_line = now
                timeline.append({"t": round(now, 1), "loaded": loaded, "owned": owned, "rss_mb": rss})
                h.log(f"t={now:5.1f}s loaded={loaded} owned={owned} rss_mb={rss} load={h.load_average()}")
            if settled_at is None and sum(owned) == DEFAULT_PARTITIONS and sum(loaded) == n:
                settled_at = now
                timeline.append({"t": round(now, 1), "loaded": loaded, "owned": owned, "rss_mb": rss})
                h.log(f"settled at t={now:.2f}s")
            if settled_at is not None and now >= settled_at + hold:
                break
            if now > timeout:
                break
            await asyncio.sleep(0.25)
    return {
        "bytes_per_job": bytes_per_job(timeline),
        "spread": round(max(loaded) / (sum(loaded) / len(loaded)), 3) if sum(loaded) > 0 else 0.0,
        "settle_s": None if settled_at is None else round(settled_at, 2),
        "first_partition_owned_s": None if first_owned_at is None else round(first_owned_at, 2),
        "partition_acquisitions": acquisitions,
        "final_loaded": loaded,
        "final_owned": owned,
        "timeline": timeline,
    }


def bytes_per_job(timeline: list[dict[str, Any]]) -> list[int]:
    """Per member: RSS growth over jobs loaded, from its first sample with a job loaded to the last one."""
    result = []
    for i in range(len(timeline[-1]["loaded"]) if timeline else 0):
        first = next((t for t in timeline if t["loaded"][i] > 0), None)
        last = timeline[-1]
        jobs = last["loaded"][i] - first["loaded"][i] if first else 0
        result.append(round((last["rss_mb"][i] - first["rss_mb"][i]) * 2**20 / jobs) if first and jobs else 0)
    return result


def run_n(n: int, args: argparse.Namespace) -> dict[str, Any]:
    etcd = h.BenchEtcd()
    members: list[h.MemberProc] = []
    profiler = None
    try:
        etcd.start()
        h.log(f"N={n}: etcd at {etcd.endpoint}; writing jobs")
        etcd_cpu0 = h.cpu_seconds(etcd.pid)
        write_s, value_bytes = h.bulk_write(
            etcd.endpoint,
            PREFIX,
            h.JobShape("daily", args.distinct),
            n,
            workers=args.write_workers,
            txn_ops=args.txn_ops,
            inflight=args.inflight,
        )
        write_etcd_cpu = h.cpu_seconds(etcd.pid) - etcd_cpu0
        stored = asyncio.run(h.count_keys(etcd.endpoint, f"{PREFIX}/jobs/".encode()))
        if stored != n:
            raise RuntimeError(f"wrote {n} jobs but etcd holds {stored}")
        db_size, db_in_use = etcd.db_size()
        h.log(f"N={n}: wrote in {write_s:.1f}s ({n / write_s:.0f} jobs/s); db {db_size / 2**20:.0f} MiB")
        load_before = h.load_average()
        cpu0 = h.cpu_seconds(etcd.pid)
        t_spawn = time.monotonic()
        for i in range(args.members):
            members.append(
                h.MemberProc(
                    i,
                    etcd.endpoint,
                    PREFIX,
                    etcd.tmp,
                    metrics_port=free_port(),
                    stdout=False,
                    verbose=args.verbose,
                )
            )
        if args.profile:
            time.sleep(0.3)  # let the interpreters come up before py-spy attaches
            profiler = h.Profiler(Path(args.profile) / f"scale-{n}")
            for m in members:
                profiler.attach(m.member_id, m.pid, args.settle_timeout)
        watched = asyncio.run(watch_startup(etcd, members, n, args.settle_timeout, args.hold, t_spawn))
        profiles = profiler.finish() if profiler else {}
        profiler = None
        peaks = [h.memory_kb(m.pid) for m in members]
        member_cpu = [round(h.cpu_seconds(m.pid), 1) for m in members]
        etcd_mem = h.memory_kb(etcd.pid)
        lost = sum(m.log_path.read_text(errors="replace").count("lost its lease") for m in members)
        result: dict[str, Any] = {
            "jobs": n,
            "lease_ttl": args.lease_ttl,
            "leases_lost": lost,
            "distinct_schedules": min(args.distinct, n),
            "write_s": round(write_s, 1),
            "write_jobs_per_s": round(n / write_s),
            "write_value_mib": round(value_bytes / 2**20, 1),
            "write_etcd_cpu_s": round(write_etcd_cpu, 1),
            "db_size_mib": round(db_size / 2**20),
            "db_in_use_mib": round(db_in_use / 2**20),
            **watched,
            "member_peak_rss_mb": [round(p.get("VmHWM", 0) / 1024) for p in peaks],
            "member_rss_mb": [round(p.get("VmRSS", 0) / 1024) for p in peaks],
            "member_cpu_s": member_cpu,
            "etcd_cpu_s_during_startup": round(h.cpu_seconds(etcd.pid) - cpu0, 1),
            "etcd_peak_rss_mb": round(etcd_mem.get("VmHWM", 0) / 1024),
            "load_before": load_before,
            "load_after": h.load_average(),
        }
        if profiles:
            result["profile"] = h.summarise_collapsed(list(profiles.values()))
            result["profile_files"] = [str(p) for p in profiles.values()]
        return result
    finally:
        if profiler is not None:
            profiler.finish()
        for m in members:
            m.stop()
            if args.logs:
                Path(args.logs).mkdir(parents=True, exist_ok=True)
                shutil.copy(m.log_path, Path(args.logs) / f"scale-{n}-{m.member_id}.log")
        etcd.cleanup()


def report(machine: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    print(f"\nmachine: {machine}")
    print(
        f"{'jobs':>8} {'ttl':>4} {'write s':>8} {'jobs/s':>7} {'db MiB':>7} {'settle s':>8} {'acq':>5} "
        f"{'lost':>4} {'peak RSS MB':>15} {'member CPU s':>17} {'etcd CPU s':>10}  load"
    )
    for r in runs:
        settle = r["settle_s"] if r["settle_s"] is not None else f">{r['timeline'][-1]['t']:.0f}"
        print(
            f"{r['jobs']:>8} {r['lease_ttl']:>4} {r['write_s']:>8} {r['write_jobs_per_s']:>7} "
            f"{r['db_size_mib']:>7} {settle:>8} {r['partition_acquisitions']:>5} {r['leases_lost']:>4} "
            f"{'/'.join(map(str, r['member_peak_rss_mb'])):>15} {'/'.join(map(str, r['member_cpu_s'])):>17} "
            f"{r['etcd_cpu_s_during_startup']:>10}  {r['load_before']} -> {r['load_after']}"
        )
    print("\ntargets (1,000,000 jobs):")
    for r in runs:
        settle = r["settle_s"]
        rss = max(r["member_peak_rss_mb"])
        scaled = "" if r["jobs"] == 1_000_000 else " (at this N; the target is for 1,000,000)"
        shown = f"{settle}s" if settle is not None else "never (timed out)"
        ok = settle is not None and settle <= TARGET_SETTLE_S
        verdict = "MET" if ok else "NOT MET"
        print(f"  N={r['jobs']}: all scheduled in {shown} (<= {TARGET_SETTLE_S} s: {verdict}){scaled}")
        print(
            f"  N={r['jobs']}: peak RSS per member {rss} MB (<= {TARGET_RSS_MB} MB: "
            f"{'MET' if rss <= TARGET_RSS_MB else 'NOT MET'}){scaled}"
        )
        print(
            f"  N={r['jobs']}: {'/'.join(map(str, r['bytes_per_job']))} bytes per job loaded; "
            f"busiest member {r['spread']:.3f}x the mean"
        )
        if r["leases_lost"]:
            print(f"  N={r['jobs']}: members lost their lease {r['leases_lost']} time(s) while loading")
        if "profile" in r:
            h.print_profile(r["profile"], f"members loading N={r['jobs']} ({', '.join(r['profile_files'])})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", default="100000", help="comma-separated job counts, e.g. 100000,1000000")
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--lease-ttl", type=int, default=5, help="the members' --lease-ttl (seconds)")
    p.add_argument(
        "--distinct",
        type=int,
        default=60 * 24 * len(h.TIME_ZONES),
        help="distinct (schedule, time zone) pairs (default and max 11520)",
    )
    p.add_argument("--write-workers", type=int, default=2)
    p.add_argument("--txn-ops", type=int, default=5000, help="puts per write transaction (<= 10000)")
    p.add_argument("--inflight", type=int, default=2, help="write transactions in flight per worker")
    p.add_argument("--settle-timeout", type=float, default=300.0, help="give up on one size after this long")
    p.add_argument("--hold", type=float, default=5.0, help="seconds to keep running after settled (RSS)")
    p.add_argument("--profile", help="directory: py-spy record the members from start to settled")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--logs", help="directory: keep the members' stderr logs here")
    p.add_argument("--verbose", action="store_true", help="members log at INFO (partition moves)")
    p.add_argument("--max-seconds", type=float, default=1800.0, help="hard bound of the whole run")
    args = p.parse_args()
    if args.profile and not h.Profiler.available():
        p.error(f"py-spy not found at {h.PY_SPY} (pip install py-spy, or set PY_SPY)")
    h.install_time_bound(args.max_seconds)
    machine = h.machine()
    h.log(f"machine {machine}")
    runs: list[dict[str, Any]] = []
    try:
        for n in [int(x) for x in args.jobs.split(",") if x]:
            runs.append(run_n(n, args))
            h.log(f"N={n}: { ({k: v for k, v in runs[-1].items() if k not in ('profile', 'timeline')}) }")
    except (h.BenchTimeout, KeyboardInterrupt) as e:
        h.log(f"stopped early: {e!r}")
    finally:
        signal.alarm(0)
    if runs:
        report(machine, runs)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "runs": runs}, indent=2))
    return 0 if runs else 1


if __name__ == "__main__":
    sys.exit(main())
