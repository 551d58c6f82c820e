"""No traceback, ever: every failure is one line that says what happened and what to do, with
its exit code; a bug in bulkload itself says so, and the manifest is still flushed."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import API_KEY
from helpers import read_manifest, record, write_lines

import bulkload
from bulkload import cli
from bulkload._follow import Follower
from bulkload._load.deliver import Deliverer
from bulkload.emulator import EmulatorThread

SIGNED = "https://bucket.example/k?X-Amz-Signature=cafebabe1234"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFETYKIT_API_KEY", API_KEY)


def data(tmp_path: Path, n: int = 300) -> Path:
    return write_lines(tmp_path / "in.jsonl", [record(i) for i in range(n)])


def load_argv(emu: EmulatorThread, src: Path, work: Path, *extra: str) -> list[str]:
    return ["load", "products", str(src), "--work-dir", str(work), "--base-url", emu.base_url,
            "--shard-records", "100", "--quiet", *extra]  # fmt: skip


def assert_one_line_bug_report(err: str, doing: str) -> None:
    assert "Traceback" not in err
    line = next(x for x in err.splitlines() if x.startswith("bulkload: error:"))
    assert f"unexpected error while {doing}: RuntimeError: boom" in line
    assert "This is a bug in bulkload" in line and "-vv" in line
    assert "cafebabe1234" not in err, "the redactor sees even a bug's message"


def test_an_unexpected_error_in_load_is_one_line_exit_1_and_the_manifest_is_flushed(
    emulator_thread: EmulatorThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real = Deliverer.deliver

    async def deliver(self: Deliverer, shard: Any) -> None:
        if shard.index == 2:
            raise RuntimeError(f"boom at {SIGNED}")
        await real(self, shard)

    monkeypatch.setattr(Deliverer, "deliver", deliver)
    work = tmp_path / "w"
    src = data(tmp_path)
    code = cli.main(load_argv(emulator_thread, src, work, "--concurrency", "1"))
    assert code == 1
    assert_one_line_bug_report(capsys.readouterr().err, "loading products")
    manifest = read_manifest(work)
    statuses = {s["index"]: s["status"] for s in manifest["shards"]}
    assert statuses[0] == statuses[1] == "uploaded", "what was done is recorded"
    assert manifest["finished_at"] is None
    # Rerunning resumes: the two uploaded shards are skipped.
    monkeypatch.setattr(Deliverer, "deliver", real)
    assert cli.main(load_argv(emulator_thread, src, work, "--json")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["skipped"], summary["uploaded"]) == (2, 3)


def test_with_vv_the_traceback_is_printed_redacted(
    emulator_thread: EmulatorThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def deliver(self: Deliverer, shard: Any) -> None:
        raise RuntimeError(f"boom at {SIGNED}")

    monkeypatch.setattr(Deliverer, "deliver", deliver)
    code = cli.main(load_argv(emulator_thread, data(tmp_path), tmp_path / "w", "-vv"))
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" in err and "in deliver" in err
    assert "cafebabe1234" not in err


@pytest.mark.parametrize("command", ["status", "wait"])
def test_an_unexpected_error_in_status_and_wait_is_one_line_exit_1(
    emulator_thread: EmulatorThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    work = tmp_path / "w"
    assert cli.main(load_argv(emulator_thread, data(tmp_path), work)) == 0
    real = Follower._note
    calls = 0

    async def note(self: Follower, index: int, st: Any, results_file: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError(f"boom at {SIGNED}")
        return await real(self, index, st, results_file)

    monkeypatch.setattr(Follower, "_note", note)
    capsys.readouterr()
    assert cli.main([command, str(work)]) == 1
    doing = f"{'asking for the status of' if command == 'status' else 'waiting for the requests of'} {work}"
    assert_one_line_bug_report(capsys.readouterr().err, doing)
    processed = [s for s in read_manifest(work)["shards"] if "processing_status" in s]
    assert processed, "what was learnt before the error is in the manifest"


def test_status_with_the_api_unreachable_is_one_line_exit_1(
    emulator_thread: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "w"
    assert cli.main(load_argv(emulator_thread, data(tmp_path), work)) == 0
    capsys.readouterr()
    # A port nothing listens on: every call is refused.
    assert (
        cli.main(["status", str(work), "--base-url", "http://127.0.0.1:9", "--max-retries", "0"])
        == 1
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err and "ExceptionGroup" not in err and "TaskGroup" not in err
    lines = [x for x in err.splitlines() if x.startswith("bulkload: error:")]
    assert len(lines) == 1 and "failed after 1 attempts" in lines[0]
    assert "connection failed" in lines[0] and "127.0.0.1:9 is reachable" in lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["wait", "W", "--max-rps", "-5"], "--max-rps: must be a number above 0"),
        (["wait", "W", "--max-rps", "0"], "--max-rps: must be a number above 0"),
        (["status", "W", "--max-rps", "nan"], "--max-rps: must be a number above 0"),
        (["load", "p", "x", "--max-rps", "0"], "--max-rps: must be a number above 0"),
        (["load", "p", "x", "--timeout", "nan"], "--timeout: must be a finite number"),
        (["wait", "W", "--timeout", "inf"], "--timeout: must be a finite number"),
        (["load", "p", "x", "--grace", "-1"], "--grace: must be 0 or more"),
    ],
)
def test_bad_numbers_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_the_sync_load_inside_a_running_loop_says_what_to_use_instead(tmp_path: Path) -> None:
    async def main() -> None:
        bulkload.load("products", [str(data(tmp_path))], dry_run=True, work_dir=tmp_path / "w")

    with pytest.raises(bulkload.UsageError, match=r"await loader\.load"):
        asyncio.run(main())


@pytest.mark.parametrize("how", ["read-only", "under-a-file"])
def test_an_unwritable_work_dir_is_one_line_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    if how == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes everywhere")
        parent = tmp_path / "locked"
        parent.mkdir()
        parent.chmod(0o500)
    else:
        parent = tmp_path / "a-file"
        parent.write_text("not a directory")
    try:
        code = cli.main(["load", "products", str(data(tmp_path)), "--dry-run",
                         "--work-dir", str(parent / "w")])  # fmt: skip
    finally:
        if parent.is_dir():
            parent.chmod(0o700)
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "cannot write to the work dir" in err and "--work-dir" in err


def test_library_errors_name_keywords_not_flags(tmp_path: Path) -> None:
    src = data(tmp_path)
    bulkload.load("products", [str(src)], dry_run=True, work_dir=tmp_path / "w")
    with pytest.raises(bulkload.StateError) as caught:
        bulkload.load("products", [str(src)], dry_run=True, work_dir=tmp_path / "w",
                      shard_max_records=7)  # fmt: skip
    assert "restart=True" in str(caught.value) and "--restart" not in str(caught.value)
    with pytest.raises(bulkload.ConfigError, match="api_key=") as missing:
        bulkload.Loader("products", api_key="", work_dir=tmp_path / "w2")
    assert "--api-key-file" not in str(missing.value)
