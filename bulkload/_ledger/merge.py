"""Merging ledgers: the partitions of a load that ran on several machines, each with its
own ledger (WAL needs the ledger on a local disk, so machines cannot share one file).

The merge is a union, so that it can be repeated and done in any order: a run is known by
its id, a load by (namespace, file key, run id); an unsettled run takes the other ledger's
outcome; a forgotten load stays forgotten. Claims are not merged: they name processes of
another machine.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from .file import APPLICATION_ID, SCHEMA_VERSION, LedgerError
from .identity import Verdict, compare
from .values import identity_of


@dataclass(frozen=True, slots=True)
class MergeReport:
    ledgers: tuple[str, ...]
    runs_added: int
    loads_added: int
    #: Loads that another ledger had forgotten and this one had not.
    forgotten: int
    #: Files that two ledgers say were loaded with the same identity by different runs:
    #: their records were sent twice (partitions that overlapped).
    overlaps: tuple[str, ...]


_RUN_COLUMNS = (
    "run_id", "namespace", "work_dir", "description", "host", "pid", "started_at",
    "resumed_at", "resumes", "finished_at", "outcome", "note", "part_index", "part_count",
    "part_group",
)  # fmt: skip
_LOAD_COLUMNS = (
    "namespace", "file_key", "display", "size", "mtime_ns", "etag", "content_md5", "run_id",
    "loaded_at", "shards", "request_ids", "records", "repaired_by", "forgotten_at",
)  # fmt: skip


def merge_into(db: sqlite3.Connection, here: Path, paths: Sequence[Path]) -> MergeReport:
    """Add every ledger of ``paths`` to ``db`` (in the caller's write transaction)."""
    runs_added = loads_added = forgotten = 0
    overlaps: list[str] = []
    before = db.execute("SELECT coalesce(max(id), 0) FROM loads").fetchone()[0]
    for path in paths:
        other = _open_other(path, here)
        try:
            for row in other.execute(f"SELECT {','.join(_RUN_COLUMNS)} FROM runs"):
                added = db.execute(
                    f"INSERT OR IGNORE INTO runs ({','.join(_RUN_COLUMNS)}) "
                    f"VALUES ({','.join('?' * len(_RUN_COLUMNS))})",
                    tuple(row),
                ).rowcount
                runs_added += added
                if not added and row["outcome"] is not None:
                    db.execute(
                        "UPDATE runs SET outcome = ?, finished_at = ?, note = ? "
                        "WHERE run_id = ? AND outcome IS NULL",
                        (row["outcome"], row["finished_at"], row["note"], row["run_id"]),
                    )
            loads = other.execute(
                f"SELECT {','.join(_LOAD_COLUMNS)} FROM loads ORDER BY loaded_at, id"
            )
            for row in loads:
                added = db.execute(
                    f"INSERT OR IGNORE INTO loads ({','.join(_LOAD_COLUMNS)}) "
                    f"VALUES ({','.join('?' * len(_LOAD_COLUMNS))})",
                    tuple(row),
                ).rowcount
                loads_added += added
                if added and row["forgotten_at"] is None:
                    overlaps.extend(_overlaps(db, row, before, path))
                elif not added and row["forgotten_at"] is not None:
                    forgotten += db.execute(
                        "UPDATE loads SET forgotten_at = ? WHERE namespace = ? AND "
                        "file_key = ? AND run_id = ? AND forgotten_at IS NULL",
                        (row["forgotten_at"], row["namespace"], row["file_key"], row["run_id"]),
                    ).rowcount
        finally:
            other.close()
    return MergeReport(
        ledgers=tuple(str(p) for p in paths),
        runs_added=runs_added,
        loads_added=loads_added,
        forgotten=forgotten,
        overlaps=tuple(overlaps),
    )


def _open_other(path: Path, here: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise LedgerError(f"cannot merge {path}: no such ledger file")
    if os.path.samefile(path, here):
        raise LedgerError(f"cannot merge the ledger {path} into itself")
    try:
        # Read-only: merging must not change the other machine's ledger.
        other = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
        other.row_factory = sqlite3.Row
        app = other.execute("PRAGMA application_id").fetchone()[0]
        version = other.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot read the ledger {path}: {exc}") from None
    if app != APPLICATION_ID:
        other.close()
        raise LedgerError(f"cannot merge {path}: it is not a bulkload ledger")
    if version != SCHEMA_VERSION:
        other.close()
        newer = version > SCHEMA_VERSION
        raise LedgerError(
            f"cannot merge {path}: its schema is version {version}, this bulkload's is "
            f"{SCHEMA_VERSION}; "
            + (
                "upgrade bulkload"
                if newer
                else f"open it once with this bulkload (`bulkload ledger list --ledger {path}`) "
                "to migrate it"
            )
        )
    return other


def _overlaps(db: sqlite3.Connection, row: sqlite3.Row, before: int, path: Path) -> list[str]:
    """A load from another ledger of a file this ledger had already loaded, with the same
    identity, by another run: its records went up twice."""
    added = identity_of(row)
    found = []
    for mine in db.execute(
        "SELECT * FROM loads WHERE namespace = ? AND file_key = ? AND run_id != ? AND "
        "forgotten_at IS NULL AND id <= ?",
        (row["namespace"], row["file_key"], row["run_id"], before),
    ):
        if compare(identity_of(mine), added).verdict is Verdict.SAME:
            found.append(
                f"{row['display']} was loaded with the same identity by run {mine['run_id']} "
                f"(this ledger) and run {row['run_id']} ({path}): sent twice (partitions that "
                "overlapped, or a forced load)"
            )
    return found
