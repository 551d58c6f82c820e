"""The input side at its edges: a full disk, wrong kinds of files, inputs that change while
they are read, lines far longer than a shard, rows from a database cursor, nested ids."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import threading
import tracemalloc
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import read_rejects

import bulkload
from bulkload import Loader, cli
from bulkload._config import LoadConfig
from bulkload._errors import SourceError
from bulkload._inputs import LongLines, check_unchanged, iter_chunks, resolve_inputs
from bulkload._load.progress import Stats
from bulkload._load.reader import Reader
from bulkload._validate import RangeResult, ValidateOptions
from bulkload._validate.worker import validate_range


def run_cli(tmp_path: Path, *args: str) -> int:
    argv = ["load", "ns", *args, "--dry-run", "--quiet", "--work-dir", str(tmp_path / "work")]
    return cli.main(argv)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_disk_full_while_writing_rejects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "rejects.jsonl").symlink_to("/dev/full")  # every write fails with ENOSPC
    data = tmp_path / "a.jsonl"
    data.write_bytes(b'{"id":"a"}\nnot json\n')
    code = run_cli(tmp_path, str(data))
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("bulkload: error:") == 1, err
    assert "Traceback" not in err
    assert "the disk is full: cannot write rejected lines to" in err
    assert "rerun the same command to resume" in err


# -- lines longer than a shard ---------------------------------------------------------------

LONG = b'{"id":"big","p":"' + b"x" * (3 << 20) + b'"}'  # 3 MiB: longer than a 1 MiB shard
FILE = b'{"id":"a"}\n' + LONG + b'\r\n{"id":"b"}\n'


def peak_while(fn: Callable[[], object]) -> tuple[object, int]:
    tracemalloc.start()
    try:
        value = fn()
        return value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_line_longer_than_a_shard_is_streamed_to_a_file(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(FILE)
    aside = LongLines(tmp_path / "long", 1 << 20)
    (source,) = resolve_inputs([str(path)])
    chunks, peak = peak_while(lambda: list(iter_chunks(source, 64 << 10, long_lines=aside)))
    assert peak < 2 << 20  # never held: the buffer stops growing at the shard size
    assert isinstance(chunks, list)
    rejects = [r for c in chunks if c.rejects for r in c.rejects]
    (reject,) = rejects
    assert reject.line == 2
    saved = aside.path_for(str(path), 2)
    assert saved.read_bytes() == LONG + b"\r"  # the line exactly, without its \n
    members = orjson.loads(b"{" + reject.raw + b"}")
    assert members["raw"] is None and members["raw_bytes"] == len(LONG) + 1
    assert members["raw_file"] == str(saved) and members["raw_head"] == LONG[:1024].decode()
    assert sum(len(c.data) + c.skipped for c in chunks) == len(FILE)


def test_a_line_past_the_stop_limit_stops_without_being_held(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    path.write_bytes(b"[" + b"1," * (4 << 20) + b"1]")  # 8 MiB, no newline
    aside = LongLines(tmp_path / "long", 1 << 20)
    (source,) = resolve_inputs([str(path)])

    def read() -> object:
        with pytest.raises(SourceError, match=r"line 1 is longer than 4,194,304 bytes"):
            list(iter_chunks(source, 64 << 10, max_line_bytes=4 << 20, long_lines=aside))
        return None

    _, peak = peak_while(read)
    assert peak < 2 << 20
    assert not list((tmp_path / "long").iterdir())  # the partial copy is removed


def test_a_worker_does_not_read_the_long_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(FILE)
    opts = ValidateOptions(max_record_bytes=1 << 20)
    result, peak = peak_while(
        lambda: validate_range(str(path), 0, 64 << 10, len(FILE), opts, 64 << 20)
    )
    assert isinstance(result, RangeResult)
    assert peak < 2 << 20
    assert result.long_line == (11, 11 + len(LONG) + 2)
    assert result.result.lines == 1  # the line before it; the long one is the caller's


@pytest.mark.parametrize("workers", [0, 2])
def test_long_lines_end_the_same_with_and_without_workers(tmp_path: Path, workers: int) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(FILE * 3)
    work = tmp_path / f"work-{workers}"
    result = bulkload.load("ns", [str(path)], work_dir=work, dry_run=True, workers=workers,
                           shard_max_bytes=1 << 20, block_size=64 << 10)  # fmt: skip
    assert (result.records, result.rejected, result.lines) == (6, 3, 9)
    rejects = read_rejects(work)
    assert [r["line"] for r in rejects] == [2, 5, 8]
    for r in rejects:
        assert r["raw"] is None and r["raw_bytes"] == len(LONG) + 1
        assert r["error"].startswith(f"line is {len(LONG) + 2:,} bytes, more than the shard size")
        assert Path(r["raw_file"]).read_bytes() == LONG + b"\r"
        assert Path(r["raw_file"]).parent == work / "long-lines"


# -- inputs that change while they are read --------------------------------------------------


def test_a_file_cut_short_while_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "trunc.jsonl"
    path.write_bytes(b'{"id":"a"}\n' * 20_000)  # 220,000 bytes
    (source,) = resolve_inputs([str(path)])
    chunks = iter_chunks(source, 64 << 10)
    next(chunks)
    os.truncate(path, 100_000)
    with pytest.raises(SourceError) as caught:
        list(chunks)
    assert str(caught.value) == (
        f"{path} shrank from 220,000 to 100,000 bytes during the load; rerun with "
        "restart=True to load it as it is now"
    ), "the library speaks of keywords; the CLI says --restart"


def test_a_file_grown_modified_replaced_or_removed(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"id":"a"}\n')
    (source,) = resolve_inputs([str(path)])
    check_unchanged(source)  # the same file: nothing to say
    path.write_bytes(b'{"id":"a"}\n{"id":"b"}\n')
    with pytest.raises(SourceError, match=r"grew from 11 to 22 bytes during the load"):
        check_unchanged(source)
    path.write_bytes(b'{"id":"z"}\n')
    os.utime(path, ns=(source.mtime_ns or 0, (source.mtime_ns or 0) + 10**9))
    with pytest.raises(SourceError, match="was modified during the load"):
        check_unchanged(source)
    os.utime(path, ns=(source.mtime_ns or 0, source.mtime_ns or 0))
    with open(path, "rb") as f:  # as the reader holds it
        other = tmp_path / "b.jsonl"
        other.write_bytes(b'{"id":"a"}\n')
        os.utime(other, ns=(source.mtime_ns or 0, source.mtime_ns or 0))
        os.replace(other, path)
        with pytest.raises(SourceError, match="was replaced by another file during the load"):
            check_unchanged(source, os.fstat(f.fileno()))
    path.unlink()
    with pytest.raises(SourceError, match="was removed during the load; restore it"):
        check_unchanged(source)


# -- files of the wrong kind -------------------------------------------------------------------

WRONG_KINDS = {
    "array.jsonl": (b'[{"id":"a"},\n{"id":"b"}]\n', "a JSON array"),
    "pretty.jsonl": (b'{\n  "id": "a",\n  "x": 1\n}\n{\n  "id": "b"\n}\n', "pretty-printed JSON"),
    "latin1.jsonl": ('{"id":"é"}\n{"id":"ü"}\n'.encode("latin-1"), "another encoding than UTF-8"),
    "cr.jsonl": (b'{"id":"a"}\r{"id":"b"}\r{"id":"c"}\r', "CR line ends"),
}


@pytest.mark.parametrize("name", sorted(WRONG_KINDS))
def test_a_file_of_the_wrong_kind_is_named_in_a_note(
    tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    data, kind = WRONG_KINDS[name]
    good = tmp_path / "good.jsonl"
    good.write_bytes(b'{"id":"g"}\n')
    path = tmp_path / name
    path.write_bytes(data)
    reader = read(tmp_path, [str(good), str(path)])
    lines = 1 if name.startswith("cr") else len(data.splitlines())
    assert reader.stats.rejected == lines
    (note,) = reader.notes
    count = f"all {lines:,} lines were rejected" if lines > 1 else "its only line was rejected"
    assert note.startswith(f"{path}: {count}; it looks like "), note
    assert kind in note and note.endswith("bulkload needs one JSON object per line")
    assert note in caplog.text  # logged as a warning when the file ends


def read(tmp_path: Path, inputs: list[str], **options: Any) -> Reader:
    """The reading side of a dry run, on its own: every shard handed over is dropped."""
    work = tmp_path / "work"
    (work / "shards").mkdir(parents=True, exist_ok=True)
    reader = Reader(
        LoadConfig(dry_run=True, **options), Stats(started=0.0), work, threading.Event()
    )
    reader.open()
    try:
        reader.read_sources(resolve_inputs(inputs), lambda shard: None)
    finally:
        reader.close()
    return reader


# -- rows from a database cursor --------------------------------------------------------------


def test_cursor_values_become_json_as_parquet_values_do(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "price": Decimal("12.3400"), "big": Decimal("1E+2"), "blob": b"\x00\xff",
         "at": dt.datetime(2024, 3, 1, 12, 0, 0, 123456), "day": dt.date(2024, 3, 1),
         "t": dt.time(12, 30), "u": uuid.UUID(int=1), "n": 2**70,
         "tz": dt.datetime(2024, 3, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=1)))},
        {"id": "b", "price": Decimal("NaN")},
        {"id": "c", "tags": {"x"}},
        {"id": "d", "nested": {"list": [1, {"deep": Decimal("-Infinity")}]}},
        {"id": uuid.UUID(int=2)},
    ]  # fmt: skip
    work = tmp_path / "work"

    async def main() -> Any:
        async with Loader("ns", work_dir=work, dry_run=True) as loader:
            return await loader.load_records(rows)

    result = asyncio.run(main())
    assert (result.records, result.rejected, result.lines) == (2, 3, 5)
    errors = {r["line"]: r["error"] for r in read_rejects(work)}
    assert errors == {
        2: "price: Decimal('NaN') is not JSON",
        3: "tags: set is not JSON; pass a list",
        4: "nested.list[1].deep: Decimal('-Infinity') is not JSON",
    }
    assert "Decimal('NaN')" in read_rejects(work)[0]["raw"]  # the record itself, as its repr
    shard = b"".join(p.read_bytes() for p in (work / "shards").iterdir())
    first, last = (orjson.loads(line) for line in shard.splitlines())
    assert first == {
        "id": "a", "price": "12.3400", "big": "100", "blob": "AP8=",
        "at": "2024-03-01T12:00:00.123456Z", "day": "2024-03-01", "t": "12:30:00",
        "u": "00000000-0000-0000-0000-000000000001", "n": 2**70,
        "tz": "2024-03-01T12:00:00+01:00",
    }  # fmt: skip
    assert b'"n":1180591620717411303424' in shard  # every digit of a 71-bit integer
    assert last == {"id": "00000000-0000-0000-0000-000000000002"}
