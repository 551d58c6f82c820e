"""Inputs that worker processes read into the spool: compressed files decoded in a worker,
small files copied whole. Against the emulator over loopback: every line exactly once,
rejects with their file and line, the same shards as without workers, errors by name,
and nothing left in the spool."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zstandard
from conftest import API_KEY
from helpers import assert_exactly_once, read_manifest, read_rejects, record, write_lines
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bulkload
from bulkload._inputs import LongLines, resolve_inputs
from bulkload._load import spool
from bulkload._validate import ValidateOptions, validate_chunk
from bulkload.emulator import EmulatorThread

#: Written by the real tools where installed, as exporters write them.
TOOLS = {
    "gz": [["gzip", "-c"], ["pigz", "-c", "-p", "2"]],
    "zst": [["zstd", "-q", "-c"]],
}


def pack(path: Path, data: bytes, codec: str) -> Path:
    """``data`` compressed into ``path`` by the first real tool installed (else Python)."""
    for cmd in TOOLS[codec]:
        if shutil.which(cmd[0]):
            path.write_bytes(
                subprocess.run(cmd, input=data, capture_output=True, check=True).stdout
            )
            return path
    if codec == "gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    return path


def dataset(tmp: Path, codec: str) -> tuple[list[str], list[bytes]]:
    """A directory of compressed parts with a bad line, a blank line and a CRLF line each,
    and small plain files beside them; the inputs and the valid lines."""
    directory = tmp / "in"
    (directory / "sub").mkdir(parents=True)
    expected: list[bytes] = []
    for part in range(3):
        lines = [record(part * 3000 + i, pad="z" * (i % 200)) for i in range(3000)]
        expected += lines
        body = list(lines)
        body.insert(1000, b'{"id": null}')  # line 1001
        body.insert(2000, b"")  # line 2002: blank
        body[2500] += b"\r"
        pack(directory / f"part-{part}.jsonl.{codec}", b"\n".join(body) + b"\n", codec)
    for i in range(40):
        lines = [record(100_000 + i * 50 + j) for j in range(50)]
        expected += lines
        body = list(lines)
        if i == 7:
            body.insert(3, b"[1]")  # line 4 of sub/s07.jsonl
        write_lines(directory / "sub" / f"s{i:02d}.jsonl", body)
    return [str(directory)], expected


def load(inputs: list[str], work: Path, **options: object) -> bulkload.LoadResult:
    return bulkload.load("products", inputs, work_dir=work, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("codec", ["gz", "zst"])
def test_a_directory_of_compressed_parts_loads_exactly_once_with_workers(
    emulator_thread: EmulatorThread, tmp_path: Path, codec: str
) -> None:
    inputs, expected = dataset(tmp_path, codec)
    common = dict(block_size=64 * 1024, shard_max_bytes=150_000)
    shapes = []
    for workers in (0, 2):
        load(inputs, tmp_path / f"dry{workers}", workers=workers, dry_run=True, **common)
        manifest = read_manifest(tmp_path / f"dry{workers}")
        shapes.append([(s["md5"], s["records"], s["sources"]) for s in manifest["shards"]])
    assert shapes[0] == shapes[1]  # the same shards, byte for byte, either way
    work = tmp_path / "w"
    result = load(
        inputs, work, workers=2, api_key=API_KEY, base_url=emulator_thread.base_url, **common
    )
    assert (result.records, result.rejected, result.blank) == (len(expected), 4, 3)
    assert_exactly_once(emulator_thread, expected)
    where = sorted((r["source"], r["line"]) for r in read_rejects(work))
    d = Path(inputs[0])
    assert where == [
        *[(str(d / f"part-{p}.jsonl.{codec}"), 1001) for p in range(3)],
        (str(d / "sub" / "s07.jsonl"), 4),
    ]
    assert not (work / spool.SPOOL_DIR).exists()  # every spool file went with its shards


@pytest.mark.parametrize("codec", ["gz", "zst"])
@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_damaged_compressed_part_stops_the_run_by_name_and_keeps_what_went_up(
    emulator_thread: EmulatorThread, tmp_path: Path, codec: str, damage: str
) -> None:
    good = [record(i) for i in range(6000)]
    d = tmp_path / "in"
    d.mkdir()
    pack(d / f"a.jsonl.{codec}", b"\n".join(good[:3000]) + b"\n", codec)
    packed = pack(d / f"b.jsonl.{codec}", b"\n".join(good[3000:]) + b"\n", codec).read_bytes()
    if damage == "truncated":
        packed = packed[: len(packed) * 2 // 3]
    else:
        middle = len(packed) // 2
        packed = (
            packed[:middle]
            + bytes(b ^ 0x55 for b in packed[middle : middle + 64])
            + packed[middle + 64 :]
        )
    (d / f"b.jsonl.{codec}").write_bytes(packed)
    work = tmp_path / "w"
    with pytest.raises(bulkload.SourceError) as err:
        load(
            [str(d)], work, workers=2, api_key=API_KEY, base_url=emulator_thread.base_url,
            shard_max_records=500, block_size=64 * 1024,
        )  # fmt: skip
    message = str(err.value)
    assert message.startswith(f"{d / f'b.jsonl.{codec}'}: ")
    assert ("truncated" if damage == "truncated" else "corrupt") in message
    assert "re-export or check the download" in message
    # What went up stays up: the same command fails the same way, uploading nothing twice.
    first = [r for _, r in emulator_thread.stored_records(None)]
    with pytest.raises(bulkload.SourceError, match="re-export or check the download"):
        load(
            [str(d)], work, workers=2, api_key=API_KEY, base_url=emulator_thread.base_url,
            shard_max_records=500, block_size=64 * 1024,
        )  # fmt: skip
    again = [r for _, r in emulator_thread.stored_records(None)]
    assert len(again) == len(set(again)) >= len(first)
    assert set(again) <= set(good)


def test_a_small_file_changed_after_listing_is_refused_with_workers(tmp_path: Path) -> None:
    """Small files are read once, in a worker: one that changed since it was listed is
    still named, not loaded as it is now."""
    d = tmp_path / "in"
    d.mkdir()
    for i in range(30):
        write_lines(d / f"f{i:02d}.jsonl", [record(i * 10 + j) for j in range(10)])
    sources = resolve_inputs([str(d)])
    write_lines(d / "f17.jsonl", [record(j) for j in range(11)])  # grew after the listing
    reader_cfg = bulkload.LoadConfig(workers=2, dry_run=True)
    from bulkload._load.progress import Stats
    from bulkload._load.reader import Reader

    reader = Reader(reader_cfg, Stats(), tmp_path / "w", threading.Event())
    (tmp_path / "w").mkdir()
    reader.open()
    try:
        with pytest.raises(bulkload.SourceError, match=r"f17\.jsonl grew from .* during the load"):
            reader.read_sources(sources, lambda shard: None)
    finally:
        reader.close()


LINES = st.lists(
    st.one_of(
        st.integers(0, 10**6).map(lambda i: record(i)),
        st.sampled_from([b"", b"  ", b"[1]", b'{"id": 3}', b'{"id":"x"}\r', b"\xff"]),
        st.integers(100, 3000).map(lambda n: b'{"id":"' + b"y" * n + b'"}'),
    ),
    max_size=300,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=LINES, segment=st.sampled_from([1, 4096, 1 << 20]), block=st.sampled_from([512, 4096]))
def test_spooled_blocks_are_the_file_validated_whole(
    tmp_path: Path, lines: list[bytes], segment: int, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However the decoded stream is cut into blocks and segments, the spool holds exactly
    the records of validating the whole file at once, with the same line numbers (and each
    line is one of: a record, a reject, a blank)."""
    monkeypatch.setattr(spool, "SEGMENT", segment)
    monkeypatch.setattr(spool, "SPOOL_BLOCK", block)
    monkeypatch.setattr(spool, "LIVE_SEGMENTS", 10**6)  # nobody deletes them here
    run = tmp_path / f"r{time.monotonic_ns()}"
    run.mkdir()
    data = b"\n".join(lines) + b"\n"
    (src,) = resolve_inputs([str(pack(run / "a.jsonl.gz", data, "gz"))])
    opts = ValidateOptions(max_record_bytes=2000)
    spool.spool_compressed(src, str(run / "t"), opts, 1 << 20, 1 << 20, LongLines(run / "ll", 2000))
    index = spool.IndexReader(str(run / "t"))
    records, line_nos, rejects, blank = b"", [], [], 0
    while (item := index.take()) is not None:
        if isinstance(item, spool.Sealed):
            continue
        with open(item.path, "rb") as f:
            f.seek(item.at)
            records += f.read(item.length)
        line_nos += list(item.result.line_nos)
        rejects += [r.line for r in item.result.rejects]
        blank += item.result.blank
    index.close()
    whole = validate_chunk(data, 1, opts)
    assert records == whole.data
    assert line_nos == list(whole.line_nos)
    # (A line longer than a block is set aside to a file: its reason says where.)
    assert rejects == [r.line for r in whole.rejects]
    assert blank == whole.blank
    assert len(line_nos) + len(rejects) + blank == len(lines) + (0 if lines else 1)


