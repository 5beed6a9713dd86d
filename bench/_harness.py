"""Shared plumbing of the benchmarks (not a benchmark itself): a local etcd that cannot outlive the run,
member processes, bulk job writes, /proc readings, Prometheus scrapes and py-spy profiles.

Everything here bounds itself: every wait has a deadline, every child gets PR_SET_PDEATHSIG, and etcd
gets a small reaper process that kills it (and removes its data) if the benchmark dies without cleaning up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import IO, Any

from etcdcron import etcd
from etcdcron.etcd import EtcdClient
from etcdcron.job import Job, StoredJob
from etcdcron.keys import Keys, range_end
from etcdcron.localetcd import LocalEtcd
from etcdcron.policy import Delivery

REPO = Path(__file__).resolve().parent.parent
PY_SPY = os.environ.get("PY_SPY", shutil.which("py-spy") or "/tmp/benchtools/bin/py-spy")
CLK_TCK = os.sysconf("SC_CLK_TCK")
TIME_ZONES = (
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Asia/Tokyo",
    "Australia/Sydney",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Europe/London",
)


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via http_proxy


class BenchTimeout(Exception):
    """The benchmark's own time bound ran out."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def install_time_bound(seconds: float) -> None:
    """SIGALRM after ``seconds`` (and SIGTERM at any time) raise in the main thread: ``finally`` cleans up."""

    def alarm(signum: int, frame: object) -> None:
        raise BenchTimeout(f"benchmark exceeded its bound of {seconds:.0f}s")

    def term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGALRM, alarm)
    signal.signal(signal.SIGTERM, term)
    signal.alarm(max(int(seconds), 1))


# -- child processes -----------------------------------------------------------------------------------------
def _pdeathsig(sig: int) -> Callable[[], None] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG

    return hook


_KILL_WITH_PARENT = _pdeathsig(int(signal.SIGKILL))
_TERM_WITH_PARENT = _pdeathsig(int(signal.SIGTERM))

_REAPER = r"""
import os, shutil, signal, sys
tmp = sys.argv[1].rstrip("/") + "/"
def bye(*_):
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"etcd") and any(a.startswith(tmp.encode()) for a in argv):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
    shutil.rmtree(tmp, ignore_errors=True)
    os._exit(0)
signal.signal(signal.SIGTERM, bye)
if os.getppid() == 1:
    bye()
while True:
    signal.pause()
"""


BIG_TXN_ARGS = ("--max-txn-ops=10000", f"--max-request-bytes={32 * 1024 * 1024}")
"""Bulk loads write up to 10,000 keys per transaction (etcd's defaults: 128 ops, 1.5 MiB)."""


class BenchEtcd:
    """The shared LocalEtcd launcher in a temp dir. etcd dies with this process (PR_SET_PDEATHSIG, in the
    launcher); the reaper is what removes the data dir too if this process dies without cleaning up."""

    def __init__(self, extra_args: Sequence[str] = BIG_TXN_ARGS) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="etcdcron-bench-"))
        self.etcd = LocalEtcd(
            self.tmp / "etcd",
            log_path=self.tmp / "etcd.log",
            extra_args=tuple(extra_args),
            die_with_parent=True,
        )
        self._reaper: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return self.etcd.endpoint

    @property
    def pid(self) -> int:
        assert self.etcd.process is not None
        return self.etcd.process.pid

    def start(self) -> BenchEtcd:
        (self.tmp / "etcd").mkdir()
        self._reaper = subprocess.Popen(  # first: it finds etcd by its data dir, so no window is left open
            [sys.executable, "-c", _REAPER, str(self.tmp)],
            stdin=subprocess.DEVNULL,
            preexec_fn=_TERM_WITH_PARENT,
        )
        self.etcd.start()
        return self

    def db_size(self) -> tuple[int, int]:
        """(dbSize, dbSizeInUse) in bytes, from etcd's maintenance status."""
        doc = self.etcd.status()
        return int(doc.get("dbSize", 0)), int(doc.get("dbSizeInUse", 0))

    def cleanup(self) -> None:
        self.etcd.stop()
        if self._reaper is not None:
            self._reaper.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._reaper.wait(5)
        shutil.rmtree(self.tmp, ignore_errors=True)


