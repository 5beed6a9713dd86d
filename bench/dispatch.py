"""Dispatch to Kubernetes: Events/s and Jobs/s 3 pool replicas create through ``KubernetesDispatcher``,
against a plain client loop on the same API server in the same run.

Usage (from the repository root; the control-plane binaries are cached by ``tests/k8s``)::

    .venv/bin/python bench/dispatch.py                          # baseline, then Events, then Jobs (~6 min)
    .venv/bin/python bench/dispatch.py --kinds event --json /tmp/dispatch.json
    .venv/bin/python bench/dispatch.py --kinds event --start 600 --profile /tmp/prof   # py-spy the replicas
    .venv/bin/python bench/dispatch.py --in-flight before,32 --before-tree /tmp/dispatch-before

Variants (``--in-flight``, comma-separated): ``before`` runs the replicas on the library of another
checkout (``--before-tree``), a number N on this tree's ``KubernetesDispatcher(in_flight=N)`` (0: its
default); ``--history-lists`` sets its ``history_lists_per_second`` (the lists that trim Jobs' history).

One run:

1. Starts a real control plane (``etcdcron.testing.ControlPlane``: its own etcd and kube-apiserver, no
   node, admin credentials) and, for the pool, a separate etcd (``bench/_harness.py``).
2. Baseline, **plain client loop**: ``--plain-procs`` (3) processes x ``--plain-threads`` (8) threads, each a
   loop of ``CoreV1Api.create_namespaced_event`` (the same manifest shape a firing's Event has) for
   ``--plain-seconds`` (8): Events/s the API server takes from this client library on this machine. A
   second baseline does the same with ``_preload_content=False`` (the response not turned into models).
3. For each kind (Event, Job): 3 replica processes, each a real pool member (``PoolSettings.member``) whose
   trigger is ``KubernetesDispatcher`` (wrapped to print a JSON line once the object is created, with
   ``fired`` = that moment). N jobs ``* * * * * *`` in one namespace whose payload targets an Event (or a
   Job) are written into the pool's etcd; N steps up from ``--start`` by ``--step`` until a step fails.
   Each step waits for the jobs to be loaded and caught up, then measures a ``--window`` (10 s) of whole
   seconds: objects created per second (ticks whose object exists), created − scheduled p50/p99, ticks
   missing ``--grace`` s after the window, dispatch errors, CPU of replicas / API server / both etcds.
   A step passes when every tick of the window has its object and p99 ≤ ``--max-p99-ms`` (1,000 ms).
4. At the end, every Event/Job the replicas reported is looked up by name in the API server (the count
   there must equal the ticks reported: exactly one object per tick).

The whole run is bounded by ``--max-seconds``; everything started is stopped and removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _cgroup as cg
import _harness as h
import throughput as tp
from etcdcron import etcd
from etcdcron.etcd import EtcdClient
from etcdcron.job import Job, StoredJob
from etcdcron.k8s_resource import Envelope
from etcdcron.keys import Keys
from etcdcron.localetcd import free_port

NAMESPACE = "bench-dispatch"
JOB_TEMPLATE = {
    "spec": {
        "backoffLimit": 0,
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox:1.36", "command": ["true"]}],
            }
        },
    }
}


def event_manifest(name: str) -> dict[str, Any]:
    """A Normal Event about a DistributedCronJob, shaped as a firing's Event (dispatch/k8s_objects.py)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"etcdcron.io/job": "plain"}},
        "involvedObject": {
            "apiVersion": "etcdcron.io/v1alpha1",
            "kind": "DistributedCronJob",
            "name": "plain",
            "namespace": NAMESPACE,
            "uid": "00000000-0000-0000-0000-000000000000",
        },
        "reason": "Fired",
        "message": "tick fired (run 1)",
        "type": "Normal",
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "source": {"component": "etcdcron"},
        "reportingComponent": "etcdcron.io/operator",
        "reportingInstance": "bench",
    }


