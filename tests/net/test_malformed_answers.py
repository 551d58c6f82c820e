"""Malformed answers from the API — a proxy's HTML page with status 200, JSON cut short, a body
shorter than its Content-Length, an empty body, an array, missing or null fields, a relative
upload URL, an expiry that does not parse — are a shard's problem, not the run's; and cut or
stalled results downloads are retried until the file is whole. No traceback anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import API_KEY
from helpers import assert_exactly_once, read_manifest, record, write_lines

import bulkload
from bulkload import cli
from bulkload.emulator import Emulator, EmulatorThread
from bulkload.emulator._faults import IMPORT_MALFORMED_SHAPES, STATUS_MALFORMED_SHAPES

N = 500


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFETYKIT_API_KEY", API_KEY)


def lines() -> list[bytes]:
    return [record(i) for i in range(N)]


def loader(emu: Emulator, tmp_path: Path, **options: object) -> bulkload.Loader:
    settings: dict[str, object] = {"shard_max_records": 100, "max_retries": 2, **options}
    return bulkload.Loader(
        "products", api_key=API_KEY, base_url=emu.base_url, work_dir=tmp_path / "w", **settings
    )


@pytest.mark.parametrize("shape", IMPORT_MALFORMED_SHAPES)
async def test_each_malformed_import_answer_is_retried_and_nothing_is_lost(
    emulator: Emulator, tmp_path: Path, shape: str
) -> None:
    src = write_lines(tmp_path / "in.jsonl", lines())
    emulator.set_faults(import_malformed_first_n=2, import_malformed_shape=shape)
    async with loader(emulator, tmp_path) as ld:
        result = await ld.load([str(src)])
    assert result.exit_code == 0 and result.uploaded == 5
    assert emulator.counters()["import"].get(f"malformed:{shape}") == 2
    assert_exactly_once(emulator, lines())
    # Every stored object is owned by a request the manifest knows.
    known = {s["request_id"] for s in read_manifest(tmp_path / "w")["shards"]}
    assert {rid for rid, _ in emulator.stored_objects()} == known


async def test_a_shard_whose_calls_keep_getting_bad_answers_fails_and_the_rest_goes_on(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Once the API has answered the run properly, a call that keeps getting a proxy's
    page costs its shard (exit 4), described; the other shards go up."""
    src = write_lines(tmp_path / "in.jsonl", lines())
    armed = False

    def after_first_upload() -> None:
        nonlocal armed
        if not armed and emulator.counters()["put"].get("200", 0) >= 1:
            armed = True  # the next shard's three attempts get the HTML page
            emulator.set_faults(import_malformed_first_n=3, import_malformed_shape="html")

    emulator.add_listener(after_first_upload)
    async with loader(emulator, tmp_path, upload_concurrency=1) as ld:
        result = await ld.load([str(src)])
    assert result.exit_code == 4
    assert (result.uploaded, result.failed, result.failed_shards) == (4, 1, (1,))
    error = read_manifest(tmp_path / "w")["shards"][1]["error"]
    assert "failed after 3 attempts" in error
    assert "HTTP 200, text/html" in error and "502 Bad Gateway" in error
    assert "not SafetyKit's" in error
    # A rerun sends the failed shard, once.
    async with loader(emulator, tmp_path, upload_concurrency=1) as ld:
        again = await ld.load([str(src)])
    assert again.exit_code == 0 and again.skipped == 4
    assert_exactly_once(emulator, lines())


def test_when_the_first_calls_all_get_a_web_page_the_run_stops_with_exit_1(
    emulator_thread: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emulator_thread.set_faults(import_malformed_rate=1.0, import_malformed_shape="html")
    src = write_lines(tmp_path / "in.jsonl", lines())
    argv = ["load", "products", str(src), "--work-dir", str(tmp_path / "w"), "--base-url",
            emulator_thread.base_url, "--max-retries", "1", "--quiet"]  # fmt: skip
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("bulkload: error:")]
    assert "POST /v1/data/products/import failed after 2 attempts" in line
    assert "HTTP 200, text/html" in line and "<!DOCTYPE html>" in line
    assert "--base-url" in line and "API root" in line


