"""Rolling shard files: where shards start (``ShardPlanner``) and writing them (``ShardWriter``).

A shard is one upload: consecutive valid records, at most ``max_bytes`` and ``max_records``,
possibly spanning sources. Boundaries depend only on the sequence of record sizes, so the
same input and options always give the same shards; resume relies on that.

A shard is a list of ``Piece``s, byte ranges of files sent back to back. Where a block of
an uncompressed input needs no change at all (every line a valid record, LF endings), its
records are sent straight from the input file: no copy, no extra disk, no fsync — the
input is already durable, and the ETag check catches an input changed under our feet.
Everything else (records after a reject, CRLF lines, id edits, compressed inputs) goes
into the shard's own file, ``shard-000042.jsonl.partial``, fsynced, then renamed to
``shard-000042.jsonl`` and the directory fsynced, so a file with the final name is always
complete and durable: the uploader and a resumed run can trust it.

Hashing (MD5 runs at ~700 MB/s, as costly as validating) and writing happen on a helper
thread, one batch (a chunk, or small files' pieces up to a MiB) behind the caller: both
release the GIL, so they overlap with the validation of the next chunk instead of adding to
it. One batch in flight bounds memory. With worker processes, the caller hashes finished
shards from disk instead (``hash_inline=False``) and this only writes copies.
"""

from __future__ import annotations

import bisect
import errno
import hashlib
import itertools
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .._config import MiB, format_bytes
from .._durable import fsync_dir
from .._errors import DiskSpaceError, option
from .._model import Piece
from .._validate import ChunkResult

#: Free space kept beyond one full shard when a shard file is opened: room for the
#: manifest, rejects.jsonl and file-system metadata, so a full disk fails here, clearly,
#: rather than in the middle of writing the manifest.
DISK_RESERVE = 64 * MiB

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
#: Pieces go to the helper thread in batches of at least this many bytes.
_BATCH_BYTES = 1 * MiB
#: Pieces smaller than this are joined before they are hashed (see _hash_and_write_all).
_JOIN = 256 * 1024


@dataclass(frozen=True, slots=True)
class SourceRange:
    """Lines ``first_line..last_line`` of ``path`` hold the shard's records from that source
    (rejected and blank lines in between included)."""

    path: str
    first_line: int
    last_line: int


@dataclass(frozen=True, slots=True)
class ShardInfo:
    index: int
    path: Path  # the shard's own file; it exists only if some piece lives in it
    records: int
    bytes: int
    md5: str  # hex digest of the body, which S3 returns as the ETag of a single-part PUT
    sources: tuple[SourceRange, ...]
    pieces: tuple[Piece, ...] = ()

    @property
    def owns_file(self) -> bool:
        return any(p.path == self.path for p in self.pieces)


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.jsonl"


class ShardPlanner:
    """Decides where shards start, from record sizes alone. Pure and synchronous.

    A shard holds as many records as fit within both limits; a record is never split.
    """

    def __init__(self, max_bytes: int, max_records: int) -> None:
        if max_bytes < 1 or max_records < 1:
            raise ValueError(f"limits must be >= 1, got {max_bytes} bytes, {max_records} records")
        self.max_bytes = max_bytes
        self.max_records = max_records
        self.records = 0  # in the open shard
        self.bytes = 0

    @property
    def full(self) -> bool:
        """Whether the open shard can take no more records (the next one starts a shard)."""
        return self.records >= self.max_records or self.bytes >= self.max_bytes

    def feed(self, sizes: Sequence[int]) -> list[int]:
        """Indexes into ``sizes`` before which a new shard starts.

        Index 0 appears when the shard left open by earlier feeds cannot take ``sizes[0]``.
        """
        return self.feed_ends(list(itertools.accumulate(sizes)))

    def feed_ends(self, ends: Sequence[int]) -> list[int]:
        """Like :meth:`feed`, given cumulative end offsets (``ChunkResult.ends``) instead.

        Works per shard, not per record: a bisection finds how many records still fit.
        """
        cuts: list[int] = []
        n = len(ends)
        i = 0
        base = 0  # cumulative offset where record i starts
        while i < n:
            room_records = self.max_records - self.records
            limit = base + self.max_bytes - self.bytes
            j = bisect.bisect_right(ends, limit, i, min(n, i + room_records))
            if j == i:
                if self.records == 0:
                    raise ValueError(
                        f"a record of {ends[i] - base} bytes is larger than a shard "
                        f"({self.max_bytes} bytes); validation should have rejected it"
                    )
                cuts.append(i)
                self.records = self.bytes = 0
                continue
            self.records += j - i
            self.bytes += ends[j - 1] - base
            base = ends[j - 1]
            i = j
        return cuts

    def flush(self) -> tuple[int, int] | None:
        """Close the open shard: its (records, bytes), or None if it is empty."""
        if self.records == 0:
            return None
        done = (self.records, self.bytes)
        self.records = self.bytes = 0
        return done