# -- baseline: a plain client loop -------------------------------------------------------------------------
def plain_worker(kubeconfig: str, seconds: float, threads: int, wid: int, raw: bool) -> None:
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    api = k8s_config.new_client_from_config(config_file=kubeconfig)
    api.configuration.connection_pool_maxsize = threads  # a connection per thread
    api.rest_client = k8s.rest.RESTClientObject(api.configuration)
    core = k8s.CoreV1Api(api)
    counts = [0] * threads
    errors = [0] * threads
    core.create_namespaced_event(NAMESPACE, event_manifest(f"plain-{wid}-warm-{uuid.uuid4().hex[:6]}"))
    print("ready", flush=True)
    sys.stdin.readline()  # "go": every worker is set up, the harness's CPU readings start now
    end = time.monotonic() + seconds

    def loop(t: int) -> None:
        i = 0
        while time.monotonic() < end:
            body = event_manifest(f"plain-{wid}-{t}-{i}-{uuid.uuid4().hex[:6]}")
            try:
                if raw:
                    resp = core.create_namespaced_event(NAMESPACE, body, _preload_content=False)
                    resp.drain_conn()
                    resp.release_conn()
                else:
                    core.create_namespaced_event(NAMESPACE, body)
                counts[t] += 1
            except Exception:
                errors[t] += 1
            i += 1

    t0 = time.monotonic()
    workers = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(json.dumps({"created": sum(counts), "errors": sum(errors), "seconds": time.monotonic() - t0}))


