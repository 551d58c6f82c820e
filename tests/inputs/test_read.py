"""Inputs: resolving INPUTs, reading blocks of whole lines, compression, and the errors."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkload._errors import SourceError
from bulkload._inputs import Chunk, Source, iter_chunks, resolve_inputs

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
    "zst": lambda data: zstandard.ZstdCompressor().compress(data),
}


def source(path: Path) -> Source:
    (src,) = resolve_inputs([str(path)])
    return src


def chunks(path: Path, block_size: int = 64 * 1024) -> list[Chunk]:
    return list(iter_chunks(source(path), block_size))


def touch(path: Path, data: bytes = b'{"id":"a"}\n') -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -- resolve_inputs ------------------------------------------------------------------------


def test_directory_is_recursive_sorted_and_filtered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    for name in ["b.jsonl", "a.ndjson.gz", "sub/c.json", "sub/deeper/d.jsonl.zst", "a-z.jsonl"]:
        touch(data / name)
    for name in [".hidden.jsonl", "notes.txt", ".git/x.jsonl", "part.csv.gz"]:
        touch(data / name)
    monkeypatch.chdir(tmp_path)
    found = [s.display for s in resolve_inputs(["data"])]
    assert found == [
        os.path.join("data", "a-z.jsonl"),
        os.path.join("data", "a.ndjson.gz"),
        os.path.join("data", "b.jsonl"),
        os.path.join("data", "sub", "c.json"),
        os.path.join("data", "sub", "deeper", "d.jsonl.zst"),
    ]
    by_name = {s.display: s for s in resolve_inputs(["data"])}
    assert by_name[os.path.join("data", "a.ndjson.gz")].compression == "gz"
    assert by_name[os.path.join("data", "b.jsonl")].compression is None
    plain = by_name[os.path.join("data", "b.jsonl")]
    assert plain.size == len(b'{"id":"a"}\n')
    assert plain.mtime_ns == (data / "b.jsonl").stat().st_mtime_ns


def test_glob_sorted_recursive_and_order_of_specs_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ["x/2.jsonl", "x/1.jsonl", "x/y/3.jsonl", "z.jsonl"]:
        touch(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    got = [s.display for s in resolve_inputs(["z.jsonl", "x/**/*.jsonl"])]
    assert got == ["z.jsonl", "x/1.jsonl", "x/2.jsonl", "x/y/3.jsonl"]
    # `x/**` reaches files both directly and through their directories: each counts once.
    assert [s.display for s in resolve_inputs(["x/**"])] == [
        "x/1.jsonl",
        "x/2.jsonl",
        "x/y/3.jsonl",
    ]


def test_stdin_once() -> None:
    (src,) = resolve_inputs(["-"])
    assert src == Source("-", None, None, None, None)
    with pytest.raises(SourceError, match="only once"):
        resolve_inputs(["-", "-"])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"nope\.jsonl: no such file or directory") as info:
        resolve_inputs([str(tmp_path / "nope.jsonl")])
    assert info.value.path == str(tmp_path / "nope.jsonl")


def test_directory_without_jsonl(tmp_path: Path) -> None:
    touch(tmp_path / "d" / "readme.txt")
    with pytest.raises(SourceError, match="no JSONL files in this directory"):
        resolve_inputs([str(tmp_path / "d")])


def test_glob_without_match(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="the pattern matches no files"):
        resolve_inputs([str(tmp_path / "*.jsonl")])


def test_file_named_twice(tmp_path: Path) -> None:
    path = touch(tmp_path / "a.jsonl")
    (tmp_path / "sub").mkdir()
    with pytest.raises(SourceError, match="is named twice; it would be uploaded twice"):
        resolve_inputs([str(path), str(path)])
    with pytest.raises(SourceError, match="are the same file; it would be uploaded twice"):
        resolve_inputs([str(tmp_path / "sub" / ".." / "a.jsonl"), str(tmp_path / "*.jsonl")])
    link = tmp_path / "link.jsonl"
    link.symlink_to(path)
    with pytest.raises(SourceError, match="same file"):
        resolve_inputs([str(path), str(link)])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_unreadable_file(tmp_path: Path) -> None:
    path = touch(tmp_path / "a.jsonl")
    path.chmod(0)
    with pytest.raises(SourceError, match="permission denied"):
        resolve_inputs([str(path)])


# -- iter_chunks: lines come out whole, once, numbered ---------------------------------------

LINE_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\n"), max_size=40)
LINES = st.lists(
    st.one_of(
        LINE_TEXT.map(lambda s: s.encode()),
        st.sampled_from([b"", b"  ", b"\r", b'{"id":"a\xe2\x80\xa8b"}\r', b"\x00\xff"]),
        # Long lines, so that some are longer than a whole read block, and that most inputs
        # are longer than the first read (512 bytes, for the format check).
        st.integers(10, 700).map(lambda n: b'{"id":"' + b"x" * n + b'"}'),
        st.integers(10, 200).map(lambda n: '{"id":"\u2028é"}'.encode() * n),
    ),
    max_size=60,
)


def check_chunks(got: list[Chunk], content: bytes, skipped: int = 0) -> None:
    """Chunks reassemble the content; each is whole lines; numbers and offsets add up."""
    assert b"".join(c.data for c in got) == content[skipped:]
    line, offset = 1, skipped
    for i, chunk in enumerate(got):
        assert chunk.data, "no empty chunks"
        assert chunk.first_line == line
        assert chunk.offset == offset
        if i < len(got) - 1:
            assert chunk.data.endswith(b"\n")
        line += chunk.data.count(b"\n")
        offset += len(chunk.data)


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(lines=LINES, trailing_newline=st.booleans(), block_size=st.integers(1, 97))
def test_chunks_are_whole_lines(
    tmp_path: Path, lines: list[bytes], trailing_newline: bool, block_size: int
) -> None:
    content = b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")
    path = touch(tmp_path / "p.jsonl", content)
    got = chunks(path, block_size)
    check_chunks(got, content)
    # Splitting every chunk at b"\n" gives back exactly the input's lines, in order.
    out = [line for c in got for line in c.data.split(b"\n")[: c.data.count(b"\n")]]
    if got and not got[-1].data.endswith(b"\n"):
        out.append(got[-1].data.rsplit(b"\n", 1)[-1])
    assert out == content.split(b"\n")[: len(out)]
    assert len(out) == content.count(b"\n") + (0 if content.endswith(b"\n") or not content else 1)
    # Compressed copies give identical chunks.
    for suffix, compress in COMPRESSORS.items():
        packed = touch(tmp_path / f"p.jsonl.{suffix}", compress(content))
        assert chunks(packed, block_size) == got, suffix


def test_line_longer_than_a_block_and_cut_at_the_edge(tmp_path: Path) -> None:
    long = b'{"id":"' + b"y" * 1000 + b'"}'
    content = b'{"id":"a"}\n' + long + b"\n" + b'{"id":"b"}\n' * 50 + long
    path = touch(tmp_path / "a.jsonl", content)
    for block_size in (16, 64, 100, 1003, 1010, 4096):
        got = chunks(path, block_size)
        check_chunks(got, content)
        assert any(long in c.data.split(b"\n") for c in got)


def test_large_blocks_and_buffer_shrinks_back(tmp_path: Path) -> None:
    content = b"x" * 5000 + b"\n" + b'{"id":"b"}\n' * 2000
    path = touch(tmp_path / "a.jsonl", content)
    got = chunks(path, 1024)
    check_chunks(got, content)
    assert got[0].data.startswith(b"x" * 5000 + b"\n")  # the long line, whole
    assert max(len(c.data) for c in got[1:]) <= 1024  # back to block-sized reads


def test_max_line_bytes(tmp_path: Path) -> None:
    path = touch(tmp_path / "a.jsonl", b'{"id":"a"}\n' + b"x" * 3000)
    with pytest.raises(SourceError, match="line 2 is longer than 1,000 bytes without a newline"):
        list(iter_chunks(source(path), 100, max_line_bytes=1000))
    assert len(list(iter_chunks(source(path), 100, max_line_bytes=4000))) == 2


def test_bom_at_start_dropped(tmp_path: Path) -> None:
    content = b'\xef\xbb\xbf{"id":"a"}\n{"id":"b"}\n'
    path = touch(tmp_path / "a.jsonl", content)
    (chunk,) = chunks(path)
    assert chunk == Chunk(b'{"id":"a"}\n{"id":"b"}\n', 1, 3)
    gz = touch(tmp_path / "a.jsonl.gz", gzip.compress(content))
    assert chunks(gz) == [chunk]
    got = chunks(path, 5)
    check_chunks(got, content, skipped=3)


def test_empty_file(tmp_path: Path) -> None:
    assert chunks(touch(tmp_path / "a.jsonl", b"")) == []


def test_nul_byte_is_not_a_binary_file(tmp_path: Path) -> None:
    content = b'{"id":"a\x00"}\n'
    assert chunks(touch(tmp_path / "a.jsonl", content)) == [Chunk(content, 1, 0)]


def test_multi_member_gzip_and_multi_frame_zstd(tmp_path: Path) -> None:
    one, two = b'{"id":"a"}\n' * 3, b'{"id":"b"}\n' * 4
    gz = touch(tmp_path / "a.jsonl.gz", gzip.compress(one) + gzip.compress(two))
    zst = zstandard.ZstdCompressor()
    zs = touch(tmp_path / "a.jsonl.zst", zst.compress(one) + zst.compress(two))
    assert b"".join(c.data for c in chunks(gz)) == one + two
    assert b"".join(c.data for c in chunks(zs)) == one + two


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = io.TextIOWrapper(io.BytesIO(b'{"id":"a"}\n{"id":"b"}'))
    monkeypatch.setattr(sys, "stdin", fake)
    (src,) = resolve_inputs(["-"])
    assert list(iter_chunks(src, 4)) == [Chunk(b'{"id":"a"}\n{"id":"b"}', 1, 0)]


# -- iter_chunks: what cannot be read ---------------------------------------------------------


def read_error(path: Path) -> str:
    with pytest.raises(SourceError) as info:
        chunks(path)
    assert info.value.path == str(path)
    return str(info.value)


RECORDS = b'{"id":"a"}\n' * 100


def test_gzip_without_suffix(tmp_path: Path) -> None:
    path = touch(tmp_path / "data.jsonl", gzip.compress(RECORDS))
    assert read_error(path) == f"{path} looks gzip-compressed; name it {path}.gz"


@pytest.mark.parametrize("kind", ["zst", "bz2", "xz"])
def test_other_compression_without_suffix(tmp_path: Path, kind: str) -> None:
    path = touch(tmp_path / "data.jsonl", COMPRESSORS[kind](RECORDS))
    assert f"compressed; name it {path}.{kind}" in read_error(path)


def test_parquet(tmp_path: Path) -> None:
    path = touch(tmp_path / "data.jsonl", b"PAR1\x15\x04\x15\x00\x00" + b"\x00" * 50 + b"PAR1")
    assert f"is a Parquet file, not JSONL; name it {tmp_path / 'data.parquet'}" in read_error(path)


def test_zip_and_utf16(tmp_path: Path) -> None:
    assert "is a zip archive" in read_error(touch(tmp_path / "a.jsonl", b"PK\x03\x04" + b"\0" * 30))
    for n, encoding in enumerate(["utf-16", "utf-16-le", "utf-16-be"]):
        utf16 = '{"id":"a"}\n'.encode(encoding)
        assert "is UTF-16 encoded" in read_error(touch(tmp_path / f"{n}.jsonl", utf16))


def test_corrupt_gzip(tmp_path: Path) -> None:
    packed = bytearray(gzip.compress(RECORDS * 50))
    packed[30:40] = b"\xff" * 10
    message = read_error(touch(tmp_path / "a.jsonl.gz", bytes(packed)))
    assert "not a valid gzip file, or corrupt near compressed byte" in message
    assert message.endswith("re-export or check the download")


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz", "zst"])
def test_truncated_compressed(tmp_path: Path, kind: str) -> None:
    packed = COMPRESSORS[kind](RECORDS * 50)
    path = touch(tmp_path / f"a.jsonl.{kind}", packed[: len(packed) // 2])
    message = read_error(path)
    assert f"{path}: truncated " in message
    assert "re-export or check the download" in message


def test_wrong_or_missing_compression(tmp_path: Path) -> None:
    path = touch(tmp_path / "a.jsonl.gz", COMPRESSORS["zst"](RECORDS))
    message = read_error(path)
    assert message == f"{path} is zstd-compressed, not gzip; rename it to {tmp_path}/a.jsonl.zst"
    plain = touch(tmp_path / "b.jsonl.gz", RECORDS)
    assert "is not gzip-compressed (it starts like plain JSON); remove the .gz" in read_error(plain)
    assert "is empty, which is not a valid gzip file" in read_error(
        touch(tmp_path / "c.jsonl.gz", b"")
    )


def test_file_removed_after_resolving(tmp_path: Path) -> None:
    path = touch(tmp_path / "a.jsonl")
    src = source(path)
    path.unlink()
    with pytest.raises(SourceError, match="cannot open it"):
        list(iter_chunks(src))


def test_io_error_is_a_source_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = touch(tmp_path / "a.jsonl", RECORDS * 100)  # over a block: read as a stream
    real_open = open

    class Failing(io.BufferedReader):
        def readinto(self, buffer: Any) -> int:
            raise OSError(5, "Input/output error")

    def fake_open(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        if file == path or isinstance(file, int):  # by name, or the fd it was opened as
            return Failing(real_open(file, "rb", buffering=0))
        return real_open(file, mode, *args, **kwargs)  # type: ignore[call-overload]

    import bulkload._inputs.resolve as inputs  # where inputs are opened

    monkeypatch.setattr(inputs, "open", fake_open, raising=False)
    with pytest.raises(SourceError, match=r"read error near byte 0 \(line 1\): Input/output error"):
        chunks(path)


def test_io_error_reading_a_small_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = touch(tmp_path / "a.jsonl", RECORDS)

    def failing(fd: int, n: int, offset: int) -> bytes:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "pread", failing)
    with pytest.raises(SourceError, match=r"read error near byte 0 \(line 1\): Input/output error"):
        chunks(path)


def test_a_small_file_read_whole_is_checked_like_a_streamed_one(tmp_path: Path) -> None:
    """One read per small file: its head still tells its format, a BOM is dropped, and a
    file that changed since it was listed is refused."""
    src = source(touch(tmp_path / "a.jsonl", b"\xef\xbb\xbf" + RECORDS))
    (chunk,) = iter_chunks(src, 1 << 20)
    assert (chunk.data, chunk.first_line, chunk.offset) == (RECORDS, 1, 3)
    assert "looks gzip-compressed" in read_error(
        touch(tmp_path / "z.jsonl", gzip.compress(RECORDS))
    )
    grown = source(touch(tmp_path / "b.jsonl", RECORDS))
    touch(tmp_path / "b.jsonl", RECORDS * 2)
    with pytest.raises(SourceError, match="grew from 1,100 to 2,200 bytes during the load"):
        list(iter_chunks(grown, 1 << 20))
    same_size = source(touch(tmp_path / "c.jsonl", RECORDS))
    os.utime(tmp_path / "c.jsonl", ns=(1, 1))
    with pytest.raises(SourceError, match="was modified during the load"):
        list(iter_chunks(same_size, 1 << 20))


@pytest.mark.parametrize("kind", ["gz", "zst"])
def test_a_file_that_expands_enormously_is_read_in_bounded_memory(
    tmp_path: Path, kind: str
) -> None:
    """96 MiB of blank lines packed into a few KB: the reader holds a block at a time, not
    what one decoder call could return (the zstd reader before ``open_stream`` held a
    whole ``decompressobj`` call's output: 400 MB for a 12 KB file of zeros)."""
    expanded = 96 << 20
    packer = zstandard.ZstdCompressor().compressobj() if kind == "zst" else None
    out = io.BytesIO()
    writer = gzip.GzipFile(fileobj=out, mode="wb") if kind == "gz" else None
    piece = b"\n" * (1 << 20)
    for _ in range(expanded >> 20):
        if writer is not None:
            writer.write(piece)
        else:
            assert packer is not None
            out.write(packer.compress(piece))
    if writer is not None:
        writer.close()
    else:
        assert packer is not None
        out.write(packer.flush())
    path = touch(tmp_path / f"blank.jsonl.{kind}", out.getvalue())
    assert path.stat().st_size < expanded // 1000
    block = 1 << 20
    total = 0
    tracemalloc.start()
    try:
        for chunk in iter_chunks(source(path), block):
            total += len(chunk.data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == expanded
    assert peak < 8 * block, peak


@given(
    display=st.text(min_size=1, max_size=40),
    local=st.booleans(),
    size=st.none() | st.integers(0, 2**40),
    mtime=st.none() | st.integers(0, 2**62),
    etag=st.none() | st.text(max_size=20),
)
def test_a_source_crosses_to_a_worker_as_it_was(
    display: str, local: bool, size: int | None, mtime: int | None, etag: str | None
) -> None:
    """Sources are pickled for worker processes by a compact ``__reduce__``: every field
    comes back, the path as a Path (or None for stdin and remote objects)."""
    source = Source(
        display,
        Path("/data", display.replace("\0", "")) if local else None,
        "gz",
        size,
        mtime,
        "jsonl",
        None if local else f"s3://bucket/{display}",
        None,
        etag,
    )
    back = pickle.loads(pickle.dumps(source))
    assert back == source and type(back.path) is type(source.path)
    assert (back.url, back.etag, back.fs) == (source.url, source.etag, None)
