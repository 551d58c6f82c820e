"""The worker side of ``--workers``: byte ranges that find their own lines, and shard hashing.

The property that matters: validating a file as byte ranges of any size, each worker
aligning itself to lines, gives exactly what validating the whole file at once gives: every
line once, with the same line numbers, records, rejects and blanks.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkload._config import LoadConfig
from bulkload._inputs import Source, compression_of
from bulkload._load.progress import Stats
from bulkload._load.reader import Reader, _shift_lines
from bulkload._validate import (
    FileChangedError,
    LineTooLongError,
    ValidateOptions,
    md5_pieces,
    validate_chunk,
)
from bulkload._validate.worker import validate_range

BOM = b"\xef\xbb\xbf"
OPTS = ValidateOptions(collect_ids=True)
LINE = st.one_of(
    st.builds(
        lambda i, pad: json.dumps({"id": f"r{i}", "p": "é" * pad}).encode(),
        st.integers(0, 10**6),
        st.integers(0, 40),
    ),
    st.sampled_from([b"", b"   ", b"[1]", b'{"id":7}', b"{nope", b'{"id":"a"}\r']),
)


def validate_by_ranges(path: Path, block: int, max_line: int = 1 << 30) -> list[object]:
    """What the reader assembles from a file's ranges, as one comparable list."""
    size = path.stat().st_size
    seen = 0
    records: list[tuple[int, bytes]] = []
    rejects: list[tuple[int, str]] = []
    ids: list[str] = []
    blank = lines = 0
    position = None
    data = path.read_bytes()
    for a in range(0, size, block):
        r = validate_range(str(path), a, min(a + block, size), size, OPTS, max_line)
        # The ranges' spans tile the file (after a BOM), in order, without gaps or overlaps.
        assert position is None or r.start == position or r.start == r.end
        if r.start != r.end:
            position = r.end
        result = _shift_lines(r.result, seen)
        seen += result.lines
        body = data[r.start : r.end] if r.clean else result.data
        if r.clean:
            assert result.data == b""
        starts = [0, *result.ends][: len(result.ends)]
        records += [
            (no, body[s:e]) for no, s, e in zip(result.line_nos, starts, result.ends, strict=True)
        ]
        rejects += [(x.line, x.error) for x in result.rejects]
        ids += result.ids or []
        blank += result.blank
        lines += result.lines
    assert position in (None, size)
    return [records, rejects, ids, blank, lines]


def validate_whole(path: Path) -> list[object]:
    data = path.read_bytes()
    data = data[len(BOM) :] if data.startswith(BOM) else data
    result = validate_chunk(data, 1, OPTS)
    starts = [0, *result.ends][: len(result.ends)]
    records = [
        (no, result.data[s:e])
        for no, s, e in zip(result.line_nos, starts, result.ends, strict=True)
    ]
    rejects = [(x.line, x.error) for x in result.rejects]
    return [records, rejects, result.ids or [], result.blank, result.lines]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(LINE, max_size=25),
    final_newline=st.booleans(),
    bom=st.booleans(),
    block=st.integers(1, 300),
)
def test_ranges_of_any_size_validate_like_the_whole_file(
    tmp_path: Path, lines: list[bytes], final_newline: bool, bom: bool, block: int
) -> None:
    path = tmp_path / "in.jsonl"
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    path.write_bytes((BOM if bom else b"") + data)
    assert validate_by_ranges(path, block) == validate_whole(path)


def test_a_clean_range_is_not_sent_back(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(b'{"id":"%d"}\n' % i for i in range(1000)))
    size = path.stat().st_size
    results = [validate_range(str(path), a, min(a + 4096, size), size, OPTS, 1 << 20)
               for a in range(0, size, 4096)]  # fmt: skip
    assert all(r.clean and r.result.data == b"" for r in results)
    assert sum(len(r.result.ends) for r in results) == 1000


def test_the_line_too_long_is_named_by_its_number_in_the_range(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"id":"a"}\n{"id":"b"}\n' + b"x" * 5000 + b"\n{}\n")
    size = path.stat().st_size
    with pytest.raises(LineTooLongError) as caught:
        validate_range(str(path), 0, 100, size, OPTS, 1000)
    assert (caught.value.line, caught.value.limit) == (3, 1000)
    # The ranges inside the long line own no line start, and do not read it all.
    assert validate_range(str(path), 1000, 1100, size, OPTS, 1000).result.lines == 0


def test_a_file_that_changed_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"id":"a"}\n')
    with pytest.raises(FileChangedError) as caught:
        validate_range(str(path), 0, 5, 5, OPTS, 1000)
    assert (caught.value.planned, caught.value.now) == (5, 11)


def test_md5_of_pieces_is_the_md5_of_their_bytes_back_to_back(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(bytes(range(256)) * 40_000)  # 10 MB: more than one hashing slice
    b.write_bytes(b"hello world")
    pieces = [(str(a), 7, 9_000_000), (str(b), 6, 5), (str(a), 0, 1)]
    expected = hashlib.md5(
        b"".join(p.read_bytes()[o : o + n] for p, o, n in [(a, 7, 9_000_000), (b, 6, 5), (a, 0, 1)])
    ).hexdigest()
    assert md5_pieces(pieces) == expected
    with pytest.raises(FileChangedError):
        md5_pieces([(str(b), 6, 50)])


def test_every_range_boundary_of_a_small_file(tmp_path: Path) -> None:
    """Exhaustive for one small file with every kind of line: all block sizes 1..len."""
    path = tmp_path / "in.jsonl"
    lines = [b'{"id":"a"}', b"", b"[1]", b'{"id":"\xc3\xa9"}\r', b"  ", b'{"id":"c"}']
    path.write_bytes(BOM + b"\n".join(lines))
    whole = validate_whole(path)
    for block in itertools.chain(range(1, 40), [path.stat().st_size]):
        assert validate_by_ranges(path, block) == whole, block


def test_how_many_workers(tmp_path: Path) -> None:
    """The library starts none unless asked; None (the CLI's default) starts one per core,
    at most 8, for 256 MiB or more of plain JSONL (a compressed file counts 4 times its
    size: a worker decodes it), and none for less or for other inputs."""
    cores = len(os.sched_getaffinity(0))
    auto = min(cores, 8) if cores >= 2 else 0

    def workers(sources: list[Source], **options: Any) -> int:
        reader = Reader(LoadConfig(**options), Stats(), tmp_path, threading.Event())
        return reader._workers(sources)

    def source(name: str, size: int | None) -> Source:
        return Source(name, Path(name), compression_of(name), size, 0, "jsonl")

    big = [source("a.jsonl", 200 << 20), source("b.jsonl", 56 << 20)]
    assert workers(big) == 0  # the library's default
    assert workers(big, workers=3) == 3
    assert workers(big, workers=None) == auto
    assert workers(big[:1], workers=None) == 0  # under 256 MiB
    assert workers([source("a.jsonl.gz", 64 << 20)], workers=None) == auto  # ~256 MiB decoded
    assert workers([source("a.jsonl.zst", 32 << 20)], workers=None) == 0
    assert workers([source("fifo", None)], workers=None) == 0  # a pipe
    assert workers(big, workers=None, keep_shards=True) == 0  # copies everything anyway
