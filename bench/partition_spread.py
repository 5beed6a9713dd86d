"""How evenly partitions split over members, and how many move on a join or a leave: the balanced assignment
against plain rendezvous, in one run (pure computation, no etcd; a few seconds).

Usage (from the repository root)::

    PYTHONPATH=operator .venv/bin/python bench/partition_spread.py   # 256 partitions, 2-8 members
    PYTHONPATH=operator .venv/bin/python bench/partition_spread.py --partitions 1024 --trials 50

For each member count N and each of ``--trials`` random member sets (ids like ``host-1a2b3c-4242``, as
``hostname-pid`` gives): **spread** is the busiest member's partitions over the mean P/N (its jobs, too, when
jobs hash evenly); **join** is the partitions that change owner when one member joins N, over the minimum
P/(N+1); **leave** the same when one of N leaves, over P/N. Mean and worst over the trials.
"""

from __future__ import annotations

import argparse
import random
import statistics

from etcdcron.partitions import assignment


def measure(
    partitions: int, members: int, trials: int, balanced: bool, rng: random.Random
) -> dict[str, float]:
    spread, join, leave = [], [], []
    for _ in range(trials):
        ids = [f"host-{rng.randrange(1 << 24):06x}-{rng.randrange(1, 1 << 15)}" for _ in range(members + 1)]
        ids, newcomer = ids[:-1], ids[-1]
        owners = assignment(partitions, ids, balanced=balanced)
        counts = [sum(1 for m in owners.values() if m == i) for i in ids]
        spread.append(max(counts) / (partitions / members))
        joined = assignment(partitions, [*ids, newcomer], balanced=balanced)
        join.append(sum(owners[p] != joined[p] for p in range(partitions)) / (partitions / (members + 1)))
        if members > 1:
            left = assignment(partitions, ids[1:], balanced=balanced)
            leave.append(sum(owners[p] != left[p] for p in range(partitions)) / (partitions / members))
    return {
        "spread": statistics.mean(spread),
        "spread_worst": max(spread),
        "join": statistics.mean(join),
        "join_worst": max(join),
        "leave": statistics.mean(leave) if leave else 0.0,
        "leave_worst": max(leave) if leave else 0.0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--partitions", type=int, default=256)
    p.add_argument("--members", default="2,3,4,8")
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    print(f"{args.partitions} partitions, {args.trials} random member sets each; mean (worst)")
    print(f"{'N':>3} {'assignment':<11} {'spread':>14} {'join moves':>14} {'leave moves':>14}")
    for n in (int(x) for x in args.members.split(",")):
        for balanced in (False, True):
            r = measure(args.partitions, n, args.trials, balanced, random.Random(args.seed + n))
            print(
                f"{n:>3} {'balanced' if balanced else 'rendezvous':<11} "
                f"{r['spread']:>6.3f} ({r['spread_worst']:.3f}) {r['join']:>6.2f}x ({r['join_worst']:.2f}x) "
                f"{r['leave']:>6.2f}x ({r['leave_worst']:.2f}x)"
            )


if __name__ == "__main__":
    main()
