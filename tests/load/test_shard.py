"""Shards: boundaries, files, digests, source ranges, determinism and a full disk."""

from __future__ import annotations

import errno
import hashlib
import itertools
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bulkload._load.shard as shard_module
from bulkload._errors import DiskSpaceError
from bulkload._load.shard import ShardInfo, ShardPlanner, ShardWriter, SourceRange
from bulkload._validate import ChunkResult

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def result_of(records: list[bytes], first_line: int = 1, step: int = 1) -> ChunkResult:
    """A validated chunk holding ``records``, on every ``step``-th line from first_line."""
    ends = list(itertools.accumulate(map(len, records)))
    lines = list(range(first_line, first_line + step * len(records), step))
    return ChunkResult(b"".join(records), ends, lines, [], 0, len(records), None)


def split(items: list[Any], cuts: list[int]) -> list[list[Any]]:
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(items))), len(items)]
    return [items[a:b] for a, b in itertools.pairwise(bounds)]


# -- ShardPlanner ---------------------------------------------------------------------------

SIZES = st.lists(st.integers(1, 50), max_size=200)
LIMITS = st.tuples(st.integers(50, 400), st.integers(1, 30))  # max_bytes >= any record


def plan(sizes: list[int], max_bytes: int, max_records: int, batches: list[int]) -> list[list[int]]:
    """Shards (as lists of sizes) when ``sizes`` are fed in batches cut at ``batches``."""
    planner = ShardPlanner(max_bytes, max_records)
    shards: list[list[int]] = [[]]
    for batch in split(sizes, batches):
        cuts = set(planner.feed(batch))
        for i, size in enumerate(batch):
            if i in cuts:
                shards.append([])
            shards[-1].append(size)
    assert planner.flush() == ((len(shards[-1]), sum(shards[-1])) if shards[-1] else None)
    return [s for s in shards if s]


@SETTINGS
@given(
    sizes=SIZES,
    limits=LIMITS,
    batches=st.lists(st.integers(0, 200)),
    other=st.lists(st.integers(0, 200)),
)
def test_planner_properties(
    sizes: list[int], limits: tuple[int, int], batches: list[int], other: list[int]
) -> None:
    max_bytes, max_records = limits
    shards = plan(sizes, max_bytes, max_records, batches)
    assert [s for shard in shards for s in shard] == sizes  # nothing lost, order kept
    for shard, following in itertools.zip_longest(shards, shards[1:]):
        assert 1 <= len(shard) <= max_records
        assert sum(shard) <= max_bytes
        if following:  # greedy: a shard ends only because the next record did not fit
            assert len(shard) == max_records or sum(shard) + following[0] > max_bytes
    # Deterministic: how the records arrive in chunks does not move any boundary.
    assert plan(sizes, max_bytes, max_records, other) == shards


def test_planner_cut_at_zero_and_oversize() -> None:
    planner = ShardPlanner(10, 3)
    assert planner.feed([4, 4]) == []
    assert planner.feed([4, 1]) == [0]  # the open shard (8 bytes) cannot take 4 more
    assert not planner.full
    assert planner.feed([1, 1]) == [1]  # the record limit: 3 records
    assert planner.flush() == (1, 1)
    assert planner.flush() is None
    with pytest.raises(ValueError, match="larger than a shard"):
        planner.feed([11])


# -- ShardWriter ----------------------------------------------------------------------------

RECORD = st.builds(
    lambda n, c: b'{"id":"' + c.encode() * n + b'"}\n',
    st.integers(0, 40),
    st.sampled_from("abcé"),
)
SOURCES = st.lists(st.lists(RECORD, max_size=40), min_size=1, max_size=4)


def write_all(
    directory: Path,
    sources: list[list[bytes]],
    cuts: list[int],
    max_bytes: int,
    max_records: int,
    write: bool = True,
    start_index: int = 0,
) -> list[ShardInfo]:
    writer = ShardWriter(
        directory,
        max_bytes=max_bytes,
        max_records=max_records,
        start_index=start_index,
        write=write,
    )
    infos: list[ShardInfo] = []
    for n, records in enumerate(sources):
        line = 1
        for chunk in split(records, cuts):
            # Every other line is a reject or a blank line, so ranges span them.
            infos += writer.feed(f"src{n}.jsonl", result_of(chunk, line, step=2))
            line += 2 * len(chunk)
    last = writer.flush()
    return infos + ([last] if last else [])


