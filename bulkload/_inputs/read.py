"""Inputs → blocks of whole lines with their origin.

``iter_chunks`` streams one source as large blocks of whole lines (:class:`Chunk`),
decompressing by suffix; ``resolve_inputs`` (``resolve``) makes the sources. OS and codec
errors become :class:`SourceError` once, here, with a message that says what to do.

Opening never hangs past a stop: a FIFO is opened without blocking and waited on while
``stop`` is watched (a plain ``open`` blocks until a writer appears); a socket is connected
to and read. Reads themselves may block (a FIFO whose writer is quiet): the loader does not
wait for a stuck reader after a stop (``_load.loader``).
"""

from __future__ import annotations

import errno
import io
import os
import re
import sys
import threading
from collections.abc import Generator, Iterator
from typing import BinaryIO, Protocol, cast

from .._config import MiB
from .._errors import DiskSpaceError, SourceError, option
from .._rejects import ASIDE, HEAD_TEXT, Rejects, aside_members, too_long
from .decompress import CORRUPT_ERRORS, is_corrupt, open_stream
from .remote import open_remote
from .resolve import check_unchanged, open_local
from .source import Chunk, LongLines, Source
from .tabular import csv_chunks, parquet_chunks

_CODEC_NAME = {"gz": "gzip", "bz2": "bzip2", "xz": "xz", "zst": "zstd"}
_BOM = b"\xef\xbb\xbf"
#: Bytes of a file's start that identify its format: magic numbers, and "ustar" at 257.
_HEAD = 512

#: Leading bytes of formats that are not JSONL, so that a mislabelled file fails with one
#: clear message instead of millions of "invalid UTF-8" rejects.
_MAGIC: tuple[tuple[re.Pattern[bytes], str], ...] = (
    (re.compile(rb"\x1f\x8b"), "gz"),
    (re.compile(rb"\x28\xb5\x2f\xfd"), "zst"),
    (re.compile(rb"\xfd7zXZ\x00"), "xz"),
    # "BZh" + block size, then the block magic (pi) or the end-of-stream magic (sqrt pi).
    (re.compile(rb"BZh[1-9](?:1AY&SY|\x17rE8P\x90)"), "bz2"),
    (re.compile(rb"PK(?:\x03\x04|\x05\x06)"), "zip"),
    (re.compile(rb"PAR1"), "parquet"),
    # UTF-16 with a byte order mark, or without one: "{" next to a NUL.
    (re.compile(rb"\xff\xfe|\xfe\xff|\{\x00|\x00\{"), "utf16"),
)

#: What reading a (decoded) stream can raise: I/O errors, a cut file, corrupt data.
_READ_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, *CORRUPT_ERRORS)

#: A line set aside is copied in pieces of this size.
_COPY = 1 * MiB