class _OpenShard:
    """The shard being built: its own file (opened on first need), digest, counts, ranges."""

    def __init__(self, index: int, path: Path) -> None:
        self.index = index
        self.path = path
        self.file: BinaryIO | None = None
        self.file_bytes = 0
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.records = 0
        self.bytes = 0
        self.ranges: list[SourceRange] = []
        self.pieces: list[Piece] = []

    def add_piece(self, path: Path, offset: int, length: int) -> None:
        last = self.pieces[-1] if self.pieces else None
        if last is not None and last.path == path and last.offset + last.length == offset:
            self.pieces[-1] = Piece(path, last.offset, last.length + length)
        else:
            self.pieces.append(Piece(path, offset, length))

    def add_range(self, source: str, first_line: int, last_line: int) -> None:
        if self.ranges and self.ranges[-1].path == source:
            first_line = self.ranges.pop().first_line
        self.ranges.append(SourceRange(source, first_line, last_line))


class ShardWriter:
    """Writes records into rolling shard files ``directory/shard-NNNNNN.jsonl``.

    With ``write=False`` nothing touches the disk, but the same ShardInfo (md5 included) is
    computed: resume uses it to check shards that were already uploaded.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        max_records: int,
        start_index: int = 0,
        write: bool = True,
        hash_inline: bool = True,
    ) -> None:
        """``write=False``: plan and hash only. Records fed with an ``origin`` are sent from
        that file in place; pass no origin to have every byte copied into shard files.

        ``hash_inline=False``: leave ``md5`` empty; the caller hashes each finished shard
        from its pieces on disk (``_validate.worker.md5_pieces``, in a worker process), and may feed
        results of clean ranges with an origin and no data at all."""
        if not (write or hash_inline):
            raise ValueError("a shard hashed from its pieces on disk must be written")
        self.directory = directory
        self.max_bytes = max_bytes
        self.write = write
        self.hash_inline = hash_inline
        self._planner = ShardPlanner(max_bytes, max_records)
        self._next_index = start_index
        self._open: _OpenShard | None = None
        self._io: ThreadPoolExecutor | None = None  # hashes and writes, one chunk behind
        self._pending: Future[None] | None = None
        self._batch: list[tuple[_OpenShard, memoryview, bool]] = []  # not yet handed over
        self._batch_bytes = 0

    def feed(
        self, source: str, result: ChunkResult, origin: tuple[Path, int] | None = None
    ) -> list[ShardInfo]:
        """Add a validated chunk's records; return the shards this completed.

        ``origin`` (file, offset) says that ``result.data`` is, byte for byte, that file
        from that offset: the records are then sent from it instead of copied.

        Writing runs one chunk behind, so a write error (DiskSpaceError, OSError) surfaces
        on the next call, ``flush`` at the latest. After it the writer has aborted.
        """
        ends = result.ends
        if not ends:
            return []
        done: list[ShardInfo] = []
        bounds = [0, *self._planner.feed_ends(ends), len(ends)]
        # No `with`: the helper thread may still hold a slice when this returns.
        data = memoryview(result.data)
        for k, (a, b) in enumerate(itertools.pairwise(bounds)):
            if a == b:  # the first segment, when a shard starts right at record 0
                continue
            if k > 0:  # a cut: the open shard is complete
                done.append(self._finish())
            shard = self._open or self._start()
            start, stop = ends[a - 1] if a else 0, ends[b - 1]
            if origin is not None:
                shard.add_piece(origin[0], origin[1] + start, stop - start)
            if origin is None or self.hash_inline:
                self._write(shard, data[start:stop], copy=origin is None)
            else:  # hashed later from the file, which has these bytes: nothing to do now
                shard.bytes += stop - start
            shard.records += b - a
            shard.add_range(source, result.line_nos[a], result.line_nos[b - 1])
        if self._planner.full:
            self._planner.flush()
            done.append(self._finish())
        return done

    def flush(self) -> ShardInfo | None:
        """Complete the last, partly filled shard; None if there is none."""
        self._planner.flush()
        try:
            return self._finish() if self._open is not None else None
        finally:
            self._stop_helper()

    def holds(self, path: Path) -> bool:
        """Whether the shard being filled has a piece in ``path``."""
        shard = self._open
        return shard is not None and any(p.path == path for p in shard.pieces)

    def abort(self) -> None:
        """Close and delete the partly written shard, e.g. after an error or on cancel."""
        self._batch, self._batch_bytes = [], 0
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.exception()  # wait for it; its error, if any, is why we abort
        self._stop_helper()
        shard, self._open = self._open, None
        self._planner.flush()
        if shard is not None and shard.file is not None:
            shard.file.close()
            _partial(shard.path).unlink(missing_ok=True)

    def _stop_helper(self) -> None:
        if self._io is not None:
            self._io.shutdown()
            self._io = None

    def _start(self) -> _OpenShard:
        index = self._next_index
        self._next_index += 1
        self._open = _OpenShard(index, self.directory / shard_name(index))
        return self._open

    def _open_file(self, shard: _OpenShard) -> None:
        """The shard's own file, opened when the first byte needs copying into it."""
        self._check_space()
        try:
            shard.file = open(_partial(shard.path), "wb")  # noqa: SIM115 -- closed in _finish/abort
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                raise self._disk_full(exc) from exc
            raise

    def _write(self, shard: _OpenShard, data: memoryview, *, copy: bool = True) -> None:
        """Hash (and with ``copy`` write) ``data`` on the helper thread, in order.

        Pieces are handed over in batches of about a MiB: one hand-off per piece (a thread
        wake-up and a GIL hand-off, ~0.1 ms) cost more than hashing a small file's piece,
        and hashing them on this thread instead kept it from validating (many small files).
        """
        if copy and self.write:
            if shard.file is None:
                self._open_file(shard)
            shard.add_piece(shard.path, shard.file_bytes, len(data))
            shard.file_bytes += len(data)
        shard.bytes += len(data)
        self._batch.append((shard, data, copy and self.write))
        self._batch_bytes += len(data)
        if self._batch_bytes >= _BATCH_BYTES:
            self._submit()

    def _submit(self) -> None:
        """Hand the batch to the helper once its previous batch is done."""
        if not self._batch:
            return
        self._drain()
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        if self._io is None:
            self._io = ThreadPoolExecutor(1, thread_name_prefix="bulkload-shard-writer")
        self._pending = self._io.submit(_hash_and_write_all, batch, self.hash_inline)

    def _drain(self) -> None:
        """Wait for the helper's last write; raise its error, after aborting."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            pending.result()
        except OSError as exc:
            self.abort()
            if exc.errno in _NO_SPACE:
                raise self._disk_full(exc) from exc
            raise

    def _finish(self) -> ShardInfo:
        self._submit()
        self._drain()
        shard = self._open
        assert shard is not None
        if shard.file is not None:
            try:
                shard.file.flush()
                os.fsync(shard.file.fileno())
                shard.file.close()
                os.replace(_partial(shard.path), shard.path)
                fsync_dir(self.directory)
            except OSError as exc:
                self.abort()
                if exc.errno in _NO_SPACE:
                    raise self._disk_full(exc) from exc
                raise
        self._open = None
        return ShardInfo(
            index=shard.index,
            path=shard.path,
            records=shard.records,
            bytes=shard.bytes,
            md5=shard.md5.hexdigest() if self.hash_inline else "",
            sources=tuple(shard.ranges),
            pieces=tuple(shard.pieces),
        )

    def _check_space(self) -> None:
        free = shutil.disk_usage(self.directory).free
        if free < self.max_bytes + DISK_RESERVE:
            raise self._disk_full(None, free)

    def _disk_full(self, exc: OSError | None, free: int | None = None) -> DiskSpaceError:
        if free is None:
            try:
                free = shutil.disk_usage(self.directory).free
            except OSError:
                free = 0
        what = "the disk filled up while writing a shard" if exc else "not enough free space"
        return DiskSpaceError(
            f"{what} in {self.directory}: {format_bytes(free, binary=True)} free, a shard needs up to "
            f"{format_bytes(self.max_bytes, binary=True)} plus {format_bytes(DISK_RESERVE, binary=True)} to spare; free some space "
            f"or lower {option('--shard-size', 'shard_max_bytes')}, then rerun to resume"
        )


def _hash_and_write_all(batch: list[tuple[_OpenShard, memoryview, bool]], hash_it: bool) -> None:
    # Small pieces of one shard that need no write (many small files sent in place) are
    # hashed joined: each md5.update hands the GIL over and back, which cost more than
    # hashing a 35 KiB piece. The digest sees the same bytes in the same order.
    joined: list[memoryview] = []
    owner: _OpenShard | None = None
    for shard, data, write in batch:
        joinable = hash_it and not write and len(data) < _JOIN
        if joined and (not joinable or shard is not owner):
            assert owner is not None
            owner.md5.update(b"".join(joined))
            joined = []
        if joinable:
            joined.append(data)
            owner = shard
        else:
            _hash_and_write(shard, data, write, hash_it)
    if joined:
        assert owner is not None
        owner.md5.update(b"".join(joined))


def _hash_and_write(shard: _OpenShard, data: memoryview, write: bool, hash_it: bool) -> None:
    if hash_it:
        shard.md5.update(data)
    if write:
        assert shard.file is not None
        shard.file.write(data)  # one large write per chunk: no per-line calls


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")
