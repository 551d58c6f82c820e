"""A process that uses a ledger, driven by a test through its stdin and stdout.

``python tests/ledger/ledger_child.py COMMAND LEDGER NAMESPACE RUN_ID [options]``; every line it
prints is one JSON object, flushed at once, so the test can wait for a moment by reading
(never by sleeping):

* ``begin``: prints ``{"ready": pid}``, waits for a line on stdin (the test's barrier: all
  children are ready and released together), begins the run with ``--wait`` seconds,
  printing ``{"waiting": [holders]}`` when the wait starts; then ``{"claimed": …}`` and it
  holds the claim until stdin says ``finish`` (finish the run) or ends (exit without
  finishing: the claim is released, the run stays unsettled); or ``{"busy": message}`` and
  exit code 3.
* ``write``: begins, then commits ``--batches`` transactions of ``--rows`` files each,
  printing ``{"committed": i}`` after each commit: the test kills it mid-write.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from bulkload._ledger import FileIdentity, Ledger, LedgerBusyError, Outcome, Partition, ProvenLoad


def say(**doc: object) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["begin", "write"])
    parser.add_argument("ledger")
    parser.add_argument("namespace")
    parser.add_argument("run_id")
    parser.add_argument("--wait", type=float, default=0.0)
    parser.add_argument("--work-dir", default="work")
    parser.add_argument("--partition", help="I/N/GROUP")
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=50)
    args = parser.parse_args()
    partition = None
    if args.partition:
        i, n, group = args.partition.split("/")
        partition = Partition(int(i), int(n), group)
    ledger = Ledger.open(args.ledger)
    if args.command == "write":
        ledger.begin(args.namespace, args.run_id, args.work_dir, "writer")
        say(claimed=args.run_id)
        for batch in range(args.batches):
            loads = [
                ProvenLoad(
                    FileIdentity(key=f"/data/{batch:05d}-{row:03d}.jsonl", size=row, mtime_ns=1),
                    shards=(batch,),
                    request_ids=(f"req_{batch}",),
                )
                for row in range(args.rows)
            ]
            ledger.record_many(args.run_id, loads)
            say(committed=batch)
        return 0
    say(ready=os.getpid())
    sys.stdin.readline()
    try:
        begun = ledger.begin(
            args.namespace,
            args.run_id,
            args.work_dir,
            f"child {args.run_id}",
            partition=partition,
            wait=args.wait,
            on_wait=lambda holders: say(waiting=[h.to_dict() for h in holders]),
        )
    except LedgerBusyError as exc:
        say(busy=str(exc), holders=[h.to_dict() for h in exc.holders])
        return 3
    say(
        claimed=begun.run.run_id,
        waited=begun.waited,
        recovered=[[h.to_dict(), why] for h, why in begun.recovered],
        unsettled=[r.run_id for r in begun.unsettled],
    )
    if sys.stdin.readline().strip() == "finish":
        ledger.finish(args.run_id, Outcome.COMPLETE)
        say(finished=args.run_id)
    ledger.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