class _Readable(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


def _sniff(head: bytes) -> str | None:
    for pattern, kind in _MAGIC:
        if pattern.match(head):
            return kind
    if head[257:262] == b"ustar":
        return "tar"
    return None


def _renamed(display: str, compression: str | None, kind: str) -> str:
    base = display[: -len(os.path.splitext(display)[1])] if compression else display
    return f"{base}.{kind}"


def _check_compressed_head(source: Source, head: bytes) -> None:
    """Catch a compressed file whose suffix names the wrong codec, before decoding it."""
    assert source.compression is not None
    codec = _CODEC_NAME[source.compression]
    kind = _sniff(head)
    where = source.display
    if not head:
        raise SourceError(
            f"{where} is empty, which is not a valid {codec} file; re-export or check the download",
            path=where,
        )
    if kind in _CODEC_NAME and kind != source.compression:
        raise SourceError(
            f"{where} is {_CODEC_NAME[kind]}-compressed, not {codec}; rename it to "
            f"{_renamed(where, source.compression, kind)}",
            path=where,
        )
    if kind is None and head.lstrip()[:1] in (b"{", b"["):
        suffix = os.path.splitext(where)[1]
        raise SourceError(
            f"{where} is not {codec}-compressed (it starts like plain JSON); remove the "
            f"{suffix} suffix",
            path=where,
        )


def line_too_long(source: Source, line: int, limit: int) -> SourceError:
    return SourceError(
        f"{source.display}: line {line:,} is longer than {limit:,} bytes without a newline; "
        "JSONL needs one JSON object per line (\\n line ends)",
        path=source.display,
        line_no=line,
    )


def check_plain_file(source: Source) -> None:
    """For a local uncompressed JSONL file read by byte ranges, without ``iter_chunks``: the
    same open and format checks, with the same errors."""
    assert source.path is not None
    try:
        with open(source.path, "rb") as f:
            head = f.read(_HEAD)
    except OSError as exc:
        raise SourceError(
            f"{source.display}: cannot open it: {exc.strerror}", path=source.display
        ) from exc
    _check_text_head(source, head)


def read_small_file(source: Source) -> Chunk:
    """A local regular JSONL file smaller than a block, whole, in one read: open, pread,
    fstat, close. ``iter_chunks`` opens it, peeks at its head, reads it, fstats it and stats
    it again by name; for thousands of small files those calls were most of the cost. The
    same checks and errors: its format from its head (a UTF-8 BOM dropped, as the offset
    says), and a file not the size or age it had when listed (the fstat is taken after the
    read, so a change during the read is seen)."""
    assert source.path is not None
    assert source.size
    where = source.display
    try:
        # O_NONBLOCK: should a FIFO have taken the file's name since, open must not wait.
        fd = os.open(source.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise SourceError(f"{where}: cannot open it: {exc.strerror}", path=where) from exc
    try:
        data = os.pread(fd, source.size + 1, 0)  # one more byte: a file that grew says so
        st = os.fstat(fd)
    except OSError as exc:
        raise _read_error(source, None, exc, 0, 1) from exc
    finally:
        os.close(fd)
    check_unchanged(source, st, by_name=False)
    if len(data) != source.size:  # written to while it was read
        raise SourceError(
            f"{where} changed during the load ({source.size:,} bytes when listed, "
            f"{len(data):,} read); rerun with {option('--restart', 'restart=True')} to load "
            "it as it is now",
            path=where,
        )
    _check_text_head(source, data[:_HEAD])
    start = len(_BOM) if data.startswith(_BOM) else 0
    return Chunk(data[start:] if start else data, 1, start)


def _check_text_head(source: Source, head: bytes) -> None:
    """Refuse a binary format read as JSONL: one clear error instead of rejecting every line."""
    kind = _sniff(head)
    if kind is None:
        return
    where = source.display
    name = "standard input" if source.path is None and source.url is None else where
    if kind in _CODEC_NAME:
        if source.compression is not None:
            advice = f"it looks {_CODEC_NAME[kind]}-compressed twice; decompress it once first"
            raise SourceError(f"{name}: after decompression {advice}", path=where)
        if source.path is None and source.url is None:
            advice = f"decompress it first, or pass the file by name ending in .{kind}"
        else:
            advice = f"name it {_renamed(where, None, kind)}"
        raise SourceError(f"{name} looks {_CODEC_NAME[kind]}-compressed; {advice}", path=where)
    message = {
        "zip": "is a zip archive, not JSONL; unzip it and pass the JSONL files inside",
        "tar": "is a tar archive, not JSONL; extract it and pass the JSONL files inside",
        "parquet": "is a Parquet file, not JSONL; name it "
        f"{os.path.splitext(_renamed(where, source.compression, 'x')[:-2])[0]}.parquet to load it "
        "as Parquet (needs pip install 'bulkload[parquet]')",
        "utf16": "is UTF-16 encoded; bulkload reads UTF-8: convert it first "
        "(e.g. iconv -f UTF-16 -t UTF-8)",
    }[kind]
    raise SourceError(f"{name} {message}", path=where)


def _open(source: Source, raw: BinaryIO) -> _Readable:
    if source.compression is None:
        return cast(_Readable, raw)  # typeshed's BinaryIO omits readinto
    # Bounded per call whatever the ratio (a 12 KB zstd file of zeros is 400 MB), and gzip
    # through ISA-L where installed: 0.8 CPU s/GB against the standard library's 2.5.
    return open_stream(raw, source.compression)


def _fill(stream: _Readable, view: memoryview) -> int:
    """Fill ``view`` as far as the stream allows: decoders and pipes return short reads."""
    filled = 0
    while filled < len(view):
        n = stream.readinto(view[filled:])
        if not n:
            break
        filled += n
    return filled


def iter_chunks(
    source: Source,
    block_size: int = 8 * MiB,
    *,
    max_line_bytes: int | None = None,
    stop: threading.Event | None = None,
    long_lines: LongLines | None = None,
) -> Generator[Chunk, None, None]:
    """Stream ``source`` as blocks of about ``block_size`` bytes of whole lines.

    A line longer than a block is accumulated whole, up to ``max_line_bytes`` if given:
    past that, SourceError, rather than holding a whole file without newlines (a single
    JSON document, or old Mac CR line ends) in memory. With ``long_lines``, a line longer
    than its ``max_bytes`` is streamed to a file instead and stands in its chunk as a blank
    line with a reject (``Chunk.rejects``). A UTF-8 BOM at the very start is
    dropped. Raises SourceError for binary or mislabelled files, corrupt or truncated
    compressed data and I/O errors, naming the file and what to do.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    limit = max_line_bytes
    raw: io.BufferedReader
    if source.url is not None:
        raw = open_remote(source)
    elif source.path is None:
        # typeshed calls it BinaryIO, which omits readinto; it is a BufferedReader.
        stdin = sys.stdin.buffer
        yield from _chunks(source, stdin, cast(_Readable, stdin), block_size, limit, long_lines)
        return
    elif _small_plain(source, block_size):
        chunk = read_small_file(source)
        if chunk.data:
            yield chunk
            # Its records may be sent from the file itself, later: a change while they were
            # handed on stops the run here, as for a file read in blocks.
            check_unchanged(source)
        return
    else:
        raw = open_local(source, stop)
    try:
        if source.format == "parquet":
            yield from parquet_chunks(source, raw, block_size)
            return
        if source.compression is not None:
            try:
                head = raw.peek(_HEAD)[:_HEAD]
            except OSError as exc:
                raise _read_error(source, raw, exc, 0, 1) from exc
            _check_compressed_head(source, head)
        if source.format == "csv":
            if source.compression is None:
                try:
                    _check_text_head(source, raw.peek(_HEAD)[:_HEAD])
                except OSError as exc:
                    raise _read_error(source, raw, exc, 0, 1) from exc
            yield from _csv(source, raw, block_size, limit)
            check_unchanged(source, os.fstat(raw.fileno()) if source.url is None else None)
            return
        yield from _chunks(source, raw, _open(source, raw), block_size, limit, long_lines)
        check_unchanged(source, os.fstat(raw.fileno()) if source.url is None else None)
    finally:
        raw.close()


def _small_plain(source: Source, block_size: int) -> bool:
    """Whether ``source`` is a local JSONL file read whole at once (``read_small_file``)."""
    return (
        source.path is not None
        and source.compression is None
        and source.format == "jsonl"
        and source.size is not None
        and 0 < source.size < block_size
    )


def _csv(source: Source, raw: BinaryIO, block_size: int, limit: int | None) -> Iterator[Chunk]:
    line = 1
    offset = 0
    try:
        for chunk in csv_chunks(source, _open(source, raw), block_size, limit):
            yield chunk
            line = chunk.first_line + _count_newlines(chunk.data)
            offset += len(chunk.data)
    except _READ_ERRORS as exc:
        raise _read_error(source, raw, exc, offset, line) from exc


def _count_newlines(data: bytes) -> int:
    # bytes.count(b"\n") scans a byte at a time (~3.3 GB/s on CPython 3.11); replace() finds
    # matches with memchr and copies runs with memcpy (~13 GB/s), so it is 4x cheaper here.
    return len(data) - len(data.replace(b"\n", b""))


def _chunks(
    source: Source,
    raw: BinaryIO,
    stream: _Readable,
    block_size: int,
    max_line: int | None,
    aside: LongLines | None = None,
) -> Iterator[Chunk]:
    # One reusable read buffer: a fresh 8 MiB bytes object per read costs page faults (glibc
    # maps allocations over 128 KiB afresh: reads measured 3x costlier); the carried tail of
    # a cut line is moved to its front.
    size = block_size
    if source.size is not None and source.compression is None:
        # A small file gets a buffer its size (+1 to see EOF): zeroing a fresh 8 MiB buffer
        # per 64 KiB file cost more than reading it. It grows if the file grew meanwhile.
        size = min(block_size, source.size + 1)
    buf = bytearray(max(size, _HEAD))  # the first read sees the whole file header
    fill = 0
    offset = 0
    line = 1
    start = -1  # where the data starts in buf (past a BOM); -1 until the head is checked
    searched = 0  # buf[:searched] holds no newline after start
    while True:
        view = memoryview(buf)
        try:
            n = _fill(stream, view[fill:])
        except _READ_ERRORS as exc:
            raise _read_error(source, raw, exc, offset, line) from exc
        finally:
            view.release()  # a bytearray with a live view cannot be resized
        fill += n
        if start < 0:
            _check_text_head(source, bytes(buf[: min(fill, _HEAD)]))
            start = offset = len(_BOM) if buf.startswith(_BOM) else 0
        eof = fill < len(buf)
        # A long line's first part was searched already: look for its end in the new part.
        cut = fill if eof else buf.rfind(b"\n", max(start, searched), fill) + 1
        searched = fill
        if cut > start:
            with memoryview(buf) as view:
                data = bytes(view[start:cut])  # one copy; bytes(buf[a:b]) would make two
            yield Chunk(data, line, offset)
            line += _count_newlines(data)
            offset += len(data)
        if eof:
            return
        if cut <= start:
            # No newline in a full buffer: one line longer than a block.
            if aside is not None and fill - start > aside.max_bytes:
                chunk, rest = _set_aside(source, raw, stream, buf, start, fill, line, offset,
                                         aside, max_line)  # fmt: skip
                yield chunk
                line += 1
                offset += len(chunk.data) + chunk.skipped
                start, fill, searched = 0, len(rest), 0
                buf[:fill] = rest
                continue
            if max_line is not None and fill - start > max_line:
                raise line_too_long(source, line, max_line)
            # Grow and keep it, a block at a time (extending by a zeroed block costs that block
            # on top: doubling a 32 MiB buffer peaked at 96 MiB), and never past what a
            # shard can take (then it goes aside).
            grown = len(buf) + block_size
            if aside is not None:
                grown = min(grown, start + aside.max_bytes + 1)
            buf.extend(bytes(grown - len(buf)))
            continue
        start = searched = 0
        tail = fill - cut
        if len(buf) > block_size and tail < block_size:
            # Give back the memory a long line needed.
            buf, old = bytearray(block_size), buf
            buf[:tail] = old[cut:fill]
        else:
            buf[:tail] = buf[cut:fill]
        fill = tail


def _set_aside(
    source: Source,
    raw: BinaryIO,
    stream: _Readable,
    buf: bytearray,
    start: int,
    fill: int,
    line: int,
    offset: int,
    aside: LongLines,
    max_line: int | None,
) -> tuple[Chunk, bytes]:
    """Stream the line at ``buf[start:fill]`` and the rest of it from ``stream`` to its own
    file, through ``buf``; its placeholder chunk, and the bytes read past its end."""
    path = aside.path_for(source.display, line)
    head = bytes(buf[start : start + HEAD_TEXT])
    length = 0
    newline = 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            piece = memoryview(buf)[start:fill]
            while True:
                nl = buf.find(b"\n", start, start + len(piece))
                if nl >= 0:
                    out.write(piece[: nl - start])
                    length += nl - start
                    rest, newline = bytes(piece[nl - start + 1 :]), 1
                    break
                out.write(piece)
                length += len(piece)
                piece.release()
                if max_line is not None and length > max_line:
                    raise line_too_long(source, line, max_line)
                try:
                    n = _fill(stream, memoryview(buf))
                except _READ_ERRORS as exc:
                    raise _read_error(source, raw, exc, offset + length, line) from exc
                if not n:
                    rest = b""
                    break
                start, piece = 0, memoryview(buf)[:n]
            piece.release()
    except SourceError:
        path.unlink(missing_ok=True)
        raise
    except OSError as exc:
        path.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskSpaceError(
                f"the disk is full: cannot save line {line:,} of {source.display} "
                f"({length:,} bytes so far) to {path}. Free some space, then rerun the same "
                "command to resume"
            ) from None
        raise
    rejects = Rejects()
    error = too_long(length + newline, aside.max_bytes, str(path))
    rejects.add(line, error, aside_members(str(path), length, head), ASIDE)
    return Chunk(b"\n", line, offset, rejects, skipped=length + newline - 1), rest


def copy_aside(source: Source, start: int, end: int, line: int, aside: LongLines) -> Rejects:
    """Copy the line at bytes ``start..end`` of a plain file (its newline, if any, last) to
    its own file, a MiB at a time; the reject that says where it went (line ``line``)."""
    assert source.path is not None
    path = aside.path_for(source.display, line)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = b""
    with open(source.path, "rb") as f, open(path, "wb") as out:
        fd = f.fileno()
        pos = start
        while pos < end:
            piece = os.pread(fd, min(_COPY, end - pos), pos)
            if not piece:
                raise SourceError(
                    f"{source.display} shrank during the load (line {line:,} ends at byte "
                    f"{end:,}, the file at {pos:,}); rerun with "
                    f"{option('--restart', 'restart=True')}",
                    path=source.display,
                )
            head = head or piece[:HEAD_TEXT]
            pos += len(piece)
            out.write(piece[:-1] if pos == end and piece.endswith(b"\n") else piece)
        length = out.tell()
    rejects = Rejects()
    error = too_long(end - start, aside.max_bytes, str(path))
    rejects.add(line, error, aside_members(str(path), length, head), ASIDE)
    return rejects


def _read_error(
    source: Source, raw: BinaryIO | None, exc: BaseException, offset: int, line: int
) -> SourceError:
    where = source.display
    if source.compression is not None and (
        isinstance(exc, EOFError) or is_corrupt(exc)  # is_corrupt: BadGzipFile, bz2's OSError
    ):
        codec = _CODEC_NAME[source.compression]
        try:
            at = raw.tell() if raw is not None else -1
        except OSError:
            at = -1
        if isinstance(exc, EOFError):
            problem = f"truncated {codec} data: it ends" + (f" at byte {at:,}" if at >= 0 else "")
        else:
            near = f" near compressed byte {at:,}" if at >= 0 else ""
            problem = f"not a valid {codec} file, or corrupt{near} ({exc})"
        # The lines before this one were read and handed on; say so, since they count.
        after = f" after line {line - 1:,}" if line > 1 else ""
        return SourceError(
            f"{where}: {problem}{after}; re-export or check the download",
            path=where,
            line_no=line,
        )
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return SourceError(
        f"{where}: read error near byte {offset:,} (line {line:,}): {reason}; check the disk "
        "or file system and rerun to resume",
        path=where,
        line_no=line,
    )
