"""The ledger: which input files were loaded into which namespace, by which run, durably.

A run's life in the ledger::

    begin ──► (repair the unsettled runs it is told about) ──► decide ──► record_loaded … ──► finish
    claims the namespace                                       new / changed / skip     releases it

Every write is one short ``BEGIN IMMEDIATE`` transaction, so SQLite's lock orders the
processes that share a ledger (two runs of one namespace, partitions, ``ledger forget``),
and a process killed at any moment leaves every committed transaction whole and nothing of
the one it was in (SQLite's atomic commit). The ledger is written only *after* the run's
journal says the shards are uploaded; the window between the two is closed by
:meth:`Ledger.repair`, which the next run calls with what the crashed run's journal proves.

Methods block (SQLite calls, a wait for another run in ``begin``): from asyncio, call them
with ``asyncio.to_thread``. One ``Ledger`` may be used from several threads.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .._errors import option
from .claims import (
    Holder,
    Partition,
    compatible,
    conflict,
    holder_of,
    live_claims,
    this_process,
)
from .file import LedgerError, connect
from .identity import FileIdentity, key_for
from .merge import MergeReport, merge_into
from .proof import ProvenLoad, ProvenRun
from .values import (
    Action,
    Begun,
    Decision,
    LedgerBusyError,
    LoadEntry,
    Outcome,
    Reason,
    RepairReport,
    RunInfo,
    decide_one,
    entry_of,
    insert_load,
    now_iso,
    run_of,
)

#: How long ``begin`` waits for another run of the namespace by default: long enough to
#: absorb a cron overlap with the end of last night's run, short enough that a stuck run
#: does not pile up waiting processes (a refused run loses nothing: the next run loads
#: what it would have loaded).
DEFAULT_WAIT = 300.0
#: SQLite's busy timeout: how long one write transaction waits for another process's.
#: Transactions here last milliseconds; a minute means something is wrong.
DEFAULT_TIMEOUT = 60.0
#: Keys per ``IN (…)`` query: under SQLite's default limit of bound parameters.
_BATCH = 500
#: A query string in a description (argv): pre-signed URLs are credentials.
_QUERY = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s?#]*)\?[^\s#]*")


class Ledger:
    """One open ledger file. ``Ledger.open(path)``; use as a context manager, or ``close()``.

    On cancellation: every method is synchronous; a transaction interrupted by an exception
    (KeyboardInterrupt included) is rolled back whole.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, *, created: bool) -> None:
        self._conn: sqlite3.Connection | None = conn
        self.path = path
        #: The file did not exist before this open: files loaded earlier are unknown to it.
        self.created = created
        self._lock = threading.RLock()
        #: This open ledger's name in the claims table.
        self._holder = uuid.uuid4().hex
        self._me = this_process()

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, timeout: float = DEFAULT_TIMEOUT) -> Ledger:
        """Open the ledger at ``path``, creating it (and its directory) or migrating its
        schema. ``timeout``: seconds one write waits for another process's (SQLite's busy
        timeout; waiting for another *run* is ``begin``'s ``wait``)."""
        full = Path(os.path.abspath(os.fspath(path)))
        conn, created = connect(full, timeout=timeout)
        return cls(conn, full, created=created)

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release this ledger's claims (a run that did not ``finish`` stays unsettled, for
        the next run to repair) and close the file, checkpointed when no one else has it
        open, so that a copy of the ``.sqlite`` file alone is then a whole backup."""
        with self._lock:
            if self._conn is None:
                return
            try:
                with contextlib.suppress(sqlite3.Error, LedgerError), self._write() as db:
                    db.execute("DELETE FROM claims WHERE holder = ?", (self._holder,))
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._conn.close()
                self._conn = None

    # -- transactions ----------------------------------------------------------------------

    def _open_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LedgerError(f"the ledger {self.path} is closed")
        return self._conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed whole, or rolled back whole."""
        with self._lock, self._translated():
            db = self._open_conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One consistent snapshot (a WAL read transaction: it never waits for a writer)."""
        with self._lock, self._translated():
            db = self._open_conn()
            db.execute("BEGIN")
            try:
                yield db
            finally:
                if db.in_transaction:
                    db.execute("COMMIT")

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise LedgerError(
                    f"the ledger {self.path} stayed locked by another process for longer than "
                    "its timeout; is a process stuck holding it?"
                ) from None
            raise LedgerError(f"the ledger {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise LedgerError(
                f"the ledger {self.path} is damaged ({exc}); restore it from a backup"
            ) from None

    # -- a run's life ----------------------------------------------------------------------

    def begin(
        self,
        namespace: str,
        run_id: str,
        work_dir: str | os.PathLike[str] | None,
        description: str,
        *,
        partition: Partition | None = None,
        wait: float = DEFAULT_WAIT,
        on_wait: Callable[[Sequence[Holder]], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Begun:
        """Claim ``namespace`` for run ``run_id`` (a known id resumes that run).

        While another live run holds the namespace (partitions of one run excepted), wait
        up to ``wait`` seconds, calling ``on_wait(holders)`` once when the wait starts;
        then raise LedgerBusyError naming them. SQLite cannot notify another process, so
        the wait polls the claims, each time in a short transaction (every 0.05 s, backing
        off to 1 s). A claim whose process is gone is taken over (``Begun.recovered``).
        ``description`` (the command line) is kept with query strings cut off URLs.
        """
        if not namespace:
            raise ValueError("namespace must not be empty")
        shown = _QUERY.sub(r"\1?…", description)
        where = os.path.abspath(os.fspath(work_dir)) if work_dir is not None else None
        started = time.monotonic()
        delay = 0.05
        told = False
        recovered: list[tuple[Holder, str]] = []
        while True:
            with self._write() as db:
                live = live_claims(db, namespace, self._holder, self._me, recovered)
                clash = [h for h in live if h.run_id == run_id]
                if clash:
                    raise LedgerError(
                        f"run {run_id} is already running: {clash[0].describe()}; one work "
                        "dir is loaded by one process at a time"
                    )
                if compatible(partition, live):
                    return self._claim(db, namespace, run_id, where, shown, partition, recovered,
                                       waited=time.monotonic() - started)  # fmt: skip
            waited = time.monotonic() - started
            if waited >= wait:
                raise LedgerBusyError(self._busy(namespace, live, partition, waited), holders=live)
            if on_wait is not None and not told:
                told = True
                on_wait(live)
            sleep(min(delay, wait - waited))
            delay = min(delay * 2, 1.0)

    def _busy(
        self, namespace: str, live: Sequence[Holder], partition: Partition | None, waited: float
    ) -> str:
        others = f" and {len(live) - 1} more" if len(live) > 1 else ""
        return (
            f"the ledger {self.path} is held for namespace {namespace!r} by "
            f"{live[0].describe()}{others}: {conflict(partition, live)}. Waited "
            f"{waited:.0f} s. Let that run finish, then run this one again (what it loads "
            "is skipped then), or wait longer with "
            f"{option('--ledger-wait SECONDS', 'wait=')}; if that run is gone with its "
            f"machine, `bulkload ledger release {namespace}` clears its claim."
        )

    def _claim(
        self,
        db: sqlite3.Connection,
        namespace: str,
        run_id: str,
        work_dir: str | None,
        description: str,
        partition: Partition | None,
        recovered: list[tuple[Holder, str]],
        *,
        waited: float,
    ) -> Begun:
        now = now_iso()
        part = (partition.index, partition.count, partition.group) if partition else (None,) * 3
        old = db.execute("SELECT namespace FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if old is not None and old["namespace"] != namespace:
            raise LedgerError(
                f"run {run_id} loaded namespace {old['namespace']!r}, not {namespace!r}"
            )
        if old is None:
            db.execute(
                "INSERT INTO runs (run_id, namespace, work_dir, description, host, pid, "
                "started_at, part_index, part_count, part_group) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (run_id, namespace, work_dir, description, self._me.host, self._me.pid, now, *part),
            )
        else:
            db.execute(
                "UPDATE runs SET work_dir = ?, description = ?, host = ?, pid = ?, "
                "resumed_at = ?, resumes = resumes + 1, finished_at = NULL, outcome = NULL, "
                "note = NULL, part_index = ?, part_count = ?, part_group = ? WHERE run_id = ?",
                (work_dir, description, self._me.host, self._me.pid, now, *part, run_id),
            )
        # This ledger's own claim on the namespace (kept by finish(release=False)) moves
        # to the new run: no other run can slip in between two runs of one process.
        db.execute(
            "DELETE FROM claims WHERE namespace = ? AND holder = ?", (namespace, self._holder)
        )
        db.execute(
            "INSERT INTO claims (namespace, holder, run_id, host, pid, token, claimed_at, "
            "work_dir, part_index, part_count, part_group) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (namespace, self._holder, run_id, self._me.host, self._me.pid, self._me.token, now,
             work_dir, *part),
        )  # fmt: skip
        unsettled = db.execute(
            "SELECT * FROM runs WHERE namespace = ? AND outcome IS NULL AND run_id != ? "
            "AND run_id NOT IN (SELECT run_id FROM claims WHERE namespace = ?) "
            "ORDER BY started_at",
            (namespace, run_id, namespace),
        ).fetchall()
        return Begun(
            run=run_of(db, run_id),
            resumed=old is not None,
            unsettled=tuple(run_of(db, r["run_id"]) for r in unsettled),
            recovered=tuple(recovered),
            waited=waited,
        )

    def _claimed_namespace(self, db: sqlite3.Connection, run_id: str) -> str:
        """The namespace this ledger holds for ``run_id``; LedgerError when it holds none
        (the run did not begin here, finished, or its claim was released)."""
        row = db.execute(
            "SELECT namespace FROM claims WHERE holder = ? AND run_id = ?", (self._holder, run_id)
        ).fetchone()
        if row is None:
            raise LedgerError(
                f"run {run_id} does not hold its namespace in the ledger {self.path} (it did "
                "not begin here, it finished, or its claim was released): nothing recorded"
            )
        return str(row["namespace"])

    def decide(
        self,
        namespace: str,
        identities: Iterable[FileIdentity],
        *,
        force: bool = False,
        skip_changed: bool = False,
    ) -> list[Decision]:
        """Whether to load each input, in the order given (see :class:`Reason`).

        A file is skipped only when the ledger's current entry for it has the same
        identity (:func:`compare` says SAME). ``force`` loads everything; ``skip_changed``
        skips changed files instead of loading them again. Reads a snapshot; claims
        nothing (a dry run may call it alone).
        """
        wanted = list(identities)
        current = self._current(namespace, [i.key for i in wanted if i.identified])
        seen: set[str] = set()
        out = []
        for identity in wanted:
            if identity.key in seen:
                out.append(Decision(identity, Action.SKIP, Reason.REPEATED,
                                    "named twice in this run: loaded once"))  # fmt: skip
                continue
            seen.add(identity.key)
            out.append(decide_one(identity, current.get(identity.key), force, skip_changed))
        return out

    def _current(self, namespace: str, keys: Sequence[str]) -> dict[str, LoadEntry]:
        """The latest entry that is not forgotten for each of ``keys`` that has one."""
        found: dict[str, LoadEntry] = {}
        with self._read() as db:
            unique = list(dict.fromkeys(keys))
            for at in range(0, len(unique), _BATCH):
                batch = unique[at : at + _BATCH]
                rows = db.execute(
                    "SELECT * FROM loads WHERE namespace = ? AND forgotten_at IS NULL AND "
                    f"file_key IN ({','.join('?' * len(batch))}) ORDER BY loaded_at, id",
                    (namespace, *batch),
                )
                for row in rows:
                    found[row["file_key"]] = entry_of(row)  # later rows win
        return found

    def record_loaded(
        self,
        run_id: str,
        identity: FileIdentity,
        *,
        shards: Sequence[int],
        request_ids: Sequence[str],
        records: int | None = None,
    ) -> bool:
        """Record that run ``run_id`` (begun here) loaded a file: call it only once the
        journal holds the upload of every shard with its records. False when the ledger
        had it already (the call is idempotent) or the file has no identity."""
        load = ProvenLoad(identity, tuple(shards), tuple(request_ids), records)
        return self.record_many(run_id, [load]) == 1

    def record_many(self, run_id: str, loads: Iterable[ProvenLoad]) -> int:
        """``record_loaded`` for several files in one transaction; how many were new."""
        with self._write() as db:
            namespace = self._claimed_namespace(db, run_id)
            return sum(insert_load(db, namespace, run_id, load, None) for load in loads)

    def repair(self, claimant: str, proven: ProvenRun) -> RepairReport:
        """Record the files that ``proven`` (another run's work dir: see
        ``proven_from_manifest``) shows loaded and the ledger lacks: the crash between the
        journal's ``uploaded`` and the ledger's commit. Idempotent. ``claimant`` is the
        calling run, which must hold the namespace (so that the run being repaired cannot
        be running). A run unknown to the ledger is adopted (a work dir loaded before the
        ledger existed); an unsettled one is settled: COMPLETE or PARTIAL when its journal
        says it finished, else CRASHED."""
        with self._write() as db:
            namespace = self._claimed_namespace(db, claimant)
            if proven.namespace != namespace:
                raise LedgerError(
                    f"run {proven.run_id} loaded namespace {proven.namespace!r}, and run "
                    f"{claimant} holds {namespace!r}: repair it from a run of its namespace"
                )
            self._not_running(db, namespace, proven.run_id)
            run = db.execute(
                "SELECT outcome FROM runs WHERE run_id = ?", (proven.run_id,)
            ).fetchone()
            if run is None:
                db.execute(
                    "INSERT INTO runs (run_id, namespace, work_dir, description, started_at) "
                    "VALUES (?,?,?,?,?)",
                    (proven.run_id, namespace, proven.work_dir, "adopted from its work dir",
                     proven.started_at or now_iso()),
                )  # fmt: skip
            by = claimant if proven.run_id != claimant else None
            recorded = tuple(
                load.identity.display
                for load in proven.files
                if insert_load(db, namespace, proven.run_id, load, by)
            )
            if by is not None and (run is None or run["outcome"] is None):
                outcome = (
                    Outcome.CRASHED
                    if not proven.finished
                    else Outcome.PARTIAL
                    if proven.unproven
                    else Outcome.COMPLETE
                )
                db.execute(
                    "UPDATE runs SET outcome = ?, finished_at = ?, note = ? WHERE run_id = ?",
                    (str(outcome), now_iso(),
                     f"settled by run {claimant} from its journal: {len(recorded)} file(s) "
                     "recorded then", proven.run_id),
                )  # fmt: skip
        return RepairReport(
            run_id=proven.run_id,
            recorded=recorded,
            already=sum(1 for f in proven.files if f.identity.identified) - len(recorded),
            unproven=proven.unproven,
        )

    def finish(
        self, run_id: str, outcome: Outcome, *, note: str | None = None, release: bool = True
    ) -> None:
        """Close run ``run_id`` with ``outcome``. Its claim is released, unless ``release``
        is False: then this ledger keeps the namespace for its next ``begin`` (a resumed
        run, then the new files, with no other run in between). Also settles an unsettled
        run of another process, once this ledger holds the namespace."""
        outcome = Outcome(outcome)
        with self._write() as db:
            run = db.execute("SELECT namespace FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if run is None:
                raise LedgerError(f"no run {run_id} in the ledger {self.path}")
            mine = db.execute(
                "SELECT 1 FROM claims WHERE holder = ? AND run_id = ?", (self._holder, run_id)
            ).fetchone()
            if mine is None:
                self._check_settle(db, run_id, str(run["namespace"]))
            db.execute(
                "UPDATE runs SET outcome = ?, finished_at = ?, note = ? WHERE run_id = ?",
                (str(outcome), now_iso(), note, run_id),
            )
            if mine is not None and release:
                db.execute("DELETE FROM claims WHERE holder = ?", (self._holder,))

    def _check_settle(self, db: sqlite3.Connection, run_id: str, namespace: str) -> None:
        held = db.execute(
            "SELECT 1 FROM claims WHERE holder = ? AND namespace = ?", (self._holder, namespace)
        ).fetchone()
        if held is None:
            raise LedgerError(
                f"run {run_id} is not this process's: begin a run of {namespace!r} first, "
                "so that it cannot be running meanwhile"
            )
        self._not_running(db, namespace, run_id)

    def _not_running(self, db: sqlite3.Connection, namespace: str, run_id: str) -> None:
        """LedgerError when a live process of another ledger holds ``run_id``."""
        for holder in live_claims(db, namespace, self._holder, self._me, []):
            if holder.run_id == run_id:
                raise LedgerError(f"{holder.describe()} is still running: wait for it to end")

    def release(self, namespace: str) -> list[Holder]:
        """Clear the claims of ``namespace`` that no live process on this host holds: for a
        run that died with another machine (its claim cannot be checked from here). A live
        local run is not released: stop it instead. The claims cleared."""
        recovered: list[tuple[Holder, str]] = []
        with self._write() as db:
            live = live_claims(db, namespace, self._holder, self._me, recovered)
            local = [h for h in live if h.host == self._me.host]
            if local:
                raise LedgerError(
                    f"{local[0].describe()} is alive on this host: stop it (it releases the "
                    "ledger when it ends), do not release its claim"
                )
            db.execute(
                "DELETE FROM claims WHERE namespace = ? AND holder != ?", (namespace, self._holder)
            )
        return [h for h, _ in recovered] + live

    # -- what was loaded -------------------------------------------------------------------

    def forget(
        self,
        namespace: str,
        *,
        key: str | None = None,
        match: str | None = None,
        run_id: str | None = None,
    ) -> int:
        """Forget loads, so that the next run loads those files again: one file (``key``,
        a path or URL as given: made a key here), the files whose key matches the SQLite
        GLOB pattern ``match`` (``*`` also matches ``/``), or everything run ``run_id``
        loaded. The rows stay, marked forgotten (``entries(history=True)`` shows them).
        How many loads were forgotten."""
        if sum(x is not None for x in (key, match, run_id)) != 1:
            raise ValueError("forget takes exactly one of key, match, run_id")
        with self._write() as db:
            where, args = "namespace = ? AND forgotten_at IS NULL", [namespace]
            if run_id is not None:
                run = db.execute(
                    "SELECT namespace FROM runs WHERE run_id = ?", (run_id,)
                ).fetchone()
                if run is None or run["namespace"] != namespace:
                    raise LedgerError(f"no run {run_id} of namespace {namespace!r} in {self.path}")
                self._not_running(db, namespace, run_id)
                where, args = where + " AND run_id = ?", [*args, run_id]
            elif key is not None:
                where, args = where + " AND file_key = ?", [*args, key_for(key)]
            else:
                assert match is not None
                where, args = where + " AND file_key GLOB ?", [*args, key_for(match)]
            cursor = db.execute(
                f"UPDATE loads SET forgotten_at = ? WHERE {where}", (now_iso(), *args)
            )
            return int(cursor.rowcount)

    def entries(
        self, namespace: str, *, history: bool = False, run_id: str | None = None
    ) -> list[LoadEntry]:
        """What the ledger says is loaded, by key: the current entry of each file (the
        latest load that is not forgotten), or with ``history`` every load, forgotten ones
        included, oldest first. ``run_id``: only that run's."""
        query = "SELECT * FROM loads WHERE namespace = ?"
        args: list[Any] = [namespace]
        if run_id is not None:
            query, args = query + " AND run_id = ?", [*args, run_id]
        if not history:
            query += " AND forgotten_at IS NULL"
        with self._read() as db:
            rows = [entry_of(r) for r in db.execute(query + " ORDER BY loaded_at, id", args)]
        if not history:
            rows = list({e.identity.key: e for e in rows}.values())
        return sorted(rows, key=lambda e: (e.identity.key, e.loaded_at))

    def runs(self, namespace: str) -> list[RunInfo]:
        """The runs of ``namespace``, oldest first."""
        with self._read() as db:
            ids = db.execute(
                "SELECT run_id FROM runs WHERE namespace = ? ORDER BY started_at, run_id",
                (namespace,),
            ).fetchall()
            return [run_of(db, r["run_id"]) for r in ids]

    def holders(self, namespace: str) -> list[Holder]:
        """The claims on ``namespace`` now (stale ones included: they are cleared by the
        next ``begin``)."""
        with self._read() as db:
            rows = db.execute("SELECT * FROM claims WHERE namespace = ?", (namespace,))
            return [holder_of(r) for r in rows]

    def namespaces(self) -> list[str]:
        with self._read() as db:
            rows = db.execute("SELECT DISTINCT namespace FROM runs ORDER BY namespace")
            return [str(r[0]) for r in rows]

    # -- other files -----------------------------------------------------------------------

    def merge(self, paths: Iterable[str | os.PathLike[str]]) -> MergeReport:
        """Add the runs and loads of other ledgers (partitions loaded on other machines) to
        this one, in one transaction. A union: a load is known by (namespace, file, run), a
        forgotten load stays forgotten, an unsettled run takes the other's outcome; so
        merging twice, or in any order, gives the same ledger. Claims are not merged (they
        belong to processes of the other machine)."""
        with self._write() as db:
            return merge_into(db, self.path, [Path(os.fspath(p)) for p in paths])

    def backup(self, dest: str | os.PathLike[str]) -> Path:
        """A consistent copy of the ledger at ``dest`` (SQLite's online backup: safe while
        runs write)."""
        target = Path(os.fspath(dest))
        with self._lock, self._translated(), contextlib.closing(sqlite3.connect(target)) as out:
            self._open_conn().backup(out)
        return target
