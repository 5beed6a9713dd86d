"""The operator at scale, side by side with kube-controller-manager's CronJob controller.

One run, one real control plane (``etcdcron.testing.ControlPlane``: etcd, kube-apiserver and
kube-controller-manager v1.37 from ``tests/controlplane``), two workloads at the same time:

- **ours**: ``--replicas`` ``etcdcron operator`` processes (one elected reconciler, all pool members, their
  own etcd, the shipped ServiceAccount's RBAC and token) and N DistributedCronJobs ``*/10 * * * * *`` with
  an Event target, in namespace ``dcj-bench`` (``--period 60``: ``0 * * * * *``, one firing a minute like
  the CronJobs, so both sides ask the API server for the same number of objects);
- **the baseline**: N batch/v1 CronJobs ``* * * * *`` in namespace ``cj-bench`` whose Job template is
  suspended (the Job controller creates no Pod: no node is needed, the Job objects are what is measured).

The bench creates both sets interleaved (``--apply-threads`` client threads, as fast as the API server
takes them), then measures a window of ``--window`` seconds after the last creation, and waits ``--grace``
seconds more for late objects. Everything is read from the API server's **audit log** (level Metadata,
requests of the operator's ServiceAccount and of kube-controller-manager only; ``stageTimestamp`` has
microseconds):

- **lateness** of a tick = the time its object's create request completed − the tick's scheduled time
  (ours: from the Event's name ``<dcj>-<unix seconds>``, equal to its ``etcdcron.io/scheduled-time``
  annotation; the CronJob controller's: from the Job's name ``<cronjob>-<unix minutes>``, equal to its
  ``batch.kubernetes.io/cronjob-scheduled-timestamp`` annotation; both checked on a sample). Ticks counted:
  those scheduled after the last resource was created and before the window's end; a tick with no object
  by the end of the grace is *missing* and counts as infinitely late in the percentiles;
- **time to all firing**: from the first create of the apply until every resource's first object;
- **requests/s by verb and resource** of each side in the window (``status writes`` = patches of
  ``distributedcronjobs/status``), and writes per resource per firing period;
- CPU (% of one core over the window) and RSS of each operator replica, kube-apiserver, its etcd,
  kube-controller-manager and the operators' etcd, from /proc.

``--profile DIR`` attaches py-spy (100 Hz) to every replica during the window and prints the hottest
functions of the elected reconciler and of one other replica. The whole run is bound by
``--max-seconds``; every process it starts is stopped and every temp dir removed.

    PYTHONPATH=operator .venv/bin/python bench/operator_scale.py --resources 1000 --json /tmp/op1k.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml
from kubernetes import client

import _harness as h
from etcdcron.localetcd import free_port
from etcdcron.testing import ControlPlane

CRD = h.REPO / "crds" / "etcdcron.io_distributedcronjobs.yaml"
RBAC = [h.REPO / "deploy" / "operator" / "namespace.yaml", h.REPO / "deploy" / "operator" / "rbac.yaml"]
OPERATOR_USER = "system:serviceaccount:etcdcron-system:etcdcron-operator"
KCM_USER = "etcdcron-kube-controller-manager"  # the client certificate ControlPlane issues it
OURS, THEIRS = "dcj-bench", "cj-bench"
PERIODS = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)  # seconds that divide a minute: */P, or 0 for 60
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived", "ResponseStarted", "Panic"],
    "rules": [{"level": "Metadata", "users": [OPERATOR_USER, KCM_USER]}, {"level": "None"}],
}


def schedule(period: int) -> str:
    """Our resources' schedule: every ``period`` seconds, on the minute's multiples of it."""
    return "0 * * * * *" if period == 60 else f"*/{period} * * * * *"


def dcj(i: int, period: int) -> dict[str, Any]:
    return {
        "apiVersion": "etcdcron.io/v1alpha1",
        "kind": "DistributedCronJob",
        "metadata": {"name": f"dcj-{i:05d}"},
        "spec": {"schedule": schedule(period), "type": "bench", "target": {"event": {"reason": "Fired"}}},
    }


def cronjob(i: int) -> dict[str, Any]:
    pod = {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": f"cj-{i:05d}"},
        "spec": {
            "schedule": "* * * * *",
            "jobTemplate": {"spec": {"suspend": True, "template": {"spec": pod}}},
        },
    }


def kubectl(kubeconfig: Path, *args: str) -> str:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    done = subprocess.run(["kubectl", *args], capture_output=True, text=True, env=env, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def operator_kubeconfig(admin: Path, folder: Path) -> Path:
    """The admin kubeconfig's cluster with the operator ServiceAccount's own token (as tests/k8s do)."""
    token = kubectl(admin, "create", "token", "etcdcron-operator", "-n", "etcdcron-system", "--duration=2h")
    (folder / "token").write_text(token.strip())
    doc = yaml.safe_load(admin.read_text())
    cluster = doc["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "op", "user": {"tokenFile": str(folder / "token")}}],
        "contexts": [{"name": "op", "context": {"cluster": cluster["name"], "user": "op"}}],
        "current-context": "op",
    }
    path = folder / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


class Operator:
    """``etcdcron operator`` as a child that dies with this process; stderr/stdout to a log file."""

    def __init__(
        self,
        index: int,
        etcd: str,
        kubeconfig: Path,
        log_dir: Path,
        verbose: bool = False,
        pythonpath: str = "",
        lease_ttl: int = 5,
    ) -> None:
        self.name = f"op-{index}"
        self.health, self.metrics = free_port(), free_port()
        self.log_path = log_dir / f"{self.name}.log"
        self._log = self.log_path.open("wb")
        argv = [sys.executable, "-m", "etcdcron.cli", "operator", *(["-v"] if verbose else [])]
        argv += ["--endpoints", etcd, "--prefix", "/bench"]
        argv += ["--member-id", self.name, "--lease-ttl", str(lease_ttl), "--bind-address", "127.0.0.1"]
        argv += ["--metrics-port", str(self.metrics), "--health-port", str(self.health)]
        argv += ["--kubeconfig", str(kubeconfig)]
        env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else None
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=h._KILL_WITH_PARENT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ready(self) -> bool:
        try:
            with h._DIRECT.open(f"http://127.0.0.1:{self.health}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except (OSError, urllib.request.HTTPError):
            return False

    def leader(self) -> bool:
        with contextlib.suppress(OSError):
            return h.scrape(self.metrics).get("etcdcron_reconciler_leader") == 1.0
        return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def tail(self, n: int = 20) -> str:
        return "".join(self.log_path.read_text(errors="replace").splitlines(True)[-n:])


class GilProfiler(h.Profiler):
    """py-spy ``--gil``: only the thread holding the GIL is sampled, so threads blocked on a socket (the
    client's workers) do not drown what uses the CPU."""

    def attach(self, name: str, pid: int, duration: float) -> None:
        raw = self.out_dir / f"{name}.txt"
        argv = [h.PY_SPY, "record", "--pid", str(pid), "--rate", str(self.rate), "--gil", "--nonblocking"]
        argv += ["--duration", str(max(1, int(duration))), "--format", "raw", "--output", str(raw)]
        log_file = (self.out_dir / f"{name}.py-spy.log").open("wb")
        proc = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=h._KILL_WITH_PARENT
        )
        log_file.close()
        self.procs.append((name, proc, raw))