@SETTINGS
@given(
    sources=SOURCES,
    limits=st.tuples(st.integers(100, 300), st.integers(1, 25)),  # records <= 91 bytes
    cuts=st.lists(st.integers(0, 40)),
    other=st.lists(st.integers(0, 40)),
)
def test_writer_properties(
    tmp_path_factory: pytest.TempPathFactory,
    sources: list[list[bytes]],
    limits: tuple[int, int],
    cuts: list[int],
    other: list[int],
) -> None:
    directory = tmp_path_factory.mktemp("shards")
    max_bytes, max_records = limits
    infos = write_all(directory, sources, cuts, max_bytes, max_records, start_index=7)
    everything = b"".join(r for records in sources for r in records)
    contents = [info.path.read_bytes() for info in infos]
    assert b"".join(contents) == everything
    assert sorted(p.name for p in directory.iterdir()) == [info.path.name for info in infos]
    expected_ranges: list[SourceRange] = []
    for index, (info, data) in enumerate(zip(infos, contents, strict=True), start=7):
        assert info.index == index
        assert info.path == directory / f"shard-{index:06d}.jsonl"
        assert info.bytes == len(data) <= max_bytes
        assert info.records == data.count(b"\n") <= max_records
        assert info.md5 == hashlib.md5(data).hexdigest()
        assert [r.path for r in info.sources] == sorted({r.path for r in info.sources})
        expected_ranges += info.sources
    # Ranges: each record's source line (2k-1 for its k-th record) lies in its shard's range.
    for n, records in enumerate(sources):
        ranges = [r for r in expected_ranges if r.path == f"src{n}.jsonl"]
        covered = sum((r.last_line - r.first_line) // 2 + 1 for r in ranges)
        assert covered == len(records)
        if records:
            assert ranges[0].first_line == 1
            assert ranges[-1].last_line == 2 * len(records) - 1
    # write=False computes the same shards, without files; chunking does not matter.
    dry = tmp_path_factory.mktemp("dry")
    assert write_all(dry, sources, other, max_bytes, max_records, write=False, start_index=7) == [
        ShardInfo(i.index, dry / i.path.name, i.records, i.bytes, i.md5, i.sources) for i in infos
    ]
    assert list(dry.iterdir()) == []


def test_shard_completes_as_soon_as_it_is_full(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path, max_bytes=1000, max_records=2)
    (info,) = writer.feed("a", result_of([b'{"id":"1"}\n', b'{"id":"2"}\n']))
    assert (info.records, info.sources) == (2, (SourceRange("a", 1, 2),))
    assert writer.flush() is None


def test_ranges_across_sources(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path, max_bytes=1000, max_records=100)
    assert writer.feed("a", result_of([b"{}\n"] * 2, 5)) == []
    assert writer.feed("a", result_of([b"{}\n"], 9)) == []
    assert writer.feed("b", result_of([b"{}\n"] * 3, 1)) == []
    info = writer.flush()
    assert info is not None
    assert info.sources == (SourceRange("a", 5, 9), SourceRange("b", 1, 3))
    assert info.path.read_bytes() == b"{}\n" * 6


def test_abort_removes_the_partial_shard(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path, max_bytes=1000, max_records=100)
    writer.feed("a", result_of([b'{"id":"1"}\n']))
    assert [p.name for p in tmp_path.iterdir()] == ["shard-000000.jsonl.partial"]
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    assert writer.flush() is None


def test_not_enough_free_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=100 * 1024 * 1024))
    writer = ShardWriter(tmp_path, max_bytes=64 * 1024 * 1024, max_records=100)
    with pytest.raises(DiskSpaceError) as info:
        writer.feed("a", result_of([b'{"id":"1"}\n']))
    message = str(info.value)
    assert f"not enough free space in {tmp_path}: 100.0 MiB free" in message
    assert "a shard needs up to 64.0 MiB plus 64.0 MiB to spare" in message
    assert "free some space or lower shard_max_bytes" in message
    assert list(tmp_path.iterdir()) == []


def test_disk_full_while_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = open

    class Full:
        def __init__(self, path: Path) -> None:
            self.file = real_open(path, "wb")

        def write(self, data: bytes) -> int:
            self.file.write(bytes(data)[:3])
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self) -> None:
            self.file.close()

    monkeypatch.setattr(shard_module, "open", lambda path, mode: Full(path), raising=False)
    writer = ShardWriter(tmp_path, max_bytes=1000, max_records=100)

    # Small pieces are written at once, large ones one chunk behind: the error surfaces on
    # this call or the next one at the latest.
    def feed_and_flush() -> None:
        writer.feed("a", result_of([b'{"id":"1"}\n']))
        writer.flush()

    with pytest.raises(
        DiskSpaceError, match=f"the disk filled up while writing a shard in {tmp_path}"
    ):
        feed_and_flush()
    assert list(tmp_path.iterdir()) == []  # the partial file is gone
    writer.abort()  # harmless after the error
