"""Spools: inputs a worker process read for the load, as files in the work dir that shards
point into, so that the loading process never holds their bytes.

Two kinds of input are read by a worker and written here instead of being sent back:

- a **compressed file**, one per task (``spool_compressed``): decoded with ``open_stream``,
  cut into blocks of whole lines and validated block by block; each block's records are
  appended to a segment file (a new one every ``SEGMENT`` bytes), and its validation, with
  the records left out, to the task's index file, as soon as it is done. The loading
  process takes the blocks from the index while the worker goes on (``IndexReader``), so
  one huge ``.gz`` streams: its shards are uploaded while it is still being decoded;
- **small plain files**, many per task (``spool_small_files``): each read once (open,
  pread, fstat, close: ``read_small_file``), checked against the size and age it was
  listed with, validated, and its records appended to one segment. Their shards then have
  one large piece per task instead of one small piece per file, each of which the MD5 and
  the upload reopened.

A segment is then like a plain input file: shards' pieces point into it, workers hash
them from disk, uploads stream from it. It is deleted once it is complete (``seal``) and
every shard with a piece in it is done (uploaded, failed, recognised as uploaded by a
resume, or journaled by a dry run): ``SpoolFiles``. Nothing is fsynced: a rerun reads the
inputs again and makes them anew. Disk: a worker writes at most ``LIVE_SEGMENTS`` segments
of one file ahead of the uploads (it waits for the oldest to be deleted), so a run holds
about ``workers × LIVE_SEGMENTS × SEGMENT`` here at most, besides the shards' own files.

The loading process ends a worker's task early by removing the spool directory: the
worker sees its index file unlinked at its next block and stops (``SpoolGone``).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import pickle
import shutil
import threading
import time
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .._config import MiB
from .._inputs import Chunk, LongLines, Source, iter_chunks, read_small_file
from .._rejects import Rejects
from .._validate import ChunkResult, ValidateOptions, validate_chunk

#: Under the work dir: the spool files of this run (regenerated every run).
SPOOL_DIR = "spool"
#: Decoded bytes per segment file: one shard's worth, so that a segment is deleted about
#: as soon as the shard that ends in it is uploaded.
SEGMENT = 64 * MiB
#: Segments of one file a worker may have written that are not yet deleted; past that it
#: waits (bounds the disk a fast decoder fills ahead of a slow upload).
LIVE_SEGMENTS = 4
#: Decoded bytes a spooling worker validates at a time (at most; ``--block-size`` if
#: smaller): a worker holds about two blocks, and every worker counts towards the process
#: tree's memory; past 1 MiB the size makes no measurable difference to the CPU it takes.
SPOOL_BLOCK = 2 * MiB
#: How often a waiting worker, or the loading process waiting for a worker's next block,
#: looks again (seconds).
POLL = 0.005
_LENGTH = 8  # the bytes of an index record's length prefix
INDEX = ".index"


class SpoolGone(Exception):
    """The spool directory was removed: the run that asked for this task has ended."""


@dataclass(slots=True)
class SpooledBlock:
    """One validated block of an input: bytes ``offset .. offset + nbytes`` of its decoded
    stream (``nbytes`` counts a line set aside), whose records (``result``, data left out)
    are ``length`` bytes of the file ``path`` from ``at``."""

    offset: int
    nbytes: int
    path: str
    at: int
    length: int
    result: ChunkResult


@dataclass(slots=True)
class Sealed:
    """An index record: the segment ``path`` is complete (no later block is in it)."""

    path: str


def with_source_rejects(chunk: Chunk, result: ChunkResult) -> ChunkResult:
    """Put back the lines the source itself rejected (a CSV row with too many fields, a
    line set aside): each held its place as a blank line, which the validator counted."""
    if chunk.rejects:
        result.blank -= len(chunk.rejects)
        result.rejects = result.rejects.merged(chunk.rejects)
    return result


class _Segments:
    """The segment files a task writes, one after another, and its index."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.number = -1
        self.fd = -1
        self.size = 0
        self.path = ""
        self.index = os.open(
            base + INDEX, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )

    def _name(self, number: int) -> str:
        return f"{self.base}.{number:04d}"

    def write(self, records: bytes) -> tuple[str, int]:
        """Append ``records`` to the current segment (a new one if it is full or none is
        open); where they went."""
        if os.fstat(self.index).st_nlink == 0:
            raise SpoolGone
        if self.fd < 0 or self.size >= SEGMENT:
            self._next()
        at = self.size
        _write_all(self.fd, records)
        self.size += len(records)
        return self.path, at

    def _next(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self.record(Sealed(self.path))
        self.number += 1
        oldest = self._name(self.number - LIVE_SEGMENTS)
        while self.number >= LIVE_SEGMENTS and os.path.exists(oldest):
            if os.fstat(self.index).st_nlink == 0:
                raise SpoolGone
            time.sleep(POLL)
        self.path = self._name(self.number)
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            if os.fstat(self.index).st_nlink == 0:
                raise SpoolGone from None
            raise
        self.size = 0

    def record(self, item: SpooledBlock | Sealed) -> None:
        """Append ``item`` to the index in one write: a reader sees it whole or not at all
        (it reads the length first and waits for the rest)."""
        payload = pickle.dumps(item, pickle.HIGHEST_PROTOCOL)
        _write_all(self.index, len(payload).to_bytes(_LENGTH, "little") + payload)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.record(Sealed(self.path))
            self.fd = -1
        os.close(self.index)


def spool_compressed(
    source: Source,
    base: str,
    opts: ValidateOptions,
    block_size: int,
    max_line: int,
    long_lines: LongLines,
) -> None:
    """In a worker: decode and validate ``source`` block by block into segments and an
    index named from ``base`` (see the module doc). Raises what reading it raises
    (``SourceError`` naming the file and line); the blocks before stay in the index."""
    segments = _Segments(base)
    block = min(block_size, SPOOL_BLOCK)
    chunks = iter_chunks(source, block, max_line_bytes=max_line, long_lines=long_lines)
    # closing: the input file is closed at once if this stops early, not when collected.
    with contextlib.closing(chunks), contextlib.closing(segments):
        for chunk in chunks:
            result = with_source_rejects(chunk, validate_chunk(chunk.data, chunk.first_line, opts))
            records, result.data = result.data, b""
            path, at = segments.write(records)
            nbytes = len(chunk.data) + chunk.skipped
            segments.record(SpooledBlock(chunk.offset, nbytes, path, at, len(records), result))


@dataclass(slots=True)
class SpooledFiles:
    """What a task of small files sends back: one object of a few arrays, not five objects
    a file (a SpooledBlock, its ChunkResult, Rejects, range and list of ends cost 14 µs a
    file to pickle and unpickle: 0.4 s of CPU for 20,000 files, most of it in the loading
    process). A file whose every line is a record is told by the arrays alone; the
    others (rejects, blank lines) and the errors are kept whole in ``others``."""

    path: str  # the segment every file's records are in
    at: array[int]  # where each file's records start in it
    nbytes: array[int]  # the bytes of the file each stands for (its size less a BOM)
    offset: array[int]  # where each file's first line starts (a BOM's 3 bytes, else 0)
    counts: array[int]  # each file's records (= lines); 0 for those in ``others``
    ends: array[int]  # the record ends of the files told by the arrays, each file from 0
    others: dict[int, SpooledBlock | BaseException]

    def blocks(self) -> Iterator[SpooledBlock | BaseException]:
        """One block per file, in order, or the error that file raised in its place."""
        k = 0
        for i, n in enumerate(self.counts):
            other = self.others.get(i)
            if other is not None:
                yield other
                continue
            ends = self.ends[k : k + n].tolist()
            k += n
            result = ChunkResult(b"", ends, range(1, n + 1), Rejects(), 0, n, None)
            yield SpooledBlock(
                self.offset[i], self.nbytes[i], self.path, self.at[i], ends[-1], result
            )


def _plain(result: ChunkResult) -> bool:
    """Whether the arrays of ``SpooledFiles`` tell all of ``result``: records only."""
    n = len(result.ends)
    return (
        n > 0
        and result.lines == n
        and not result.blank
        and not result.rejects
        and result.ids is None
        and result.line_nos == range(1, n + 1)
    )


def spool_small_files(sources: list[Source], base: str, opts: ValidateOptions) -> SpooledFiles:
    """In a worker: each small plain file read once, validated, its records appended to one
    segment. Files are validated and written about a MiB at a time, joined (see
    ``_validate_joined``)."""
    path = f"{base}.0000"
    out = SpooledFiles(path, array("q"), array("q"), array("q"), array("q"), array("q"), {})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    size = 0
    group: list[tuple[Source, Chunk]] = []
    grouped = 0

    def flush() -> None:
        nonlocal size, grouped
        joined = _validate_joined([c for _, c in group], opts, out.ends)
        if joined is not None:  # every file's records are its bytes, their ends in out.ends
            data, counts = joined
            _write_all(fd, data)
            for (source, chunk), n in zip(group, counts, strict=True):
                out.at.append(size)
                out.nbytes.append((source.size or 0) - chunk.offset)
                out.offset.append(chunk.offset)
                out.counts.append(n)
                size += len(chunk.data)
        else:
            for source, chunk in group:
                result = validate_chunk(chunk.data, 1, opts)
                records, result.data = result.data, b""
                _write_all(fd, records)
                nbytes = (source.size or 0) - chunk.offset
                out.at.append(size)
                out.nbytes.append(nbytes)
                out.offset.append(chunk.offset)
                if _plain(result):
                    out.counts.append(len(result.ends))
                    out.ends.extend(result.ends)
                else:
                    out.counts.append(0)
                    block = SpooledBlock(chunk.offset, nbytes, path, size, len(records), result)
                    out.others[len(out.counts) - 1] = block
                size += len(records)
        group.clear()
        grouped = 0

    try:
        for source in sources:
            try:
                chunk = read_small_file(source)
            except Exception as exc:  # a SourceError, or a bug: raised by the caller, in order
                flush()
                for column in (out.at, out.nbytes, out.offset, out.counts):
                    column.append(0)
                out.others[len(out.counts) - 1] = exc
                continue
            group.append((source, chunk))
            grouped += len(chunk.data)
            if grouped >= _JOINED:
                flush()
        flush()
    finally:
        os.close(fd)
    return out


#: Small files' bytes validated at once, joined (see ``_validate_joined``).
_JOINED = 1 * MiB


def _validate_joined(
    chunks: list[Chunk], opts: ValidateOptions, ends: array[int]
) -> tuple[bytes, list[int]] | None:
    """The chunks (whole small files, lines from 1) joined, and each one's records, when
    validating them joined shows every line of every chunk is a record as it is; their
    record ends, each chunk's from 0, are then appended to ``ends``. None (and ``ends``
    untouched) otherwise: each chunk is then validated on its own, for its own rejects.

    One ``validate_chunk`` call over the files joined instead of one per file: per call
    it costs about as much as validating a 30 KiB file, so for 4-64 KiB files it was a
    third of the worker's time. Only when each file ends with a newline (joined, lines
    stay apart) and nothing is to be collected per line (ids)."""
    joinable = (
        len(chunks) > 1 and not opts.collect_ids and all(c.data.endswith(b"\n") for c in chunks)
    )
    if not joinable:
        return None
    joined = b"".join(c.data for c in chunks)
    whole = validate_chunk(joined, 1, opts)
    if whole.data is not joined:
        return None
    # Every line a record, unchanged: split the ends by file, each from its own 0 (a C
    # loop: ``at.__rsub__(e)`` is ``e - at``).
    every = whole.ends
    counts = []
    at = i = 0
    for c in chunks:
        stop = at + len(c.data)
        j = bisect.bisect_right(every, stop, i)
        ends.extend(map(at.__rsub__, every[i:j]))
        counts.append(j - i)
        at, i = stop, j
    return joined, counts


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class IndexReader:
    """The loading process's side of a task's index: the records written so far, in order,
    without waiting (``take``)."""

    def __init__(self, base: str) -> None:
        self.path = base + INDEX
        self._file: int = -1
        self._buffer = bytearray()

    def take(self) -> SpooledBlock | Sealed | None:
        """The next whole record, or None if none has been written yet."""
        if self._file < 0:
            try:
                self._file = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return None  # the task has not started
        while True:
            buf = self._buffer
            if len(buf) >= _LENGTH:
                need = _LENGTH + int.from_bytes(buf[:_LENGTH], "little")
                if len(buf) >= need:
                    item: SpooledBlock | Sealed = pickle.loads(buf[_LENGTH:need])
                    del buf[:need]
                    return item
            more = os.read(self._file, 1 * MiB)
            if not more:
                return None
            buf += more

    def close(self) -> None:
        if self._file >= 0:
            os.close(self._file)
            self._file = -1


class SpoolFiles:
    """The loading process's account of the spool: which segments shards still need.

    ``made`` counts a finished shard's pieces, ``done`` uncounts them once it is uploaded
    (or failed, or skipped), ``seal`` says a segment will get no more records: a segment
    sealed, counted by no shard and held by no shard still open is deleted. Thread-safe: the
    reader thread makes and seals, the event loop's helper threads say done.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._shards: dict[str, int] = {}
        self._sealed: set[str] = set()
        #: Sealed while the shard being filled had a piece in them: sealed for good once
        #: that shard is made (and so counted).
        self._held: set[str] = set()
        self._tasks = 0

    def reset(self) -> None:
        """A fresh, empty spool directory (what an earlier run left is of no use)."""
        self.remove_all()
        self.directory.mkdir(parents=True, exist_ok=True)

    def remove_all(self) -> None:
        """Delete every spool file: the run is over, or stops (workers still writing see it
        and stop too)."""
        with self._lock:
            self._shards.clear()
            self._sealed.clear()
            self._held.clear()
        shutil.rmtree(self.directory, ignore_errors=True)

    def new_base(self) -> str:
        """Where a new task's files go (its segments and index add suffixes)."""
        self._tasks += 1
        return str(self.directory / f"task-{self._tasks:06d}")

    def owns(self, path: Path) -> bool:
        return path.parent == self.directory

    def made(self, paths: Iterable[Path]) -> None:
        with self._lock:
            for path in {str(p) for p in paths if self.owns(p)}:
                self._shards[path] = self._shards.get(path, 0) + 1
                if path in self._held:
                    self._held.discard(path)
                    self._sealed.add(path)

    def done(self, paths: Iterable[Path]) -> None:
        gone = []
        with self._lock:
            for path in {str(p) for p in paths if self.owns(p)}:
                left = self._shards.get(path, 0) - 1
                if left > 0:
                    self._shards[path] = left
                    continue
                self._shards.pop(path, None)
                if path in self._sealed:
                    self._sealed.discard(path)
                    gone.append(path)
        for path in gone:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def seal(self, path: str, *, held: bool) -> None:
        """No more records go to ``path``; ``held``: the shard being filled has a piece in it
        (it will be counted when it is finished)."""
        with self._lock:
            if held:
                self._held.add(path)
                return
            if self._shards.get(path):
                self._sealed.add(path)
                return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