@pytest.mark.parametrize("shape", STATUS_MALFORMED_SHAPES)
def test_status_and_wait_retry_malformed_answers(
    emulator_thread: EmulatorThread,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    shape: str,
) -> None:
    emu = emulator_thread
    src = write_lines(tmp_path / "in.jsonl", lines())
    base = ["--base-url", emu.base_url, "--quiet"]
    argv = ["load", "products", str(src), "--work-dir", str(tmp_path / "w"), *base,
            "--shard-records", "100"]  # fmt: skip
    assert cli.main(argv) == 0
    emu.set_faults(status_malformed_first_n=3, status_malformed_shape=shape)
    capsys.readouterr()
    assert cli.main(["status", str(tmp_path / "w"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["statuses"] == {"succeeded": 5}
    emu.set_faults(status_malformed_first_n=3, status_malformed_shape=shape)
    code = cli.main(["wait", str(tmp_path / "w"), "--json", "--results", str(tmp_path / "r")])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["objects"] == N


async def test_a_request_whose_status_cannot_be_had_is_named_and_the_others_are_followed(
    emulator: Emulator, tmp_path: Path
) -> None:
    src = write_lines(tmp_path / "in.jsonl", lines())
    async with loader(emulator, tmp_path) as ld:
        assert (await ld.load([str(src)])).exit_code == 0
    armed = False

    def after_first_answer() -> None:
        nonlocal armed
        if not armed and emulator.counters()["status"].get("200", 0) >= 1:
            armed = True  # every attempt of the next request gets an empty body
            emulator.set_faults(status_malformed_first_n=3, status_malformed_shape="empty")

    emulator.add_listener(after_first_answer)
    follower = bulkload.Follower(tmp_path / "w", api_key=API_KEY, concurrency=1, max_retries=2)
    async with follower:
        result = await follower.status()
    assert result.status_exit_code == 1
    assert result.statuses == {"succeeded": 4, "unknown": 1}
    (error,) = result.errors
    assert error.startswith("shard 1: status of req_") and "an empty body" in error
    async with bulkload.Follower(tmp_path / "w", api_key=API_KEY) as follower:
        waited = await follower.wait()
    assert waited.exit_code == 0 and waited.succeeded == 5, "asked again, all is known"


def test_cut_and_stalled_results_downloads_are_retried_until_whole(
    emulator_thread: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emu = emulator_thread
    src = write_lines(tmp_path / "in.jsonl", lines())
    argv = ["load", "products", str(src), "--work-dir", str(tmp_path / "w"), "--base-url",
            emu.base_url, "--quiet", "--shard-records", "100"]  # fmt: skip
    assert cli.main(argv) == 0
    emu.set_faults(results_cut_first_n=2, results_stall_first_n=1, hang_s=30)
    results = tmp_path / "r"
    capsys.readouterr()
    code = cli.main(["wait", str(tmp_path / "w"), "--json", "--results", str(results),
                     "--http-timeout", "1"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["errors"] == [] and out["mismatches"] == []
    assert emu.counters()["results"].get("cut") == 2
    assert emu.counters()["results"].get("stalled") == 1
    files = sorted(results.glob("req_*.jsonl"))
    assert len(files) == 5 and all(f.read_bytes().count(b"\n") == 100 for f in files)
    assert not list(results.glob("*.part")), "no partial file is left behind"
    assert len((results / "results.jsonl").read_bytes().splitlines()) == N


def test_a_download_that_never_completes_is_named_not_a_traceback(
    emulator_thread: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emu = emulator_thread
    src = write_lines(tmp_path / "in.jsonl", lines()[:100])
    argv = ["load", "products", str(src), "--work-dir", str(tmp_path / "w"), "--base-url",
            emu.base_url, "--quiet"]  # fmt: skip
    assert cli.main(argv) == 0
    emu.set_faults(results_cut_rate=1.0)
    capsys.readouterr()
    code = cli.main(["wait", str(tmp_path / "w"), "--results", str(tmp_path / "r"),
                     "--max-retries", "1"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    assert "results of req_" in captured.out and "not downloaded" in captured.out
    assert "it ended after" in captured.out or "dropped" in captured.out
    assert not list((tmp_path / "r").glob("*.part"))
