"""Compressed input → a stream of its bytes, as fast as this machine's decoders allow.

``open_stream(raw, codec)`` wraps a binary file in the decoder for ``codec`` (``gz``,
``bz2``, ``xz``, ``zst``) and returns something with ``readinto``. Every decoder here:

- keeps memory bounded whatever the ratio: one call returns at most ``STEP`` bytes, and
  no decoder is ever asked for more than that at once (a 12 KB zstd file of zeros expands
  to 400 MB; ``zstandard``'s ``decompressobj`` returns all of it from one call);
- reads concatenated members or frames as one stream (``cat a.gz b.gz``, pigz, pzstd);
- raises ``EOFError`` when the input ends inside a member or frame (a cut download), never
  a clean end of stream;
- raises its own error type for corrupt data: ``CORRUPT_ERRORS`` lists every type the
  decoders installed here can raise, so the caller translates them in one ``except``.

gzip goes through the fastest decoder installed, chosen once at import (``GZIP_BACKEND``):
ISA-L's (``isal.igzip``), then zlib-ng's (``zlib_ng.gzip_ng``), then the standard library's.
Measured on the benchmark's gz parts (gzip -6, 4.4:1; one stream, CPU s/GB of output):
ISA-L 0.78-0.82, zlib-ng 0.93-1.00, the standard library's zlib 2.48-2.52
(``python -m benchmarks.run --stage decompress --dataset gz``).
They produce the same bytes (tested); they differ only in which exception they raise:

=========  ===========================  ================================================
codec      truncated                    corrupt
=========  ===========================  ================================================
gz stdlib  EOFError (BadGzipFile when     gzip.BadGzipFile (an OSError: bad header, CRC,
           cut inside the 2-byte magic)  length, garbage after a member), zlib.error
gz isal    EOFError (also for garbage   gzip.BadGzipFile, isal.igzip_lib.IsalError
           after a member)
gz zlib-ng EOFError (also for garbage   gzip.BadGzipFile, zlib_ng.zlib_ng.error
           after a member)
zst        EOFError                     zstandard.ZstdError
bz2        EOFError                     OSError ("Invalid data stream", errno None)
xz         EOFError                     lzma.LZMAError (xz also holds its dictionary:
                                        8 MiB at the default preset, 64 MiB at -9)
=========  ===========================  ================================================

Self-contained on purpose: it imports nothing from bulkload, so worker processes can
use it and it can move with the reorganisation.
"""

from __future__ import annotations

import bz2
import enum
import gzip
import importlib
import lzma
import zlib
from collections.abc import Callable
from typing import BinaryIO, Protocol, cast

import zstandard

__all__ = [
    "CODECS",
    "CORRUPT_ERRORS",
    "GZIP_BACKEND",
    "GZIP_BACKENDS",
    "STEP",
    "Readable",
    "is_corrupt",
    "open_stream",
]

CODECS = ("gz", "bz2", "xz", "zst")

#: Most bytes one ``readinto`` decodes: what bounds a decoder's output per call (zstd's,
#: bz2's and xz's loops hold one step). For gzip it changes nothing measurable: on the
#: benchmark's gz parts ISA-L cost 0.78 CPU s/GB asked for 1 MiB at a time and 0.80 asked
#: for 8 MiB (stdlib 2.43-2.47 against 2.45-2.54); 1 MiB keeps the Python calls per 8 MiB
#: block at 8.
STEP = 1 << 20

#: Compressed bytes the zstd decoder reads at a time. 128 KiB (its default), 1 MiB and
#: 4 MiB were within noise of each other on the benchmark's zst parts (0.58-0.61 CPU s/GB
#: decoding alone); 1 MiB means fewer calls through the frame walker.
ZSTD_READ = 1 << 20


class Readable(Protocol):
    def readinto(self, buffer: memoryview, /) -> int: ...


class _Stepped:
    """A decoder file object asked for at most ``STEP`` bytes per call."""

    __slots__ = ("_file",)

    def __init__(self, file: Readable) -> None:
        self._file = file

    def readinto(self, buffer: memoryview, /) -> int:
        return self._file.readinto(buffer[:STEP])


# -- gzip --------------------------------------------------------------------------------


def _stdlib_gzip(raw: BinaryIO) -> Readable:
    return gzip.GzipFile(fileobj=raw, mode="rb")


_gzip_openers: dict[str, Callable[[BinaryIO], Readable]] = {}
_corrupt: list[type[Exception]] = [gzip.BadGzipFile, zlib.error]

#: The faster gzip decoders, fastest first: (name, module and class of its ``GzipFile``,
#: module and name of its error). Both take ``gzip.GzipFile``'s arguments.
_FAST_GZIP = (
    ("isal", "isal.igzip", "IGzipFile", "isal.igzip_lib", "IsalError"),
    ("zlib-ng", "zlib_ng.gzip_ng", "GzipNGFile", "zlib_ng.zlib_ng", "error"),
)


