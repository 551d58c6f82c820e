"""The ledger's records, in plain values: what ``Ledger`` answers and keeps, and the
one policy that turns a file's identity and the ledger's entry into a decision."""

from __future__ import annotations

import enum
import json
import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .claims import Holder, Partition, partition_of
from .file import LedgerError
from .identity import FileIdentity, Verdict, compare
from .proof import ProvenLoad


class LedgerBusyError(LedgerError):
    """Another run holds the namespace in the ledger, and did not let go in time."""

    def __init__(self, message: str, *, holders: Sequence[Holder] = ()) -> None:
        super().__init__(message)
        self.holders = tuple(holders)


class Outcome(enum.StrEnum):
    """How a run ended, as the ledger keeps it."""

    #: Every input is loaded (rejected lines aside: they are in the run's rejects.jsonl).
    COMPLETE = "complete"
    #: Some shards failed: the files holding their records are not loaded.
    PARTIAL = "partial"
    #: Stopped by Ctrl-C or SIGTERM: the same command resumes it.
    INTERRUPTED = "interrupted"
    #: A fatal error ended it.
    FAILED = "failed"
    #: It did not end on its own (killed); a later run settled it from its journal.
    CRASHED = "crashed"


class Action(enum.StrEnum):
    LOAD = "load"
    SKIP = "skip"


class Reason(enum.StrEnum):
    #: Not in the ledger (or forgotten).
    NEW = "new"
    #: Its identity changed since it was loaded: a re-export.
    CHANGED = "changed"
    #: ``force``: loaded whatever the ledger says.
    FORCED = "forced"
    #: Standard input or a pipe: nothing to recognise it by.
    NO_IDENTITY = "no-identity"
    #: In the ledger, but nothing on both sides can be compared (e.g. no size).
    UNCOMPARABLE = "uncomparable"
    #: Loaded before, with the same identity.
    LOADED = "loaded"
    #: Changed, and ``skip_changed`` says not to load it.
    CHANGED_SKIPPED = "changed-skipped"
    #: The same file named twice in one run: loaded once.
    REPEATED = "repeated"


@dataclass(frozen=True, slots=True)
class LoadEntry:
    """One file loaded by one run."""

    namespace: str
    identity: FileIdentity
    run_id: str
    loaded_at: str
    shards: tuple[int, ...]
    request_ids: tuple[str, ...]
    records: int | None
    repaired_by: str | None
    forgotten_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            **self.identity.to_dict(),
            "run_id": self.run_id,
            "loaded_at": self.loaded_at,
            "shards": list(self.shards),
            "request_ids": list(self.request_ids),
            "records": self.records,
            "repaired_by": self.repaired_by,
            "forgotten_at": self.forgotten_at,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether to load one input, and why, in words for the summary."""

    identity: FileIdentity
    action: Action
    reason: Reason
    detail: str
    #: The ledger's current entry for the file, if any.
    previous: LoadEntry | None = None
    #: See ``Comparison.content_would_settle``.
    content_would_settle: bool = False

    @property
    def load(self) -> bool:
        return self.action is Action.LOAD

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.identity.display,
            "key": self.identity.key,
            "action": str(self.action),
            "reason": str(self.reason),
            "detail": self.detail,
            "previous_run_id": self.previous.run_id if self.previous else None,
            "previous_loaded_at": self.previous.loaded_at if self.previous else None,
        }


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run as the ledger knows it."""

    run_id: str
    namespace: str
    work_dir: str | None
    description: str | None
    host: str | None
    pid: int | None
    started_at: str
    resumed_at: str | None
    resumes: int
    finished_at: str | None
    outcome: Outcome | None
    note: str | None
    partition: Partition | None
    #: Files it loaded that are not forgotten.
    files: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "namespace": self.namespace,
            "work_dir": self.work_dir,
            "description": self.description,
            "host": self.host,
            "pid": self.pid,
            "started_at": self.started_at,
            "resumed_at": self.resumed_at,
            "resumes": self.resumes,
            "finished_at": self.finished_at,
            "outcome": None if self.outcome is None else str(self.outcome),
            "note": self.note,
            "partition": (
                None
                if self.partition is None
                else {"index": self.partition.index, "count": self.partition.count}
            ),
            "files": self.files,
        }


@dataclass(frozen=True, slots=True)
class Begun:
    """What ``begin`` found."""

    run: RunInfo
    #: The run id was known: a resume of an earlier run of the same work dir.
    resumed: bool
    #: Earlier runs of the namespace that never settled (killed, or the machine died) and
    #: hold no claim: repair each from its work dir's journal, or finish it as CRASHED
    #: when the journal is gone (the files it uploaded then load again).
    unsettled: tuple[RunInfo, ...]
    #: Claims of dead processes that were taken over, and why they were stale.
    recovered: tuple[tuple[Holder, str], ...]
    #: Seconds spent waiting for another run.
    waited: float


