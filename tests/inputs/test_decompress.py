"""The decoders of compressed inputs (``bulkload._inputs.decompress``): every installed gzip
backend, zstd, bz2 and xz give the same bytes as the tools that wrote the files, read
concatenated members and frames, raise on truncated and corrupt data, and hold a bounded
amount of memory however far the data expands."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import shutil
import struct
import subprocess
import sys
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkload._inputs import decompress as _decompress
from bulkload._inputs.decompress import (
    CODECS,
    CORRUPT_ERRORS,
    GZIP_BACKENDS,
    STEP,
    is_corrupt,
    open_stream,
)

BACKENDS = list(GZIP_BACKENDS)
#: Records with some variety, so that the compressors emit real (not stored) blocks.
SAMPLE = b"".join(
    b'{"id":"r-%06d","title":"item %d \xc3\xa9","price":%d.%02d,"tags":["a%d","b"]}\n'
    % (i, i * 7919 % 1000, i % 500, i % 100, i % 13)
    for i in range(20_000)
)


def decode(data: bytes, codec: str, backend: str | None = None, size: int = 1 << 16) -> bytes:
    """Everything ``open_stream`` gives for ``data``, read through a buffer of ``size``."""
    stream = open_stream(io.BytesIO(data), codec, gzip_backend=backend)
    out = bytearray()
    buf = bytearray(size)
    view = memoryview(buf)
    while n := stream.readinto(view):
        assert 0 < n <= min(size, STEP)
        out += view[:n]
    return bytes(out)


def run_tool(cmd: list[str], data: bytes) -> bytes:
    if shutil.which(cmd[0]) is None:
        pytest.skip(f"{cmd[0]} is not installed here")
    return subprocess.run(cmd, input=data, capture_output=True, check=True).stdout


# -- what the tools write ----------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "writer",
    [
        ["gzip", "-6", "-c"],
        ["gzip", "-1", "-c"],
        ["pigz", "-6", "-c"],
        ["pigz", "-p", "2", "-i", "-c"],
    ],
    ids=["gzip-6", "gzip-1", "pigz", "pigz-independent"],
)
def test_gzip_tools_output_round_trips(backend: str, writer: list[str]) -> None:
    assert decode(run_tool(writer, SAMPLE), "gz", backend) == SAMPLE


@pytest.mark.parametrize("backend", BACKENDS)
def test_python_gzip_output_round_trips(backend: str) -> None:
    for level in (0, 1, 6, 9):
        assert decode(gzip.compress(SAMPLE, level, mtime=0), "gz", backend) == SAMPLE


@pytest.mark.parametrize(
    "writer",
    [
        ["zstd", "-3", "-c", "-q"],
        ["zstd", "-19", "-c", "-q", "--no-check"],
        ["pzstd", "-p", "2", "-c", "-q"],
    ],
    ids=["zstd-3", "zstd-19-no-check", "pzstd"],
)
def test_zstd_tools_output_round_trips(writer: list[str]) -> None:
    assert decode(run_tool(writer, SAMPLE * 3), "zst") == SAMPLE * 3


def test_zstd_from_a_pipe_has_no_content_size_and_round_trips() -> None:
    # `zstd` reading a pipe cannot write the frame's content size: another header shape.
    data = run_tool(["sh", "-c", "cat | zstd -q -c"], SAMPLE)
    assert decode(data, "zst") == SAMPLE


def test_python_zstd_bz2_xz_output_round_trips() -> None:
    assert decode(zstandard.ZstdCompressor(level=3).compress(SAMPLE), "zst") == SAMPLE
    assert decode(bz2.compress(SAMPLE), "bz2") == SAMPLE
    assert decode(lzma.compress(SAMPLE), "xz") == SAMPLE


@pytest.mark.parametrize("writer", [["bzip2", "-c"], ["xz", "-c"]], ids=["bzip2", "xz"])
def test_bz2_xz_tools_output_round_trips(writer: list[str]) -> None:
    codec = "bz2" if writer[0] == "bzip2" else "xz"
    assert decode(run_tool(writer, SAMPLE), codec) == SAMPLE


# -- members and frames back to back ------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_multi_member_gzip_is_one_stream(backend: str) -> None:
    parts = [SAMPLE[:1000], b"", SAMPLE[1000:50_000], SAMPLE[50_000:]]
    data = b"".join(gzip.compress(p, 6, mtime=0) for p in parts)
    assert decode(data, "gz", backend) == SAMPLE


def _frame(data: bytes, *, checksum: bool, content_size: bool, level: int = 3) -> bytes:
    cctx = zstandard.ZstdCompressor(
        level=level, write_checksum=checksum, write_content_size=content_size
    )
    if content_size:
        return cctx.compress(data)
    out = io.BytesIO()
    with cctx.stream_writer(out, closefd=False) as writer:  # streamed: size unknown
        writer.write(data)
    return out.getvalue()


def _skippable(payload: bytes, nibble: int = 0) -> bytes:
    return struct.pack("<II", 0x184D2A50 + nibble, len(payload)) + payload


def test_concatenated_zstd_frames_and_skippable_frames_are_one_stream() -> None:
    data = (
        _skippable(b"metadata")
        + _frame(SAMPLE[:7000], checksum=True, content_size=True)
        + _frame(b"", checksum=False, content_size=True)
        + _skippable(b"", 15)
        + _frame(SAMPLE[7000:], checksum=False, content_size=False)
    )
    assert decode(data, "zst") == SAMPLE


frames = st.lists(
    st.tuples(
        st.binary(max_size=3000) | st.sampled_from([b"", b"x" * 300_000, SAMPLE[:40_000]]),
        st.booleans(),
        st.booleans(),
        st.integers(1, 19),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames)
def test_zstd_frames_decode_to_their_concatenation(
    spec: list[tuple[bytes, bool, bool, int]],
) -> None:
    data = b"".join(_frame(d, checksum=c, content_size=s, level=lv) for d, c, s, lv in spec)
    assert decode(data, "zst") == b"".join(d for d, *_ in spec)


# -- truncated ----------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(frames)
def test_zstd_cut_anywhere_but_between_frames_raises_eof(
    spec: list[tuple[bytes, bool, bool, int]],
) -> None:
    encoded = [_frame(d, checksum=c, content_size=s, level=lv) for d, c, s, lv in spec]
    data = b"".join(encoded)
    boundaries = {sum(len(e) for e in encoded[:k]) for k in range(len(encoded) + 1)}
    # Every cut of a small file; a sample of a large one's, the ends included.
    cuts = (
        range(len(data))
        if len(data) < 600
        else sorted({*range(0, len(data), 97), *range(len(data) - 20, len(data))})
    )
    for cut in cuts:
        if cut in boundaries:
            continue  # whole frames: a complete file of fewer frames
        with pytest.raises(EOFError):
            decode(data[:cut], "zst")


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_gzip_raises_eof(backend: str) -> None:
    data = gzip.compress(SAMPLE, 6, mtime=0)
    # From 2 bytes: cut inside the magic number, the standard library's decoder says "not a
    # gzipped file" (BadGzipFile); the reader's head check comes first anyway.
    for cut in (2, 5, 10, 11, 100, len(data) // 2, len(data) - 8, len(data) - 1):
        with pytest.raises(EOFError):
            decode(data[:cut], "gz", backend)


@pytest.mark.parametrize(("codec", "compress"), [("bz2", bz2.compress), ("xz", lzma.compress)])
def test_truncated_bz2_xz_raise_eof(codec: str, compress: object) -> None:
    assert callable(compress)
    data = compress(SAMPLE)
    for cut in (len(data) // 2, len(data) - 1):
        with pytest.raises(EOFError):
            decode(data[:cut], codec)


# -- corrupt ------------------------------------------------------------------------------


def _flipped(data: bytes, at: int, n: int = 8) -> bytes:
    return data[:at] + bytes(b ^ 0xFF for b in data[at : at + n]) + data[at + n :]


def _compressed(codec: str) -> bytes:
    match codec:
        case "gz":
            return gzip.compress(SAMPLE, 6, mtime=0)
        case "zst":
            return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(SAMPLE)
        case "bz2":
            return bz2.compress(SAMPLE)
    return lzma.compress(SAMPLE)


def _codec_backends() -> Iterator[tuple[str, str | None]]:
    for backend in BACKENDS:
        yield "gz", backend
    for codec in ("zst", "bz2", "xz"):
        yield codec, None


@pytest.mark.parametrize(("codec", "backend"), list(_codec_backends()))
def test_corrupt_data_raises_a_corrupt_error(codec: str, backend: str | None) -> None:
    data = _compressed(codec)
    # Damage at the start, inside, and in the trailer (gzip's CRC, zstd's checksum, ...).
    # (Damage to a stream's last compressed bytes may instead read as a cut: EOFError.)
    for at, n in ((20, 8), (len(data) // 3, 8), (len(data) // 2, 8), (len(data) - 6, 2)):
        with pytest.raises(Exception) as caught:  # noqa: PT011 - the type is the test below
            decode(_flipped(data, at, n), codec, backend)
        assert is_corrupt(caught.value), (at, caught.value)
        assert isinstance(caught.value, (*CORRUPT_ERRORS, OSError))


@pytest.mark.parametrize(("codec", "backend"), list(_codec_backends()))
def test_garbage_after_the_data_is_never_read_as_the_end(codec: str, backend: str | None) -> None:
    # ISA-L and zlib-ng call it truncation (EOFError), the others corruption: an error,
    # either way, never a clean end that drops what follows (the standard library's
    # BZ2File and LZMAFile end there without a word).
    with pytest.raises((EOFError, *CORRUPT_ERRORS, OSError)):
        decode(_compressed(codec) + b"garbage!", codec, backend)


@pytest.mark.parametrize(("codec", "compress"), [("bz2", bz2.compress), ("xz", lzma.compress)])
def test_bz2_xz_streams_back_to_back_and_a_damaged_later_one(codec: str, compress: object) -> None:
    assert callable(compress)
    first, second = compress(SAMPLE[:30_000]), compress(SAMPLE[30_000:])
    assert decode(first + second, codec) == SAMPLE
    with pytest.raises((*CORRUPT_ERRORS, OSError)):
        decode(first + b"\xff" + second[1:], codec)


def test_xz_stream_padding_is_allowed() -> None:
    data = lzma.compress(SAMPLE[:30_000]) + bytes(8) + lzma.compress(SAMPLE[30_000:]) + bytes(4)
    assert decode(data, "xz") == SAMPLE


def test_zstd_reserved_bits_and_unknown_magic_are_corrupt() -> None:
    frame = _frame(SAMPLE[:100], checksum=True, content_size=True)
    with pytest.raises(zstandard.ZstdError):
        decode(b"\x00\x01\x02\x03" + frame, "zst")
    with pytest.raises(zstandard.ZstdError):
        decode(frame[:4] + bytes([frame[4] | 0x08]) + frame[5:], "zst")


def test_is_corrupt_tells_io_errors_apart() -> None:
    assert is_corrupt(gzip.BadGzipFile("bad"))
    assert is_corrupt(OSError("Invalid data stream"))  # bz2's
    assert is_corrupt(zlib.error("bad"))
    assert not is_corrupt(OSError(5, "Input/output error"))
    assert not is_corrupt(EOFError("cut"))


# -- the same bytes whichever backend -----------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.binary(max_size=5000) | st.just(SAMPLE[:30_000]), min_size=1, max_size=3),
    st.integers(0, 9),
    st.integers(1, 1 << 17),
)
def test_every_gzip_backend_gives_the_same_bytes(parts: list[bytes], level: int, size: int) -> None:
    data = b"".join(gzip.compress(p, level, mtime=0) for p in parts)
    outputs = {backend: decode(data, "gz", backend, size) for backend in BACKENDS}
    assert set(outputs.values()) == {b"".join(parts)}, list(outputs)


def test_the_default_backend_is_the_first_installed() -> None:
    assert GZIP_BACKENDS[0] == _decompress.GZIP_BACKEND
    assert GZIP_BACKENDS[-1] == "stdlib"


# -- memory -------------------------------------------------------------------------------

#: Decoded from a few hundred KB: far more than any decoder may hold at once.
EXPANDED = 128 << 20


def _zeros(codec: str) -> bytes:
    """``EXPANDED`` zero bytes, compressed a MiB at a time (never held whole)."""
    block = bytes(1 << 20)
    out = io.BytesIO()
    writer: io.RawIOBase | gzip.GzipFile
    if codec == "gz":
        writer = gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0)
    elif codec == "zst":
        writer = zstandard.ZstdCompressor(level=3).stream_writer(out, closefd=False)
    elif codec == "bz2":
        writer = bz2.BZ2File(out, "wb")
    else:
        writer = lzma.LZMAFile(out, "wb")  # noqa: SIM115 - closed by the with below
    with writer:
        for _ in range(EXPANDED >> 20):
            writer.write(block)
    return out.getvalue()


@pytest.mark.parametrize(("codec", "backend"), list(_codec_backends()))
def test_memory_stays_bounded_however_far_the_data_expands(codec: str, backend: str | None) -> None:
    data = _zeros(codec)
    assert len(data) < EXPANDED // 100
    buf = bytearray(8 << 20)  # the reader's block, as _sources uses it
    view = memoryview(buf)
    total = 0
    tracemalloc.start()
    try:
        stream = open_stream(io.BytesIO(data), codec, gzip_backend=backend)
        while n := stream.readinto(view):
            total += n
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == EXPANDED
    # A few MiB of decoder buffers (the zstd decompressobj approach held all 128 MiB), and
    # xz's dictionary, 8 MiB at its default preset.
    assert peak < 4 * STEP + (8 << 20 if codec == "xz" else 0), peak


def test_a_real_file_reads_the_same(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl.gz"
    path.write_bytes(gzip.compress(SAMPLE))
    with path.open("rb") as raw:
        stream = open_stream(raw, "gz")
        buf = bytearray(3 << 20)
        n = 0
        out = bytearray()
        while k := stream.readinto(memoryview(buf)):
            out += buf[:k]
            n += k
    assert bytes(out) == SAMPLE


def test_unknown_codec_or_backend_is_a_value_error() -> None:
    assert set(CODECS) == {"gz", "bz2", "xz", "zst"}
    with pytest.raises(ValueError, match="unknown codec"):
        open_stream(io.BytesIO(b""), "lz4")
    with pytest.raises(ValueError, match="not installed"):
        open_stream(io.BytesIO(b""), "gz", gzip_backend="nope")


def test_without_the_fast_decoders_the_standard_library_decodes() -> None:
    # A fresh interpreter in which isal and zlib_ng cannot be imported (None in
    # sys.modules makes their import fail), as on a machine without their wheels.
    code = (
        "import sys, gzip, io\n"
        "sys.modules.update({'isal': None, 'zlib_ng': None})\n"
        "from bulkload._inputs import decompress as d\n"
        'data = gzip.compress(b\'{"id":"a"}\\n\' * 1000)\n'
        "s = d.open_stream(io.BytesIO(data), 'gz')\n"
        "buf = bytearray(1 << 20)\n"
        "print(d.GZIP_BACKENDS, s.readinto(memoryview(buf)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["('stdlib',)", "11000"]