def plain_baseline(cp: Any, args: argparse.Namespace, raw: bool) -> dict[str, Any]:
    start_at = time.time() + 3.0
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--plain-worker",
                str(cp.kubeconfig),
                str(args.plain_seconds),
                str(args.plain_threads),
                str(w),
                str(start_at),
                "raw" if raw else "models",
            ],
            stdout=subprocess.PIPE,
            preexec_fn=h._KILL_WITH_PARENT,
        )
        for w in range(args.plain_procs)
    ]
    time.sleep(max(0.0, start_at - time.time()))
    load0 = h.load_average()
    watched = {"apiserver": cp_pid(cp, "kube-apiserver"), "k8s-etcd": cp_pid(cp, "etcd")}
    cpu0 = {k: h.cpu_seconds(p) for k, p in watched.items()}
    client_cpu0 = {p.pid: h.cpu_seconds(p.pid) for p in procs}
    t0 = time.monotonic()
    time.sleep(args.plain_seconds * 0.9)
    elapsed = time.monotonic() - t0
    cpu1 = {k: h.cpu_seconds(p) for k, p in watched.items()}
    client_cpu = sum(h.cpu_seconds(pid) - c for pid, c in client_cpu0.items())
    reports = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=args.plain_seconds + 60)
            reports.append(json.loads(out.splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    created = sum(r["created"] for r in reports)
    secs = max(r["seconds"] for r in reports)
    return {
        "mode": "plain loop, " + ("_preload_content=False" if raw else "models (default)"),
        "procs": args.plain_procs,
        "threads": args.plain_threads,
        "events_per_s": round(created / secs),
        "errors": sum(r["errors"] for r in reports),
        "clients_cpu_pct": round(100 * client_cpu / elapsed),
        **{f"{k}_cpu_pct": round(100 * (cpu1[k] - cpu0[k]) / elapsed) for k in watched},
        "load": f"{load0} -> {h.load_average()}",
    }


def cp_pid(cp: Any, name: str) -> int:
    for proc in cp._processes:
        if proc.name == name and proc.pid is not None:
            return int(proc.pid)
    raise RuntimeError(f"no {name} process in the control plane")


# -- the pool's dispatch: replica processes ---------------------------------------------------------------
def replica_main(argv: list[str]) -> int:
    """One pool member whose trigger is KubernetesDispatcher; prints a StdoutSink line per created object."""
    p = argparse.ArgumentParser()
    p.add_argument("endpoint")
    p.add_argument("prefix")
    p.add_argument("kubeconfig")
    p.add_argument("member_id")
    p.add_argument("metrics_port", type=int)
    p.add_argument("--in-flight", type=int, default=0, help="KubernetesDispatcher's in_flight (0: default)")
    p.add_argument("--history-lists", type=float, default=0, help="its history_lists_per_second (0: default)")
    a = p.parse_args(argv)
    from prometheus_client import start_http_server

    from etcdcron.controller.credentials import kubernetes_api
    from etcdcron.dispatch.kubernetes import KubernetesDispatcher
    from etcdcron.dispatch.stdout import StdoutSink
    from etcdcron.firing import Firing
    from etcdcron.settings import PoolSettings

    start_http_server(a.metrics_port, addr="127.0.0.1")
    api = kubernetes_api(a.kubeconfig)
    options = {"in_flight": a.in_flight, "history_lists_per_second": a.history_lists}
    dispatcher = KubernetesDispatcher(api, a.member_id, **{k: v for k, v in options.items() if v})
    sink = StdoutSink()
    errors = 0

    async def trigger(firing: Firing) -> None:
        nonlocal errors
        try:
            await dispatcher(firing)
        except Exception as e:
            errors += 1
            print(f"dispatch error {errors}", flush=True)  # a line the harness's reader counts as bad
            if errors <= 5:
                print(f"dispatch error {errors}: {e}", file=sys.stderr, flush=True)
            raise
        await sink(dataclasses.replace(firing, fired=datetime.now(UTC)))

    async def run() -> None:
        settings = PoolSettings((a.endpoint,), a.prefix, a.member_id, 5)
        client = settings.client()
        member = settings.member(client, trigger)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await member.start()
            failed = asyncio.ensure_future(member.done.wait())
            signalled = asyncio.ensure_future(stop.wait())
            await asyncio.wait([signalled, failed], return_when=asyncio.FIRST_COMPLETED)
            failed.cancel()
            signalled.cancel()
            await member.stop()
        finally:
            await client.close()
            close = getattr(dispatcher, "close", None)  # the asyncio dispatcher's session (not 'before')
            if close is not None:
                await close()
        if member.failure is not None:
            raise member.failure

    asyncio.run(run())
    return 0


class Replica:
    """A replica process with the attributes ``throughput.wait_settled`` reads."""

    def __init__(
        self,
        i: int,
        endpoint: str,
        prefix: str,
        kubeconfig: str,
        log_dir: Path,
        in_flight: int,
        tree: str | None = None,
        history_lists: float = 0,
    ) -> None:
        self.member_id = f"dispatch-{i}-{os.getpid()}"
        self.metrics_port = free_port()
        self.log_path = log_dir / f"{self.member_id}.log"
        self._err = self.log_path.open("ab")
        argv = [sys.executable, __file__, "--replica", endpoint, prefix, kubeconfig, self.member_id,
                str(self.metrics_port), "--in-flight", str(in_flight),
                "--history-lists", str(history_lists)]  # fmt: skip
        env = None
        if tree:  # the library of another checkout (e.g. the commit before a change), same harness
            env = {**os.environ, "PYTHONPATH": str(Path(tree) / "operator")}
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._err,
            env=env,
            preexec_fn=h._KILL_WITH_PARENT,
            bufsize=1 << 16,
        )
        self.pid = self.proc.pid
        assert self.proc.stdout is not None
        self.reader = tp.Reader(self.proc.stdout)
        self.reader.start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(10)
        self._err.close()

    def log_tail(self, n: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "".join(self.log_path.read_text(errors="replace").splitlines(True)[-n:])
        return ""

    def errors(self) -> int:
        return self.reader.bad_lines


async def write_jobs(endpoint: str, prefix: str, namespace: str, kind: str, start: int, stop: int) -> None:
    keys = Keys(prefix)
    created = datetime.now(UTC).replace(microsecond=0)
    target: dict[str, Any] = (
        {"event": {"reason": "Fired"}} if kind == "event" else {"job": {"template": JOB_TEMPLATE}}
    )
    async with EtcdClient([endpoint], timeout=60) as client:
        for lo in range(start, stop, 500):
            ops = []
            for i in range(lo, min(lo + 500, stop)):
                uid = str(uuid.uuid4())
                env = Envelope(uid, 1, target, {"i": i})
                job = Job(
                    name=f"tput-{i:07d}", schedule="* * * * * *", namespace=namespace, payload=env.to_bytes()
                )
                stored = StoredJob(job, uuid.uuid4().hex, created)
                ops.append(etcd.put(keys.job(keys.ref(namespace, job.name)), stored.to_json()))
            await client.txn([], ops)


def measure(
    replicas: list[Replica], n: int, args: argparse.Namespace, pids: dict[str, int], profiler: Any
) -> dict[str, Any]:
    try:
        settle_s, _ = tp.wait_settled(replicas, n, args.settle_timeout)  # type: ignore[arg-type]
        catch_up_s = tp.wait_caught_up(replicas, n, args.catch_up_timeout)  # type: ignore[arg-type]
    except tp.NotSettled as e:
        return {"jobs": n, "passed": False, "why": str(e), "load": h.load_average()}
    starts = [len(r.reader.fired) for r in replicas]
    errors0 = sum(r.errors() for r in replicas)
    w0 = math.ceil(time.time() + args.warmup) * 1000
    w1 = w0 + int(args.window * 1000)
    tp.sleep_until_ms(w0)
    watched = {**pids, **{r.member_id: r.pid for r in replicas}}
    cpu0 = {k: h.cpu_seconds(p) for k, p in watched.items()}
    load0 = h.load_average()
    if profiler is not None:
        for r in replicas:
            profiler.attach(f"{r.member_id}-N{n}", r.pid, args.window)
    tp.sleep_until_ms(w1)
    cpu1 = {k: h.cpu_seconds(p) for k, p in watched.items()}
    load1 = h.load_average()
    tp.sleep_until_ms(w1 + int(args.grace * 1000))
    for r in replicas:
        if r.proc.poll() is not None:
            raise RuntimeError(f"{r.member_id} exited with {r.proc.returncode}:\n{r.log_tail()}")
    window_s = (w1 - w0) / 1000
    lateness: list[int] = []
    seen: set[int] = set()
    in_window = 0
    for r, start in zip(replicas, starts, strict=True):
        rd = r.reader
        for k in range(start, min(len(rd.jobs), len(rd.scheduled), len(rd.fired))):
            sched = rd.scheduled[k]
            if w0 <= sched < w1:
                in_window += 1
                lateness.append(rd.fired[k] - sched)
                seen.add(rd.jobs[k] * 1_000_000 + (sched - w0))
    lateness.sort()
    missing = n * int(window_s) - len(seen)
    p99 = h.percentile(lateness, 0.99)
    passed = missing == 0 and p99 <= args.max_p99_ms
    cpu = {k: round(100 * (cpu1[k] - cpu0[k]) / window_s) for k in watched}
    return {
        "jobs": n,
        "passed": passed,
        "why": "" if passed else f"{missing} ticks without their object, p99 {p99} ms",
        "settle_s": round(settle_s, 2),
        "catch_up_s": round(catch_up_s, 1),
        "created_per_s": round(len(seen) / window_s, 1),
        "lateness_p50_ms": h.percentile(lateness, 0.5),
        "lateness_p99_ms": p99,
        "lateness_max_ms": lateness[-1] if lateness else None,
        "missing_ticks": missing,
        "reported_twice": in_window - len(seen),
        "dispatch_errors": sum(r.errors() for r in replicas) - errors0,
        "replicas_cpu_pct": [cpu[r.member_id] for r in replicas],
        **{f"{k}_cpu_pct": cpu[k] for k in pids},
        "load": f"{load0} -> {load1}",
    }


def verify_objects(cp: Any, namespace: str, kind: str, replicas: list[Replica]) -> dict[str, Any]:
    """Every tick a replica reported has exactly its one object in the API server (names are unique)."""
    reported: set[str] = set()
    for r in replicas:
        rd = r.reader
        for k in range(min(len(rd.jobs), len(rd.scheduled))):
            reported.add(f"tput-{rd.jobs[k]:07d}-{rd.scheduled[k] // 1000}")
    with cp.api_client() as api:
        path = (
            f"/api/v1/namespaces/{namespace}/events"
            if kind == "event"
            else (f"/apis/batch/v1/namespaces/{namespace}/jobs")
        )
        names: set[str] = set()
        token = ""
        while True:
            query = [("limit", 5000), ("labelSelector", "etcdcron.io/job")]
            if token:
                query.append(("continue", token))
            doc = json.loads(api.rest_client.pool_manager.request(
                "GET", api.configuration.host + path, fields=query, headers=api.default_headers
            ).data)  # fmt: skip
            names.update(item["metadata"]["name"] for item in doc["items"])
            token = doc["metadata"].get("continue") or ""
            if not token:
                break
    ours = {nm for nm in names if nm.startswith("tput-")}
    return {
        "reported": len(reported),
        "found": len(ours & reported),
        "not_found": len(reported - ours),
        "unreported_objects": len(ours - reported),  # created, answer not yet printed when stopped
    }


def run_kind(
    cp: Any, pool_etcd: h.BenchEtcd, kind: str, variant: str, args: argparse.Namespace
) -> dict[str, Any]:
    """One kind (event, job) and one variant: ``before`` (the library at ``--before-tree``, its defaults),
    or requests in flight for this tree's KubernetesDispatcher (0: its default)."""
    before = variant == "before"
    in_flight = 0 if before else int(variant)
    label = "before" if before else str(in_flight or "default")
    prefix = f"/bench-dispatch-{kind}-{label}-{os.getpid()}"
    namespace = f"bench-{kind}-{label}"
    with cp.api_client() as api:
        from kubernetes import client as k8s

        k8s.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
    pids = {
        "apiserver": cp_pid(cp, "kube-apiserver"),
        "k8s-etcd": cp_pid(cp, "etcd"),
        "pool-etcd": pool_etcd.pid,
    }
    log_dir = Path(args.logs) if args.logs else pool_etcd.tmp
    log_dir.mkdir(parents=True, exist_ok=True)
    replicas = [
        Replica(
            i,
            pool_etcd.endpoint,
            prefix,
            str(cp.kubeconfig),
            log_dir,
            in_flight,
            args.before_tree if before else None,
            0 if before else args.history_lists,
        )
        for i in range(args.replicas)
    ]
    steps: list[dict[str, Any]] = []
    profiler = h.Profiler(Path(args.profile) / f"{kind}-{label}") if args.profile else None
    verified: dict[str, Any] = {}
    try:
        tp.wait_settled(replicas, 0, args.settle_timeout)  # type: ignore[arg-type]
        n, written = (args.start if kind == "event" else args.job_start), 0
        while n <= args.max_jobs:
            asyncio.run(write_jobs(pool_etcd.endpoint, prefix, namespace, kind, written, n))
            written = n
            profile_now = n == args.profile_jobs if args.profile_jobs else not steps
            step = measure(replicas, n, args, pids, profiler if profile_now else None)
            steps.append(step)
            h.log(f"{kind} N={n}: {step}")
            if not step["passed"]:
                break
            n = int(math.ceil(n * args.step / 10) * 10)
    finally:
        profiles = profiler.finish() if profiler else {}
        for r in replicas:
            r.stop()
    try:
        verified = verify_objects(cp, namespace, kind, replicas)
    except Exception as e:  # reported, not fatal: the measured steps stand
        verified = {"error": repr(e)}
    passed = [s for s in steps if s["passed"]]
    result: dict[str, Any] = {
        "kind": kind,
        "in_flight": label,
        "history_lists_per_second": "default" if before or not args.history_lists else args.history_lists,
        "capacity_per_s": passed[-1]["created_per_s"] if passed else 0.0,
        "at_capacity": passed[-1] if passed else None,
        "first_failure": next((s for s in steps if not s["passed"]), None),
        "verified": verified,
        "steps": steps,
    }
    if profiles:
        result["profile"] = h.summarise_collapsed(list(profiles.values()))
        result["profile_files"] = [str(p) for p in profiles.values()]
    return result


def report(doc: dict[str, Any]) -> None:
    print(f"\nmachine: {doc['machine']}")
    for b in doc["baselines"]:
        print(
            f"baseline {b['mode']}: {b['events_per_s']} Events/s "
            f"({b['procs']} procs x {b['threads']} threads, {b['errors']} errors; "
            f"clients CPU {b['clients_cpu_pct']}%, apiserver {b['apiserver_cpu_pct']}%, "
            f"its etcd {b['k8s-etcd_cpu_pct']}%; load {b['load']})"
        )
    for r in doc["runs"]:
        s = r["at_capacity"] or {}
        f = r["first_failure"] or {}
        print(
            f"pool, {r['kind']}s (3 replicas, KubernetesDispatcher, in flight {r.get('in_flight')}): "
            f"{r['capacity_per_s']}/s sustained"
        )
        if s:
            print(
                f"  at N={s['jobs']}: created−scheduled p50 {s['lateness_p50_ms']} / "
                f"p99 {s['lateness_p99_ms']} ms; replicas CPU {s['replicas_cpu_pct']}%, "
                f"apiserver {s['apiserver_cpu_pct']}%, "
                f"k8s etcd {s['k8s-etcd_cpu_pct']}%, pool etcd {s['pool-etcd_cpu_pct']}%; load {s['load']}"
            )
        if f:
            print(
                f"  fails at N={f['jobs']}: {f['why']}; replicas CPU {f.get('replicas_cpu_pct')}%, "
                f"apiserver {f.get('apiserver_cpu_pct')}%"
            )
        print(f"  objects in the API server: {r['verified']}")
        if "profile" in r:
            h.print_profile(r["profile"], f"replicas, {r['kind']}s ({', '.join(r['profile_files'])})")
    best_plain = max((b["events_per_s"] for b in doc["baselines"]), default=0)
    for r in doc["runs"]:
        if r["kind"] == "event" and r["in_flight"] != "before":
            ok = r["capacity_per_s"] >= 500 or (best_plain and r["capacity_per_s"] >= 0.9 * best_plain)
            print(
                f"\ntarget >= 500 Events/s over 3 replicas, or the API server's limit "
                f"({best_plain}/s plain): {r['capacity_per_s']}/s: {'MET' if ok else 'NOT MET'}"
            )


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--plain-worker":
        kc, secs, threads, wid, mode = sys.argv[2:7]
        plain_worker(kc, float(secs), int(threads), int(wid), mode == "raw")
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--replica":
        return replica_main(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kinds", default="event,job")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument(
        "--in-flight",
        "--workers",
        dest="variants",
        default="0",
        help="comma-separated variants: KubernetesDispatcher(in_flight=N) (0: its default), or 'before': "
        "the library at --before-tree (--workers: this flag's name before the dispatcher used asyncio)",
    )
    p.add_argument(
        "--history-lists",
        type=float,
        default=0,
        help="KubernetesDispatcher(history_lists_per_second=X) for this tree's variants (0: its default); "
        "e.g. 0.001 to see what Jobs cost the API server without the history trims' lists",
    )
    p.add_argument("--before-tree", help="a checkout (e.g. git archive of the commit before) for 'before'")
    p.add_argument("--start", type=int, default=200, help="first step's jobs (= objects due per second)")
    p.add_argument("--job-start", type=int, default=50, help="first step's jobs for Job targets")
    p.add_argument("--step", type=float, default=1.25)
    p.add_argument("--max-jobs", type=int, default=5000)
    p.add_argument("--max-p99-ms", type=float, default=1000.0)
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--grace", type=float, default=3.0)
    p.add_argument("--settle-timeout", type=float, default=60.0)
    p.add_argument("--catch-up-timeout", type=float, default=30.0)
    p.add_argument("--plain-procs", type=int, default=3)
    p.add_argument("--plain-threads", type=int, default=8)
    p.add_argument("--plain-seconds", type=float, default=8.0)
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--profile", help="directory: py-spy the replicas during one step of each variant")
    p.add_argument("--profile-jobs", type=int, default=0, help="the step to profile (default: the first)")
    p.add_argument(
        "--shares",
        type=int,
        default=0,
        help="run everything (control plane, etcds, replicas, clients) in one cgroup of this cpu.shares "
        "weight (0: no group); on a machine busy with other work it keeps their share steady",
    )
    p.add_argument("--json")
    p.add_argument("--logs", help="keep the replicas' logs in this directory")
    p.add_argument("--max-seconds", type=float, default=1500.0)
    args = p.parse_args()
    if "before" in args.variants.split(",") and not args.before_tree:
        p.error("--in-flight before needs --before-tree")
    if args.profile and not h.Profiler.available():
        p.error(f"py-spy not found at {h.PY_SPY} (pip install py-spy, or set PY_SPY)")
    from etcdcron.testing import ControlPlane

    h.install_time_bound(args.max_seconds)
    doc: dict[str, Any] = {"machine": h.machine(), "args": vars(args), "baselines": [], "runs": []}
    group = None
    if args.shares:
        why = cg.problem()
        if why:
            p.error(f"--shares: {why}")
        cg.remove_leftovers()
        group = cg.CpuGroup("dispatch", 0, args.shares)
        group.add(os.getpid())  # everything started from here on (control plane, etcd, replicas) inherits it
    cp = ControlPlane()
    pool_etcd = h.BenchEtcd()
    try:
        cp.start()
        pool_etcd.start()
        with cp.api_client() as api:
            from kubernetes import client as k8s

            k8s.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
        h.log(f"control plane {cp.server} up in {cp.startup_seconds:.1f}s; pool etcd {pool_etcd.endpoint}")
        if not args.skip_baseline:
            for raw in (False, True):
                doc["baselines"].append(plain_baseline(cp, args, raw))
                h.log(f"baseline: {doc['baselines'][-1]}")
        for kind in args.kinds.split(","):
            for variant in args.variants.split(","):
                doc["runs"].append(run_kind(cp, pool_etcd, kind, variant, args))
    except (h.BenchTimeout, KeyboardInterrupt) as e:
        h.log(f"stopped early: {e!r}")
    finally:
        signal.alarm(0)
        pool_etcd.cleanup()
        cp.stop()
        if group is not None:  # back to the parent group, then the empty group can go
            (group.path.parent / "cgroup.procs").write_text(str(os.getpid()))
            group.remove()
    report(doc)
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return 0 if doc["runs"] or doc["baselines"] else 1


if __name__ == "__main__":
    sys.exit(main())
