"""A miniature nightly loader that uses the ledger exactly as the wiring should, for the
kill -9 test of the protocol (``test_ledger_nights.py``).

``python tests/ledger/ledger_sim.py LEDGER WORK INPUTS SERVER``: every JSONL file in INPUTS, three
lines to a shard, is "uploaded" to SERVER (one file per requestId, written atomically: a
PUT to the same URL replaces the object, as S3 does). The work dir keeps a journal like
bulkload's (run → shard → ticket → PUT → uploaded → finish, each fsynced before the step it
enables). The protocol under test, in order:

1. an unfinished run in the work dir is resumed first: ``begin`` with its run id, settle
   the unsettled runs the ledger names, re-derive its shards (skipping uploaded ones,
   re-PUTting a ticketed one to the same requestId), record each file as soon as the
   journal proves it loaded, ``finish(release=False)``; a finished run is archived to
   ``WORK/runs/RUN_ID.jsonl`` (each run's journal stays findable);
2. the new run: ``begin`` (the same process keeps the namespace), settle the unsettled
   runs, ``decide``, load what is new or changed, recording as files complete, ``finish``.

Each durable step prints ``step`` (flushed), so the test can kill at any of them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from bulkload._ledger import (
    Completion,
    FileIdentity,
    Ledger,
    Outcome,
    new_run_id,
    proven_from_manifest,
)

NS = "products"
PER_SHARD = 3


def step(what: str) -> None:
    sys.stdout.write(json.dumps({"step": what}) + "\n")
    sys.stdout.flush()


def append(journal: Path, event: dict[str, Any]) -> None:
    with journal.open("ab") as f:
        f.write(json.dumps(event).encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())
    step(event["t"])


def replay(journal: Path) -> dict[str, Any] | None:
    """The run a journal describes, as a manifest (``RunState.manifest()``'s shape)."""
    if not journal.exists():
        return None
    doc: dict[str, Any] = {}
    shards: dict[int, dict[str, Any]] = {}
    for raw in journal.read_bytes().splitlines():
        try:
            e = json.loads(raw)
        except ValueError:
            continue  # the torn last line of a kill
        if e["t"] == "run":
            doc = {"namespace": NS, "run_id": e["run_id"], "work_dir": str(journal.parent),
                   "cwd": "/", "inputs": e["inputs"], "finished_at": None}  # fmt: skip
        elif e["t"] == "shard":
            shards[e["index"]] = {"index": e["index"], "status": "pending", "request_id": None,
                                  "sources": [{"path": p} for p in e["paths"]]}  # fmt: skip
        elif e["t"] == "ticket":
            shards[e["index"]]["request_id"] = e["request_id"]
        elif e["t"] == "uploaded":
            shards[e["index"]]["status"] = "uploaded"
        elif e["t"] == "finish":
            doc["finished_at"] = "done"
    doc["shards"] = [shards[i] for i in sorted(shards)]
    return doc


def identities(inputs: list[dict[str, Any]]) -> list[FileIdentity]:
    return [FileIdentity(key=i["key"], display=i["path"], size=i["size"],
                         mtime_ns=i["mtime_ns"]) for i in inputs]  # fmt: skip


def load(ledger: Ledger, work: Path, server: Path, doc: dict[str, Any]) -> None:
    """Run (or resume) the run of ``doc``, recording files in the ledger as they complete."""
    journal = work / "journal.jsonl"
    run_id = doc["run_id"]
    tracker = Completion(identities(doc["inputs"]))
    known = {s["index"]: s for s in doc["shards"]}
    for s in doc["shards"]:
        tracker.shard(s["index"], [src["path"] for src in s["sources"]])
        if s["status"] == "uploaded":
            tracker.uploaded(s["index"], s["request_id"])
    ledger.record_many(run_id, tracker.take())  # what an earlier attempt proved
    lines = [(i["path"], line) for i in doc["inputs"]
             for line in Path(i["key"]).read_bytes().splitlines()]  # fmt: skip
    for index, at in enumerate(range(0, len(lines), PER_SHARD)):
        piece = lines[at : at + PER_SHARD]
        paths = list(dict.fromkeys(p for p, _ in piece))
        old = known.get(index, {})
        if not old:
            append(journal, {"t": "shard", "index": index, "paths": paths})
            tracker.shard(index, paths)
        if old.get("status") == "uploaded":
            continue
        request_id = old.get("request_id")
        if request_id is None:
            request_id = f"{run_id}-{index}"
            append(journal, {"t": "ticket", "index": index, "request_id": request_id})
        tmp = server / f".{request_id}.tmp"
        tmp.write_bytes(b"".join(line + b"\n" for _, line in piece))
        tmp.replace(server / f"{request_id}.jsonl")  # the PUT: the object, whole
        step("put")
        append(journal, {"t": "uploaded", "index": index})
        tracker.uploaded(index, request_id)
        if ledger.record_many(run_id, tracker.take()):
            step("recorded")
    append(journal, {"t": "finish"})
    tracker.all_read()
    if ledger.record_many(run_id, tracker.take()):
        step("recorded")


def settle(ledger: Ledger, work: Path, claimant: str, unsettled: Any) -> None:
    """Repair each run the ledger says never settled, from its journal wherever it is."""
    for run in unsettled:
        for journal in (work / "journal.jsonl", work / "runs" / f"{run.run_id}.jsonl"):
            doc = replay(journal)
            if doc is not None and doc["run_id"] == run.run_id:
                ledger.repair(claimant, proven_from_manifest(doc))
                step("repaired")
                break
        else:  # it died before its journal began: it uploaded nothing
            ledger.finish(run.run_id, Outcome.CRASHED, note="no journal")


def archive(work: Path, doc: dict[str, Any]) -> None:
    (work / "runs").mkdir(exist_ok=True)
    (work / "journal.jsonl").replace(work / "runs" / f"{doc['run_id']}.jsonl")
    step("archived")


def main() -> int:
    ledger_path, work, inputs, server = (Path(a) for a in sys.argv[1:5])
    work.mkdir(exist_ok=True)
    with Ledger.open(ledger_path) as ledger:
        old = replay(work / "journal.jsonl")
        if old is not None and old.get("run_id") and old["finished_at"] is None:
            begun = ledger.begin(NS, old["run_id"], work, "resume", wait=0)
            settle(ledger, work, old["run_id"], begun.unsettled)
            load(ledger, work, server, old)
            ledger.finish(old["run_id"], Outcome.COMPLETE, release=False)
            archive(work, old)
        elif old is not None and old.get("run_id"):
            archive(work, old)  # finished: if the ledger lags, it is unsettled, see below
        run_id = new_run_id()
        begun = ledger.begin(NS, run_id, work, "nightly", wait=0)
        settle(ledger, work, run_id, begun.unsettled)
        files = sorted(inputs.glob("*.jsonl"))
        found = [FileIdentity.of_path(f) for f in files]
        chosen = [d.identity for d in ledger.decide(NS, found) if d.load]
        doc = {"namespace": NS, "run_id": run_id, "work_dir": str(work), "cwd": "/",
               "finished_at": None, "shards": [],
               "inputs": [{"path": i.display, "key": i.key, "size": i.size,
                           "mtime_ns": i.mtime_ns} for i in chosen]}  # fmt: skip
        append(work / "journal.jsonl", {"t": "run", "run_id": run_id, "inputs": doc["inputs"]})
        load(ledger, work, server, doc)
        ledger.finish(run_id, Outcome.COMPLETE)
    sys.stdout.write(json.dumps({"done": len(chosen)}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
