"""The reading side of a run: inputs → validated blocks → rejects, duplicate ids and shards.

``read_sources`` runs in one worker thread (CPU work and blocking file I/O); it hands each
finished shard over through a callback that blocks while the upload queue is full, which
is how a slow network slows reading down. ``read_records`` does the same for records from
an (async) iterable, in the event loop, with the CPU work in threads.
"""

from __future__ import annotations

import asyncio
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
        # --keep-shards asks for shard files to keep, so every byte is copied into them.
        zero_copy = not self.cfg.keep_shards
        writer = self._writer()
        try:
            for source in sources:
                in_place = (
                    zero_copy
                    and source.path is not None
                    and not source.compression
                    and source.format == "jsonl"
                )
                for chunk, result in self._validated(source):
                    # A block the validator passed through unchanged (the same bytes object)
                    # is sent from the input file itself: see _shard.
                    origin = None
                    if in_place and result.data is chunk.data:
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

    def _validated(self, source: Source) -> Iterator[tuple[Chunk, ChunkResult]]:
        # A line over twice the shard size stops the run rather than being held whole: such
        # "lines" are files without newlines (one big JSON document, CR line ends).
        limit = max(2 * self.cfg.shard_max_bytes, _MIN_LINE_LIMIT)
        chunks = iter_chunks(source, self.cfg.block_size, max_line_bytes=limit)
        if self.cfg.workers <= 0:
            for chunk in chunks:
                if self.stop.is_set():
                    raise Stop
                result = validate_chunk(chunk.data, chunk.first_line, self.vopts)
                yield chunk, _with_source_rejects(chunk, result)
            return
        # Blocks spread over worker processes, results in input order, at most 2 blocks
        # per worker in flight (bounded memory). Shipping 8 MiB blocks to a worker and back
        # costs about as much CPU as validating them, so this pays off only with cores to
        # spare (README, Performance).
        with ProcessPoolExecutor(self.cfg.workers) as pool:
            window: deque[tuple[Chunk, Future[ChunkResult]]] = deque()
            for chunk in chunks:
                if self.stop.is_set():
                    raise Stop
                future = pool.submit(validate_chunk, chunk.data, chunk.first_line, self.vopts)
                window.append((chunk, future))
                if len(window) >= 2 * self.cfg.workers:
                    done, fut = window.popleft()
                    yield done, _with_source_rejects(done, fut.result())
            while window:
                done, fut = window.popleft()
                yield done, _with_source_rejects(done, fut.result())

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
