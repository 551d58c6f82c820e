"""The ledger's file: where it lives, its schema and how the schema evolves, opening it.

One SQLite database, in WAL mode (readers such as ``bulkload ledger list`` never wait for
a run that is writing, and a run's commits are sequential appends), with
``synchronous=FULL`` (a commit is on disk before ``record_loaded`` returns: the ledger is
written after the journal, and must be as durable). ``PRAGMA application_id`` marks the
file as a bulkload ledger, so that ``--ledger`` pointed at some other database is refused
instead of altered; ``PRAGMA user_version`` is the schema version.

Schema changes are migrations: ``MIGRATIONS[n]`` takes version ``n`` to ``n + 1``, each in
one ``BEGIN IMMEDIATE`` transaction with the version bump, so a crash during a migration
leaves the previous version whole. A file of a newer version is refused with a message
that says so (its meaning may have changed: never guess).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .._errors import StateError, option

#: "BlLg": what ``PRAGMA application_id`` holds in a bulkload ledger.
APPLICATION_ID = 0x426C4C67
#: The default file name: next to the default work dir ``bulkload-NAMESPACE``.
DEFAULT_NAME = "bulkload-{namespace}.ledger.sqlite"
#: A path (file, or directory for the default name in it) used when --ledger is not given.
ENV = "BULKLOAD_LEDGER"

_V1 = """
CREATE TABLE runs (
    run_id      TEXT PRIMARY KEY,
    namespace   TEXT NOT NULL,
    work_dir    TEXT,
    description TEXT,
    host        TEXT,
    pid         INTEGER,
    started_at  TEXT NOT NULL,
    resumed_at  TEXT,
    resumes     INTEGER NOT NULL DEFAULT 0,
    finished_at TEXT,
    -- NULL while the run goes, and after a crash until it is settled (resumed or repaired)
    outcome     TEXT,
    note        TEXT,
    part_index  INTEGER,
    part_count  INTEGER,
    part_group  TEXT
);
CREATE INDEX runs_by_namespace ON runs (namespace, started_at);

CREATE TABLE loads (
    id           INTEGER PRIMARY KEY,
    namespace    TEXT NOT NULL,
    file_key     TEXT NOT NULL,
    display      TEXT NOT NULL,
    size         INTEGER,
    mtime_ns     INTEGER,
    etag         TEXT,
    content_md5  TEXT,
    run_id       TEXT NOT NULL REFERENCES runs (run_id),
    loaded_at    TEXT NOT NULL,
    shards       TEXT NOT NULL,  -- JSON array: shard indexes in the run's manifest
    request_ids  TEXT NOT NULL,  -- JSON array
    records      INTEGER,
    -- the run that wrote this row from the loading run's journal after a crash
    repaired_by  TEXT,
    forgotten_at TEXT,
    -- a run loads a file once: recording it again (a repair, a merge) is a no-op
    UNIQUE (namespace, file_key, run_id)
);
CREATE INDEX loads_by_key ON loads (namespace, file_key, loaded_at);
CREATE INDEX loads_by_run ON loads (run_id);

CREATE TABLE claims (
    namespace  TEXT NOT NULL,
    holder     TEXT NOT NULL,  -- one open Ledger: a process may hold several over time
    run_id     TEXT NOT NULL REFERENCES runs (run_id),
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    token      TEXT,           -- boot id and process start time: survives pid reuse
    claimed_at TEXT NOT NULL,
    work_dir   TEXT,
    part_index INTEGER,
    part_count INTEGER,
    part_group TEXT,
    PRIMARY KEY (namespace, holder)
);
"""

#: ``MIGRATIONS[n]``: the SQL that takes schema version ``n`` to ``n + 1``.
MIGRATIONS: tuple[str, ...] = ("", _V1)
#: The version this bulkload writes (version 0 is an empty file).
SCHEMA_VERSION = len(MIGRATIONS) - 1


class LedgerError(StateError):
    """The ledger cannot be used: not a ledger, a newer schema, damaged, locked too long."""


@dataclass(frozen=True, slots=True)
class LedgerLocation:
    """Where a namespace's ledger is, and why there."""

    path: Path
    #: ``option`` (--ledger), ``environment`` (BULKLOAD_LEDGER) or ``default``.
    origin: str

    def describe(self) -> str:
        why = {
            "option": "as given",
            "environment": f"from ${ENV}",
            "default": f"the default; choose with {option('--ledger PATH', 'ledger=')}",
        }[self.origin]
        return f"{self.path} ({why})"