def _file_opener(cls: Callable[..., Readable]) -> Callable[[BinaryIO], Readable]:
    def opener(raw: BinaryIO) -> Readable:
        return cls(fileobj=raw, mode="rb")

    return opener


for _name, _module, _class, _error_module, _error in _FAST_GZIP:
    try:
        _file_class = getattr(importlib.import_module(_module), _class)
        _error_class = getattr(importlib.import_module(_error_module), _error)
    except ImportError:  # pragma: no cover - depends on what is installed
        continue
    _gzip_openers[_name] = _file_opener(_file_class)
    _corrupt.append(_error_class)

_gzip_openers["stdlib"] = _stdlib_gzip

#: The installed gzip decoders, fastest first (the order measured on the benchmark data).
GZIP_BACKENDS: tuple[str, ...] = tuple(_gzip_openers)
#: The one ``open_stream`` uses unless told otherwise.
GZIP_BACKEND = GZIP_BACKENDS[0]

#: The exception types a decoder here raises for corrupt (not truncated) data, besides
#: bz2's plain ``OSError`` (see ``is_corrupt``). ``gzip.BadGzipFile`` is an ``OSError``
#: too: catch these before treating an ``OSError`` as an I/O error.
CORRUPT_ERRORS: tuple[type[Exception], ...] = (*_corrupt, lzma.LZMAError, zstandard.ZstdError)


def is_corrupt(exc: BaseException) -> bool:
    """Whether ``exc``, raised while decoding, says the data is corrupt (as opposed to
    truncated, ``EOFError``, or an I/O error, an ``OSError`` with an ``errno``)."""
    return isinstance(exc, CORRUPT_ERRORS) or (isinstance(exc, OSError) and exc.errno is None)


# -- zstd --------------------------------------------------------------------------------

_ZSTD_MAGIC = 0xFD2FB528
#: Skippable frames carry metadata the decoder passes over: magic 0x184D2A50-5F.
_SKIPPABLE = 0x184D2A50
_SKIPPABLE_MASK = 0xFFFFFFF0


class _Next(enum.Enum):
    """What the frame walker waits for next (RFC 8878 section 3.1.1)."""

    MAGIC = enum.auto()
    SKIP_SIZE = enum.auto()  # a skippable frame's length
    DESCRIPTOR = enum.auto()  # the frame header's first byte
    HEADER = enum.auto()  # the rest of the frame header
    BLOCK = enum.auto()  # a block header
    CHECKSUM = enum.auto()  # the frame's content checksum


_DICT_ID_BYTES = (0, 1, 2, 4)
_CONTENT_SIZE_BYTES = (0, 2, 4, 8)  # for flag 0 it is 1 in a single-segment frame


