"""``bulkload ledger``: what incremental loads recorded, and the few things a person does to
it (forget a file so it loads again, release a dead machine's claim, merge, adopt, back up).
A thin face over ``bulkload._ledger``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._exit import EXIT_OK


def ledger(args: argparse.Namespace) -> int:
    from .._errors import ConfigError, StateError
    from .._ledger import Ledger, describe_location

    where = describe_location(args.namespace, args.ledger)
    if args.action not in ("merge", "adopt") and not where.path.exists():
        raise StateError(
            f"no ledger at {where.path} ({where.origin}): incremental loads of "
            f"{args.namespace!r} write one there; give --ledger PATH if it is elsewhere"
        )
    with Ledger.open(where.path) as book:
        if args.action == "list":
            return _list(book, args)
        if args.action == "forget":
            given = [bool(args.paths), args.match is not None, args.run_id is not None]
            if sum(given) != 1:
                raise ConfigError("forget takes PATH…, --match GLOB or --run RUN_ID (one of them)")
            if args.paths:
                count = sum(book.forget(args.namespace, key=p) for p in args.paths)
            else:
                count = book.forget(args.namespace, match=args.match, run_id=args.run_id)
            return _say(args, {"forgotten": count},
                        f"forgot {count} load(s) in {book.path}: the next incremental run "
                        "loads those files again")  # fmt: skip
        if args.action == "release":
            cleared = book.release(args.namespace)
            return _say(args, {"released": [h.to_dict() for h in cleared]},
                        f"released {len(cleared)} claim(s) on {args.namespace!r}"
                        + "".join(f"\n  {h.describe()}" for h in cleared))  # fmt: skip
        if args.action == "merge":
            report = book.merge(args.others)
            overlaps = "".join(
                f"\n  loaded twice (by runs of two ledgers): {o}" for o in report.overlaps
            )
            return _say(args, _plain(report),
                        f"merged {len(report.ledgers)} ledger(s) into {book.path}: "
                        f"{report.runs_added} run(s) and {report.loads_added} load(s) added, "
                        f"{report.forgotten} forgotten{overlaps}")  # fmt: skip
        if args.action == "adopt":
            return _adopt(book, args)
        if args.action == "backup":
            dest = book.backup(args.dest)
            return _say(args, {"backup": str(dest)}, f"backed up {book.path} to {dest}")
    raise AssertionError(f"unknown ledger action {args.action}")  # argparse allows no other


def _list(book: Any, args: argparse.Namespace) -> int:
    if args.runs:
        runs = book.runs(args.namespace)
        if args.json:
            _json({"ledger": str(book.path), "runs": [r.to_dict() for r in runs]})
            return EXIT_OK
        print(f"{len(runs)} run(s) of {args.namespace!r} in {book.path}")
        for r in runs:
            outcome = r.outcome or "running or unsettled"
            print(f"  {r.run_id}  {outcome:<12} {r.files:>6} file(s)  started {r.started_at}"
                  f"  {r.description or ''}")  # fmt: skip
            if r.note:
                print(f"      {r.note}")
        return EXIT_OK
    entries = book.entries(args.namespace, history=args.history, run_id=args.run_id)
    if args.json:
        _json({"ledger": str(book.path), "loads": [e.to_dict() for e in entries]})
        return EXIT_OK
    print(f"{len(entries)} file(s) loaded into {args.namespace!r} per {book.path}")
    for e in entries:
        size = f"{e.identity.size:,} B" if e.identity.size is not None else "size ?"
        gone = f"  (forgotten {e.forgotten_at})" if e.forgotten_at else ""
        print(f"  {e.identity.display}  {size}  {e.loaded_at}  run {e.run_id}  "
              f"shards {','.join(map(str, e.shards)) or '-'}{gone}")  # fmt: skip
    return EXIT_OK


def _adopt(book: Any, args: argparse.Namespace) -> int:
    """Record the files that finished loads of work dirs proved loaded (a schedule that
    ran plain loads before it turned incremental), under one claim of the namespace."""
    from .._journal import peek_work_dir
    from .._ledger import Outcome, new_run_id, proven_from_manifest

    claimant = "adopt-" + new_run_id()
    book.begin(args.namespace, claimant, None, "bulkload ledger adopt", wait=0)
    recorded, unproven = 0, 0
    try:
        for work in args.work_dirs:
            doc = peek_work_dir(work)
            if doc is None:
                from .._errors import StateError

                raise StateError(f"{work}: no run here (no journal or manifest.json)")
            report = book.repair(claimant, proven_from_manifest(doc))
            recorded += len(report.recorded)
            unproven += len(report.unproven)
    finally:
        book.finish(claimant, Outcome.COMPLETE, note="adopted work dirs")
    return _say(args, {"recorded": recorded, "not_loaded": unproven},
                f"recorded {recorded} file(s) as loaded; {unproven} input(s) of those runs "
                "are not proven loaded (they load with the next incremental run)")  # fmt: skip


def _plain(value: Any) -> Any:
    from dataclasses import asdict, is_dataclass

    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else str(value)


def _say(args: argparse.Namespace, doc: dict[str, Any], text: str) -> int:
    if args.json:
        _json(doc)
    else:
        print(f"bulkload: {text}")
    return EXIT_OK


def _json(doc: dict[str, Any]) -> None:
    import orjson

    sys.stdout.write(orjson.dumps(doc, default=str).decode() + "\n")
    sys.stdout.flush()
