"""The loader end to end, over loopback, against the emulator: what arrived, exactly once."""

from __future__ import annotations

import io
import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import API_KEY
from helpers import (
    assert_exactly_once,
    read_manifest,
    read_rejects,
    record,
    write_lines,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bulkload
from bulkload import cli
from bulkload.emulator import Emulator, EmulatorThread

BAD = [
    (b'{"id": 7}', "number"),
    (b'{"title": "no id"}', "missing id"),
    (b"[1, 2]", "array"),
    (b'{"id": "x", "broken', "JSON"),
]


async def test_every_valid_line_arrives_once_and_bad_lines_are_rejected(
    emulator: Emulator, tmp_path: Path
) -> None:
    lines = [record(i) for i in range(2000)]
    lines.insert(10, BAD[0][0])  # line 11
    lines.insert(500, b"")  # line 501: blank
    lines.insert(1000, BAD[1][0])  # line 1001
    src = write_lines(tmp_path / "in.jsonl", lines)
    async with bulkload.Loader(
        "products",
        api_key=API_KEY,
        base_url=emulator.base_url,
        work_dir=tmp_path / "work",
        shard_max_records=300,
        upload_concurrency=3,
    ) as loader:
        result = await loader.load([str(src)])

    assert_exactly_once(emulator, [record(i) for i in range(2000)])
    assert (result.lines, result.records, result.rejected, result.blank) == (2003, 2000, 2, 1)
    assert result.exit_code == 3
    rejects = read_rejects(tmp_path / "work")
    assert [(r["source"], r["line"]) for r in rejects] == [(str(src), 11), (str(src), 1001)]
    assert "number" in rejects[0]["error"] and rejects[0]["raw"] == BAD[0][0].decode()
    manifest = read_manifest(tmp_path / "work")
    assert manifest["totals"] == {
        "lines": 2003, "records": 2000, "rejected": 2, "blank": 1,
        "shards": 7, "uploaded": 7, "failed": 0,
    }  # fmt: skip
    assert all(s["status"] == "uploaded" and s["request_id"] for s in manifest["shards"])
    # The manifest's request ids are exactly the requests that received data.
    received = {r.request_id for r in emulator.requests() if r.put_successes}
    assert {s["request_id"] for s in manifest["shards"]} == received
    assert emulator.chunked_puts == 0
    assert all(
        p.content_length and p.content_type == "application/json" for p in emulator.put_log()
    )
    assert not list((tmp_path / "work" / "shards").iterdir()), "uploaded shards are removed"


async def test_concurrency_bounds_puts_in_flight(emulator: Emulator, tmp_path: Path) -> None:
    src = write_lines(tmp_path / "in.jsonl", [record(i) for i in range(3000)])
    emulator.faults.latency_s = 0.05  # slow import calls let uploads pile up
    async with bulkload.Loader(
        "products",
        api_key=API_KEY,
        base_url=emulator.base_url,
        work_dir=tmp_path / "work",
        shard_max_records=100,
        upload_concurrency=4,
    ) as loader:
        result = await loader.load([str(src)])
    assert result.uploaded == 30
    assert 1 <= emulator.max_puts_in_flight <= 4
    assert emulator.counters()["import"]["200"] == 30, "one import call per shard"


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
async def test_compressed_inputs(emulator: Emulator, tmp_path: Path, suffix: str) -> None:
    lines = [record(i) for i in range(500)]
    src = write_lines(tmp_path / f"in{suffix}", lines)
    async with bulkload.Loader(
        "products", api_key=API_KEY, base_url=emulator.base_url, work_dir=tmp_path / "w"
    ) as loader:
        result = await loader.load([str(src)])
    assert result.exit_code == 0
    assert_exactly_once(emulator, lines)


async def test_directory_and_glob_inputs(emulator: Emulator, tmp_path: Path) -> None:
    d = tmp_path / "data"
    (d / "sub").mkdir(parents=True)
    a = [record(i) for i in range(0, 100)]
    b = [record(i) for i in range(100, 200)]
    c = [record(i) for i in range(200, 300)]
    write_lines(d / "a.jsonl", a)
    write_lines(d / "sub" / "b.jsonl.gz", b)
    write_lines(d / "notes.txt", [b"not jsonl, not read"])
    write_lines(tmp_path / "c.jsonl", c)
    async with bulkload.Loader(
        "products", api_key=API_KEY, base_url=emulator.base_url, work_dir=tmp_path / "w"
    ) as loader:
        result = await loader.load([str(d), str(tmp_path / "c.*")])
    assert result.exit_code == 0
    assert_exactly_once(emulator, a + b + c)
    paths = [
        s["path"] for shard in read_manifest(tmp_path / "w")["shards"] for s in shard["sources"]
    ]
    assert paths == [str(d / "a.jsonl"), str(d / "sub" / "b.jsonl.gz"), str(tmp_path / "c.jsonl")]


async def test_load_records_from_an_async_iterator(emulator: Emulator, tmp_path: Path) -> None:
    async def rows():  # type: ignore[no-untyped-def]
        for i in range(1000):
            yield {"id": f"r{i}", "n": i}
        yield {"id": 5}  # record 1001: rejected

    async with bulkload.Loader(
        "users",
        api_key=API_KEY,
        base_url=emulator.base_url,
        work_dir=tmp_path / "w",
        shard_max_records=250,
    ) as loader:
        result = await loader.load_records(rows())
    assert (result.records, result.rejected, result.uploaded) == (1000, 1, 4)
    expected = [orjson.dumps({"id": f"r{i}", "n": i}) for i in range(1000)]
    assert_exactly_once(emulator, expected, "users")
    assert read_rejects(tmp_path / "w")[0]["line"] == 1001


def test_stdin_input(
    emulator_thread: EmulatorThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [record(i) for i in range(300)]
    stdin = io.TextIOWrapper(io.BytesIO(b"\n".join(lines) + b"\n"))
    monkeypatch.setattr(sys, "stdin", stdin)
    monkeypatch.setenv("SAFETYKIT_API_KEY", API_KEY)
    code = cli.main(
        ["load", "products", "-", "--work-dir", str(tmp_path / "w"),
         "--base-url", emulator_thread.base_url, "--quiet"]
    )  # fmt: skip
    assert code == 0
    assert_exactly_once(emulator_thread, lines)
    assert read_manifest(tmp_path / "w")["shards"][0]["sources"][0]["path"] == "-"


def test_dry_run_makes_no_http_call(
    emulator_thread: EmulatorThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("SAFETYKIT_API_KEY", raising=False)
    src = write_lines(tmp_path / "in.jsonl", [record(i) for i in range(100)] + [b"nope"])
    code = cli.main(
        ["load", "products", str(src), "--dry-run", "--json", "--work-dir", str(tmp_path / "w"),
         "--base-url", emulator_thread.base_url, "--shard-records", "30"]
    )  # fmt: skip
    assert code == 3
    summary = orjson.loads(capsys.readouterr().out)
    assert (summary["records"], summary["rejected"], summary["shards"]) == (100, 1, 4)
    assert summary["dry_run"] is True
    assert all(not v for v in emulator_thread.counters().values()), emulator_thread.counters()
    assert len(list((tmp_path / "w" / "shards").iterdir())) == 4


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kinds=st.lists(st.sampled_from(["ok", "ok", "ok", "ok", "bad", "blank", "crlf"]), max_size=200),
    shard_records=st.integers(min_value=1, max_value=60),
    shard_bytes=st.integers(min_value=200, max_value=4000),
    files=st.integers(min_value=1, max_value=3),
)
def test_property_every_line_lands_exactly_once(
    emulator_thread: EmulatorThread,
    tmp_path_factory: pytest.TempPathFactory,
    kinds: list[str],
    shard_records: int,
    shard_bytes: int,
    files: int,
) -> None:
    """Whatever the data and the shard limits: every valid line is stored exactly once, every
    bad line is in rejects.jsonl with its file and line number, and the counts add up."""
    tmp = tmp_path_factory.mktemp("prop")
    namespace = tmp.name.replace(".", "_")[-40:]
    expected: list[bytes] = []
    expected_rejects: list[tuple[str, int]] = []
    paths = []
    per_file = [kinds[i::files] for i in range(files)]
    n = 0
    for f, file_kinds in enumerate(per_file):
        path = tmp / f"part-{f}.jsonl"
        lines = []
        for line_no, kind in enumerate(file_kinds, start=1):
            n += 1
            if kind == "ok":
                lines.append(record(n, pad="x" * (n % 50)))
                expected.append(lines[-1])
            elif kind == "crlf":
                lines.append(record(n) + b"\r")
                expected.append(record(n))
            elif kind == "bad":
                lines.append(BAD[n % len(BAD)][0])
                expected_rejects.append((str(path), line_no))
            else:
                lines.append(b"  ")
        write_lines(path, lines)
        paths.append(str(path))
    result = bulkload.load(
        namespace,
        paths,
        api_key=API_KEY,
        base_url=emulator_thread.base_url,
        work_dir=tmp / "work",
        shard_max_records=shard_records,
        shard_max_bytes=shard_bytes,
        upload_concurrency=3,
    )
    assert_exactly_once(emulator_thread, expected, namespace)
    assert [(r["source"], r["line"]) for r in read_rejects(tmp / "work")] == expected_rejects
    assert result.records + result.rejected + result.blank == result.lines == len(kinds)
    manifest = read_manifest(tmp / "work")
    assert sum(s["records"] for s in manifest["shards"]) == len(expected)
    assert all(
        s["records"] <= shard_records and s["bytes"] <= shard_bytes for s in manifest["shards"]
    )
    assert emulator_thread.chunked_puts == 0


def test_exit_codes(
    emulator_thread: EmulatorThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAFETYKIT_API_KEY", API_KEY)
    good = write_lines(tmp_path / "good.jsonl", [record(i) for i in range(50)])
    mixed = write_lines(tmp_path / "mixed.jsonl", [record(i) for i in range(50)] + [b"{"])
    base = ["--base-url", emulator_thread.base_url, "--quiet"]

    def run(*argv: str) -> int:
        return cli.main(["load", "products", *argv, *base])

    assert run(str(good), "--work-dir", str(tmp_path / "w0")) == 0
    assert run(str(mixed), "--work-dir", str(tmp_path / "w3")) == 3
    emulator_thread.set_faults(put_503_rate=1.0)
    assert run(str(good), "--work-dir", str(tmp_path / "w4"), "--max-retries", "0") == 4
    emulator_thread.set_faults(put_503_rate=0.0)
    assert read_manifest(tmp_path / "w4")["shards"][0]["status"] == "failed"
    # A rerun retries only what is not done, and then succeeds.
    assert run(str(good), "--work-dir", str(tmp_path / "w4")) == 0
    monkeypatch.setenv("SAFETYKIT_API_KEY", "wrong-key")
    assert run(str(good), "--work-dir", str(tmp_path / "w1")) == 1
    assert run(str(tmp_path / "missing.jsonl"), "--work-dir", str(tmp_path / "w1b")) == 1
    assert cli.main(["load", "products"]) == 2
    assert cli.main(["load", "products", str(good), "--shard-size", "6GiB"]) == 2


async def test_no_blocking_call_on_the_event_loop(emulator: Emulator, tmp_path: Path) -> None:
    """blockbuster fails the test if the loader (or the emulator) blocks the event loop:
    file I/O, fsync and hashing belong in threads."""
    from blockbuster import blockbuster_ctx

    from bulkload import Loader

    lines = [record(i) for i in range(3000)]
    src = write_lines(tmp_path / "in.jsonl", [*lines, b"bad", record(0) + b"\r"])
    with blockbuster_ctx("bulkload"):
        async with Loader(
            "products",
            api_key=API_KEY,
            base_url=emulator.base_url,
            work_dir=tmp_path / "w",
            shard_max_records=500,
        ) as loader:
            result = await loader.load([str(src)])
    assert (result.uploaded, result.rejected) == (7, 1)


def test_worker_processes_give_the_same_shards_and_rejects(
    emulator_thread: EmulatorThread, tmp_path: Path
) -> None:
    """--workers N (byte ranges of plain files, whole blocks of compressed ones) must not
    change a single shard or reject: sharding is deterministic, and resume relies on it."""
    good = [record(i, pad="q" * (i % 300)) for i in range(4000)]
    a = list(good[:2000])
    a.insert(700, b'{"id": 1}')
    a[1500] = a[1500] + b"\r"  # a CRLF line: that block must be copied, not sent in place
    a[0] = b"\xef\xbb\xbf" + a[0]  # a BOM, which the first range must skip
    a.insert(1200, b"   ")
    write_lines(tmp_path / "a.jsonl", a)
    write_lines(tmp_path / "b.jsonl.gz", [*good[2000:3000], b"nope"])
    write_lines(tmp_path / "c.jsonl", good[3000:], newline_at_end=False)
    inputs = [str(tmp_path / name) for name in ("a.jsonl", "b.jsonl.gz", "c.jsonl")]
    # Ids repeated far apart (other ranges, another file): the duplicate check must see
    # every occurrence, with its line, either way.
    # Small files (under a block) go several to a worker task: one with a bad line.
    dups = [good[5], good[1999], good[3500]]
    for i, line in enumerate(dups):
        write_lines(tmp_path / f"d{i}.jsonl", [line] if i != 1 else [b"", b"[1]", line])
        inputs.append(str(tmp_path / f"d{i}.jsonl"))
    common = dict(block_size=64 * 1024, shard_max_bytes=200_000, dry_run=True)

    def shards(workers: int) -> tuple[object, ...]:
        work = tmp_path / f"w{workers}"
        bulkload.load(
            "products", inputs, work_dir=work, workers=workers, check_duplicates=True, **common
        )
        manifest = read_manifest(work)
        got = [(s["md5"], s["records"], s["sources"]) for s in manifest["shards"]]
        found = (work / "duplicates.jsonl").read_bytes()
        return got, read_rejects(work), found

    with_workers = shards(2)
    assert shards(0) == with_workers
    assert with_workers[2].count(b"\n") == 3  # one line per repeated id
    result = bulkload.load(
        "products", inputs, api_key=API_KEY, base_url=emulator_thread.base_url,
        work_dir=tmp_path / "up", workers=2, block_size=64 * 1024, shard_max_bytes=200_000,
    )  # fmt: skip
    assert (result.records, result.rejected, result.exit_code) == (4003, 3, 3)
    assert_exactly_once(emulator_thread, good + dups)


def test_a_line_without_end_stops_workers_with_its_line_number(tmp_path: Path) -> None:
    """A "line" over the limit (64 MiB here) is a file that is not JSONL. The worker that
    meets it counts lines from its own range; the message still has the file's line number.
    (The reader thread's version of this is in test_sources.)"""
    src = tmp_path / "in.jsonl"
    with src.open("wb") as f:
        f.write(b"".join(record(i) + b"\n" for i in range(3000)))
        f.write(b'{"id":"x","blob":"' + b"x" * (65 << 20))
    with pytest.raises(
        bulkload.SourceError, match=r"in\.jsonl: line 3,001 is longer than 67,108,864 bytes"
    ):
        bulkload.load("products", [str(src)], work_dir=tmp_path / "w", dry_run=True,
                      workers=2, block_size=64 * 1024, shard_max_bytes=1 << 20)  # fmt: skip


def _load_in_daemon(path: str, work: str, out: Any) -> None:
    result = bulkload.load("products", [path], work_dir=work, dry_run=True, workers=2)
    out.put(result.records)


def test_a_daemonic_process_validates_in_itself(tmp_path: Path) -> None:
    """A daemonic process (a Dask worker, say) may not start processes: --workers is then
    ignored with a warning rather than failing the load."""
    src = write_lines(tmp_path / "in.jsonl", [record(i) for i in range(500)])
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(
        target=_load_in_daemon, args=(str(src), str(tmp_path / "w"), out), daemon=True
    )
    proc.start()
    try:
        assert out.get(timeout=60) == 500
    finally:
        proc.join(timeout=60)
    assert proc.exitcode == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_a_named_pipe_is_read_once_and_copied(
    emulator_thread: EmulatorThread, tmp_path: Path, workers: int
) -> None:
    """A pipe given as a file name (``<(zcat x.gz)``, a FIFO) cannot be read twice: its
    records go into shard files, never sent "in place" from the pipe."""
    lines = [record(i) for i in range(3000)]
    fifo = tmp_path / "in.jsonl"
    os.mkfifo(fifo)

    def feed() -> None:
        with fifo.open("wb") as f:
            f.write(b"".join(line + b"\n" for line in lines))

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        result = bulkload.load(
            "products", [str(fifo)], api_key=API_KEY, base_url=emulator_thread.base_url,
            work_dir=tmp_path / "w", workers=workers, shard_max_records=1000,
        )  # fmt: skip
    finally:
        writer.join()
    assert (result.records, result.uploaded, result.exit_code) == (3000, 3, 0)
    assert_exactly_once(emulator_thread, lines)


def test_small_and_large_pieces_in_one_shard_arrive_intact(
    emulator_thread: EmulatorThread, tmp_path: Path
) -> None:
    """Small files' pieces are read in groups, a large one in slices; one shard mixing
    them arrives byte for byte (the emulator's ETag is the MD5 of what it received)."""
    (tmp_path / "in").mkdir()
    expected: list[bytes] = []
    n = 0
    for f, count in enumerate([1] * 40 + [6000] + [3] * 40):  # file 40 is ~2.5 MB
        lines = [record(n + i, pad="z" * (i % 700)) for i in range(count)]
        n += count
        expected += lines
        write_lines(tmp_path / "in" / f"part-{f:03d}.jsonl", lines)
    result = bulkload.load(
        "products", [str(tmp_path / "in")], api_key=API_KEY, base_url=emulator_thread.base_url,
        work_dir=tmp_path / "w", workers=0,
    )  # fmt: skip
    manifest = read_manifest(tmp_path / "w")
    assert (result.uploaded, result.exit_code, len(manifest["shards"])) == (1, 0, 1)
    assert_exactly_once(emulator_thread, expected)


def test_an_unguarded_script_asking_for_workers_still_loads(tmp_path: Path) -> None:
    """Worker processes import the main script; one without `if __name__ == "__main__":`
    makes them fail to start. The load then runs without them, and says why."""
    write_lines(tmp_path / "in.jsonl", [record(i) for i in range(500)])
    script = tmp_path / "script.py"
    script.write_text(
        "import bulkload\n"
        "r = bulkload.load('products', ['in.jsonl'], work_dir='w', dry_run=True, workers=2)\n"
        "print('records', r.records)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip().splitlines()[-1] == "records 500"
    assert "worker processes could not start" in done.stderr.decode()
    assert "if __name__ == '__main__':" in done.stderr.decode()
