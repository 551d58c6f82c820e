"""One execution of a load: the reader thread, the bounded queue, the upload workers, the
watchdog and the progress ticker, all owned by one TaskGroup; and what it did (LoadResult).

``Run`` gets its collaborators (the config, the work dir, the API client, the stop signal,
the progress callback), not the ``Loader``: it is the engine, the Loader its public face.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .._config import LoadConfig
from .._errors import BulkloadError, ExitCode, StateError, UsageError, option
from .._inputs import Source, Stop
from .._journal import (
    MANIFEST,
    SHARDS_DIR,
    RunState,
    events,
    lock_work_dir,
    now_iso,
    unlock_work_dir,
)
from .._model import ProcessingStatus, ShardStatus
from .._net import SLICE, AdaptiveLimit, ApiClient, RateLimiter
from .._runtime import READER_GRACE, DaemonCall
from .._validate import ReasonCount, SchemaCheck
from .deliver import Deliverer, remove_shard_file
from .progress import Progress, Stats
from .reader import Reader
from .shard import ShardInfo

log = logging.getLogger("bulkload")

#: Options that decide where shards begin and end; a resume must use the same ones.
SHARDING_OPTIONS = ("shard_max_bytes", "shard_max_records", "id_field", "coerce_id", "schema")


class Tracker(Protocol):
    """Who follows a run's journal as it is written (the ledger of an incremental load):
    told of each shard journaled, of each upload journaled, and of the end of reading."""

    def shard(self, index: int, paths: Iterable[str]) -> None: ...

    def uploaded(self, index: int, request_id: str) -> None: ...

    def all_read(self) -> None: ...

    async def flush(self, *, at_most_every: float = 0.0) -> None: ...


class StopSignal:
    """A stop request, seen by the loop (``requested``) and by threads (``thread``).

    ``request`` is safe from a signal handler and from any thread; ``arm`` makes a fresh
    signal for a run, in the loop that runs it."""

    def __init__(self) -> None:
        self.thread = threading.Event()
        self.requested = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def arm(self) -> None:
        self.thread.clear()
        self.requested = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def request(self) -> None:
        self.thread.set()
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.requested.set()
        else:
            loop.call_soon_threadsafe(self.requested.set)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a load did. ``exit_code`` follows the CLI contract (0, 3, 4, 130)."""

    namespace: str
    work_dir: Path
    manifest_path: Path
    rejects_path: Path
    lines: int
    records: int
    rejected: int
    blank: int
    shards: int
    uploaded: int
    skipped: int
    failed: int
    bytes_read: int
    bytes_uploaded: int
    elapsed: float
    dry_run: bool
    interrupted: bool = False
    failed_shards: tuple[int, ...] = field(default_factory=tuple)
    #: With ``check_duplicates``: ids seen more than once (listed in duplicates.jsonl).
    duplicate_ids: int | None = None
    #: Records in uploaded shards (this run's and earlier runs').
    records_uploaded: int = 0
    #: Uploaded shards whose bytes the store's ETag could not confirm, and why (once each).
    etag_unverified: int = 0
    etag_notes: tuple[str, ...] = ()
    #: Shards whose failed request was sent again under a new one (``resend_failed``).
    resent: int = 0
    #: Some shard failed because an input changed under it: a plain rerun is refused.
    restart_needed: bool = False
    #: What the inputs looked like where that matters (a file whose every line was
    #: rejected: "it looks like pretty-printed JSON …"), in words.
    notes: tuple[str, ...] = ()
    #: The most common reasons lines were rejected (their shape, with the value left out),
    #: how many lines each, and the first such line as an example.
    reasons: tuple[ReasonCount, ...] = ()
    #: An incremental load: what the ledger decided and recorded (``LedgerReport``).
    ledger: dict[str, Any] | None = None
    #: An incremental load that first finished the work dir's unfinished run: its result.
    resumed_run: LoadResult | None = None

    @property
    def exit_code(self) -> ExitCode:
        if self.interrupted:
            return ExitCode.SIGINT
        earlier = self.resumed_run
        if self.failed or (earlier is not None and earlier.failed):
            return ExitCode.FAILED
        if self.rejected or (earlier is not None and earlier.rejected):
            return ExitCode.REJECTS
        return ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["work_dir"] = str(self.work_dir)
        doc["manifest_path"] = str(self.manifest_path)
        doc["rejects_path"] = str(self.rejects_path)
        doc["failed_shards"] = list(self.failed_shards)
        doc["reasons"] = [
            {
                "shape": r.shape,
                "count": r.count,
                "example": {"source": r.source, "line": r.line, "error": r.reason},
            }
            for r in self.reasons
        ]
        doc["resumed_run"] = self.resumed_run.to_dict() if self.resumed_run else None
        doc["exit_code"] = self.exit_code
        return doc


