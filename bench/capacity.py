"""Capacity grows with members: sustained firings/s of 1, 2, 4 and 8 pool members, each capped at 0.25 CPU.

Usage (from the repository root, as root: the caps are cgroup v1 ``cpu`` quotas)::

    .venv/bin/python bench/capacity.py --shares 4096                 # members 1,2,4,8 (~12 min)
    .venv/bin/python bench/capacity.py --members 1,8 --json /tmp/cap.json
    .venv/bin/python bench/capacity.py --plot docs/capacity.png --from /tmp/cap1.json,/tmp/cap2.json

For each member count M (a fresh prefix each, one etcd for the whole run):

1. Starts M ``etcdcron member --sink stdout`` processes, each moved into a cgroup of its own with a CFS
   quota of ``--cpu`` (0.25) CPU and a weight of ``--shares`` (1024, an ordinary process's; on a machine
   busy with other work a higher weight lets each member actually get its 0.25), and waits until they own
   every partition. etcd gets a group too (uncapped unless ``--etcd-cpu``, same weight).
2. Steps the load up: N jobs ``* * * * * *`` (``bench/_harness.py``'s bulk writer, the bytes
   ``JobStore.add`` writes), starting at ``--start-per-member`` x M and growing by ``--step`` (x1.2) each
   step. At each step it writes the jobs added, waits until they are loaded and the pool has caught up
   (as ``bench/throughput.py`` does), then measures a ``--window`` (10 s) aligned on whole seconds:
   firings whose scheduled time is in the window, lateness p50/p99, ticks missing ``--grace`` (3 s) after
   the window, ticks fired twice; each member's CPU and the share of CFS periods it was throttled in;
   etcd's CPU (uncapped, or capped by ``--etcd-cpu``); the whole machine's busy CPU (/proc/stat).
3. A step passes when every tick in the window fired exactly once by the end of the grace period and
   p99 lateness is at most ``--max-p99-ms`` (1,000 ms: each second's ticks out before the next second's
   are due). The first step that fails (or never catches up) ends M: its capacity is the last N that
   passed.

The report: capacity per M, the ratio to one member's capacity (the baseline measured in the same run),
and what limited each M (members throttled at their cap, etcd's CPU, or the machine's two cores). The run
is bounded by ``--max-seconds``; members, etcd and the cgroups made here are always removed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _cgroup as cg
import _harness as h
import throughput as tp
from etcdcron.localetcd import free_port


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from the first line of /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


class Pool:
    """M capped members on one prefix, with a stdout reader each."""

    def __init__(self, etcd: h.BenchEtcd, m: int, args: argparse.Namespace) -> None:
        self.etcd, self.m, self.args = etcd, m, args
        self.prefix = f"/bench-cap-{m}-{os.getpid()}"
        self.members: list[h.MemberProc] = []
        self.readers: list[tp.Reader] = []
        self.groups: list[cg.CpuGroup] = []
        self.jobs = 0
        self.created = datetime.now(UTC).replace(microsecond=0)

    def start(self) -> None:
        for i in range(self.m):
            group = cg.CpuGroup(f"m{self.m}-{i}", self.args.cpu, self.args.shares)
            self.groups.append(group)
            member = h.MemberProc(i, self.etcd.endpoint, self.prefix, self.etcd.tmp, metrics_port=free_port())
            self.members.append(member)
            group.add(member.pid)  # before it has imported anything much: the cap covers its whole life
            reader = tp.Reader(member.stdout)
            reader.start()
            self.readers.append(reader)
        tp.wait_settled(self.members, 0, self.args.settle_timeout)

    def grow(self, n: int) -> float:
        """Write jobs [self.jobs, n) (created now: little to catch up); returns seconds taken."""
        t0 = time.monotonic()
        created = datetime.now(UTC).replace(microsecond=0)
        shape = h.JobShape("every-second")
        h.write_range(self.etcd.endpoint, self.prefix, shape, self.jobs, n, created, 1000, 2)
        self.jobs = n
        return time.monotonic() - t0

    def stop(self) -> None:
        for member in self.members:
            member.stop()
        for reader in self.readers:
            reader.join(10)
        for member in self.members:
            if member.proc.returncode not in (0, None, -signal.SIGTERM):
                h.log(f"{member.member_id} exited with {member.proc.returncode}:\n{member.log_tail()}")
        for group in self.groups:
            group.remove()


def _throttled(a: dict[str, int], b: dict[str, int]) -> float:
    """Share of CFS periods between two ``cpu.stat`` readings in which the group hit its quota."""
    return round((b["nr_throttled"] - a["nr_throttled"]) / max(1, b["nr_periods"] - a["nr_periods"]), 2)


def measure(pool: Pool, n: int, args: argparse.Namespace, etcd_group: cg.CpuGroup | None) -> dict[str, Any]:
    """One step: N jobs loaded and caught up, then a window of whole seconds."""
    write_s = pool.grow(n)
    try:
        settle_s, _ = tp.wait_settled(pool.members, n, args.settle_timeout)
        catch_up_s = tp.wait_caught_up(pool.members, n, args.catch_up_timeout)
    except tp.NotSettled as e:
        return {"jobs": n, "passed": False, "why": str(e), "load": h.load_average()}
    starts = [len(r.fired) for r in pool.readers]
    w0 = math.ceil(time.time() + args.warmup) * 1000
    w1 = w0 + int(args.window * 1000)
    tp.sleep_until_ms(w0)
    pids = [m.pid for m in pool.members]
    load0 = h.load_average()
    cpu0 = [h.cpu_seconds(p) for p in pids], h.cpu_seconds(pool.etcd.pid), time.process_time()
    thr0 = [g.stat() for g in pool.groups]
    ethr0 = etcd_group.stat() if etcd_group else {}
    busy0 = machine_busy()
    tp.sleep_until_ms(w1)
    cpu1 = [h.cpu_seconds(p) for p in pids], h.cpu_seconds(pool.etcd.pid), time.process_time()
    thr1 = [g.stat() for g in pool.groups]
    ethr1 = etcd_group.stat() if etcd_group else {}
    busy1 = machine_busy()
    load1 = h.load_average()
    tp.sleep_until_ms(w1 + int(args.grace * 1000))
    for m in pool.members:
        if m.proc.poll() is not None:
            raise RuntimeError(f"{m.member_id} exited with {m.proc.returncode}:\n{m.log_tail()}")

    window_s = (w1 - w0) / 1000
    lateness: list[int] = []
    seen: set[int] = set()
    in_window = 0
    for r, start in zip(pool.readers, starts, strict=True):
        stop = min(len(r.jobs), len(r.scheduled), len(r.fired))
        for k in range(start, stop):
            sched = r.scheduled[k]
            if w0 <= sched < w1:
                in_window += 1
                lateness.append(r.fired[k] - sched)
                seen.add(r.jobs[k] * 1_000_000 + (sched - w0))
    lateness.sort()
    missing = n * int(window_s) - len(seen)
    duplicates = in_window - len(seen)
    p99 = h.percentile(lateness, 0.99)
    throttled = [_throttled(a, b) for a, b in zip(thr0, thr1, strict=True)]
    passed = missing == 0 and duplicates == 0 and p99 <= args.max_p99_ms
    why = ""
    if not passed:
        why = f"{missing} missing, {duplicates} twice, p99 {p99} ms (> {args.max_p99_ms} ms?)"
    return {
        "jobs": n,
        "passed": passed,
        "why": why,
        "write_s": round(write_s, 2),
        "settle_s": round(settle_s, 2),
        "catch_up_s": round(catch_up_s, 1),
        "firings_per_s": round(len(seen) / window_s, 1),
        "lateness_p50_ms": h.percentile(lateness, 0.50),
        "lateness_p99_ms": p99,
        "lateness_max_ms": lateness[-1] if lateness else None,
        "missing_ticks": missing,
        "duplicate_ticks": duplicates,
        "members_cpu_pct": [round(100 * (b - a) / window_s) for a, b in zip(cpu0[0], cpu1[0], strict=True)],
        "members_throttled": throttled,  # share of CFS periods in which the member hit its quota
        "etcd_cpu_pct": round(100 * (cpu1[1] - cpu0[1]) / window_s),
        "etcd_throttled": _throttled(ethr0, ethr1) if etcd_group and etcd_group.cpus > 0 else None,
        "harness_cpu_pct": round(100 * (cpu1[2] - cpu0[2]) / window_s),
        "machine_busy_pct": round(
            100 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * (os.cpu_count() or 1)
        ),
        "load": f"{load0} -> {load1}",
    }


def limit_of(step: dict[str, Any], args: argparse.Namespace) -> str:
    """What held back the first failing step (or the last one measured)."""
    if "members_cpu_pct" not in step:
        return "never caught up (members loading and firing at their cap)"
    cap = 100 * args.cpu
    at_cap = sum(1 for c in step["members_cpu_pct"] if c >= 0.9 * cap)
    cores = 100 * (os.cpu_count() or 1)
    parts = []
    if at_cap:
        parts.append(f"{at_cap}/{len(step['members_cpu_pct'])} members at their {args.cpu} CPU cap")
    if step["etcd_cpu_pct"] >= 90 or (args.etcd_cpu > 0 and step["etcd_cpu_pct"] >= 90 * args.etcd_cpu):
        parts.append(f"etcd at {step['etcd_cpu_pct']}% CPU")
    if step["machine_busy_pct"] >= 0.9 * cores:
        parts.append(f"machine {step['machine_busy_pct']}% of {cores}% busy")
    return "; ".join(parts) or "none saturated (latency-bound)"


def run_members(
    etcd: h.BenchEtcd, m: int, args: argparse.Namespace, etcd_group: cg.CpuGroup | None
) -> dict[str, Any]:
    pool = Pool(etcd, m, args)
    steps: list[dict[str, Any]] = []
    deadline = time.monotonic() + args.per_count_seconds
    try:
        pool.start()
        h.log(f"M={m}: {m} members own every partition")
        n = int(args.start_per_member * m)
        while n <= args.max_jobs and time.monotonic() < deadline:
            step = measure(pool, n, args, etcd_group)
            steps.append(step)
            h.log(f"M={m} N={n}: {step}")
            if not step["passed"]:
                break
            n = int(math.ceil(n * args.step / 10) * 10)
    finally:
        pool.stop()
    passed = [s for s in steps if s["passed"]]
    best = passed[-1] if passed else None
    failed = next((s for s in steps if not s["passed"]), None)
    return {
        "members": m,
        "capacity_firings_per_s": best["firings_per_s"] if best else 0.0,
        "capacity_jobs": best["jobs"] if best else 0,
        "at_capacity": best,
        "first_failure": failed,
        "limit": limit_of(failed or (steps[-1] if steps else {}), args),
        "bounded": failed is None,  # stopped by --max-jobs or time, not by a failure
        "steps": steps,
    }


# -- report and plot -----------------------------------------------------------------------------------------
def report(doc: dict[str, Any]) -> None:
    print(f"\nmachine: {doc['machine']}")
    a = doc["args"]
    etcd_cap = f"capped at {a['etcd_cpu']} CPU" if a["etcd_cpu"] > 0 else "uncapped"
    print(f"members capped at {a['cpu']} CPU each; etcd {etcd_cap}")
    print(
        f"{'members':>7} {'fire/s':>8} {'x 1':>5} {'p50':>5} {'p99':>5} {'members CPU%':>20} "
        f"{'thr':>5} {'etcd%':>5} {'box%':>5} {'harn%':>5}  load / first failing step"
    )
    for r in doc["results"]:
        s = r["at_capacity"] or {}
        f = r["first_failure"] or {}
        ratio = r.get("ratio", float("nan"))
        print(
            f"{r['members']:>7} {r['capacity_firings_per_s']:>8} {ratio:>5.2f} "
            f"{s.get('lateness_p50_ms', '-')!s:>5} "
            f"{s.get('lateness_p99_ms', '-')!s:>5} {'/'.join(map(str, s.get('members_cpu_pct', []))):>20} "
            f"{max(s.get('members_throttled', [0])):>5} {s.get('etcd_cpu_pct', '-')!s:>5} "
            f"{s.get('machine_busy_pct', '-')!s:>5} {s.get('harness_cpu_pct', '-')!s:>5}  {s.get('load', '')}"
        )
        if f:
            print(
                f"{'':>7} fails at N={f['jobs']}: {f.get('why')}; etcd {f.get('etcd_cpu_pct', '?')}%, "
                f"machine {f.get('machine_busy_pct', '?')}% -> limit: {r['limit']}"
            )
        elif r["bounded"]:
            print(f"{'':>7} no failing step before the bound (--max-jobs / --per-count-seconds)")
    if "ratio_8_1" in doc:
        print(f"\n8 members / 1 member: {doc['ratio_8_1']:.2f}x")
    if doc.get("etcd_per_1000"):
        print(
            f"etcd CPU per 1,000 firings/s: {doc['etcd_per_1000']:.1f}% of a core "
            f"(one core's worth at ~{doc['etcd_saturates_at']:,.0f} firings/s)"
        )


def summarise(doc: dict[str, Any]) -> None:
    results = doc["results"]
    base = next((r["capacity_firings_per_s"] for r in results if r["members"] == 1), 0.0)
    for r in results:
        r["ratio"] = r["capacity_firings_per_s"] / base if base else float("nan")
    by_m = {r["members"]: r for r in results}
    if 1 in by_m and 8 in by_m and base:
        doc["ratio_8_1"] = by_m[8]["capacity_firings_per_s"] / base
    points = [
        (r["at_capacity"]["firings_per_s"], r["at_capacity"]["etcd_cpu_pct"])
        for r in results
        if r["at_capacity"]
    ]
    if points:
        per_1000 = sum(e for _, e in points) / sum(f for f, _ in points) * 1000
        doc["etcd_per_1000"] = per_1000
        doc["etcd_saturates_at"] = 100 / per_1000 * 1000 if per_1000 else float("inf")


def plot(docs: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    etcd_ax = ax.twinx()
    markers = "os^D"
    top = 0.0
    for k, doc in enumerate(docs):
        rs = sorted(doc["results"], key=lambda r: r["members"])
        ms = [r["members"] for r in rs]
        rates = [r["capacity_firings_per_s"] for r in rs]
        top = max([top, *rates])
        shares = doc["args"].get("shares", 1024)
        ax.plot(
            ms,
            rates,
            marker=markers[k % 4],
            label=f"firings/s, run {k + 1} ({doc['started']}, shares {shares})",
        )
        for r in rs:
            busy = (r["at_capacity"] or {}).get("machine_busy_pct")
            if busy is not None:
                point = (r["members"], r["capacity_firings_per_s"])
                ax.annotate(f"{busy}%", point, fontsize=6, color="dimgrey",
                            xytext=(4, -9 - 7 * k), textcoords="offset points")  # fmt: skip
        etcd = [(r["at_capacity"] or {}).get("etcd_cpu_pct", float("nan")) for r in rs]
        etcd_ax.plot(ms, etcd, marker=markers[k % 4], ls="--", color="tab:green", alpha=0.6, lw=0.8,
                     label=f"etcd CPU % at capacity, run {k + 1}")  # fmt: skip
        base = next((r["capacity_firings_per_s"] for r in rs if r["members"] == 1), 0)
        if k == 0 and base:
            ax.plot(ms, [base * m for m in ms], ls=":", color="grey", label="linear (1 member's x M)")
            top = max(top, base * max(ms))
    cpu = docs[0]["args"]["cpu"]
    cores = docs[0]["machine"]["nproc"]
    ax.set_xscale("log", base=2)
    ax.set_xlim(0.8, 10)
    ax.set_xticks([1, 2, 4, 8], ["1", "2", "4", "8"])
    ax.set_ylim(0, top * 1.1 or 1)
    etcd_ax.set_ylim(0, 100)
    etcd_ax.set_ylabel("etcd CPU % of one core (dashed)", color="tab:green")
    ax.axvline(cores / cpu, ls="--", color="tab:red", lw=0.8)
    label = f"{cores / cpu:.0f} x {cpu} CPU\n= the {cores} cores"
    ax.text(cores / cpu * 0.97, top * 0.05, label, color="tab:red", fontsize=8, ha="right")
    ax.set_xlabel(f"pool members (each in a cgroup capped at {cpu} CPU)")
    ax.set_ylabel("sustained firings/s")
    ax.set_title("Capacity vs members (every tick once, p99 lateness ≤ 1 s)\n"
                 "grey: whole machine's busy CPU % at that point (of 200%)", fontsize=10)  # fmt: skip
    ax.grid(True, alpha=0.3)
    lines = ax.get_legend_handles_labels()
    more = etcd_ax.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out)
    h.log(f"plot written to {out}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", default="1,2,4,8", help="comma-separated member counts")
    p.add_argument("--cpu", type=float, default=0.25, help="CPU cap of each member (CFS quota)")
    p.add_argument("--etcd-cpu", type=float, default=0.0, help="CPU cap of etcd (0: uncapped, own group)")
    p.add_argument(
        "--shares",
        type=int,
        default=1024,
        help="cpu.shares of each member's and etcd's group (1024: an ordinary process's weight; higher "
        "lets them reach their cap on a machine busy with other work)",
    )
    p.add_argument("--start-per-member", type=float, default=300, help="first step: this many jobs x M")
    p.add_argument("--step", type=float, default=1.2, help="each step has this many times more jobs")
    p.add_argument("--max-jobs", type=int, default=40_000)
    p.add_argument("--max-p99-ms", type=float, default=1000.0)
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--grace", type=float, default=3.0)
    p.add_argument("--settle-timeout", type=float, default=60.0)
    p.add_argument("--catch-up-timeout", type=float, default=30.0)
    p.add_argument("--per-count-seconds", type=float, default=420.0, help="time bound of one member count")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--plot", help="write a PNG of firings/s vs members here")
    p.add_argument("--from", dest="from_json", help="plot/report these JSON results (comma-separated) only")
    p.add_argument("--max-seconds", type=float, default=2400.0, help="hard bound of the whole run")
    args = p.parse_args()

    if args.from_json:
        docs = [json.loads(Path(f).read_text()) for f in args.from_json.split(",")]
        for doc in docs:
            report(doc)
        if args.plot:
            plot(docs, Path(args.plot))
        return 0
    why = cg.problem()
    if why:
        print(f"SKIPPED: CPU caps unavailable: {why}")
        return 0
    for name in cg.remove_leftovers():
        h.log(f"removed a leftover cgroup {name}")
    h.install_time_bound(args.max_seconds)
    doc: dict[str, Any] = {
        "machine": h.machine(),
        "args": vars(args),
        "started": time.strftime("%Y-%m-%d %H:%M"),
        "results": [],
    }
    etcd = h.BenchEtcd()
    etcd_group: cg.CpuGroup | None = None
    harness_group = cg.CpuGroup("harness", 0, args.shares)  # the stdout readers keep up at the same weight
    harness_group.add(os.getpid())
    try:
        etcd.start()
        etcd_group = cg.CpuGroup("etcd", args.etcd_cpu, args.shares)
        etcd_group.add(etcd.pid)
        h.log(f"etcd at {etcd.endpoint} (cap {args.etcd_cpu or 'none'}); machine {doc['machine']}")
        for m in (int(x) for x in args.members.split(",") if x):
            doc["results"].append(run_members(etcd, m, args, etcd_group))
    except (h.BenchTimeout, KeyboardInterrupt) as e:
        h.log(f"stopped early: {e!r}")
    finally:
        signal.alarm(0)
        etcd.cleanup()
        if etcd_group is not None:
            etcd_group.remove()
        (harness_group.path.parent / "cgroup.procs").write_text(str(os.getpid()))
        harness_group.remove()
    doc["load_after"] = h.load_average()
    summarise(doc)
    report(doc)
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2))
    if args.plot:
        plot([doc], Path(args.plot))
    return 0 if doc["results"] else 1


if __name__ == "__main__":
    sys.exit(main())