class MemberProc:
    """``python -m etcdcron.cli member`` as a child; stdout piped (or discarded), stderr to a log file."""

    def __init__(
        self,
        index: int,
        endpoint: str,
        prefix: str,
        log_dir: Path,
        *,
        metrics_port: int,
        stdout: bool = True,
        lease_ttl: int = 5,
        verbose: bool = False,
    ) -> None:
        self.member_id = f"bench-{index}"
        self.metrics_port = metrics_port
        self.log_path = log_dir / f"{self.member_id}.log"
        argv = [
            sys.executable,
            "-m",
            "etcdcron.cli",
            *(["-v"] if verbose else []),
            "member",
            "--sink",
            "stdout",
            "--endpoints",
            endpoint,
            "--prefix",
            prefix,
            "--member-id",
            self.member_id,
            "--lease-ttl",
            str(lease_ttl),
            "--metrics-port",
            str(metrics_port),
        ]
        self._err = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
            stderr=self._err,
            preexec_fn=_KILL_WITH_PARENT,
            bufsize=1 << 16,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stdout(self) -> IO[bytes]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._err.close()
        return self.proc.returncode

    def log_tail(self, n: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "".join(self.log_path.read_text(errors="replace").splitlines(True)[-n:])
        return ""


# -- /proc and metrics ---------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in kB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> dict[str, Any]:
    mem_kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    lib = max((REPO / "operator" / "etcdcron").rglob("*.py"), key=lambda f: f.stat().st_mtime)
    lib_time = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lib.stat().st_mtime))
    return {
        "library_newest_file": f"{lib.relative_to(REPO)} {lib_time}",  # which library version ran
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(mem_kb / 1024**2, 1),
        "python": sys.version.split()[0],
        "load": load_average(),
    }


_METRIC_LINE = re.compile(rb"^(etcdcron_[a-z_]+?)(?:_total)? ([0-9.e+-]+)$", re.M)


