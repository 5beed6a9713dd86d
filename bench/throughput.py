"""Firing throughput and lateness of a 3-member pool, against the raw put rate of the same etcd.

Usage (from the repository root)::

    .venv/bin/python bench/throughput.py                      # N = 200,500,1000,2000,4000
    .venv/bin/python bench/throughput.py --jobs 1000,8000 --window 15 --json /tmp/tput.json
    .venv/bin/python bench/throughput.py --jobs 4000 --profile /tmp/prof   # py-spy on the members

One run:

1. Starts a fresh single-node etcd (LocalEtcd, temp dir, removed afterwards).
2. Baseline: ``--put-procs`` processes (3, one per member) each run ``--put-concurrency`` (32) concurrent
   loops of ``EtcdClient.put`` (a ~110-byte value, like a cursor) for ``--put-seconds`` (5); total puts/s.
3. For each N in ``--jobs``: writes N jobs ``* * * * * *`` (UTC) under a prefix of their own, straight into
   etcd in large transactions (the bytes ``JobStore.add`` writes, no cursor, no TTL); starts ``--members`` (3)
   ``etcdcron member --sink stdout`` processes; waits until they own all partitions and have loaded all N
   jobs, and until they have caught up on the ticks due while they loaded (a second's firings ~N, mean
   lateness < 0.5 s); lets them run ``--warmup`` s; then measures a ``--window`` (15 s) aligned on whole
   seconds: firings whose scheduled time is in the window / window, lateness (fired - scheduled, as the
   member prints them, ms resolution) p50/p99/max, ticks missing (not fired by the end of the grace period)
   or fired twice (there must be none), commits/s, and CPU of the members, of etcd and of this harness
   (from /proc). Ticks are collected for ``--grace`` seconds past the window before the members are
   stopped (SIGTERM).

Members' stdout is parsed in one reader thread per member by slicing the two timestamps and the job
number out of each line (the first line of each member is cross-checked with ``json.loads``); the harness's
own CPU is reported so one can see it is not the bottleneck.

Targets (issue 11): sustained firings/s (every tick once, p99 <= 1 s) >= 2.0x the raw put rate; lateness
at 1,000 firings/s p50 <= 10 ms and p99 <= 50 ms, at 5,000 firings/s p99 <= 250 ms.
The whole run is bounded by ``--max-seconds`` (default 1500) and always stops etcd and every child.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from array import array
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h
from etcdcron.etcd import EtcdClient
from etcdcron.keys import DEFAULT_PARTITIONS
from etcdcron.localetcd import free_port

SUSTAINED_P99_MS = 1000
"""Sustained: every tick fired once and p99 lateness within this (the criterion of bench/capacity.py)."""
CURSOR_LIKE_VALUE = (
    b'{"jobId":"5361de6a1d324a4da247f2f48ef611a5","lastTickMs":1764302225000,"runs":12,"missed":0,'
    b'"commit":"bench-0:1a2b3c4d:1234"}'
)


# -- baseline: raw puts --------------------------------------------------------------------------------------
async def _put_worker(
    endpoint: str, seconds: float, concurrency: int, wid: int, start_at: float
) -> dict[str, Any]:
    async with EtcdClient([endpoint]) as client:
        await client.put(f"/bench-raw/{wid}/warm".encode(), CURSOR_LIKE_VALUE)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        t0 = time.monotonic()
        end = t0 + seconds
        lat: list[float] = []

        async def loop(j: int) -> int:
            key = f"/bench-raw/{wid}/{j}".encode()
            n = 0
            while time.monotonic() < end:
                t = time.perf_counter()
                await client.put(key, CURSOR_LIKE_VALUE)
                lat.append(time.perf_counter() - t)
                n += 1
            return n

        puts = sum(await asyncio.gather(*(loop(j) for j in range(concurrency))))
        elapsed = time.monotonic() - t0
    lat.sort()
    return {
        "puts": puts,
        "seconds": elapsed,
        "p50_ms": 1000 * h.percentile(lat, 0.5),
        "p99_ms": 1000 * h.percentile(lat, 0.99),
    }


def put_baseline(etcd: h.BenchEtcd, procs: int, concurrency: int, seconds: float) -> dict[str, Any]:
    start_at = time.time() + 2.0
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--put-worker",
                etcd.endpoint,
                str(seconds),
                str(concurrency),
                str(w),
                str(start_at),
            ],
            stdout=subprocess.PIPE,
            preexec_fn=h._KILL_WITH_PARENT,
        )
        for w in range(procs)
    ]
    time.sleep(max(0.0, start_at - time.time()))
    etcd_cpu0, t0 = h.cpu_seconds(etcd.pid), time.monotonic()
    worker_cpu = {w.pid: 0.0 for w in workers}
    with contextlib.suppress(OSError):
        time.sleep(seconds * 0.9)
        for w in workers:
            worker_cpu[w.pid] = h.cpu_seconds(w.pid)
    reports = []
    try:
        for w in workers:
            out, _ = w.communicate(timeout=seconds + 60)
            reports.append(json.loads(out))
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    elapsed = time.monotonic() - t0
    etcd_cpu = h.cpu_seconds(etcd.pid) - etcd_cpu0
    total = sum(r["puts"] for r in reports)
    secs = max(r["seconds"] for r in reports)
    return {
        "procs": procs,
        "concurrency": concurrency,
        "seconds": round(secs, 2),
        "puts": total,
        "puts_per_s": round(total / secs),
        "latency_p50_ms": round(max(r["p50_ms"] for r in reports), 2),
        "latency_p99_ms": round(max(r["p99_ms"] for r in reports), 2),
        "etcd_cpu_pct": round(100 * etcd_cpu / elapsed),
        "clients_cpu_pct": round(100 * sum(worker_cpu.values()) / (seconds * 0.9)),
        "load": h.load_average(),
    }


# -- reading firings -----------------------------------------------------------------------------------------
class Reader(threading.Thread):
    """Collects (job number, scheduled ms, fired ms) from one member's stdout, cheaply."""

    NAME = b'"name":"tput-'
    SCHED = b'"scheduled":"'

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.jobs = array("q")
        self.scheduled = array("q")
        self.fired = array("q")
        self.bad_lines = 0
        self.checked = False
        self._seconds: dict[bytes, int] = {}

    def _ms(self, ts: bytes) -> int:
        base = self._seconds.get(ts[:19])
        if base is None:
            base = self._seconds[ts[:19]] = (
                int(datetime.strptime(ts[:19].decode(), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp())
                * 1000
            )
        return base + int(ts[20:23])

    def run(self) -> None:
        name_len, sched_len = len(self.NAME), len(self.SCHED)
        for line in self.stream:
            i = line.find(self.SCHED)
            j = line.find(self.NAME)
            if i < 0 or j < 0:
                self.bad_lines += 1
                continue
            job = int(line[j + name_len : j + name_len + 7])
            sched = self._ms(line[i + sched_len : i + sched_len + 24])
            fired = self._ms(line[i + sched_len + 35 : i + sched_len + 59])
            if not self.checked:
                doc = json.loads(line)
                assert doc["name"] == f"tput-{job:07d}", doc
                assert self._ms(doc["scheduled"].encode()) == sched, doc
                assert self._ms(doc["fired"].encode()) == fired, doc
                self.checked = True
            self.jobs.append(job)
            self.scheduled.append(sched)
            self.fired.append(fired)


# -- one N ---------------------------------------------------------------------------------------------------
class NotSettled(Exception):
    """The members did not own every partition and load every job in time (one N fails, the run goes on)."""


def wait_settled(
    members: list[h.MemberProc], n: int, timeout: float
) -> tuple[float, list[dict[str, float] | None]]:
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        samples = h.scrape_all([m.metrics_port for m in members])
        if all(s is not None for s in samples):
            owned = sum(s.get("etcdcron_partitions_owned", 0) for s in samples if s)
            loaded = sum(s.get("etcdcron_jobs_loaded", 0) for s in samples if s)
            if owned == DEFAULT_PARTITIONS and loaded == n:
                return time.monotonic() - t0, samples
        for m in members:
            if m.proc.poll() is not None:
                raise RuntimeError(f"{m.member_id} exited with {m.proc.returncode}:\n{m.log_tail()}")
        if time.monotonic() > deadline:
            owned_by = [int(s.get("etcdcron_partitions_owned", -1)) if s else -1 for s in samples]
            loaded_by = [int(s.get("etcdcron_jobs_loaded", -1)) if s else -1 for s in samples]
            raise NotSettled(
                f"not settled within {timeout:.0f}s: partitions owned {owned_by}, jobs loaded {loaded_by}"
            )
        time.sleep(0.2)


def wait_caught_up(members: list[h.MemberProc], n: int, timeout: float) -> float:
    """Jobs loaded late catch up on the ticks they missed: wait until a second's firings number about N and
    their mean lateness (from the lateness histogram) is under 0.5 s. Returns the seconds waited."""
    t0 = time.monotonic()
    ports = [m.metrics_port for m in members]
    before = h.scrape_all(ports)
    while time.monotonic() - t0 < timeout:
        time.sleep(1.0)
        after = h.scrape_all(ports)
        fired = lat = 0.0
        for a, b in zip(before, after, strict=True):
            if a and b:
                fired += b.get("etcdcron_firing_lateness_seconds_count", 0) - a.get(
                    "etcdcron_firing_lateness_seconds_count", 0
                )
                lat += b.get("etcdcron_firing_lateness_seconds_sum", 0) - a.get(
                    "etcdcron_firing_lateness_seconds_sum", 0
                )
        before = after
        if fired and 0.8 * n <= fired <= 1.2 * n and lat / fired < 0.5:
            return time.monotonic() - t0
    raise NotSettled(f"still catching up after {timeout:.0f}s")


def sleep_until_ms(t_ms: int) -> None:
    time.sleep(max(0.0, t_ms / 1000 - time.time()))


def run_n(etcd: h.BenchEtcd, n: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    prefix = f"/bench-tput-{n}-{os.getpid()}"
    write_s, _ = h.bulk_write(etcd.endpoint, prefix, h.JobShape("every-second", delivery=args.delivery), n)
    h.log(f"N={n}: wrote {n} jobs in {write_s:.2f}s; starting {args.members} members")
    members: list[h.MemberProc] = []
    readers: list[Reader] = []
    profiler = None
    try:
        for i in range(args.members):
            m = h.MemberProc(i, etcd.endpoint, prefix, tmp, metrics_port=free_port())
            members.append(m)
            r = Reader(m.stdout)
            r.start()
            readers.append(r)
        settle_s, _ = wait_settled(members, n, args.settle_timeout)
        catch_up_s = wait_caught_up(members, n, args.settle_timeout)
        h.log(f"N={n}: settled in {settle_s:.2f}s, caught up {catch_up_s:.1f}s later")
        w0 = math.ceil(time.time() + args.warmup) * 1000
        w1 = w0 + int(args.window * 1000)
        sleep_until_ms(w0)
        pids = [m.pid for m in members]
        cpu0 = [h.cpu_seconds(p) for p in pids], h.cpu_seconds(etcd.pid), time.process_time()
        m0 = h.scrape_all([m.metrics_port for m in members])
        load0 = h.load_average()
        if args.profile and (not args.profile_jobs or n in args.profile_jobs):
            profiler = h.Profiler(Path(args.profile) / f"throughput-{n}")
            for m in members:
                profiler.attach(m.member_id, m.pid, args.window)
        sleep_until_ms(w1)
        cpu1 = [h.cpu_seconds(p) for p in pids], h.cpu_seconds(etcd.pid), time.process_time()
        m1 = h.scrape_all([m.metrics_port for m in members])
        load1 = h.load_average()
        sleep_until_ms(w1 + int(args.grace * 1000))
        rss = [h.memory_kb(p).get("VmHWM", 0) for p in pids]
    finally:
        profiles = profiler.finish() if profiler else {}
        for m in members:
            m.stop()
        for r in readers:
            r.join(10)
    for m in members:
        if m.proc.returncode not in (0, None):
            h.log(f"{m.member_id} exited with {m.proc.returncode}:\n{m.log_tail()}")

    # -- analysis
    window_s = (w1 - w0) / 1000
    lateness: list[int] = []
    seen: set[int] = set()
    in_window = fired_in_window = 0
    per_member = []
    first: list[int] = []  # per member and tick: the earliest firing's lateness (the wake-up)
    spread: list[int] = []  # per member and tick: last minus first (the hand-off of the group)
    for r in readers:
        count = 0
        groups: dict[int, list[int]] = {}
        for job, sched, fired in zip(r.jobs, r.scheduled, r.fired, strict=True):
            if w0 <= fired < w1:
                fired_in_window += 1
            if w0 <= sched < w1:
                count += 1
                lateness.append(fired - sched)
                seen.add(job * 1_000_000 + (sched - w0))
                group = groups.setdefault(sched, [fired - sched, fired - sched])
                group[0], group[1] = min(group[0], fired - sched), max(group[1], fired - sched)
        in_window += count
        per_member.append(count)
        first += [g[0] for g in groups.values()]
        spread += [g[1] - g[0] for g in groups.values()]
    first.sort()
    spread.sort()
    by_tick: Counter[int] = Counter()  # firings of each scheduled second of the window
    for r in readers:
        by_tick.update(s for s in r.scheduled if w0 <= s < w1)
    per_tick = [by_tick.get(t, 0) for t in range(w0, w1, 1000)]
    duplicates = in_window - len(seen)
    expected = n * int(window_s)
    missing = expected - len(seen)
    lateness.sort()

    def delta(key: str) -> float:
        return sum((b or {}).get(key, 0) - (a or {}).get(key, 0) for a, b in zip(m0, m1, strict=True))

    commits = delta("etcdcron_commits")
    result = {
        "jobs": n,
        "write_s": round(write_s, 2),
        "settle_s": round(settle_s, 2),
        "catch_up_s": round(catch_up_s, 1),
        "window_s": window_s,
        "firings_per_s": round(in_window / window_s, 1),
        "fired_in_window_per_s": round(fired_in_window / window_s, 1),
        "lateness_p50_ms": h.percentile(lateness, 0.50),
        "lateness_p99_ms": h.percentile(lateness, 0.99),
        "lateness_max_ms": lateness[-1] if lateness else None,
        "per_tick_min": min(per_tick),  # firings of the worst and best second: a collapse shows here
        "per_tick_max": max(per_tick),
        "tick_first_p50_ms": h.percentile(first, 0.50),
        "tick_first_p99_ms": h.percentile(first, 0.99),
        "tick_spread_p50_ms": h.percentile(spread, 0.50),
        "tick_spread_p99_ms": h.percentile(spread, 0.99),
        "expected_ticks": expected,
        "missing_ticks": missing,  # not fired by the end of the grace period (late or lost)
        "duplicate_ticks": duplicates,
        "per_member_firings": per_member,
        "commits_per_s": round(commits / window_s, 1),
        "jobs_per_commit": round(in_window / commits, 1) if commits else None,
        "commit_conflicts": delta("etcdcron_commit_conflicts"),
        "etcd_errors": delta("etcdcron_etcd_errors"),
        "members_cpu_pct": [round(100 * (b - a) / window_s) for a, b in zip(cpu0[0], cpu1[0], strict=True)],
        "etcd_cpu_pct": round(100 * (cpu1[1] - cpu0[1]) / window_s),
        "harness_cpu_pct": round(100 * (cpu1[2] - cpu0[2]) / window_s),
        "member_peak_rss_mb": [round(k / 1024) for k in rss],
        "bad_lines": sum(r.bad_lines for r in readers),
        "load": f"{load0} -> {load1}",
    }
    if profiles:
        summary = h.summarise_collapsed(list(profiles.values()))
        result["profile"] = summary
        result["profile_files"] = [str(p) for p in profiles.values()]
    return result


# -- report --------------------------------------------------------------------------------------------------
def _row(*cells: object) -> str:
    widths = (6, 8, 6, 5, 6, 6, 6, 4, 8, 6, 14, 5, 5)
    return " ".join(f"{c!s:>{w}}" for c, w in zip(cells, widths, strict=False)) + "  " + str(cells[-1])


def report(machine: dict[str, Any], baseline: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    b = baseline
    rate = b.get("puts_per_s") or float("nan")
    print(f"\nmachine: {machine}")
    if "procs" in b:
        print(
            f"raw put baseline: {rate} puts/s ({b['procs']} procs x {b['concurrency']} loops, "
            f"{b['seconds']}s; "
            f"put latency p50 {b['latency_p50_ms']} ms p99 {b['latency_p99_ms']} ms; "
            f"etcd CPU {b['etcd_cpu_pct']}%, clients CPU {b['clients_cpu_pct']}%; load {b['load']})"
        )
    else:
        print("raw put baseline: skipped")
    print(
        _row(
            "jobs",
            "fire/s",
            "x put",
            "p50",
            "p99",
            "max",
            "miss",
            "dup",
            "commit/s",
            "job/c",
            "members CPU%",
            "etcd%",
            "harn%",
            "load",
        )
    )
    for r in runs:
        if "error" in r:
            print(f"{r['jobs']:>6} FAILED: {r['error']}")
            continue
        print(_row(
            r["jobs"], r["firings_per_s"], f"{r['firings_per_s'] / rate:.2f}", r["lateness_p50_ms"],
            r["lateness_p99_ms"], r["lateness_max_ms"], r["missing_ticks"], r["duplicate_ticks"],
            r["commits_per_s"], r["jobs_per_commit"], "/".join(map(str, r["members_cpu_pct"])),
            r["etcd_cpu_pct"], r["harness_cpu_pct"], r["load"],
        ))  # fmt: skip
    ok_runs = [r for r in runs if "error" not in r]
    print("\nper tick (member x second): wake-up = the first firing's lateness, spread = last - first (ms)")
    for r in ok_runs:
        print(
            f"  N={r['jobs']}: firings per second min {r['per_tick_min']} max {r['per_tick_max']}; "
            f"wake-up p50 {r['tick_first_p50_ms']} p99 {r['tick_first_p99_ms']}; "
            f"spread p50 {r['tick_spread_p50_ms']} p99 {r['tick_spread_p99_ms']}"
        )
    clean = [r for r in ok_runs if r["missing_ticks"] == 0 and r["duplicate_ticks"] == 0]
    # Sustained: every tick once and each second's ticks out before the next second's (p99 <= 1 s).
    sustained = [r for r in clean if r["lateness_p99_ms"] <= SUSTAINED_P99_MS]
    best = max((r["firings_per_s"] for r in sustained), default=0.0)
    kept_up = max((r["firings_per_s"] for r in clean), default=0.0)
    verdict = "MET" if best >= 2 * rate else "NOT MET"
    print("\ntargets:")
    print(
        f"  sustained firings/s >= 2.0x raw puts ({rate}/s): best run with every tick once and "
        f"p99 <= {SUSTAINED_P99_MS} ms: {best}/s = {best / rate:.2f}x: {verdict} "
        f"(every tick once at any lateness: {kept_up}/s = {kept_up / rate:.2f}x)"
    )
    for r in (r for r in ok_runs if r["jobs"] in (1000, 5000)):
        p50_limit, p99_limit = (10, 50) if r["jobs"] == 1000 else (None, 250)
        ok = r["lateness_p99_ms"] <= p99_limit and r["missing_ticks"] == 0 and r["duplicate_ticks"] == 0
        if p50_limit is not None:
            ok = ok and r["lateness_p50_ms"] <= p50_limit
        wanted = f"p50 <= {p50_limit} ms, " if p50_limit is not None else ""
        print(
            f"  lateness at {r['jobs']:,} firings/s: {wanted}p99 <= {p99_limit} ms: "
            f"p50 {r['lateness_p50_ms']} ms, p99 {r['lateness_p99_ms']} ms: {'MET' if ok else 'NOT MET'}"
        )
    for r in ok_runs:
        if r["missing_ticks"] or r["duplicate_ticks"]:
            print(
                f"  N={r['jobs']}: {r['missing_ticks']} tick(s) missing, {r['duplicate_ticks']} fired twice!"
            )
        if "profile" in r:
            h.print_profile(r["profile"], f"members at N={r['jobs']} ({', '.join(r['profile_files'])})")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--put-worker":
        endpoint, seconds, conc, wid, start_at = sys.argv[2:7]
        print(
            json.dumps(
                asyncio.run(_put_worker(endpoint, float(seconds), int(conc), int(wid), float(start_at)))
            )
        )
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", default="200,500,1000,2000,4000", help="comma-separated job counts")
    p.add_argument("--members", type=int, default=3)
    p.add_argument(
        "--delivery", default="at-least-once", choices=["at-least-once", "at-most-once"], help="of every job"
    )
    p.add_argument("--window", type=float, default=15.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds between settled and the window")
    p.add_argument("--grace", type=float, default=3.0, help="seconds past the window to collect late ticks")
    p.add_argument("--settle-timeout", type=float, default=90.0)
    p.add_argument("--put-procs", type=int, default=3)
    p.add_argument("--put-concurrency", type=int, default=32)
    p.add_argument("--put-seconds", type=float, default=5.0)
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--profile", help="directory: py-spy record the members during the window")
    p.add_argument("--profile-jobs", default="", help="only profile these N (comma-separated; default all)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--max-seconds", type=float, default=1500.0, help="hard bound of the whole run")
    args = p.parse_args()
    args.profile_jobs = [int(x) for x in args.profile_jobs.split(",") if x]
    jobs = [int(x) for x in args.jobs.split(",") if x]
    if args.profile and not h.Profiler.available():
        p.error(f"py-spy not found at {h.PY_SPY} (pip install py-spy, or set PY_SPY)")
    h.install_time_bound(args.max_seconds)
    machine = h.machine()
    etcd = h.BenchEtcd()
    runs: list[dict[str, Any]] = []
    baseline: dict[str, Any] = {"puts_per_s": float("nan")}
    try:
        etcd.start()
        h.log(f"etcd at {etcd.endpoint}; machine {machine}")
        if not args.skip_baseline:
            baseline = put_baseline(etcd, args.put_procs, args.put_concurrency, args.put_seconds)
            h.log(f"raw puts: {baseline}")
        for n in jobs:
            try:
                runs.append(run_n(etcd, n, args, etcd.tmp))
            except NotSettled as e:
                runs.append({"jobs": n, "error": str(e), "load": h.load_average()})
                h.log(f"N={n}: {e}; skipping larger N")
                break
            h.log(f"N={n}: { ({k: v for k, v in runs[-1].items() if k != 'profile'}) }")
    except (h.BenchTimeout, KeyboardInterrupt) as e:
        h.log(f"stopped early: {e!r}")
    finally:
        signal_safe_cleanup(etcd)
    if runs or "puts" in baseline:
        report(machine, baseline, runs)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": machine, "baseline": baseline, "runs": runs}, indent=2)
        )
    return 0 if runs else 1


def signal_safe_cleanup(etcd: h.BenchEtcd) -> None:
    signal.alarm(0)
    etcd.cleanup()


if __name__ == "__main__":
    sys.exit(main())