def test_a_worker_waits_for_its_oldest_segments_to_go_and_stops_when_the_run_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool, "SEGMENT", 10_000)
    monkeypatch.setattr(spool, "SPOOL_BLOCK", 10_000)
    monkeypatch.setattr(spool, "LIVE_SEGMENTS", 2)
    (src,) = resolve_inputs(
        [
            str(
                pack(
                    tmp_path / "a.jsonl.zst",
                    b"\n".join(record(i) for i in range(3000)) + b"\n",
                    "zst",
                )
            )
        ]
    )
    spooled = tmp_path / "spool"
    spooled.mkdir()
    failed: list[BaseException] = []

    def work() -> None:
        try:
            spool.spool_compressed(
                src, str(spooled / "t"), ValidateOptions(), 1 << 20, 1 << 20,
                LongLines(tmp_path / "ll", 1 << 20),
            )  # fmt: skip
        except BaseException as exc:
            failed.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    time.sleep(0.3)
    assert worker.is_alive()  # two segments written, none deleted: it waits
    assert len(list(spooled.glob("t.0*"))) == 2
    shutil.rmtree(spooled)  # what the loading process does when the run stops
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert [type(e) for e in failed] == [spool.SpoolGone], failed


def test_kill_9_while_compressed_parts_load_then_resume_exactly_once(
    emulator_thread: EmulatorThread, tmp_path: Path
) -> None:
    inputs, expected = dataset(tmp_path, "gz")
    work = tmp_path / "w"
    cmd = [
        sys.executable, "-m", "bulkload", "load", "products", *inputs, "--work-dir", str(work),
        "--base-url", emulator_thread.base_url, "--quiet", "--workers", "2",
        "--shard-records", "400",
    ]  # fmt: skip
    env = {**os.environ, "SAFETYKIT_API_KEY": API_KEY}
    emulator_thread.set_faults(hang_first_n=4, hang_s=1)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    emulator_thread.wait_for(
        lambda: sum(emulator_thread.counters().get("put", {}).values()) >= 2, timeout=60
    )
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    done = subprocess.run(cmd, env=env, capture_output=True, timeout=120, check=False)
    assert done.returncode == 3, done.stderr.decode()
    assert_exactly_once(emulator_thread, expected)


