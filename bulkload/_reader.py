"""The reading side of a run: inputs → validated blocks → rejects, duplicate ids and shards.

``read_sources`` runs in one worker thread (CPU work and blocking file I/O); it hands each
finished shard over through a callback that blocks while the upload queue is full, which
is how a slow network slows reading down. ``read_records`` does the same for records from
an (async) iterable, in the event loop, with the CPU work in threads.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import IO, Any

import orjson

from ._config import LoadConfig
from ._duplicates import DuplicateFinder
from ._errors import TooManyRejectsError
from ._manifest import DUPLICATES, REJECTS, SHARDS_DIR, STATE_DIR
from ._progress import Stats
from ._shard import ShardInfo, ShardWriter
from ._sources import Chunk, Source, iter_chunks
from ._validate import ChunkResult, ValidateOptions, reject_json, validate_chunk

#: Where records from ``load_records`` say they came from, in rejects and the manifest.
RECORDS_SOURCE = "<records>"
#: Serialized records handed to validation at once by ``read_records``.
_RECORD_BATCH_BYTES = 4 << 20
#: The shortest line that stops a run rather than being held whole (see _validated).
_MIN_LINE_LIMIT = 64 << 20


class Stop(Exception):
    """Raised where reading notices that the run was asked to stop."""


class Reader:
    """Reads one run's inputs; owns ``rejects.jsonl`` and the duplicate check."""

    def __init__(self, cfg: LoadConfig, stats: Stats, work_dir: Path, stop: threading.Event):
        self.cfg = cfg
        self.stats = stats
        self.work_dir = work_dir
        self.stop = stop
        self.rejects_path = work_dir / REJECTS
        self.vopts = ValidateOptions(
            id_field=cfg.id_field,
            coerce_id=cfg.coerce_id,
            max_record_bytes=cfg.shard_max_bytes,
            collect_ids=cfg.check_duplicates,
        )
        #: Set once every input was read to its end and every shard handed over.
        self.done = False
        #: With check_duplicates, after a complete read: (ids repeated, extra occurrences).
        self.duplicates: tuple[int, int] | None = None
        self._rejects: IO[bytes] | None = None
        self._dups: DuplicateFinder | None = None

    def open(self) -> None:
        # Rejects are regenerated on every run: a run re-reads its inputs from the start,
        # so the file is complete and has each bad line once.
        self._rejects = open(self.rejects_path, "wb")  # noqa: SIM115 - closed in close()
        if self.cfg.check_duplicates:
            self._dups = DuplicateFinder(self.work_dir / STATE_DIR / "duplicates")

    def close(self) -> None:
        if self._dups is not None:
            self._dups.discard()
            self._dups = None
        if self._rejects is not None:
            self._rejects.close()
            self._rejects = None

    def _writer(self) -> ShardWriter:
        return ShardWriter(
            self.work_dir / SHARDS_DIR,
            max_bytes=self.cfg.shard_max_bytes,
            max_records=self.cfg.shard_max_records,
        )

    # -- files, directories, globs, stdin (in a worker thread) -----------------------------

    def read_sources(self, sources: list[Source], hand_over: Callable[[ShardInfo], None]) -> None:
        """Read every source; ``hand_over`` each finished shard (it may block)."""
        writer = self._writer()
        pool = ProcessPoolExecutor(self.cfg.workers) if self.cfg.workers > 0 else None
        try:
            for source, chunk, result in self._validated(sources, pool):
                # A block the validator passed through unchanged (the same bytes object)
                # is sent from the input file itself: see _shard.
                origin = None
                if result.data is chunk.data and self._in_place(source):
                    assert source.path is not None
                    origin = (source.path, chunk.offset)
                for shard in self.take(source.display, len(chunk.data), result, writer, origin):
                    hand_over(shard)
            last = writer.flush()
            if last is not None:
                hand_over(last)
            self._finish_duplicates()
            self.done = True
        except BaseException:
            writer.abort()
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _in_place(self, source: Source) -> bool:
        """Whether clean blocks of ``source`` can be sent from the file itself: a local,
        uncompressed JSONL file (--keep-shards asks for copies of everything)."""
        return (
            not self.cfg.keep_shards
            and source.path is not None
            and not source.compression
            and source.format == "jsonl"
        )

    def _validated(
        self, sources: list[Source], pool: ProcessPoolExecutor | None
    ) -> Iterator[tuple[Source, Chunk, ChunkResult]]:
        """Every block of every source with its validation, in input order."""
        # A line over twice the shard size stops the run rather than being held whole: such
        # "lines" are files without newlines (one big JSON document, CR line ends).
        limit = max(2 * self.cfg.shard_max_bytes, _MIN_LINE_LIMIT)
        if pool is None:
            for source in sources:
                for chunk in iter_chunks(source, self.cfg.block_size, max_line_bytes=limit):
                    if self.stop.is_set():
                        raise Stop
                    result = validate_chunk(chunk.data, chunk.first_line, self.vopts)
                    yield source, chunk, _with_source_rejects(chunk, result)
            return
        # Blocks spread over worker processes, results in input order, at most 2 blocks per
        # worker in flight (bounded memory), across file boundaries so that many small files
        # keep every worker busy. A block of a local uncompressed file goes as its byte range:
        # the worker reads it from the page cache and sends the block back only if it
        # changed, instead of 8 MiB pickled each way (which cost as much as validating).
        window: deque[tuple[Source, Chunk, Future[tuple[bool, ChunkResult]]]] = deque()
        for source in sources:
            by_range = (
                source.path is not None and not source.compression and source.format == "jsonl"
            )
            for chunk in iter_chunks(source, self.cfg.block_size, max_line_bytes=limit):
                if self.stop.is_set():
                    raise Stop
                if by_range:
                    assert source.path is not None
                    future = pool.submit(
                        validate_range,
                        source.path,
                        chunk.offset,
                        len(chunk.data),
                        chunk.first_line,
                        self.vopts,
                    )
                else:
                    future = pool.submit(validate_block, chunk.data, chunk.first_line, self.vopts)
                window.append((source, chunk, future))
                if len(window) >= 2 * self.cfg.workers:
                    yield _settled(*window.popleft())
        while window:
            yield _settled(*window.popleft())

    def take(
        self,
        source: str,
        nbytes: int,
        result: ChunkResult,
        writer: ShardWriter,
        origin: tuple[Path, int] | None = None,
    ) -> list[ShardInfo]:
        """Count a validated block, write its rejects, feed its records to the shards."""
        s = self.stats
        s.bytes_read += nbytes
        s.lines += result.lines
        s.records += len(result.ends)
        s.blank += result.blank
        if result.rejects:
            assert self._rejects is not None
            s.rejected += len(result.rejects)
            self._rejects.write(b"".join(reject_json(source, r) for r in result.rejects))
            self._rejects.flush()
            if self.cfg.max_rejects is not None and s.rejected > self.cfg.max_rejects:
                first = result.rejects[0]
                raise TooManyRejectsError(
                    f"more than {self.cfg.max_rejects} lines rejected (e.g. {source} line "
                    f"{first.line}: {first.error}); see {self.rejects_path}. Fix the input or "
                    "raise --max-rejects."
                )
        if self._dups is not None and result.ids is not None:
            self._dups.add(source, result.ids, result.line_nos)
        return writer.feed(source, result, origin)

    def _finish_duplicates(self) -> None:
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
        size = 0
        line_no = 1
        first = 1

        async def flush() -> None:
            nonlocal batch, size, first
            data = b"".join(batch)
            result = await asyncio.to_thread(validate_chunk, data, first, self.vopts)
            shards = await asyncio.to_thread(self.take, RECORDS_SOURCE, len(data), result, writer)
            for shard in shards:
                await accept(shard)
            batch, size, first = [], 0, line_no

        try:
            async for record in _aiter(records):
                if self.stop.is_set():
                    raise Stop
                try:
                    line = orjson.dumps(record) + b"\n"
                except TypeError as exc:
                    # Not serializable: it still gets a line number, and a reject with its repr.
                    doc = {"unserializable": repr(record)[:1000], "error": str(exc)}
                    line = orjson.dumps(doc) + b"\n"
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