def wait(what: str, check: Any, timeout: float, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def apply_all(
    api: client.ApiClient, n: int, threads: int, period: int
) -> tuple[float, float, dict[str, float]]:
    """Create the N DistributedCronJobs and N CronJobs interleaved; (start, end, created-at by name)."""
    custom, batch = client.CustomObjectsApi(api), client.BatchV1Api(api)
    created: dict[str, float] = {}

    def one(k: int) -> None:
        i = k // 2
        if k % 2 == 0:
            body = dcj(i, period)
            response = custom.create_namespaced_custom_object(
                "etcdcron.io", "v1alpha1", OURS, "distributedcronjobs", body, _preload_content=False
            )
        else:
            body = cronjob(i)
            response = batch.create_namespaced_cron_job(THEIRS, body, _preload_content=False)
        _ = response.data  # read it: the connection goes back to the pool
        created[body["metadata"]["name"]] = time.time()

    start = time.time()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(2 * n)))
    return start, time.time(), created


# -- the audit log -------------------------------------------------------------------------------------------
def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


DCJ_EVENT = re.compile(r"^(dcj-\d{5})-(\d{10})$")
CJ_JOB = re.compile(r"^(cj-\d{5})-(\d{8})$")


def read_audit(path: Path) -> dict[str, Any]:
    """Creations of our Events and their Jobs (name -> (scheduled, completed)), and every request of
    each side as (time, verb, resource[/subresource], code)."""
    events: dict[str, tuple[str, float, float]] = {}
    jobs: dict[str, tuple[str, float, float]] = {}
    requests: dict[str, list[tuple[float, str, str, int]]] = {"ours": [], "theirs": []}
    with path.open() as f:
        for line in f:
            a = json.loads(line)
            side = "ours" if a["user"]["username"] == OPERATOR_USER else "theirs"
            ref = a.get("objectRef") or {}
            resource = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            code = int((a.get("responseStatus") or {}).get("code", 0))
            at = _ts(a["stageTimestamp"])
            requests[side].append((at, a["verb"], resource, code))
            if a["verb"] != "create" or code != 201:
                continue
            name = ref.get("name", "")
            if resource == "events" and ref.get("namespace") == OURS and (m := DCJ_EVENT.match(name)):
                events[name] = (m.group(1), float(m.group(2)), at)
            elif resource == "jobs" and ref.get("namespace") == THEIRS and (m := CJ_JOB.match(name)):
                jobs[name] = (m.group(1), float(m.group(2)) * 60, at)
    return {"events": events, "jobs": jobs, "requests": requests}