FILES = st.lists(st.tuples(LINES.map(lambda ls: ls[:20]), st.booleans()), min_size=1, max_size=12)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(files=FILES, joined=st.sampled_from([1, 300, 1 << 20]))
def test_small_files_spooled_together_are_each_validated_alone(
    tmp_path: Path,
    files: list[tuple[list[bytes], bool]],
    joined: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Small files are validated joined when every line is a record: each file's result,
    and the records in the spool, are what validating it alone gives."""
    monkeypatch.setattr(spool, "_JOINED", joined)
    run = tmp_path / f"r{time.monotonic_ns()}"
    run.mkdir()
    for k, (lines, end) in enumerate(files):
        data = b"\n".join(lines) + (b"\n" if end else b"")
        (run / f"f{k:02d}.jsonl").write_bytes(data or b"\n")
    sources = resolve_inputs([str(run)])
    opts = ValidateOptions()
    got = list(spool.spool_small_files(sources, str(run / "t"), opts).blocks())
    spooled = (run / "t.0000").read_bytes()
    for src, block in zip(sources, got, strict=True):
        assert isinstance(block, spool.SpooledBlock)
        assert src.path is not None
        alone = validate_chunk(src.path.read_bytes(), 1, opts)
        r = block.result
        assert spooled[block.at : block.at + block.length] == alone.data
        assert (list(r.ends), list(r.line_nos), r.blank, r.lines) == (
            list(alone.ends),
            list(alone.line_nos),
            alone.blank,
            alone.lines,
        )
        assert [x.line for x in r.rejects] == [x.line for x in alone.rejects]


SMALL_DIRS = st.lists(
    st.tuples(LINES.map(lambda ls: ls[:40]), st.booleans(), st.booleans()),
    min_size=2,
    max_size=40,
)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(files=SMALL_DIRS, duplicates=st.booleans())
def test_many_small_files_give_the_same_shards_and_rejects_with_workers_as_without(
    tmp_path: Path, files: list[tuple[list[bytes], bool, bool]], duplicates: bool
) -> None:
    """A directory of small files (clean ones joined in a worker and told by arrays; ones
    with rejects, blanks, CRLF, a BOM or no last newline told whole): every shard, reject
    and repeated id is the same as when this process reads them one by one."""
    run = tmp_path / f"r{time.monotonic_ns()}"
    (run / "in" / "sub").mkdir(parents=True)
    for k, (lines, end, bom) in enumerate(files):
        data = (b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines) + (b"\n" if end else b"")
        where = run / "in" / ("sub" if k % 2 else "") / f"f{k:02d}.jsonl"
        where.write_bytes(data or b"\n")

    def outcome(workers: int) -> tuple[object, ...]:
        work = run / f"w{workers}"
        result = load([str(run / "in")], work, workers=workers, dry_run=True,
                      check_duplicates=duplicates, shard_max_records=50)  # fmt: skip
        shards = [(s["md5"], s["records"], s["sources"]) for s in read_manifest(work)["shards"]]
        found = (work / "duplicates.jsonl").read_bytes() if duplicates else b""
        counts = (result.lines, result.records, result.rejected, result.blank)
        return counts, shards, read_rejects(work), found

    with_workers = outcome(2)
    assert outcome(0) == with_workers
    lines, records, rejected, blank = with_workers[0]  # type: ignore[misc]
    assert records + rejected + blank == lines