def resume_problems(old: Mapping[str, Any], new: events.Run) -> list[str]:
    """Why a run (``new``) cannot resume the run a work dir holds (``old``: its last ``run``
    event), in words; empty when it can: the same namespace, sharding options and inputs."""
    problems = []
    if old.get("namespace") != new.namespace:
        problems.append(f"namespace was {old.get('namespace')!r}")
    old_opts = old.get("options", {})
    for key in SHARDING_OPTIONS:
        if key in old_opts and old_opts[key] != new.options.get(key):
            problems.append(f"{key} was {old_opts[key]!r}, now {new.options.get(key)!r}")
    old_inputs = [(i["path"], i.get("size"), i.get("mtime_ns")) for i in old.get("inputs", [])]
    new_inputs = [(i["path"], i.get("size"), i.get("mtime_ns")) for i in new.inputs]
    if old_inputs != new_inputs and new_inputs and not all(i[0] == "-" for i in new_inputs):
        problems.append("the inputs changed (paths, sizes or modification times)")
    return problems


class Run:
    """One execution of a load: the state shared by the reader thread and the upload tasks."""

    def __init__(
        self,
        *,
        namespace: str,
        config: LoadConfig,
        work_dir: Path,
        base_url: str,
        client: ApiClient | None,
        stop: StopSignal,
        on_progress: Callable[[Progress], None] | None,
        sources: list[Source],
        schema: SchemaCheck | None = None,
        partition: dict[str, Any] | None = None,
        run_id: str | None = None,
        tracker: Tracker | None = None,
        input_identity: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.namespace = namespace
        self.cfg = config
        self.work_dir = work_dir
        self.base_url = base_url
        self.client = client
        self.stop = stop
        self.on_progress = on_progress
        self.sources = sources
        self.partition = partition
        #: An incremental load's: the run's id in the ledger, what it tells the ledger as it
        #: goes, and each input's key and identity token for the journal (by path).
        self.run_id = run_id
        self.tracker = tracker
        self.input_identity = input_identity or {}
        self.stats = Stats(started=time.monotonic(), dry_run=self.cfg.dry_run)
        if sources and all(
            s.size is not None and s.compression is None and s.format == "jsonl" for s in sources
        ):
            self.stats.bytes_total = sum(s.size or 0 for s in sources)
        self.state = RunState(work_dir)  # replayed from the journal in _begin
        self.shard_dir = work_dir / SHARDS_DIR
        self.reader = Reader(self.cfg, self.stats, work_dir, stop.thread, schema)
        self.schema = schema
        self.queue: asyncio.Queue[ShardInfo | None] = asyncio.Queue(self.cfg.effective_queue_depth)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock: int | None = None  # the work dir's lock, held from _begin to _end
        self.resent = 0
        #: Upload workers delivering a shard right now (the others wait for one).
        self._busy: set[asyncio.Task[None]] = set()

    # -- set-up and tear-down ----------------------------------------------------------------

    def _run_identity(self) -> events.Run:
        options = asdict(self.cfg)
        options["ca_bundle"] = str(self.cfg.ca_bundle) if self.cfg.ca_bundle else None
        # The schema decides which records go up, so a resume must use the same one: its
        # content's digest is what is compared (the same file may move, a dict has no name).
        options["schema"] = self.schema.digest if self.schema is not None else None
        return events.Run(
            namespace=self.namespace,
            run_id=self.run_id,
            base_url=self.base_url,
            inputs=[
                {"path": s.display, "size": s.size, "mtime_ns": s.mtime_ns,
                 "compression": s.compression, "format": s.format,
                 **self.input_identity.get(s.display, {})}
                for s in self.sources
            ],
            options=options,
            # Relative INPUT paths are relative to this: `wait` run from elsewhere finds them.
            cwd=os.getcwd(),
            started_at=now_iso(),
            partition=self.partition,
        )  # fmt: skip

    def _check_resume(self, identity: events.Run) -> None:
        """Refuse to resume a work dir that belongs to other inputs or options."""
        old = self.state.run
        if not old or not self.state.shards:
            return
        if self.cfg.restart:
            self._set_aside()
            return
        problems = resume_problems(old, identity)
        if problems:
            raise StateError(
                f"{self.work_dir} holds an earlier run that this one cannot resume: "
                + "; ".join(problems)
                + ". Rerun with the same inputs and options, use another "
                + option("--work-dir", "work_dir")
                + ", or add "
                + option("--restart", "restart=True")
                + " to start over (the earlier manifest is kept aside)."
            )

    def _set_aside(self) -> None:
        """--restart: keep the earlier manifest and journal under a timestamped name."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        work = self.work_dir
        for path in (work / MANIFEST, self.state.journal_path):
            if path.exists():
                path.rename(path.with_name(f"{path.stem}.before-{stamp}{path.suffix}"))
        if self.shard_dir.exists():
            shutil.rmtree(self.shard_dir)
        self.state = RunState(work)

    def _begin(self) -> None:
        try:
            self._lock = lock_work_dir(self.work_dir)
        except OSError as exc:
            raise self._unwritable(exc) from None
        try:
            self.state = RunState.open(self.work_dir)
            identity = self._run_identity()
            self._check_resume(identity)
            self.state.start(identity)
            self.shard_dir.mkdir(parents=True, exist_ok=True)
            self.reader.open()
        except BaseException as exc:
            self.state.close()
            unlock_work_dir(self._lock)
            self._lock = None
            if isinstance(exc, OSError) and not isinstance(exc, BulkloadError):
                raise self._unwritable(exc) from None
            raise

    def _unwritable(self, exc: OSError) -> StateError:
        where = f" ({exc.filename})" if exc.filename else ""
        return StateError(
            f"cannot write to the work dir {self.work_dir}{where}: {exc.strerror or exc}; "
            f"choose another {option('--work-dir', 'work_dir')} or fix its permissions"
        )

    def _end(self, *, finished: bool) -> None:
        """Close the run: totals into the journal (a finished run only) and the manifest."""
        self.reader.close()
        s = self.stats
        totals = {"lines": s.lines, "records": s.records, "rejected": s.rejected, "blank": s.blank}
        if self.reader.duplicates is not None:
            totals["duplicate_ids"] = self.reader.duplicates[0]
        if finished:
            self.state.record(events.Finish(at=now_iso(), totals=totals))
        else:
            self.state.totals = totals
        self.state.write_manifest(force=True)
        self.state.close()
        unlock_work_dir(self._lock)
        self._lock = None

    # -- the run ------------------------------------------------------------------------------

    async def execute(
        self,
        records: AsyncIterable[Mapping[str, Any]] | Iterable[Mapping[str, Any]] | None = None,
    ) -> LoadResult:
        """Read ``self.sources`` (or ``records``), upload every shard, return the result."""
        client = self.client
        if client is None and not self.cfg.dry_run:
            raise UsageError("use the Loader as `async with Loader(...) as loader:`")
        self.loop = asyncio.get_running_loop()
        stop_requested = self.stop.requested
        await asyncio.to_thread(self._begin)
        deliverer = self._deliverer(client) if client is not None else None
        reading: DaemonCall[None] | None = None
        try:
            try:
                async with asyncio.TaskGroup() as tg:
                    ticker = tg.create_task(self._tick())
                    workers = [
                        tg.create_task(self._worker(deliverer))
                        for _ in range(self.cfg.upload_concurrency)
                    ]
                    watchdog = tg.create_task(self._watchdog(workers))
                    with contextlib.suppress(Stop):
                        if records is None:
                            reading = DaemonCall(
                                functools.partial(
                                    self.reader.read_sources, self.sources, self._hand_over
                                ),
                                name="bulkload-reader",
                            )
                            # After a stop, the uploads' end must not wait on a read
                            # that may never return (the thread is then left behind).
                            await reading.until(stop_requested)  # raises the reader's error
                            if not reading.result.done():
                                await reading.let_go(READER_GRACE)
                        else:
                            await self.reader.read_records(records, self._accept)
                    self.stats.reading_done = self.reader.done
                    if self.tracker is not None and self.reader.done:
                        self.tracker.all_read()
                    for _ in workers:
                        await self.queue.put(None)
                    await asyncio.gather(*workers)
                    watchdog.cancel()
                    ticker.cancel()
            except* Stop:
                pass  # the grace period ran out; the result says what is unfinished
        except BaseException as exc:
            # Fatal error or cancellation: stop the reader, record what is known, re-raise
            # the error itself rather than the TaskGroup's wrapper around it.
            self.stop.thread.set()
            if reading is not None:
                # A second cancellation while it waits must not skip the manifest flush.
                with contextlib.suppress(asyncio.CancelledError):
                    await reading.let_go(READER_GRACE)
            self._end(finished=False)
            if self.tracker is not None:
                # What the journal proves uploaded so far (the next run repairs the rest).
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.shield(self.tracker.flush())
            error = _unwrap(exc)
            if isinstance(error, BulkloadError) and self.state.shards:
                r = self._result(interrupted=False)
                error.add_note(
                    f"before it stopped: {r.uploaded} of {r.shards} shard(s) uploaded "
                    f"({r.records_uploaded:,} records), {r.failed} failed; the manifest is "
                    f"{r.manifest_path}"
                )
            raise error from None
        self.stop.thread.set()
        if reading is not None:
            await reading.let_go(READER_GRACE)
        pending = any(e.status == ShardStatus.PENDING for e in self.state.shards.values())
        finished = self.reader.done and (self.cfg.dry_run or not pending)
        await asyncio.to_thread(self._end, finished=finished)
        if self.tracker is not None:
            await self.tracker.flush()
        if self.on_progress is not None:
            self.on_progress(self.stats.snapshot())
        return self._result(interrupted=not finished and stop_requested.is_set())

    def _deliverer(self, client: ApiClient) -> Deliverer:
        limit = AdaptiveLimit(self.cfg.upload_concurrency)
        bandwidth = None
        if self.cfg.max_bandwidth:
            bandwidth = RateLimiter(self.cfg.max_bandwidth, burst=SLICE)
        return Deliverer(
            namespace=self.namespace,
            state=self.state,
            api=client.paced_by(limit),
            limit=limit,
            stats=self.stats,
            bandwidth=bandwidth,
            keep_files=self.cfg.keep_shards,
            verify_etag=self.cfg.verify_etag,
            content_md5=self.cfg.content_md5,
            on_uploaded=self.tracker.uploaded if self.tracker is not None else None,
        )

    async def _watchdog(self, workers: list[asyncio.Task[None]]) -> None:
        """After a stop request, give uploads in flight ``grace`` seconds, then cancel them."""
        await self.stop.requested.wait()
        self._drain_queue()
        # A worker waiting for a shard has nothing to finish (a dry run's never has): it
        # goes now; uploads in flight get the grace period.
        for w in workers:
            if w not in self._busy:
                w.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.cfg.grace):
                await asyncio.gather(*workers, return_exceptions=True)
        for w in workers:
            w.cancel()
        raise Stop

    def _drain_queue(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()

    async def _tick(self) -> None:
        """Progress a few times a second; the manifest at most once a second."""
        while True:
            if self.on_progress is not None:
                self.on_progress(self.stats.snapshot())
            if self.state.dirty:
                await asyncio.to_thread(self.state.write_manifest, force=False)
            if self.tracker is not None:
                await self.tracker.flush(at_most_every=1.0)
            await asyncio.sleep(0.25)

    def _hand_over(self, shard: ShardInfo) -> None:
        """From the reader thread: give a finished shard to the loop; wait while it is full."""
        assert self.loop is not None
        if self.stop.thread.is_set():
            raise Stop
        future = asyncio.run_coroutine_threadsafe(self._accept(shard), self.loop)
        while True:
            try:
                future.result(timeout=0.5)
                return
            except TimeoutError:
                if self.stop.thread.is_set():
                    future.cancel()
                    raise Stop from None

    # -- in the loop -------------------------------------------------------------------------------

    async def _accept(self, shard: ShardInfo) -> None:
        """A shard is ready: journal it (or recognise it from an earlier run), then queue it."""
        stats = self.stats
        stats.shards += 1
        stats.bytes_planned += shard.bytes
        entry = self.state.shards.get(shard.index)
        if entry is not None and entry.md5 != shard.md5 and entry.status == ShardStatus.UPLOADED:
            raise StateError(
                f"shard {shard.index} differs from the one an earlier run uploaded "
                f"(md5 {entry.md5} then, {shard.md5} now): the inputs changed. Use "
                f"{option('--restart', 'restart=True')} to load them as a new run, or another "
                f"{option('--work-dir', 'work_dir')}."
            )
        if entry is not None and entry.md5 == shard.md5 and entry.status == ShardStatus.UPLOADED:
            if self.cfg.resend_failed and _failed_processing(entry):
                await self.state.record_async(events.Resend(index=shard.index))
                self.resent += 1
            else:
                stats.skipped += 1
                stats.bytes_confirmed += shard.bytes
                stats.records_uploaded += shard.records
                await asyncio.to_thread(remove_shard_file, shard)
                await self._release(shard)
                if self.tracker is not None and entry.request_id:
                    self.tracker.shard(shard.index, [r.path for r in shard.sources])
                    self.tracker.uploaded(shard.index, entry.request_id)
                return
        event = events.Shard(
            index=shard.index,
            records=shard.records,
            bytes=shard.bytes,
            md5=shard.md5,
            sources=[
                {"path": r.path, "first_line": r.first_line, "last_line": r.last_line}
                for r in shard.sources
            ],
        )
        if entry is None or entry.md5 != shard.md5:
            await self.state.record_async(event)
        elif entry.status == ShardStatus.FAILED:
            await self.state.record_async(events.Retry(index=shard.index))
        if self.tracker is not None:
            self.tracker.shard(shard.index, [r.path for r in shard.sources])
        if self.cfg.dry_run:
            await self._release(shard)
            return
        await self.queue.put(shard)

    async def _release(self, shard: ShardInfo) -> None:
        """The shard is done with (uploaded, failed, skipped, or journaled by a dry run): the
        spool files it was read from may go (see ``spool.SpoolFiles``)."""
        spools = self.reader.spools
        if any(spools.owns(p.path) for p in shard.pieces):
            await asyncio.to_thread(spools.done, [p.path for p in shard.pieces])

    async def _worker(self, deliverer: Deliverer | None) -> None:
        while True:
            shard = await self.queue.get()
            if shard is None:
                return
            if self.stop.thread.is_set():
                continue
            assert deliverer is not None
            task = asyncio.current_task()
            assert task is not None
            self._busy.add(task)
            try:
                async with deliverer.limit:
                    self.stats.in_flight += 1
                    try:
                        await deliverer.deliver(shard)
                    finally:
                        self.stats.in_flight -= 1
                await self._release(shard)
            finally:
                self._busy.discard(task)

    def _result(self, interrupted: bool) -> LoadResult:
        s = self.stats
        entries = self.state.shards.values()
        uploaded = [e for e in entries if e.status == ShardStatus.UPLOADED]
        failed = sorted(i for i, e in self.state.shards.items() if e.status == ShardStatus.FAILED)
        unverified = [e for e in uploaded if e.etag_verified is False]
        return LoadResult(
            namespace=self.namespace,
            work_dir=self.work_dir,
            manifest_path=self.state.manifest_path,
            rejects_path=self.reader.rejects_path,
            lines=s.lines,
            records=s.records,
            rejected=s.rejected,
            blank=s.blank,
            shards=len(self.state.shards),
            uploaded=len(uploaded),
            skipped=s.skipped,
            failed=len(failed),
            bytes_read=s.bytes_read,
            bytes_uploaded=s.bytes_uploaded,
            elapsed=time.monotonic() - s.started,
            dry_run=self.cfg.dry_run,
            interrupted=interrupted,
            failed_shards=tuple(failed),
            duplicate_ids=self.reader.duplicates[0] if self.reader.duplicates else None,
            records_uploaded=sum(e.records for e in uploaded),
            etag_unverified=len(unverified),
            etag_notes=distinct_etag_notes(e.etag_note for e in unverified if e.etag_note),
            resent=self.resent,
            restart_needed=any(self.state.shards[i].needs_restart for i in failed),
            notes=tuple(self.reader.notes),
            reasons=tuple(self.reader.reasons.top(5)),
        )


def _failed_processing(entry: Any) -> bool:
    """Whether ``status``/``wait`` recorded that the shard's request failed on the server."""
    return (entry.processing or {}).get("processing_status") == ProcessingStatus.FAILED


def _unwrap(exc: BaseException) -> BaseException:
    """The first bulkload error inside (nested) exception groups, else the group itself."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _unwrap(inner)
            if isinstance(found, BulkloadError):
                return found
        for inner in exc.exceptions:
            if not isinstance(inner, asyncio.CancelledError):
                return _unwrap(inner)
    return exc


#: The ETag a shard's note shows, in the words of ``Deliverer._check_etag``.
_ETAG_SHOWN = re.compile(r"\((?:'[^']*'|\"[^\"]*\")\)")


def distinct_etag_notes(notes: Iterable[str | None]) -> tuple[str, ...]:
    """Each reason once, for the summary: notes that differ only in the ETag they show
    (a store whose ETags are opaque strings gives every shard its own) are one reason,
    told with its first ETag as the example. The manifest keeps each shard's own."""
    kept: dict[str, str] = {}
    for note in notes:
        if note:
            kept.setdefault(_ETAG_SHOWN.sub("()", note), note)
    return tuple(kept.values())