def lateness(
    created: dict[str, tuple[str, float, float]],
    owners: dict[str, float],
    ticks: list[float],
    t0: float,
) -> dict[str, Any]:
    """Lateness (s) of every expected tick in ``ticks`` of every owner (missing ones infinitely late) and
    the time from ``t0`` until every owner had its first object."""
    got: dict[tuple[str, float], float] = {(o, s): at - s for o, s, at in created.values()}
    first: dict[str, float] = {}
    for o, _s, at in created.values():
        first[o] = min(first.get(o, at), at)
    late = sorted(got.get((o, t), float("inf")) for o in owners for t in ticks)
    missing = sum(1 for x in late if x == float("inf"))
    all_firing = max(first.values()) - t0 if len(first) == len(owners) else float("inf")
    return {
        "ticks": len(late),
        "missing": missing,
        "p50_ms": round(1000 * h.percentile(late, 0.50), 1),
        "p99_ms": round(1000 * h.percentile(late, 0.99), 1),
        "max_ms": round(1000 * late[-1], 1) if late else float("nan"),
        "all_firing_s": round(all_firing, 1),
        "firing_owners": len(first),
    }


def rates(requests: list[tuple[float, str, str, int]], start: float, end: float) -> dict[str, float]:
    counts = Counter(f"{verb} {res}" for at, verb, res, _ in requests if start <= at < end)
    return {k: round(v / (end - start), 2) for k, v in counts.most_common()}