def describe_location(
    namespace: str,
    ledger: str | os.PathLike[str] | None = None,
    *,
    cwd: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> LedgerLocation:
    """The ledger of ``namespace``: ``ledger`` if given, else ``$BULKLOAD_LEDGER``, else
    ``./bulkload-NAMESPACE.ledger.sqlite`` beside the default work dir. A directory (an
    existing one, or a path ending in ``/``) gets the default name inside it."""
    env = os.environ if environ is None else environ
    base = Path(os.fspath(cwd)) if cwd is not None else Path.cwd()
    name = DEFAULT_NAME.format(namespace=namespace)
    if ledger is not None:
        chosen, origin = os.fspath(ledger), "option"
    elif env.get(ENV):
        chosen, origin = env[ENV], "environment"
    else:
        return LedgerLocation(base / name, "default")
    path = base / chosen
    if chosen.endswith(("/", os.sep)) or path.is_dir():
        path = path / name
    return LedgerLocation(Path(os.path.abspath(path)), origin)


def connect(path: Path, *, timeout: float) -> tuple[sqlite3.Connection, bool]:
    """Open (creating or migrating) the ledger at ``path``; the connection, and whether the
    file was created now. The connection is in autocommit mode: every write is an explicit
    ``BEGIN IMMEDIATE`` … ``COMMIT``."""
    created = not path.exists() or path.stat().st_size == 0
    if created:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot open the ledger {path}: {exc}") from None
    conn.row_factory = sqlite3.Row
    try:
        _prepare(conn, path)
        migrate(conn, path, MIGRATIONS)
    except sqlite3.OperationalError as exc:
        conn.close()
        held = " (another process held it longer than the timeout)" if "locked" in str(exc) else ""
        raise LedgerError(f"cannot open the ledger {path}: {exc}{held}") from None
    except BaseException:
        conn.close()
        raise
    return conn, created


def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    try:
        app = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app != APPLICATION_ID and (app != 0 or tables):
            raise LedgerError(
                f"{path} is an SQLite database but not a bulkload ledger; give "
                f"{option('--ledger', 'ledger=')} a path of its own"
            )
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise LedgerError(
            f"{path} is not a bulkload ledger ({exc}); if it was one, restore it from a "
            "backup, else give --ledger a path of its own"
        ) from None
    if str(mode).lower() != "wal":
        raise LedgerError(
            f"the ledger {path} cannot use SQLite's WAL mode (it is in {mode!r} mode): keep "
            "it on a local disk (WAL does not work on network file systems)"
        )
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")


def migrate(conn: sqlite3.Connection, path: Path, migrations: Sequence[str]) -> int:
    """Bring the schema up to ``len(migrations) - 1``, one version per transaction; the
    version reached. ``migrations[0]`` is unused (version 0 is an empty file). A ledger
    that is up to date is only read: opening one never waits for a run that is writing."""
    target = len(migrations) - 1
    while True:
        if _version(conn, path, target) == target:
            return target
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another process may have migrated meanwhile.
            version = _version(conn, path, target)
            if version < target:
                if version == 0:
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                for statement in _statements(migrations[version + 1]):
                    conn.execute(statement)
                # PRAGMA takes no parameters; the value is an int we computed.
                conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _version(conn: sqlite3.Connection, path: Path, target: int) -> int:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > target:
        raise LedgerError(
            f"the ledger {path} has schema version {version}, written by a newer bulkload "
            f"(this one knows version {target}); upgrade bulkload"
        )
    return version


def _statements(script: str) -> list[str]:
    """The statements of a migration script, one by one: ``executescript`` would COMMIT
    the open transaction first, and the migration must be one transaction with its bump."""
    out: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    if pending.strip():
        out.append(pending.strip())
    return [s for s in out if s]