class _FrameWalker:
    """The compressed bytes, passed through unchanged (``read``), while their frame
    structure is followed from the headers alone (RFC 8878): each block is skipped by the
    size its 3-byte header gives, so the cost is a few operations per block of up to
    128 KiB of output. ``complete`` says whether the input so far ends between frames.

    zstandard's ``stream_reader`` ends cleanly when its input ends inside a frame
    (zstandard 0.25), and its ``decompressobj`` notices but returns a call's whole output
    at once, unbounded; so the bounded reader decodes and this walker tells a cut file.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._step = _Next.MAGIC
        self._need = 4  # header bytes the current step needs
        self._head = b""  # header bytes collected so far
        self._skip = 0  # payload bytes to pass over first
        self._checksum = False
        self.eof = False

    def read(self, size: int = -1, /) -> bytes:
        data = self._raw.read(size)
        if data:
            self._walk(data)
        else:
            self.eof = True
        return data

    @property
    def complete(self) -> bool:
        return self._step == _Next.MAGIC and not self._head and not self._skip

    def _walk(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                take = min(self._skip, end - pos)
                self._skip -= take
                pos += take
                continue
            take = min(self._need - len(self._head), end - pos)
            self._head += data[pos : pos + take]
            pos += take
            if len(self._head) == self._need:
                head, self._head = self._head, b""
                self._advance(head)

    def _advance(self, head: bytes) -> None:
        value = int.from_bytes(head, "little")
        match self._step:
            case _Next.MAGIC:
                if value == _ZSTD_MAGIC:
                    self._step, self._need = _Next.DESCRIPTOR, 1
                elif value & _SKIPPABLE_MASK == _SKIPPABLE:
                    self._step, self._need = _Next.SKIP_SIZE, 4
                else:
                    raise zstandard.ZstdError(f"not a zstd frame (magic {value:#010x})")
            case _Next.SKIP_SIZE:
                self._skip = value
                self._step, self._need = _Next.MAGIC, 4
            case _Next.DESCRIPTOR:
                if value & 0x08:
                    raise zstandard.ZstdError("reserved bit set in a zstd frame header")
                single = bool(value & 0x20)
                content_flag = value >> 6
                self._checksum = bool(value & 0x04)
                rest = (
                    (0 if single else 1)  # window descriptor
                    + _DICT_ID_BYTES[value & 0x03]
                    + (1 if single and content_flag == 0 else _CONTENT_SIZE_BYTES[content_flag])
                )
                self._step, self._need = (_Next.HEADER, rest) if rest else (_Next.BLOCK, 3)
            case _Next.HEADER:
                self._step, self._need = _Next.BLOCK, 3
            case _Next.BLOCK:
                kind = (value >> 1) & 0x03
                if kind == 3:
                    raise zstandard.ZstdError("reserved block type in a zstd frame")
                self._skip = 1 if kind == 1 else value >> 3  # an RLE block holds one byte
                if value & 0x01:  # the frame's last block
                    self._step, self._need = (
                        (_Next.CHECKSUM, 4) if self._checksum else (_Next.MAGIC, 4)
                    )
            case _Next.CHECKSUM:
                self._step, self._need = _Next.MAGIC, 4


class _ZstdStream:
    """zstd frames back to back, decoded in bounded steps; ``EOFError`` when the input
    ends inside a frame."""

    __slots__ = ("_frames", "_reader")

    def __init__(self, raw: BinaryIO) -> None:
        self._frames = _FrameWalker(raw)
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            cast(BinaryIO, self._frames),
            read_size=ZSTD_READ,
            read_across_frames=True,
            closefd=False,
        )

    def readinto(self, buffer: memoryview, /) -> int:
        n: int = self._reader.readinto(buffer[:STEP])
        if n == 0:
            frames = self._frames
            if not frames.eof and frames.read(1):
                # The decoder stopped with input left (it should not: it reads across
                # frames and raises on anything that is not one).
                raise zstandard.ZstdError("zstd decoding stopped before the end of the input")
            if not frames.complete:
                raise EOFError("compressed file ended before the end of a zstd frame")
        return n


# -- bz2, xz -----------------------------------------------------------------------------

#: Compressed bytes read at a time for bz2 and xz, whose decoders run at 30-100 MB/s of
#: output: the read is never what costs.
_RAW_READ = 256 << 10


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes, max_length: int = -1, /) -> bytes: ...


class _Chained:
    """bz2 or xz streams back to back (pbzip2 and ``cat`` write several), decoded at most
    ``STEP`` bytes at a time.

    The standard library's ``BZ2File`` and ``LZMAFile`` end quietly when what follows a
    stream does not decode (they take it for trailing garbage), so a later stream whose
    header was damaged would be dropped without a word; here it is the decoder's error.
    Only zero bytes may follow an xz stream (its format's stream padding).
    """

    __slots__ = ("_dec", "_new", "_padding", "_raw")

    def __init__(self, raw: BinaryIO, new: Callable[[], _Decompressor], padding: bool) -> None:
        self._raw = raw
        self._new = new
        self._padding = padding
        self._dec = new()

    def readinto(self, buffer: memoryview, /) -> int:
        size = min(len(buffer), STEP)
        while True:
            dec = self._dec
            if dec.eof:
                rest = dec.unused_data or self._raw.read(_RAW_READ)
                if self._padding:
                    rest = rest.lstrip(b"\0")
                    while not rest and (more := self._raw.read(_RAW_READ)):
                        rest = more.lstrip(b"\0")
                if not rest:
                    return 0
                self._dec = dec = self._new()
                data = dec.decompress(rest, size)
            elif dec.needs_input:
                block = self._raw.read(_RAW_READ)
                if not block:
                    raise EOFError("compressed file ended before the end of its stream")
                data = dec.decompress(block, size)
            else:
                data = dec.decompress(b"", size)
            if data:
                buffer[: len(data)] = data
                return len(data)


# -- all codecs --------------------------------------------------------------------------


def open_stream(raw: BinaryIO, codec: str, *, gzip_backend: str | None = None) -> Readable:
    """The decoded bytes of ``raw`` (compressed with ``codec``), read with ``readinto``.

    ``gzip_backend`` picks one of ``GZIP_BACKENDS`` (default ``GZIP_BACKEND``). Each call
    returns at most ``STEP`` bytes, 0 at the end; closing ``raw`` is the caller's job (the
    decoders hold nothing else that needs closing).
    """
    match codec:
        case "gz":
            name = GZIP_BACKEND if gzip_backend is None else gzip_backend
            try:
                opener = _gzip_openers[name]
            except KeyError:
                raise ValueError(
                    f"gzip backend {name!r} is not installed; have {', '.join(GZIP_BACKENDS)}"
                ) from None
            return _Stepped(opener(raw))
        case "zst":
            return _ZstdStream(raw)
        case "bz2":
            return _Chained(raw, bz2.BZ2Decompressor, padding=False)
        case "xz":
            return _Chained(raw, lzma.LZMADecompressor, padding=True)
    raise ValueError(f"unknown codec {codec!r}; expected one of {', '.join(CODECS)}")
