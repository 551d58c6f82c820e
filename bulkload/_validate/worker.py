"""What worker processes do with ``--workers N``: validate byte ranges of plain files, and
hash finished shards.

The main process hands out fixed byte ranges of a plain JSONL file without reading it; each
worker finds its own line boundaries, reads its lines from the page cache and validates
them. It sends the records back only if they differ from the file's bytes, so a clean range
costs the main process nothing but a small list of record ends. A shard's MD5 is computed
here too, from the shard's pieces on disk, once the shard is complete: the main process is
left with planning shards and uploading them, and every core validates or hashes.

Light on imports on purpose: a worker process starts by importing this module.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import multiprocessing.connection
import os
import threading
from dataclasses import dataclass

from .rules import ChunkResult, ValidateOptions, validate_chunk

_BOM = b"\xef\xbb\xbf"
#: How much is read at a time while looking for the newline that ends a range's last line.
_SCAN = 64 * 1024
#: Hashing reads shards in slices of this size into one reused buffer.
_HASH_SLICE = 4 * 1024 * 1024


class FileChangedError(Exception):
    """The file is not the size it was when the run planned its ranges."""

    def __init__(self, path: str, planned: int, now: int) -> None:
        super().__init__(path, planned, now)
        self.path = path
        self.planned = planned
        self.now = now


class LineTooLongError(Exception):
    """The last line of a range runs on for more than the limit without a newline.
    ``line`` counts from the range's first line (1-based); the caller makes it absolute."""

    def __init__(self, line: int, limit: int) -> None:
        super().__init__(line, limit)
        self.line = line
        self.limit = limit


@dataclass(slots=True)
class RangeResult:
    """The lines that start in a range: bytes ``start..end`` of the file. ``clean`` means
    ``result.data`` was exactly those bytes and was left out (the file has them). Line
    numbers in ``result`` count from 1 at ``start``."""

    start: int
    end: int
    clean: bool
    result: ChunkResult
    #: ``(start, end)`` of the range's last line when it is longer than a shard: not read
    #: here (nor validated, nor counted in ``result``); the caller saves it to a file.
    long_line: tuple[int, int] | None = None


def exit_with_parent() -> None:
    """A worker's initializer: exit as soon as the process that started it is gone, even
    killed with SIGKILL. Without it, a worker waits on its task queue (or blocks writing a
    result) forever: each worker holds both ends of the pool's pipes, so it never sees EOF."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    sentinel = parent.sentinel  # readable once the parent has exited

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="bulkload-exit-with-parent", daemon=True).start()


def ready() -> bool:
    """A first task: answers once a worker has started."""
    return True


def validate_range(
    path: str, a: int, b: int, size: int, opts: ValidateOptions, max_line: int
) -> RangeResult:
    """Validate the lines of ``path`` that start at a byte offset in ``a..b``.

    A line belongs to the range where it starts, so the ranges of a file, taken together,
    hold each line exactly once, whatever the range size. ``size`` is the file size the
    ranges were planned for; a file of another size raises FileChangedError.
    """
    with open(path, "rb") as f:
        fd = f.fileno()
        now = os.fstat(fd).st_size
        if now != size:
            raise FileChangedError(path, size, now)
        start = _first_line_start(fd, a, b)
        if start >= b and a > 0:  # the first range owns the first line, however small
            return RangeResult(b, b, True, validate_chunk(b"", 1, opts))
        end, last = _line_end(fd, start, b, size, max_line, opts.max_record_bytes)
        cut = end if last is None else last
        data = os.pread(fd, cut - start, start)
    if len(data) != cut - start:
        raise FileChangedError(path, size, start + len(data))
    result = validate_chunk(data, 1, opts)
    clean = result.data is data
    if clean:
        result.data = b""
    return RangeResult(start, end, clean, result, None if last is None else (last, end))


def validate_ranges(
    ranges: list[tuple[str, int, int, int]], opts: ValidateOptions, max_line: int
) -> list[RangeResult | BaseException]:
    """:func:`validate_range` for each (path, a, b, size): a task of many small files. An
    error takes its range's place in the list, so that the caller raises it in order."""
    results: list[RangeResult | BaseException] = []
    for path, a, b, size in ranges:
        try:
            results.append(validate_range(path, a, b, size, opts, max_line))
        except (FileChangedError, LineTooLongError, OSError) as exc:
            results.append(exc)
    return results


def validate_block(data: bytes, first_line: int, opts: ValidateOptions) -> ChunkResult:
    """Validate a block that was sent whole (a compressed or remote input). When the records
    are the block itself, ``data`` is left out of the answer: the sender has the bytes."""
    result = validate_chunk(data, first_line, opts)
    if result.data is data:
        result.data = b""
    return result


def _first_line_start(fd: int, a: int, b: int) -> int:
    """The first offset in ``a..b`` where a line starts (just after a newline, or the file's
    start, past a UTF-8 BOM); ``b`` if none does."""
    if a == 0:
        return len(_BOM) if os.pread(fd, len(_BOM), 0) == _BOM else 0
    # A line starts at p when byte p-1 is a newline: look at bytes a-1 .. b-2.
    pos = a - 1
    while pos < b - 1:
        piece = os.pread(fd, min(_SCAN, b - 1 - pos), pos)
        if not piece:
            break
        nl = piece.find(b"\n")
        if nl >= 0:
            return pos + nl + 1
        pos += len(piece)
    return b


def _line_end(
    fd: int, start: int, b: int, size: int, max_line: int, max_record: int
) -> tuple[int, int | None]:
    """Where the line that holds byte ``b-1`` ends: just past its newline, or at the end of
    the file; and where it starts if it is longer than a shard (``max_record``, newline
    aside), else None. Raises LineTooLongError past ``max_line`` bytes without a newline."""
    if b >= size or os.pread(fd, 1, b - 1) == b"\n":
        return b, None
    pos = b
    end = size
    while pos < size:
        piece = os.pread(fd, _SCAN, pos)
        if not piece:  # the file shrank: the caller's read comes up short and says so
            end = pos
            break
        nl = piece.find(b"\n")
        if nl >= 0:
            end = pos + nl + 1
            break
        pos += len(piece)
        if pos - b > max_line:  # far enough to know the line is too long
            end = pos
            break
    # A last line that runs far past b is too long for a shard without holding it here:
    # set it aside. (A shorter one is read with the range: at most a shard past it, as
    # without workers; validation then rejects it if it is over.) Rare: only then find
    # where that last line starts (the range itself is one block).
    if end - start <= max_line and end - b <= max_record + 1:
        return end, None
    head = os.pread(fd, b - start, start)
    line_start = start + head.rfind(b"\n") + 1
    if end - line_start > max_line:
        raise LineTooLongError(head.count(b"\n", 0, line_start - start) + 1, max_line)
    return end, (line_start if end - b > max_record + 1 else None)


def md5_pieces(pieces: list[tuple[str, int, int]]) -> str:
    """Hex MD5 of the byte ranges (path, offset, length), back to back: a shard's body."""
    digest = hashlib.md5(usedforsecurity=False)
    buf = bytearray(_HASH_SLICE)
    view = memoryview(buf)
    for path, offset, length in pieces:
        with open(path, "rb") as f:
            fd = f.fileno()
            done = 0
            while done < length:
                n = os.preadv(fd, [view[: min(_HASH_SLICE, length - done)]], offset + done)
                if n <= 0:
                    raise FileChangedError(path, offset + length, offset + done)
                digest.update(view[:n])
                done += n
    return digest.hexdigest()