# -- /proc ---------------------------------------------------------------------------------------------------
class Usage:
    """CPU seconds at the start of the window, per process; % of one core and RSS at the end."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.t0 = time.monotonic()
        self.cpu0 = {k: h.cpu_seconds(p) for k, p in pids.items()}

    def finish(self) -> dict[str, dict[str, float]]:
        elapsed = time.monotonic() - self.t0
        out = {}
        for k, p in self.pids.items():
            mem = h.memory_kb(p)
            cpu = 100 * (h.cpu_seconds(p) - self.cpu0[k]) / elapsed
            out[k] = {
                "cpu_pct": round(cpu, 1),
                "rss_mb": mem["VmRSS"] // 1024,
                "peak_mb": mem["VmHWM"] // 1024,
            }
        return out


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    n = args.resources
    audit = tmp / "audit.log"
    (tmp / "policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))
    apiserver_args = [
        f"--audit-policy-file={tmp / 'policy.yaml'}",
        f"--audit-log-path={audit}",
        "--audit-log-mode=batch",
        "--audit-log-maxsize=0",
    ]
    kcm_args = (
        [f"--kube-api-qps={args.kcm_qps}", f"--kube-api-burst={2 * args.kcm_qps}"] if args.kcm_qps else []
    )
    operators: list[Operator] = []
    churn: dict[str, dict[str, int]] = {}
    cp = ControlPlane(
        controller_manager=True, apiserver_args=apiserver_args, controller_manager_args=kcm_args
    )
    etcd = h.BenchEtcd(extra_args=())
    profiler = GilProfiler(Path(args.profile)) if args.profile else None
    try:
        cp.start()
        h.log(f"control plane up in {cp.startup_seconds:.1f}s")
        cp.apply_crds([CRD])
        kubectl(cp.kubeconfig, "apply", *(f"-f={p}" for p in RBAC))
        for ns in (OURS, THEIRS):
            kubectl(cp.kubeconfig, "create", "namespace", ns)
        etcd.start()
        config = operator_kubeconfig(cp.kubeconfig, tmp)
        operators = [
            Operator(i, etcd.endpoint, config, tmp, args.verbose, args.operator_pythonpath)
            for i in range(args.replicas)
        ]
        wait("every replica ready", lambda: all(o.ready() for o in operators), 90)
        leader = next((o for o in operators if o.leader()), operators[0])
        h.log(f"{len(operators)} replicas ready, {leader.name} leads; applying {n} + {n} resources")
        load_before = h.load_average()
        with cp.api_client() as api:
            api.configuration.connection_pool_maxsize = args.apply_threads
            api.rest_client.pool_manager.connection_pool_kw["maxsize"] = args.apply_threads
            t0, t1, created = apply_all(api, n, args.apply_threads, args.period)
        h.log(f"applied {2 * n} resources in {t1 - t0:.1f}s")
        pids = {o.name + ("*" if o is leader else ""): o.pid for o in operators}
        for name in ("kube-apiserver", "etcd", "kube-controller-manager"):
            pid = cp.pid_of(name)
            assert pid is not None
            pids[name] = pid
        pids["operators' etcd"] = etcd.pid
        usage = Usage(pids)
        window_end = t1 + args.window
        if profiler is not None:
            for o in operators:
                profiler.attach(o.name + ("-leader" if o is leader else ""), o.pid, args.window)
        time.sleep(max(0.0, window_end - time.time()))
        used = usage.finish()
        load_window = h.load_average()
        time.sleep(args.grace)
        if any(o.proc.poll() is not None for o in operators):
            raise RuntimeError("a replica exited:\n" + "\n".join(o.tail() for o in operators))
        samples = sample_annotations(cp)
    finally:
        for o in operators:
            o.stop()
            text = o.log_path.read_text(errors="replace")
            churn[o.name] = {
                "lost": text.count("lost its lease"),
                "unelected": text.count("lost the reconciler lease"),
            }
            if args.logs:
                Path(args.logs).mkdir(parents=True, exist_ok=True)
                shutil.copy(o.log_path, Path(args.logs) / o.log_path.name)
        profiles = profiler.finish() if profiler is not None else {}
        etcd.cleanup()
        cp.stop()  # the audit log's last batch is flushed
    seen = read_audit(audit)
    period = args.period
    ours = [float(t) for t in range(int(t1) // period * period + period, int(window_end) + 1, period)]
    theirs = [float(t) for t in range(int(t1) // 60 * 60 + 60, int(window_end) + 1, 60)]
    dcjs = {k: v for k, v in created.items() if k.startswith("dcj-")}
    cjs = {k: v for k, v in created.items() if k.startswith("cj-")}
    ws, we = t1, window_end
    ours_rates, theirs_rates = (
        rates(seen["requests"]["ours"], ws, we),
        rates(seen["requests"]["theirs"], ws, we),
    )
    status_writes = ours_rates.get("patch distributedcronjobs/status", 0.0)
    result = {
        "resources": n,
        "replicas": args.replicas,
        "kcm_qps": args.kcm_qps or "default (20)",
        "operator_tree": args.operator_pythonpath or "this tree",
        "apply_s": round(t1 - t0, 1),
        "window_s": args.window,
        "load_before": load_before,
        "load_window_end": load_window,
        "ours": lateness(seen["events"], dcjs, ours, t0),
        "theirs": lateness(seen["jobs"], cjs, theirs, t0),
        "status_writes_per_s": status_writes,
        "period_s": period,
        "status_writes_per_resource_per_period": round(status_writes * period / n, 3),
        "requests_per_s": {"ours": ours_rates, "theirs": theirs_rates},
        "requests_total_per_s": {
            "ours": round(sum(ours_rates.values()), 1),
            "theirs": round(sum(theirs_rates.values()), 1),
        },
        "usage": used,
        "annotation_check": samples,
        "leases": churn,
    }
    if profiles:
        result["profiles"] = {k: h.summarise_collapsed([p]) for k, p in profiles.items()}
    return result


def sample_annotations(cp: ControlPlane) -> str:
    """The names the lateness is computed from agree with the annotations (one object of each kind)."""
    with cp.api_client() as api:
        events = client.CoreV1Api(api).list_namespaced_event(OURS, limit=1, label_selector="etcdcron.io/job")
        jobs = client.BatchV1Api(api).list_namespaced_job(THEIRS, limit=1)
    checked = []
    for e in events.items:
        stamp = int(_ts(e.metadata.annotations["etcdcron.io/scheduled-time"]))
        assert e.metadata.name.endswith(f"-{stamp}"), e.metadata.name
        checked.append("event")
    for j in jobs.items:
        stamp = int(_ts(j.metadata.annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"]))
        assert j.metadata.name.endswith(f"-{stamp // 60}"), j.metadata.name
        checked.append("job")
    return ",".join(checked) + " ok"


def print_table(r: dict[str, Any]) -> None:
    o, t = r["ours"], r["theirs"]
    print(
        f"\n## operator at scale: {r['resources']} resources each side, {r['replicas']} replicas, "
        f"apply {r['apply_s']} s, window {r['window_s']} s, load {r['load_before']} -> {r['load_window_end']}"
    )
    print(f"operators from: {r['operator_tree']}; leases lost, reconciler seat lost: {r['leases']}")
    print("| side | ticks | missing | p50 ms | p99 ms | max ms | all firing after (s) | requests/s |")
    print("|---|---|---|---|---|---|---|---|")
    for label, x, side in (("DistributedCronJob → Event", o, "ours"), ("CronJob → Job (kcm)", t, "theirs")):
        print(
            f"| {label} | {x['ticks']} | {x['missing']} | {x['p50_ms']} | {x['p99_ms']} | {x['max_ms']} | "
            f"{x['all_firing_s']} | {r['requests_total_per_s'][side]} |"
        )
    print(
        f"\nstatus writes: {r['status_writes_per_s']}/s = {r['status_writes_per_resource_per_period']} "
        f"per resource per {r['period_s']} s period (kcm QPS: {r['kcm_qps']})"
    )
    for side in ("ours", "theirs"):
        print(f"{side} requests/s: " + ", ".join(f"{k} {v}" for k, v in r["requests_per_s"][side].items()))
    print("| process | CPU % of a core | RSS MB | peak MB |\n|---|---|---|---|")
    for name, u in r["usage"].items():
        print(f"| {name} | {u['cpu_pct']} | {u['rss_mb']} | {u['peak_mb']} |")
    for name, summary in (r.get("profiles") or {}).items():
        h.print_profile(summary, name)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resources", type=int, default=1000, help="DistributedCronJobs, and as many CronJobs")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument(
        "--period",
        type=int,
        default=10,
        choices=PERIODS,
        help="our resources fire every PERIOD s (10: the issue's */10; 60: as often as the CronJobs)",
    )
    p.add_argument("--lease-ttl", type=int, default=5, help="the replicas' --lease-ttl (theirs by default)")
    p.add_argument("--window", type=float, default=150.0, help="seconds measured after the last creation")
    p.add_argument("--grace", type=float, default=20.0, help="seconds a late object may still come")
    p.add_argument("--apply-threads", type=int, default=24)
    p.add_argument(
        "--kcm-qps", type=int, default=0, help="kube-controller-manager --kube-api-qps (0: its default)"
    )
    p.add_argument("--profile", help="py-spy every replica during the window; raw stacks in this dir")
    p.add_argument("--json", help="also write the result here")
    p.add_argument("--logs", help="keep the replicas' logs in this dir")
    p.add_argument(
        "--operator-pythonpath",
        default="",
        help="PYTHONPATH of the replicas only (another tree's operator/, e.g. an older version to compare)",
    )
    p.add_argument("--verbose", action="store_true", help="replicas log at INFO (-v)")
    p.add_argument("--max-seconds", type=float, default=1200.0, help="hard bound of the whole run")
    args = p.parse_args()
    h.install_time_bound(args.max_seconds)
    tmp = Path(tempfile.mkdtemp(prefix="etcdcron-opscale-"))
    try:
        result = run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["machine"] = h.machine()
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
