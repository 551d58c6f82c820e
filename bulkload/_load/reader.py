"""The reading side of a run: inputs → validated blocks → rejects, duplicate ids and shards.

``read_sources`` runs in one worker thread (CPU work and blocking file I/O); it hands each
finished shard over through a callback that blocks while the upload queue is full, which
is how a slow network slows reading down. ``read_records`` does the same for records from
an (async) iterable, in the event loop, with the CPU work in threads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import functools
import logging
import multiprocessing
import os
import shutil
import threading
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from .._config import LoadConfig
from .._errors import DiskSpaceError, SourceError, TooManyRejectsError, WorkerError, option
from .._inputs import (
    Chunk,
    LongLines,
    Source,
    Stop,
    check_plain_file,
    check_unchanged,
    copy_aside,
    iter_chunks,
    line_too_long,
    record_line,
)
from .._journal import DUPLICATES, REJECTS, SHARDS_DIR, STATE_DIR
from .._model import RECORDS_SOURCE
from .._rejects import ASIDE, TOO_LONG, Rejects, Tally, aside_members, looks_like, too_long
from .._validate import (
    ChunkResult,
    DuplicateFinder,
    FileChangedError,
    LineTooLongError,
    RangeResult,
    ReasonCounter,
    SchemaCheck,
    ValidateOptions,
    md5_pieces,
    validate_block,
    validate_chunk,
    validate_ranges,
)
from .pool import start_pool
from .progress import Stats
from .shard import ShardInfo, ShardWriter
from .spool import (
    POLL,
    SPOOL_DIR,
    IndexReader,
    Sealed,
    SpooledBlock,
    SpooledFiles,
    SpoolFiles,
    SpoolGone,
    spool_compressed,
    spool_small_files,
    with_source_rejects,
)

log = logging.getLogger("bulkload")
#: Bytes of a rejected line kept as the example of its reason in the summary.
_EXAMPLE = 300
T = TypeVar("T")

#: Under the work dir: lines longer than a shard, one file each (regenerated every run).
LONG_LINES = "long-lines"
#: Serialized records handed to validation at once by ``read_records``.
_RECORD_BATCH_BYTES = 4 << 20
#: Plain JSONL input from which worker processes pay for their start (see Reader._workers):
#: measured on 2 cores, 256 MiB loads about as fast either way, 1 GiB 15-20 % faster with
#: them (README, Performance).
AUTO_WORKERS_BYTES = 256 << 20
#: Most small files validated by one worker task (their bytes add up to a block at most).
_FILES_PER_TASK = 1000
#: Plain files smaller than this are read whole by a worker and copied into the spool
#: (``spool.spool_small_files``), not sent from the input file: a piece this small cost
#: more to reopen (for its MD5, then for its upload) than to copy once.
SMALL_FILE = 256 << 10
#: Decoded bytes per compressed byte assumed when deciding whether worker processes pay
#: off (gzip -6 of JSON exports is 4-6:1, zstd a little more).
_PACKED_RATIO = 4
#: The shortest line that stops a run rather than being held whole (see _validated).
_MIN_LINE_LIMIT = 64 << 20


class Reader:
    """Reads one run's inputs; owns ``rejects.jsonl`` and the duplicate check."""

    def __init__(
        self,
        cfg: LoadConfig,
        stats: Stats,
        work_dir: Path,
        stop: threading.Event,
        schema: SchemaCheck | None = None,
    ):
        self.cfg = cfg
        self.stats = stats
        self.work_dir = work_dir
        self.stop = stop
        self.rejects_path = work_dir / REJECTS
        #: Lines longer than a shard are saved here, one file each (see rejects.jsonl).
        self.long_lines = LongLines(work_dir / LONG_LINES, cfg.shard_max_bytes)
        self.vopts = ValidateOptions(
            id_field=cfg.id_field,
            coerce_id=cfg.coerce_id,
            max_record_bytes=cfg.shard_max_bytes,
            collect_ids=cfg.check_duplicates,
            schema=schema,
        )
        #: Why lines were rejected, grouped by the shape of the reason (the value left out):
        #: the summary's "most common reasons", with one example line each.
        self.reasons = ReasonCounter()
        #: Set once every input was read to its end and every shard handed over.
        self.done = False
        #: What a person should know about the inputs, one sentence each, for the summary:
        #: a file all of whose lines were rejected, and what kind of file it looks like.
        self.notes: list[str] = []
        #: With check_duplicates, after a complete read: (ids repeated, extra occurrences).
        self.duplicates: tuple[int, int] | None = None
        self._rejects: IO[bytes] | None = None
        self._dups: DuplicateFinder | None = None
        #: The loop closes the reader at the end of a run even when the reading thread is
        #: stuck in a read (and was left behind): files are touched under this lock only.
        self._lock = threading.Lock()
        self._closed = False
        #: What worker processes decoded or gathered for the shards (with workers only).
        self.spools = SpoolFiles(work_dir / SPOOL_DIR)
        self._shard_writer: ShardWriter | None = None

    def open(self) -> None:
        # Rejects are regenerated on every run: a run re-reads its inputs from the start,
        # so the file is complete and has each bad line once. So are the long lines' files.
        shutil.rmtree(self.long_lines.directory, ignore_errors=True)
        self.spools.reset()
        # Unbuffered: rejects are written in ~1 MiB pieces anyway, and a full disk then
        # fails in write (one clear error), never again in close.
        self._rejects = open(self.rejects_path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
        if self.cfg.check_duplicates:
            self._dups = DuplicateFinder(self.work_dir / STATE_DIR / "duplicates")

    def close(self) -> None:
        self.spools.remove_all()
        with self._lock:
            self._closed = True
            if self._dups is not None:
                self._dups.discard()
                self._dups = None
            if self._rejects is not None:
                self._rejects.close()
                self._rejects = None

    def _writer(self, *, hash_inline: bool = True) -> ShardWriter:
        return ShardWriter(
            self.work_dir / SHARDS_DIR,
            max_bytes=self.cfg.shard_max_bytes,
            max_records=self.cfg.shard_max_records,
            hash_inline=hash_inline,
        )

    # -- files, directories, globs, stdin (in a worker thread) -----------------------------

    def read_sources(self, sources: list[Source], hand_over: Callable[[ShardInfo], None]) -> None:
        """Read every source; ``hand_over`` each finished shard, in order (it may block).

        With worker processes, a finished shard is hashed by a worker from its pieces on
        disk and handed over once its MD5 is known; meanwhile reading goes on.
        """
        workers = self._workers(sources)
        pool = start_pool(workers) if workers > 0 else None
        if pool is None:
            workers = 0
        if pool is not None:
            log.info("%d worker processes validate and hash (--workers)", workers)
        writer = self._writer(hash_inline=pool is None)
        self._shard_writer = writer
        hashing: deque[tuple[ShardInfo, Future[str]]] = deque()

        def finished(shards: list[ShardInfo], *, wait: bool = False) -> None:
            if pool is None:
                for shard in shards:
                    hand_over(shard)
                return
            for shard in shards:
                self.spools.made(p.path for p in shard.pieces)
                pieces = [(str(p.path), p.offset, p.length) for p in shard.pieces]
                hashing.append((shard, pool.submit(md5_pieces, pieces)))
            while hashing and (wait or hashing[0][1].done()):
                shard, future = hashing.popleft()
                try:
                    md5 = future.result()
                except FileChangedError as exc:
                    raise SourceError(
                        f"{exc.path} changed during the load (shard {shard.index} needs bytes "
                        f"up to {exc.planned:,}, it ends at {exc.now:,}); rerun with "
                        f"{option('--restart', 'restart=True')} to load it as it is now",
                        path=exc.path,
                    ) from None
                hand_over(dataclasses.replace(shard, md5=md5))

        tally: Tally | None = None
        try:
            for item in self._validated(sources, pool, workers):
                if tally is None or tally.source != item.source.display:
                    self._note(tally)
                    tally = Tally(item.source.display)
                tally.count(len(item.result.ends), item.result.rejects)
                origin = item.origin
                if item.clean and self._in_place(item.source):
                    assert item.source.path is not None
                    origin = (item.source.path, item.offset)
                finished(self.take(item.source.display, item.nbytes, item.result, writer, origin))
            self._note(tally)
            last = writer.flush()
            finished([last] if last is not None else [], wait=True)
            self._finish_duplicates()
            self.done = True
        except BrokenProcessPool as exc:
            writer.abort()
            self.spools.remove_all()
            raise WorkerError(
                "a worker process died before finishing its part (most likely the system "
                "killed it, e.g. out of memory); rerun the same command to resume (uploaded "
                f"shards are skipped), with {option('--workers 0', 'workers=0')} to do everything "
                "in this process"
            ) from exc
        except BaseException:
            writer.abort()
            # Before waiting for the workers: a worker still spooling a file sees its files
            # gone at its next block and stops, rather than decoding the file to its end.
            self.spools.remove_all()
            raise
        finally:
            self._shard_writer = None
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _note(self, tally: Tally | None) -> None:
        """At the end of a source: if every line was rejected, say what it looks like."""
        if tally is None or tally.records or not tally.rejected or tally.first is None:
            return
        what = (
            "its only line was rejected"
            if tally.rejected == 1
            else f"all {tally.rejected:,} lines were rejected"
        )
        first = tally.first
        if self.vopts.schema is not None and first.error.startswith("/"):
            # Records, every one refused by the schema (its reasons start with a pointer):
            # the file is fine; the schema is likely not this data's.
            note = (
                f"{tally.source}: {what} by the schema (line {first.line:,}: {first.error}); "
                f"is {option('--schema', 'schema')} the schema of this data?"
            )
        else:
            note = (
                f"{tally.source}: {what}; it looks like {looks_like(first)}; bulkload "
                "needs one JSON object per line"
            )
        log.warning("%s", note)
        self.notes.append(note)

    def _workers(self, sources: list[Source]) -> int:
        """How many worker processes: ``cfg.workers``, or if that is None, one per core (at
        most 8) when they pay off: 2+ cores and AUTO_WORKERS_BYTES of plain files."""
        if multiprocessing.current_process().daemon:
            # A daemonic process may not start processes (a Dask worker, say): validate here.
            if self.cfg.workers:
                log.warning(
                    "--workers %d ignored: this process may not start processes "
                    "(it is a daemonic process, e.g. a Dask worker)",
                    self.cfg.workers,
                )
            return 0
        if self.cfg.workers is not None:
            return self.cfg.workers
        try:
            cores = len(os.sched_getaffinity(0))  # the cores this process may use
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        plain = sum(s.size or 0 for s in sources if self._in_place(s))
        packed = sum(s.size or 0 for s in sources if self._spooled(s))
        work = plain + _PACKED_RATIO * packed
        return min(cores, 8) if cores >= 2 and work >= AUTO_WORKERS_BYTES else 0

    def _in_place(self, source: Source) -> bool:
        """Whether clean blocks of ``source`` can be sent from the file itself: a local,
        uncompressed JSONL regular file (--keep-shards asks for copies of everything). Not
        a pipe such as ``<(zcat x.gz)`` (its size is None): it cannot be read again; nor a
        file whose size says 0 (empty, or a /proc-like file whose content has no size),
        which is read as a stream."""
        return (
            not self.cfg.keep_shards
            and source.path is not None
            and bool(source.size)
            and not source.compression
            and source.format == "jsonl"
        )

    def _spooled(self, source: Source) -> bool:
        """Whether a worker decodes ``source`` into the spool (with workers): a local,
        compressed JSONL regular file. Not with --keep-shards (shards then hold copies of
        everything), nor a pipe (read here, as a stream)."""
        return (
            not self.cfg.keep_shards
            and source.path is not None
            and bool(source.size)
            and source.compression is not None
            and source.format == "jsonl"
        )

    def _validated(
        self, sources: list[Source], pool: ProcessPoolExecutor | None, workers: int = 0
    ) -> Iterator[_Validated]:
        """Every block of every source with its validation, in input order."""
        # A line over twice the shard size stops the run rather than being held whole: such
        # "lines" are files without newlines (one big JSON document, CR line ends).
        limit = max(2 * self.cfg.shard_max_bytes, _MIN_LINE_LIMIT)
        if pool is None:
            for source in sources:
                for chunk in iter_chunks(
                    source,
                    self.cfg.block_size,
                    max_line_bytes=limit,
                    stop=self.stop,
                    long_lines=self.long_lines,
                ):
                    if self.stop.is_set():
                        raise Stop
                    result = validate_chunk(chunk.data, chunk.first_line, self.vopts)
                    clean = result.data is chunk.data
                    result = with_source_rejects(chunk, result)
                    nbytes = len(chunk.data) + chunk.skipped
                    yield _Validated(source, chunk.offset, nbytes, clean, result)
            return
        # Work spreads over the worker processes, results come back in input order, at most
        # 2 tasks per worker in flight (bounded memory), across file boundaries so that
        # many small files keep every worker busy. A plain file is not read here at all:
        # workers get byte ranges (see _work), small files go several to a task (one task
        # per 64 KiB file spent more on the hand-off than on validating), and the smallest
        # are copied by the worker into the spool. A compressed file is one task, decoded
        # by the worker into the spool. Other sources are read here and sent whole.
        window: deque[Callable[[], Iterable[_Validated]]] = deque()
        block = self.cfg.block_size
        depth = 2 * workers
        small: list[tuple[Source, int, int, _LineCount]] = []  # whole small files, pending
        tiny: list[Source] = []  # whole files under SMALL_FILE, pending
        small_bytes = 0

        def send_pending() -> None:
            nonlocal small, tiny, small_bytes
            if small:
                ranges = [(str(s.path), a, b, s.size or 0) for s, a, b, _ in small]
                future = pool.submit(validate_ranges, ranges, self.vopts, limit)
                window.append(functools.partial(self._settle_ranges, small, future))
            if tiny:
                base = self.spools.new_base()
                spooled = pool.submit(spool_small_files, tiny, base, self.vopts)
                window.append(functools.partial(self._settle_small, tiny, base, spooled))
            small, tiny, small_bytes = [], [], 0

        def full() -> Iterator[_Validated]:
            while len(window) >= depth:
                yield from window.popleft()()

        for source in sources:
            if self.stop.is_set():
                raise Stop
            if self._spooled(source):
                send_pending()
                base = self.spools.new_base()
                future = pool.submit(
                    spool_compressed, source, base, self.vopts, block, limit, self.long_lines
                )
                window.append(functools.partial(self._settle_spooled, source, base, future))
                yield from full()
                continue
            if self._in_place(source):
                assert source.size is not None
                if source.size < block:
                    # One kind of batch at a time, so that results keep the input order.
                    if source.size < SMALL_FILE:
                        if small:
                            send_pending()
                        tiny.append(source)
                    else:
                        if tiny:
                            send_pending()
                        check_plain_file(source)
                        small.append((source, 0, source.size, _LineCount()))
                    small_bytes += source.size
                    if small_bytes >= block or len(small) + len(tiny) >= _FILES_PER_TASK:
                        send_pending()
                else:
                    send_pending()
                    check_plain_file(source)
                    lines = _LineCount()
                    for a in range(0, source.size, block):
                        if self.stop.is_set():
                            raise Stop
                        b = min(a + block, source.size)
                        ranged = pool.submit(
                            validate_ranges,
                            [(str(source.path), a, b, source.size)],
                            self.vopts,
                            limit,
                        )
                        entry = [(source, a, b, lines)]
                        window.append(functools.partial(self._settle_ranges, entry, ranged))
                        yield from full()
                yield from full()
                continue
            send_pending()
            for chunk in iter_chunks(
                source, block, max_line_bytes=limit, stop=self.stop, long_lines=self.long_lines
            ):
                if self.stop.is_set():
                    raise Stop
                sent = pool.submit(validate_block, chunk.data, chunk.first_line, self.vopts)
                window.append(functools.partial(_settle_block, source, chunk, sent))
                yield from full()
        send_pending()
        while window:
            yield from window.popleft()()

    def _settle_spooled(
        self, source: Source, base: str, future: Future[None]
    ) -> Iterator[_Validated]:
        """A compressed file's blocks as its worker writes them (see ``spool``): taken from
        the task's index while the worker goes on; its error, if any, after the blocks
        that came before it."""
        index = IndexReader(base)
        try:
            while True:
                item = index.take()
                if item is None:
                    if not future.done():
                        wait_futures([future], timeout=POLL)
                        if self.stop.is_set():
                            raise Stop
                        continue
                    item = index.take()  # written just before the task ended
                    if item is None:
                        exc = future.exception()
                        if exc is not None:
                            raise _spool_error(exc, self.work_dir)
                        return
                if isinstance(item, Sealed):
                    self._seal(item.path)
                    continue
                yield _spooled_block(source, item)
        finally:
            index.close()

    def _settle_small(
        self, sources: list[Source], base: str, future: Future[SpooledFiles]
    ) -> Iterator[_Validated]:
        """A task of small files copied to the spool: one block each, in order; a file's
        error in its place."""
        segment = Path(f"{base}.0000")  # every file's block is in it: one Path, not one each
        for source, item in zip(sources, future.result().blocks(), strict=True):
            if isinstance(item, BaseException):
                raise _spool_error(item, self.work_dir)
            yield _spooled_block(source, item, segment)
        self._seal(str(segment))

    def _seal(self, path: str) -> None:
        """A spool segment is complete and every block in it was fed to the shards."""
        writer = self._shard_writer
        held = writer is not None and writer.holds(Path(path))
        self.spools.seal(path, held=held)

    def _settle_ranges(
        self,
        entries: list[tuple[Source, int, int, _LineCount]],
        future: Future[list[RangeResult | BaseException]],
    ) -> list[_Validated]:
        """A task's byte ranges, with line numbers made absolute; a worker's error becomes
        a SourceError that names the file and line. A range's last line that was too long
        for a shard is copied to its file from here (the worker did not read it)."""
        settled = []
        for (source, a, _, lines), r in zip(entries, future.result(), strict=True):
            if isinstance(r, BaseException):
                raise _source_error(source, a, lines, r)
            result = r.result
            if r.long_line is not None:
                line = result.lines + 1
                aside = copy_aside(source, *r.long_line, line, self.long_lines)
                result.rejects = result.rejects.merged(aside)
                result.lines += 1
            result = _shift_lines(result, lines.seen)
            lines.seen += result.lines
            settled.append(_Validated(source, r.start, r.end - r.start, r.clean, result))
            if r.end >= (source.size or 0):
                check_unchanged(source)  # its last range: was it the file planned for?
        return settled

    def take(
        self,
        source: str,
        nbytes: int,
        result: ChunkResult,
        writer: ShardWriter,
        origin: tuple[Path, int] | None = None,
    ) -> list[ShardInfo]:
        """Count a validated block, write its rejects, feed its records to the shards."""
        with self._lock:
            if self._closed:
                raise Stop  # the run ended without this thread, which was stuck in a read
            s = self.stats
            s.bytes_read += nbytes
            s.lines += result.lines
            s.records += len(result.ends)
            s.blank += result.blank
            if result.rejects:
                assert self._rejects is not None
                s.rejected += len(result.rejects)
                if result.rejects.has(TOO_LONG):
                    result.rejects = self._set_aside(source, result.rejects)
                self._write_rejects(result.rejects.jsonl(source))
                for reject in result.rejects:
                    # An example's first bytes are enough to show; a long line is not held.
                    self.reasons.add(reject.error, source, reject.line, reject.raw[:_EXAMPLE])
                if self.cfg.max_rejects is not None and s.rejected > self.cfg.max_rejects:
                    first = result.rejects[0]
                    raise TooManyRejectsError(
                        f"more than {self.cfg.max_rejects} lines rejected (e.g. {source} line "
                        f"{first.line}: {first.error}); see {self.rejects_path}. Fix the input "
                        f"or raise {option('--max-rejects', 'max_rejects')}."
                    )
            if self._dups is not None and result.ids is not None:
                self._dups.add(source, result.ids, result.line_nos)
        return writer.feed(source, result, origin)

    def _set_aside(self, source: str, rejects: Rejects) -> Rejects:
        """Lines longer than a shard that validation held (they fit a block): saved to a
        file each, as the reading side does with longer ones, so that every such line is
        reported the same way."""
        out = Rejects()
        for r in rejects:
            if r.kind != TOO_LONG:
                out.add(r.line, r.error, r.raw, r.kind)
                continue
            path = self.long_lines.path_for(source, r.line)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(r.raw)
            error = too_long(len(r.raw) + 1, self.cfg.shard_max_bytes, str(path))
            out.add(r.line, error, aside_members(str(path), len(r.raw), r.raw), ASIDE)
        return out

    def _write_rejects(self, pieces: Iterable[bytes]) -> None:
        assert self._rejects is not None
        try:
            for piece in pieces:
                view = memoryview(piece)
                while view:  # an unbuffered write may take part of it
                    view = view[self._rejects.write(view) or 0 :]
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise DiskSpaceError(
                f"the disk is full: cannot write rejected lines to {self.rejects_path} "
                f"({_free(self.work_dir)} free). Free some space, or use a work dir on a "
                f"bigger disk ({option('--work-dir', 'work_dir')}), then rerun the same command to "
                "resume"
            ) from None

    def _finish_duplicates(self) -> None:
        with self._lock:
            if self._dups is not None:
                self.duplicates = self._dups.finish(self.work_dir / DUPLICATES)
                self._dups = None

    # -- records from an iterable (in the event loop) ----------------------------------------

    async def read_records(
        self,
        records: AsyncIterable[Mapping[str, Any]] | Iterable[Mapping[str, Any]],
        accept: Callable[[ShardInfo], Awaitable[None]],
    ) -> None:
        """Serialize, validate and shard records; ``accept`` each finished shard."""
        writer = self._writer()
        batch: list[bytes] = []
        faults = Rejects()  # records with no JSON form: a blank line each in the batch
        size = 0
        line_no = 1
        first = 1

        async def flush() -> None:
            nonlocal batch, size, first, faults
            chunk = Chunk(b"".join(batch), first, 0, faults)
            result = await asyncio.to_thread(validate_chunk, chunk.data, first, self.vopts)
            result = with_source_rejects(chunk, result)
            shards = await asyncio.to_thread(
                self.take, RECORDS_SOURCE, len(chunk.data), result, writer
            )
            for shard in shards:
                await accept(shard)
            batch, size, first, faults = [], 0, line_no, Rejects()

        try:
            async for record in _aiter(records):
                if self.stop.is_set():
                    raise Stop
                line, fault = record_line(record)
                if fault is not None:  # it keeps its line number, and is kept as its repr
                    faults.add(line_no, fault, repr(record).encode("utf-8", "backslashreplace"))
                batch.append(line)
                size += len(line)
                line_no += 1
                if size >= _RECORD_BATCH_BYTES:
                    await flush()
            if batch:
                await flush()
            last = await asyncio.to_thread(writer.flush)
            if last is not None:
                await accept(last)
            await asyncio.to_thread(self._finish_duplicates)
            self.done = True
        except BaseException:
            writer.abort()
            raise


@dataclass(slots=True)
class _Validated:
    """A validated block: ``nbytes`` bytes of ``source`` from ``offset``. ``clean``: the
    records are exactly those bytes of the input (``result.data`` may then be empty)."""

    source: Source
    offset: int
    nbytes: int
    clean: bool
    result: ChunkResult
    #: Where the records are, byte for byte, when not in ``result.data``: a spool file.
    origin: tuple[Path, int] | None = None


class _LineCount:
    """Lines of one source settled so far: a range's line numbers start after them."""

    def __init__(self) -> None:
        self.seen = 0


def _free(directory: Path) -> str:
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return "unknown space"
    return f"{free / 2**20:,.1f} MiB"


def _source_error(source: Source, a: int, lines: _LineCount, exc: BaseException) -> BaseException:
    if isinstance(exc, LineTooLongError):
        return line_too_long(source, lines.seen + exc.line, exc.limit)
    if isinstance(exc, FileChangedError):
        verb = "shrank" if exc.now < exc.planned else "grew"
        return SourceError(
            f"{source.display} {verb} from {exc.planned:,} to {exc.now:,} bytes during the "
            f"load; rerun with {option('--restart', 'restart=True')} to load it as it is now",
            path=source.display,
        )
    if isinstance(exc, OSError):
        return SourceError(
            f"{source.display}: read error near byte {a:,}: {exc.strerror or exc}; check the "
            "disk or file system and rerun to resume",
            path=source.display,
        )
    return exc


def _spooled_block(source: Source, block: SpooledBlock, path: Path | None = None) -> _Validated:
    """A spooled block as a validated one; ``path`` is ``block.path`` when the caller has it."""
    return _Validated(
        source,
        block.offset,
        block.nbytes,
        False,
        block.result,
        (path or Path(block.path), block.at),
    )


def _spool_error(exc: BaseException, work_dir: Path) -> BaseException:
    """A spooling worker's error, as the loading process raises it."""
    if isinstance(exc, SpoolGone):
        return Stop()
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskSpaceError(
            f"the disk is full: cannot write decoded input to {work_dir / SPOOL_DIR} "
            f"({_free(work_dir)} free). Free some space, or use a work dir on a bigger disk "
            f"({option('--work-dir', 'work_dir')}), then rerun the same command to resume"
        )
    return exc


def _settle_block(source: Source, chunk: Chunk, future: Future[ChunkResult]) -> list[_Validated]:
    result = future.result()
    if chunk.data and not result.data and result.ends:
        result.data = chunk.data  # the records are the block itself: not sent back
    result = with_source_rejects(chunk, result)
    nbytes = len(chunk.data) + chunk.skipped
    return [_Validated(source, chunk.offset, nbytes, False, result)]


def _shift_lines(result: ChunkResult, by: int) -> ChunkResult:
    if by:
        nos = result.line_nos
        if isinstance(nos, range):
            result.line_nos = range(nos.start + by, nos.stop + by)
        else:
            result.line_nos = [n + by for n in nos]
        result.rejects.shift(by)
    return result


async def _aiter(
    items: AsyncIterable[Mapping[str, Any]] | Iterable[Mapping[str, Any]],
) -> AsyncIterable[Mapping[str, Any]]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
