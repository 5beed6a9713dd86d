"""The member's hand-off of one tick's firings to the trigger, in-process: how long after the first firing
of a tick the last one is handed over (the "spread" that bench/throughput.py sees per member and tick).

For N firings of N jobs due at one moment, measured over ``--rounds`` ticks (median):

- **floor**: the same N firings written by a plain loop (``StdoutSink`` only: encode and write each, one
  flush), the least any delivery path can cost;
- **trigger phase**: ``Deliveries`` (the pool's code) from the moment the group starts until the last
  trigger call returned: what delays the last firing of a tick;
- **total**: until the group's bookkeeping (acknowledgements and history queued, metrics) is done too.

The sink writes to ``/dev/null`` (no reader to wait for); settlements are queued, never flushed (no etcd).
Per-firing figures are the group's time divided by N.

    .venv/bin/python bench/handoff.py                 # N = 333 (1,000 firings/s over 3 members)
    .venv/bin/python bench/handoff.py --jobs 1667 --rounds 50
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h
from etcdcron.dispatch.stdout import StdoutSink
from etcdcron.firing import Firing, InFlight, from_ms
from etcdcron.job import Job, StoredJob
from etcdcron.keys import Keys
from etcdcron.pool.deliveries import Deliveries
from etcdcron.pool.handoffs import Handoff
from etcdcron.pool.reporting import Reporter
from etcdcron.pool.settlements import Settlements


class Stamped:
    """The stdout sink, noting when each call returned."""

    def __init__(self, sink: StdoutSink) -> None:
        self.sink = sink
        self.returned: list[float] = []

    async def __call__(self, firing: Firing) -> None:
        await self.sink(firing)
        self.returned.append(time.perf_counter())

    def flush(self) -> None:
        self.sink.flush()


def handoffs(keys: Keys, jobs: list[StoredJob], tick_ms: int, run: int) -> list[Handoff]:
    out = []
    for i, stored in enumerate(jobs):
        key = keys.job(keys.ref(stored.job.namespace, stored.job.name))
        firing = Firing(stored, from_ms(tick_ms), from_ms(tick_ms), run, "bench", False)
        out.append(Handoff(firing, i % 256, key, key + b"/inflight", InFlight(stored.id, tick_ms, run), True))
    return out


async def measure(n: int, rounds: int, devnull: TextIO) -> dict[str, float]:
    keys = Keys("/bench-handoff")
    sink = Stamped(StdoutSink(devnull))
    settlements = Settlements(None, keys, dict, Reporter("bench", None, None))  # type: ignore[arg-type]
    deliveries = Deliveries(sink, None, settlements, "bench")
    created = datetime(2026, 1, 1, tzinfo=UTC)
    jobs = [StoredJob(Job(name=f"job-{i:07d}", schedule="* * * * * *"), f"id-{i}", created) for i in range(n)]
    floor, trigger, total = [], [], []
    for r in range(rounds):
        group = handoffs(keys, jobs, 1_800_000_000_000 + 1000 * r, r + 1)
        t0 = time.perf_counter()
        for handoff in group:
            await sink.sink(handoff.firing)
        sink.sink.flush()
        floor.append(time.perf_counter() - t0)
        sink.returned.clear()
        t0 = time.perf_counter()
        deliveries.start(group, 0)
        while deliveries._tasks:  # the group's task, and any follow-ups
            await asyncio.gather(*deliveries._tasks)
        total.append(time.perf_counter() - t0)
        trigger.append(sink.returned[-1] - t0)
        settlements._ops.clear()  # never flushed: no etcd here
        settlements.history._pending.clear()

    def per_firing_us(samples: list[float]) -> float:
        return round(statistics.median(samples) * 1e6 / n, 1)

    return {
        "jobs": n,
        "rounds": rounds,
        "floor_us": per_firing_us(floor),
        "trigger_phase_us": per_firing_us(trigger),
        "total_us": per_firing_us(total),
        "last_firing_after_ms": round(statistics.median(trigger) * 1000, 2),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", default="333", help="comma-separated group sizes")
    p.add_argument("--rounds", type=int, default=30)
    args = p.parse_args()
    print(f"machine: {h.machine()}")
    print(f"{'jobs':>6} {'floor µs':>9} {'trigger µs':>11} {'total µs':>9} {'last after ms':>14}")
    for n in (int(x) for x in args.jobs.split(",")):
        with open(os.devnull, "w") as devnull:
            r = asyncio.run(measure(n, args.rounds, devnull))
        print(
            f"{r['jobs']:>6} {r['floor_us']:>9} {r['trigger_phase_us']:>11} {r['total_us']:>9} "
            f"{r['last_firing_after_ms']:>14}"
        )
    print(f"load after: {h.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