def validate_range(
    path: Path, offset: int, length: int, first_line: int, opts: ValidateOptions
) -> tuple[bool, ChunkResult]:
    """In a worker process: validate bytes ``offset..offset+length`` of ``path``. Returns
    (clean, result); a clean result's data is left out (the caller has those bytes)."""
    with open(path, "rb") as f:
        data = os.pread(f.fileno(), length, offset)
    if len(data) != length:
        raise OSError(f"{path} changed while it was read: {length - len(data)} bytes missing")
    result = validate_chunk(data, first_line, opts)
    if result.data is data:
        result.data = b""
        return True, result
    return False, result


def validate_block(data: bytes, first_line: int, opts: ValidateOptions) -> tuple[bool, ChunkResult]:
    """In a worker process: validate a block that was sent whole."""
    return False, validate_chunk(data, first_line, opts)


def _settled(
    source: Source, chunk: Chunk, future: Future[tuple[bool, ChunkResult]]
) -> tuple[Source, Chunk, ChunkResult]:
    clean, result = future.result()
    if clean:
        result.data = chunk.data  # the same object: the block may be sent in place
    return source, chunk, _with_source_rejects(chunk, result)


def _with_source_rejects(chunk: Chunk, result: ChunkResult) -> ChunkResult:
    """Put back the lines the source itself rejected (a CSV row with too many fields):
    each held its place as a blank line, which the validator counted as blank."""
    if chunk.rejects:
        result.blank -= len(chunk.rejects)
        result.rejects = sorted([*result.rejects, *chunk.rejects], key=lambda r: r.line)
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
