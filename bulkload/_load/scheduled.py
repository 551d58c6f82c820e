"""An incremental load (``--incremental``): the same command every night over a growing
export loads each file once. The ledger (``bulkload._ledger``) decides; ``Run`` loads.

::

    inputs ─► identities (stat, or the store's listing) ─► ledger.begin (claim the namespace;
    wait for a run that holds it) ─► settle runs that died (their journals prove what they
    loaded) ─► the work dir's earlier run:
          unfinished ─► resumed first, under its own run id (a new run would send its
                        half-sent files again); still failing ─► stop: new files wait
          finished   ─► kept under runs/RUN_ID/
    ─► decide (new, changed, loaded …) ─► Run(chosen files, tracker) ─► ledger.finish

The ledger is written only after the journal: ``LedgerTracker`` records a file the moment
the journal holds the upload of every shard with its lines (``Completion``), and a crash
between the two is repaired by the next run from the journal it left.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .._config import LoadConfig
from .._errors import SourceError, StateError, option
from .._inputs import Source, Stop, resolve_inputs
from .._journal import (
    DRY_RUN_DIR,
    RUNS_DIR,
    archive_run,
    lock_work_dir,
    peek_work_dir,
    unlock_work_dir,
)
from .._ledger import (
    Completion,
    Decision,
    FileIdentity,
    Holder,
    Ledger,
    Outcome,
    Partition,
    ProvenRun,
    describe_location,
    file_md5,
    key_for,
    new_run_id,
    proven_from_manifest,
)
from .._ledger.identity import is_url
from .._ledger.proof import adopted_run_id
from .._ledger.values import decide_one
from .._partition import key_share, partition_record
from .._validate import SchemaCheck
from .run import SHARDING_OPTIONS, LoadResult, Run

#: Manifest names of inputs that are not files: a run over them cannot be read again.
_NOT_FILES = ("-", "<records>")


class LedgerTracker:
    """``Run``'s tracker for an incremental load: follows the journal's shard and upload
    events through a ``Completion`` and records each file in the ledger once it is loaded
    (in one transaction per flush, at most once a second while the run goes on)."""

    def __init__(self, ledger: Ledger, run_id: str, inputs: Sequence[FileIdentity]) -> None:
        self.ledger = ledger
        self.run_id = run_id
        self.completion = Completion(inputs)
        #: Files recorded as loaded by this run.
        self.recorded: list[str] = []
        self._last = 0.0

    def shard(self, index: int, paths: Any) -> None:
        self.completion.shard(index, paths)

    def uploaded(self, index: int, request_id: str) -> None:
        self.completion.uploaded(index, request_id)

    def all_read(self) -> None:
        self.completion.all_read()

    async def flush(self, *, at_most_every: float = 0.0) -> None:
        now = time.monotonic()
        if at_most_every and now - self._last < at_most_every:
            return
        self._last = now
        loads = self.completion.take()
        if loads:
            # A failure here loses nothing: the journal holds the uploads, and the next run
            # repairs the ledger from it.
            await asyncio.to_thread(self.ledger.record_many, self.run_id, loads)
            self.recorded.extend(load.identity.display for load in loads)

    def not_loaded(self) -> list[str]:
        return [i.display for i in self.completion.unloaded()]


@dataclass(slots=True)
class LedgerReport:
    """What the ledger did in an incremental load, for the summary and ``--json``."""

    path: str
    run_id: str
    dry_run: bool = False
    decisions: list[Decision] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)
    not_loaded: list[str] = field(default_factory=list)
    #: Earlier runs settled from their journals: run id, files recorded then, and outcome.
    repaired: list[dict[str, Any]] = field(default_factory=list)
    #: Claims of processes that died, taken over.
    recovered: list[str] = field(default_factory=list)
    waited: float = 0.0
    #: The work dir's earlier run: kept where (``runs/RUN_ID``), or resumed (its id).
    archived: dict[str, str] | None = None
    resumed: str | None = None
    #: Why the earlier, unfinished run could not be resumed (its unloaded files load again).
    not_resumed: str | None = None
    #: The earlier run is still not complete: the new files wait for the next run.
    waiting: int = 0

    def to_dict(self) -> dict[str, Any]:
        reasons = Counter(str(d.reason) for d in self.decisions)
        return {
            "path": self.path,
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "files": len(self.decisions),
            "load": sum(1 for d in self.decisions if d.load),
            "skip": sum(1 for d in self.decisions if not d.load),
            "reasons": dict(sorted(reasons.items())),
            "decisions": [d.to_dict() for d in self.decisions],
            "recorded": len(self.recorded),
            "not_loaded": self.not_loaded,
            "repaired": self.repaired,
            "recovered": self.recovered,
            "waited": round(self.waited, 3),
            "archived": self.archived,
            "resumed": self.resumed,
            "not_resumed": self.not_resumed,
            "waiting": self.waiting,
        }


def identity_of(source: Source, *, checksum: bool = False) -> FileIdentity:
    """What the ledger knows an input by, from what resolving it found (no second stat,
    so the identity is the one the run journals and checks while reading)."""
    if source.url is not None:
        return FileIdentity.of_object(
            source.url,
            size=source.size,
            etag=source.etag,
            mtime_ns=source.mtime_ns,
            display=source.display,
        )
    if source.path is None:
        return FileIdentity.unidentified(source.display)
    key = key_for(source.path)
    if source.size is None:  # a FIFO or socket: what it yields has no identity
        return FileIdentity(key=key, display=source.display)
    return FileIdentity(
        key=key,
        display=source.display,
        size=source.size,
        mtime_ns=source.mtime_ns,
        content_md5=file_md5(source.path) if checksum else None,
    )


class IncrementalLoad:
    """One ``load --incremental``: see the module docstring. Made by ``Loader.load``."""

    def __init__(
        self,
        *,
        namespace: str,
        config: LoadConfig,
        work_dir: Path,
        make_run: Callable[..., Run],
        schema: SchemaCheck | None,
        storage_options: Mapping[str, Any],
        description: str,
        stop: Any,
        on_wait: Callable[[Sequence[Holder]], None] | None = None,
    ) -> None:
        self.namespace = namespace
        self.cfg = config
        self.work_dir = work_dir
        self.make_run = make_run
        self.schema = schema
        self.storage_options = storage_options
        self.description = description
        self.stop = stop
        self.on_wait = on_wait
        self.location = describe_location(namespace, config.ledger)
        self._partition: Partition | None = None

    # -- the flow ------------------------------------------------------------------------

    async def load(self, sources: list[Source]) -> LoadResult:
        part = self.cfg.partition
        identities = await asyncio.to_thread(self._identities, sources)
        partition = None
        if part is not None:
            partition = Partition.of_inputs(*part, [(i.key, i.size) for i in identities])
            self._partition = partition
            mine = [n for n, i in enumerate(identities) if key_share(i.key, part[1]) == part[0]]
            sources = [sources[n] for n in mine]
            identities = [identities[n] for n in mine]
        if self.cfg.dry_run:
            return await self._dry_run(sources, identities)
        run_id = new_run_id()
        earlier = await asyncio.to_thread(self._peek)
        if earlier is not None and _unfinished(earlier, resend_failed=self.cfg.resend_failed):
            run_id = _run_id_of(earlier)  # resume it, under its own id
        ledger = await asyncio.to_thread(Ledger.open, self.location.path)
        report = LedgerReport(path=str(self.location.path), run_id=run_id)
        try:
            begun = await asyncio.to_thread(self._begin, ledger, run_id, partition)
            report.waited = begun.waited
            report.recovered = [f"{h.describe()} ({why})" for h, why in begun.recovered]
            current = run_id
            try:
                await asyncio.to_thread(self._settle_others, ledger, run_id, begun, report)
                resumed = await self._earlier_run(ledger, run_id, earlier, report)
                current = report.run_id
                if resumed is not None:
                    if not _complete(resumed):
                        # Its shards are not all uploaded: its files are not loaded, and a
                        # new run would send their uploaded records again. New files wait.
                        await asyncio.to_thread(ledger.finish, current, _outcome(resumed))
                        report.waiting = len(identities)
                        return replace(resumed, ledger=report.to_dict())
                    await asyncio.to_thread(ledger.finish, current, Outcome.COMPLETE, release=False)
                    await asyncio.to_thread(self._archive, current, report)
                    # The finished run let its reader go through the stop signal; the
                    # next one needs it fresh (a stop asked for meanwhile ended it above).
                    self.stop.arm()
                    current = report.run_id = new_run_id()
                    await asyncio.to_thread(self._begin, ledger, current, partition)
                decisions = await asyncio.to_thread(
                    ledger.decide,
                    self.namespace,
                    identities,
                    force=self.cfg.force,
                    skip_changed=self.cfg.skip_changed,
                )
                report.decisions = decisions
                chosen = [s for s, d in zip(sources, decisions, strict=True) if d.load]
                tracker = LedgerTracker(ledger, current, [d.identity for d in decisions if d.load])
                run = self.make_run(
                    self.cfg,
                    chosen,
                    partition=_partition_doc(part, sources),
                    run_id=current,
                    tracker=tracker,
                    input_identity=_journal_identity(d.identity for d in decisions if d.load),
                )
                result = await run.execute()
                report.recorded = tracker.recorded
                report.not_loaded = tracker.not_loaded()
                await asyncio.to_thread(ledger.finish, current, _outcome(result))
                if resumed is not None:
                    result = replace(result, resumed_run=resumed)
                return replace(result, ledger=report.to_dict())
            except BaseException as exc:
                outcome = (
                    Outcome.INTERRUPTED
                    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | Stop)
                    else Outcome.FAILED
                )
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.shield(
                        asyncio.to_thread(ledger.finish, current, outcome, note=_note(exc))
                    )
                raise
        finally:
            ledger.close()

    # -- steps -----------------------------------------------------------------------------

    def _identities(self, sources: Sequence[Source]) -> list[FileIdentity]:
        out = []
        for source in sources:
            if self.stop.thread.is_set():
                raise Stop
            out.append(identity_of(source, checksum=self.cfg.checksum))
        return out

    def _peek(self) -> dict[str, Any] | None:
        doc = peek_work_dir(self.work_dir)
        if doc is None or (doc.get("dry_run") and not doc.get("shards")):
            return doc
        if doc.get("namespace") not in (None, self.namespace):
            raise StateError(
                f"{self.work_dir} holds a run of namespace {doc.get('namespace')!r}, not "
                f"{self.namespace!r}: give each namespace its own "
                f"{option('--work-dir', 'work_dir')}"
            )
        return doc

    def _begin(self, ledger: Ledger, run_id: str, partition: Partition | None) -> Any:
        def sleep(seconds: float) -> None:
            # A stop while another run holds the namespace ends the wait at once.
            if self.stop.thread.wait(seconds):
                raise Stop

        return ledger.begin(
            self.namespace,
            run_id,
            self.work_dir,
            self.description,
            partition=partition,
            wait=self.cfg.ledger_wait,
            on_wait=self.on_wait,
            sleep=sleep,
        )

    def _settle_others(
        self, ledger: Ledger, claimant: str, begun: Any, report: LedgerReport
    ) -> None:
        """Settle the runs of the namespace that died without a word (kill -9, a machine
        lost): what their journals prove loaded is recorded; a run whose journal is gone
        is closed as crashed (the files it did not record load again)."""
        for run in begun.unsettled:
            if run.run_id == claimant:
                continue
            doc = _journal_of(run.run_id, run.work_dir)
            if doc is None:
                ledger.finish(
                    run.run_id,
                    Outcome.CRASHED,
                    note=f"settled by run {claimant}: its work dir {run.work_dir} holds no "
                    "journal of it, so the files it did not record load again",
                )
                report.repaired.append({"run_id": run.run_id, "recorded": 0, "journal": None})
                continue
            repaired = ledger.repair(claimant, proven_from_manifest(doc))
            report.repaired.append(
                {"run_id": run.run_id, "recorded": len(repaired.recorded),
                 "journal": run.work_dir}
            )  # fmt: skip

    async def _earlier_run(
        self,
        ledger: Ledger,
        run_id: str,
        earlier: dict[str, Any] | None,
        report: LedgerReport,
    ) -> LoadResult | None:
        """Deal with the run the work dir holds: record what it proves, then resume it (the
        result) when it is unfinished and can be, else keep it under runs/ (None)."""
        if earlier is None:
            return None
        lock = await asyncio.to_thread(self._lock)
        try:
            now = await asyncio.to_thread(self._peek)
            if now is None or _run_id_of(now) != _run_id_of(earlier):
                raise StateError(
                    f"the run in {self.work_dir} changed while this one waited for the "
                    "ledger (another process loaded there): run the command again"
                )
            proven: ProvenRun | None = None
            if not (now.get("dry_run") and not now.get("shards")):
                proven = proven_from_manifest(now)
                repaired = await asyncio.to_thread(ledger.repair, run_id, proven)
                if repaired.recorded:
                    report.repaired.append(
                        {"run_id": proven.run_id, "recorded": len(repaired.recorded),
                         "journal": str(self.work_dir)}
                    )  # fmt: skip
            if _run_id_of(now) == run_id:  # unfinished: resume it if possible
                why, sources = await asyncio.to_thread(self._resumable, now)
                if why is None:
                    report.resumed = run_id
                    unlock_work_dir(lock)
                    lock = None
                    return await self._resume(ledger, run_id, now, sources)
                report.not_resumed = why
                assert proven is not None
                await asyncio.to_thread(
                    ledger.finish,
                    run_id,
                    Outcome.PARTIAL,
                    note=f"not resumed: {why}; {len(proven.files)} file(s) recorded, "
                    f"{len(proven.unproven)} loaded again by the next run",
                    release=False,
                )
                report.run_id = new = new_run_id()
                await asyncio.to_thread(self._archive_locked, run_id, report)
                await asyncio.to_thread(self._begin, ledger, new, self._partition)
                return None
            await asyncio.to_thread(self._archive_locked, _run_id_of(now), report)
            return None
        finally:
            unlock_work_dir(lock)

    def _resumable(self, doc: Mapping[str, Any]) -> tuple[str | None, list[Source]]:
        """Why the unfinished run ``doc`` cannot be resumed (None when it can), and its
        inputs resolved again (named as it named them)."""
        if self.cfg.restart:
            return f"{option('--restart', 'restart=True')} was given", []
        schema = self.schema.digest if self.schema is not None else None
        if doc.get("options", {}).get("schema") != schema:
            return "it checked records against another schema", []
        cwd = doc.get("cwd") or os.getcwd()
        sources = []
        for entry in doc.get("inputs", []):
            path = str(entry["path"])
            if path in _NOT_FILES:
                return "it read standard input or records, which cannot be read again", []
            full = path if is_url(path) or os.path.isabs(path) else os.path.join(cwd, path)
            try:
                found = resolve_inputs([full], storage_options=self.storage_options)
            except SourceError as exc:
                return f"its input {path} cannot be read now ({exc})", []
            if len(found) != 1:
                return f"its input {path} is not one file now", []
            source = replace(found[0], display=path)
            if (source.size, source.mtime_ns) != (entry.get("size"), entry.get("mtime_ns")):
                return f"its input {path} changed since", []
            sources.append(source)
        return None, sources

    async def _resume(
        self, ledger: Ledger, run_id: str, doc: Mapping[str, Any], sources: list[Source]
    ) -> LoadResult:
        """The earlier run again, with the options that made its shards."""
        options = doc.get("options", {})
        config = replace(
            self.cfg,
            **{k: options[k] for k in SHARDING_OPTIONS if k != "schema" and k in options},
        )
        identities = [identity_of(s) for s in sources]
        known = {i.get("path"): i for i in doc.get("inputs", [])}
        # The identities it journaled (an object's ETag, a --checksum MD5) stay its own.
        identities = [
            replace(i, etag=known.get(i.display, {}).get("etag") or i.etag,
                    content_md5=known.get(i.display, {}).get("content_md5"))
            for i in identities
        ]  # fmt: skip
        tracker = LedgerTracker(ledger, run_id, identities)
        run = self.make_run(
            config,
            sources,
            partition=doc.get("partition"),
            run_id=run_id,
            tracker=tracker,
            input_identity=_journal_identity(identities),
        )
        return await run.execute()

    def _lock(self) -> int | None:
        try:
            return lock_work_dir(self.work_dir)
        except OSError as exc:
            raise StateError(f"cannot lock the work dir {self.work_dir}: {exc}") from None

    def _archive(self, run_id: str, report: LedgerReport) -> None:
        lock = self._lock()
        try:
            self._archive_locked(run_id, report)
        finally:
            unlock_work_dir(lock)

    def _archive_locked(self, run_id: str, report: LedgerReport) -> None:
        dest = archive_run(self.work_dir, run_id)
        report.archived = {"run_id": run_id, "path": str(dest)}

    async def _dry_run(self, sources: list[Source], identities: list[FileIdentity]) -> LoadResult:
        """Decide without claiming anything, then validate the chosen files in
        ``WORK_DIR/dry-run`` (the work dir's own run is not touched)."""
        path = self.location.path
        report = LedgerReport(path=str(path), run_id="", dry_run=True)
        if path.exists():
            ledger = await asyncio.to_thread(Ledger.open, path)
            try:
                report.decisions = await asyncio.to_thread(
                    ledger.decide,
                    self.namespace,
                    identities,
                    force=self.cfg.force,
                    skip_changed=self.cfg.skip_changed,
                )
            finally:
                ledger.close()
        else:
            report.decisions = [
                decide_one(i, None, self.cfg.force, self.cfg.skip_changed) for i in identities
            ]
        chosen = [s for s, d in zip(sources, report.decisions, strict=True) if d.load]
        run = self.make_run(
            replace(self.cfg, restart=True),
            chosen,
            work_dir=self.work_dir / DRY_RUN_DIR,
            partition=_partition_doc(self.cfg.partition, sources),
        )
        result = await run.execute()
        return replace(result, ledger=report.to_dict())


# -- helpers ------------------------------------------------------------------------------------


def _unfinished(doc: Mapping[str, Any], *, resend_failed: bool = False) -> bool:
    """Whether a work dir's run has records not yet uploaded: stopped before the end of
    reading, or with shards pending or failed; with ``resend_failed``, also a run with a
    request that failed processing (``wait`` recorded it): it is resumed to send them."""
    if doc.get("dry_run"):
        return False
    if doc.get("finished_at") is None:
        return True
    shards = doc.get("shards", [])
    if resend_failed and any(s.get("processing_status") == "failed" for s in shards):
        return True
    return any(s.get("status") != "uploaded" for s in shards)


def _complete(result: LoadResult) -> bool:
    return not result.interrupted and not result.failed


def _run_id_of(doc: Mapping[str, Any]) -> str:
    return str(doc.get("run_id") or adopted_run_id(doc))


def _journal_of(run_id: str, work_dir: str | None) -> dict[str, Any] | None:
    """The manifest of run ``run_id`` from its work dir (still there, or kept under
    ``runs/``), or None when neither holds it."""
    if not work_dir:
        return None
    for where in (Path(work_dir), Path(work_dir) / RUNS_DIR / run_id):
        try:
            doc = peek_work_dir(where)
        except (OSError, StateError):
            continue
        if doc is not None and _run_id_of(doc) == run_id:
            return doc
    return None


def _outcome(result: LoadResult) -> Outcome:
    if result.interrupted:
        return Outcome.INTERRUPTED
    if result.failed:
        return Outcome.PARTIAL
    return Outcome.COMPLETE


def _note(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]


def _journal_identity(identities: Any) -> dict[str, dict[str, Any]]:
    """Each input's key and identity tokens, for the journal's ``run`` event (by path):
    what lets a later run repair the ledger from it wherever it runs from."""
    return {
        i.display: {"key": i.key, "etag": i.etag, "content_md5": i.content_md5} for i in identities
    }


def _partition_doc(
    part: tuple[int, int] | None, sources: Sequence[Source]
) -> dict[str, Any] | None:
    if part is None:
        return None
    return {**partition_record([], *part), "assignment": "key"}


__all__ = ["IncrementalLoad", "LedgerReport", "LedgerTracker", "identity_of"]
