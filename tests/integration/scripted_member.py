"""A pool member process whose trigger a test scripts: ``ok`` (succeeds), ``hang`` (never returns), ``fail``
(raises) or ``undeliverable``. Every attempt is appended to ``--record`` as a JSON line before the trigger
answers, so a test sees what was attempted even in a process it kills with SIGKILL.

    python tests/integration/scripted_member.py --endpoint H:P --prefix P --member-id M --mode hang --record F
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import TextIO

from etcdcron import Cron, Firing, TriggerResult
from etcdcron.job import format_time


async def main(args: argparse.Namespace, record: TextIO) -> int:
    async def trigger(firing: Firing) -> TriggerResult | None:
        doc = {
            "key": firing.key,
            "name": firing.job.job.name,
            "scheduled": format_time(firing.scheduled),
            "attempt": firing.attempt,
            "redelivery": firing.redelivery,
            "member": args.member_id,
            "kind": firing.kind,
            "payload": firing.payload.decode(errors="replace"),
        }
        record.write(json.dumps(doc) + "\n")
        if args.mode == "hang":
            await asyncio.Event().wait()
        if args.mode == "fail":
            raise RuntimeError("scripted failure")
        if args.mode == "undeliverable":
            return TriggerResult.UNDELIVERABLE
        return None

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with Cron(
        endpoints=[args.endpoint], prefix=args.prefix, trigger=trigger, member_id=args.member_id, lease_ttl=2
    ):
        print("ready", flush=True)
        await stop.wait()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for flag in ("--endpoint", "--prefix", "--member-id", "--record"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--mode", choices=["ok", "hang", "fail", "undeliverable"], required=True)
    arguments = parser.parse_args()
    with open(arguments.record, "a", buffering=1) as attempts:
        sys.exit(asyncio.run(main(arguments, attempts)))