def scrape(port: int, timeout: float = 5.0) -> dict[str, float]:
    """Unlabelled etcdcron_* samples of one member's /metrics (``_total`` dropped from counter names)."""
    with _DIRECT.open(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        body = r.read()
    return {m.group(1).decode(): float(m.group(2)) for m in _METRIC_LINE.finditer(body)}


def scrape_all(ports: Sequence[int]) -> list[dict[str, float] | None]:
    out: list[dict[str, float] | None] = []
    for port in ports:
        try:
            out.append(scrape(port))
        except OSError:
            out.append(None)
    return out


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


# -- bulk job writes -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobShape:
    """What the i-th benchmark job looks like: ``every-second`` (``* * * * * *``, UTC) or ``daily``.

    ``daily`` spreads jobs over ``minute hour * * *`` and TIME_ZONES: ``distinct`` (schedule, zone) pairs in
    all (at most 60*24*len(TIME_ZONES) = 11,520), over 10 tenants.
    """

    kind: str
    distinct: int = 60 * 24 * len(TIME_ZONES)
    delivery: str = "at-least-once"  # or at-most-once: the delivery mode of every job

    def spec(self, i: int) -> tuple[str, str, str, str]:
        """(namespace, name, schedule, time zone) of job i."""
        if self.kind == "every-second":
            return "bench", f"tput-{i:07d}", "* * * * * *", "UTC"
        c = i % self.distinct
        minute, hour, zone = c % 60, (c // 60) % 24, TIME_ZONES[(c // 1440) % len(TIME_ZONES)]
        return f"tenant-{i % 10}", f"job-{i:07d}", f"{minute} {hour} * * *", zone


_ID_MARK = "0" * 32
_NAME_MARK = "zzbenchplaceholderzz"


class SpecWriter:
    """Spec values with exactly the bytes ``StoredJob(...).to_json()`` gives (and so ``JobStore.add``).

    Building and validating a ``Job`` per spec costs ~75 µs here; the JSON of jobs that differ only in name
    and id is a template, filled in ~2 µs. ``verify`` checks the template against the real thing.
    """

    def __init__(self, created: datetime, delivery: str = "at-least-once") -> None:
        self.created = created
        self.delivery = Delivery(delivery)
        self._templates: dict[tuple[str, str, str], tuple[str, str, str]] = {}

    def _template(self, ns: str, schedule: str, zone: str) -> tuple[str, str, str]:
        key = (ns, schedule, zone)
        t = self._templates.get(key)
        if t is None:
            job = Job(
                name=_NAME_MARK, schedule=schedule, namespace=ns, time_zone=zone, delivery=self.delivery
            )
            text = StoredJob(job, _ID_MARK, self.created).to_json().decode()
            head, rest = text.split(f'"{_ID_MARK}"')
            mid, tail = rest.split(f'"{_NAME_MARK}"')
            t = self._templates[key] = (head + '"', '"' + mid + '"', '"' + tail)
        return t

    def value(self, ns: str, name: str, schedule: str, zone: str, job_id: str) -> bytes:
        head, mid, tail = self._template(ns, schedule, zone)
        return (head + job_id + mid + name + tail).encode()

    def verify(self, ns: str, name: str, schedule: str, zone: str, job_id: str) -> None:
        real = StoredJob(
            Job(name=name, schedule=schedule, namespace=ns, time_zone=zone, delivery=self.delivery),
            job_id,
            self.created,
        )
        if real.to_json() != self.value(ns, name, schedule, zone, job_id):
            raise AssertionError(f"template differs from StoredJob.to_json() for {ns}/{name}")


async def _write_range(
    endpoint: str,
    prefix: str,
    shape: JobShape,
    start: int,
    stop: int,
    created: datetime,
    txn_ops: int,
    inflight: int,
) -> tuple[int, int]:
    keys = Keys(prefix)
    writer = SpecWriter(created, shape.delivery)
    written = nbytes = 0
    sem = asyncio.Semaphore(inflight)
    async with EtcdClient([endpoint], timeout=120) as client:

        async def send(ops: list[Any]) -> None:
            try:
                await client.txn([], ops)
            finally:
                sem.release()

        tasks = []
        for lo in range(start, stop, txn_ops):
            ops = []
            for i in range(lo, min(lo + txn_ops, stop)):
                ns, name, schedule, zone = shape.spec(i)
                job_id = uuid.uuid4().hex
                value = writer.value(ns, name, schedule, zone, job_id)
                if i % 9973 == 0:
                    writer.verify(ns, name, schedule, zone, job_id)
                ops.append(etcd.put(keys.job(keys.ref(ns, name)), value))
                nbytes += len(value)
            await sem.acquire()
            tasks.append(asyncio.create_task(send(ops)))
            written += len(ops)
        await asyncio.gather(*tasks)
    return written, nbytes


def write_range(*args: Any) -> tuple[int, int]:
    """Process-pool entry: write jobs [start, stop) in transactions of ``txn_ops`` puts."""
    return asyncio.run(_write_range(*args))


def bulk_write(
    endpoint: str,
    prefix: str,
    shape: JobShape,
    n: int,
    *,
    workers: int = 2,
    txn_ops: int = 5000,
    inflight: int = 2,
    created: datetime | None = None,
) -> tuple[float, int]:
    """Write n job specs (no cursors, no TTL) with ``workers`` processes; returns (seconds, value bytes)."""
    created = created or datetime.now(UTC).replace(microsecond=0)
    t0 = time.monotonic()
    if n <= 20_000 or workers <= 1:
        _, nbytes = write_range(endpoint, prefix, shape, 0, n, created, min(txn_ops, 1000), inflight)
        return time.monotonic() - t0, nbytes
    bounds = [n * w // workers for w in range(workers + 1)]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(write_range, endpoint, prefix, shape, lo, hi, created, txn_ops, inflight)
            for lo, hi in itertools.pairwise(bounds)
        ]
        nbytes = sum(f.result()[1] for f in futures)
    return time.monotonic() - t0, nbytes


async def count_keys(endpoint: str, prefix: bytes) -> int:
    async with EtcdClient([endpoint]) as client:
        r = await client.range(prefix, range_end(prefix), count_only=True)
        return int(r.count)


async def partition_owners(client: EtcdClient, keys: Keys) -> dict[int, str]:
    root = keys.partitions_root()
    r = await client.range(root, range_end(root))
    return {keys.partition_of_key(kv.key): kv.value.decode() for kv in r.kvs}


# -- py-spy --------------------------------------------------------------------------------------------------
class Profiler:
    """``py-spy record`` attached to running processes; collapsed stacks summarised afterwards."""

    def __init__(self, out_dir: Path, rate: int = 100) -> None:
        self.out_dir = out_dir
        self.rate = rate
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        out_dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def available() -> bool:
        return Path(PY_SPY).exists()

    def attach(self, name: str, pid: int, duration: float) -> None:
        raw = self.out_dir / f"{name}.txt"
        argv = [
            PY_SPY,
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(self.rate),
            "--duration",
            str(max(1, int(duration))),
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(raw),
        ]
        log_file = (self.out_dir / f"{name}.py-spy.log").open("wb")
        proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=_KILL_WITH_PARENT)
        log_file.close()
        self.procs.append((name, proc, raw))

    def finish(self, timeout: float = 60.0) -> dict[str, Path]:
        done: dict[str, Path] = {}
        for name, proc, raw in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # py-spy writes what it has on Ctrl-C
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if raw.exists():
                done[name] = raw
        self.procs.clear()
        return done


def _frame_name(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``module.py:func``."""
    m = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not m:
        return frame
    func, path = m.groups()
    return f"{Path(path).name}:{func}"


def summarise_collapsed(paths: Sequence[Path], top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares of the hottest functions over py-spy raw (collapsed) files."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_frame_name(f) for f in stack.split(";")]
            if not frames:
                continue
            total += count
            own[frames[-1]] += count
            for f in set(frames):
                incl[f] += count
    share = lambda c: round(100 * c / total, 1) if total else 0.0  # noqa: E731
    return {
        "samples": total,
        "self": [(f, share(c)) for f, c in own.most_common(top)],
        "inclusive": [(f, share(c)) for f, c in incl.most_common(top * 2)],
    }


def print_profile(summary: dict[str, Any], title: str) -> None:
    print(f"\n## profile: {title} ({summary['samples']} samples)")
    print("  self %   function")
    for f, s in summary["self"]:
        print(f"  {s:6.1f}   {f}")
    print("  incl %   function")
    for f, s in summary["inclusive"]:
        print(f"  {s:6.1f}   {f}")