@dataclass(frozen=True, slots=True)
class RepairReport:
    run_id: str
    #: Files recorded now (as given), and files the ledger had already.
    recorded: tuple[str, ...]
    already: int
    #: Inputs of that run its journal does not prove loaded: a new run loads them again.
    unproven: tuple[str, ...]


def new_run_id() -> str:
    """A run id that sorts by start time and reads well: ``20241201T020000Z-3f9c1a2b``."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def decide_one(
    identity: FileIdentity, previous: LoadEntry | None, force: bool, skip_changed: bool
) -> Decision:
    if not identity.identified:
        return Decision(identity, Action.LOAD, Reason.NO_IDENTITY,
                        "standard input or a pipe: loaded every time", previous)  # fmt: skip
    before = f"loaded {previous.loaded_at} by run {previous.run_id}" if previous is not None else ""
    if force:
        detail = f"forced ({before})" if before else "forced (not loaded before)"
        return Decision(identity, Action.LOAD, Reason.FORCED, detail, previous)
    if previous is None:
        return Decision(identity, Action.LOAD, Reason.NEW, "not loaded before")
    seen = compare(previous.identity, identity)
    if seen.verdict is Verdict.SAME:
        return Decision(identity, Action.SKIP, Reason.LOADED, f"{before}; {seen.detail}",
                        previous)  # fmt: skip
    if seen.verdict is Verdict.UNKNOWN:
        return Decision(identity, Action.LOAD, Reason.UNCOMPARABLE,
                        f"{before}, but {seen.detail}", previous)  # fmt: skip
    if skip_changed:
        return Decision(identity, Action.SKIP, Reason.CHANGED_SKIPPED,
                        f"changed since {before}: {seen.detail}", previous,
                        seen.content_would_settle)  # fmt: skip
    return Decision(identity, Action.LOAD, Reason.CHANGED,
                    f"changed since {before}: {seen.detail}", previous,
                    seen.content_would_settle)  # fmt: skip


def identity_of(row: sqlite3.Row) -> FileIdentity:
    """The identity columns of a ``loads`` row."""
    return FileIdentity(
        key=row["file_key"], display=row["display"], size=row["size"],
        mtime_ns=row["mtime_ns"], etag=row["etag"], content_md5=row["content_md5"],
    )  # fmt: skip


def entry_of(row: sqlite3.Row) -> LoadEntry:
    return LoadEntry(
        namespace=row["namespace"],
        identity=identity_of(row),
        run_id=row["run_id"], loaded_at=row["loaded_at"],
        shards=tuple(json.loads(row["shards"])), request_ids=tuple(json.loads(row["request_ids"])),
        records=row["records"], repaired_by=row["repaired_by"], forgotten_at=row["forgotten_at"],
    )  # fmt: skip


def insert_load(
    db: sqlite3.Connection,
    namespace: str,
    run_id: str,
    load: ProvenLoad,
    repaired_by: str | None,
) -> bool:
    """Add a load unless the ledger has it (a run loads a file once); whether it was new."""
    i = load.identity
    if not i.identified:
        return False
    cursor = db.execute(
        "INSERT OR IGNORE INTO loads (namespace, file_key, display, size, mtime_ns, etag, "
        "content_md5, run_id, loaded_at, shards, request_ids, records, repaired_by) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (namespace, i.key, i.display, i.size, i.mtime_ns, i.etag, i.content_md5, run_id,
         now_iso(), json.dumps(list(load.shards)), json.dumps(list(load.request_ids)),
         load.records, repaired_by),
    )  # fmt: skip
    return cursor.rowcount == 1


def run_of(db: sqlite3.Connection, run_id: str) -> RunInfo:
    """The run ``run_id`` as the ledger ``db`` has it, with its count of loaded files."""
    row = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    files = db.execute(
        "SELECT count(*) FROM loads WHERE run_id = ? AND forgotten_at IS NULL", (run_id,)
    ).fetchone()[0]
    return RunInfo(
        run_id=row["run_id"], namespace=row["namespace"], work_dir=row["work_dir"],
        description=row["description"], host=row["host"], pid=row["pid"],
        started_at=row["started_at"], resumed_at=row["resumed_at"], resumes=row["resumes"],
        finished_at=row["finished_at"],
        outcome=Outcome(row["outcome"]) if row["outcome"] is not None else None,
        note=row["note"], partition=partition_of(row), files=int(files),
    )  # fmt: skip
