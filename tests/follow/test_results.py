"""`wait` and results, honestly: sources found from anywhere (or named when they cannot be),
each occurrence of a repeated id joined to its own line, the server's line numbers turned into
source lines, and a way to send a failed request's records again."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from conftest import API_KEY
from helpers import read_manifest, record, write_lines

from bulkload import cli
from bulkload.emulator import EmulatorThread


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFETYKIT_API_KEY", API_KEY)


def load(emu: EmulatorThread, inputs: list[str], work: Path, *extra: str) -> int:
    return cli.main(["load", "products", *inputs, "--work-dir", str(work), "--base-url",
                     emu.base_url, "--shard-records", "100", "--quiet", *extra])  # fmt: skip


def wait_json(work: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = cli.main(["wait", str(work), "--quiet", "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


def joined(results: Path) -> list[dict]:
    return [orjson.loads(x) for x in (results / "results.jsonl").read_bytes().splitlines()]


def test_wait_from_another_directory_finds_relative_sources(
    emulator_thread: EmulatorThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    write_lines(project / "in.jsonl", [record(i) for i in range(250)])
    monkeypatch.chdir(project)
    assert load(emulator_thread, ["in.jsonl"], project / "w") == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, summary = wait_json(project / "w", capsys, "--results", "out")
    assert code == 0 and summary["mismatches"] == [] and summary["unchecked"] == []
    rows = joined(elsewhere / "out")
    assert len(rows) == 250
    assert all(r["source"] == "in.jsonl" for r in rows), "the path exactly as given"
    assert {r["id"]: r["line"] for r in rows}["p-000123"] == 124


def test_wait_names_a_source_it_cannot_read_and_claims_nothing_about_it(
    emulator_thread: EmulatorThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    write_lines(tmp_path / "gone.jsonl", [record(i) for i in range(150)])
    assert load(emulator_thread, ["gone.jsonl"], tmp_path / "w") == 0
    (tmp_path / "gone.jsonl").unlink()
    code, summary = wait_json(tmp_path / "w", capsys, "--results", "out")
    assert code == 0
    assert summary["mismatches"] == [], "no 'did not send' for ids it could not check"
    assert len(summary["unchecked"]) == 1
    note = summary["unchecked"][0]
    assert note.startswith("gone.jsonl: not found from") and "not checked" in note
    assert all(r["source"] is None for r in joined(tmp_path / "out"))
    cli.main(["wait", str(tmp_path / "w"), "--results", "out", "--quiet"])
    assert "not checked: gone.jsonl" in capsys.readouterr().out


def test_an_id_repeated_in_one_shard_is_joined_to_each_of_its_lines(
    emulator_thread: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [record(i) for i in range(50)]
    lines[30] = orjson.dumps({"id": "p-000010", "title": "again"})  # line 31 repeats line 11
    src = write_lines(tmp_path / "in.jsonl", lines)
    assert load(emulator_thread, [str(src)], tmp_path / "w") == 0
    code, summary = wait_json(tmp_path / "w", capsys, "--results", str(tmp_path / "out"))
    assert code == 0
    assert summary["mismatches"] == []
    places = sorted(r["line"] for r in joined(tmp_path / "out") if r["id"] == "p-000010")
    assert places == [11, 31]


def test_failed_requests_name_source_lines_and_can_be_sent_again(
    emulator_thread: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emu = emulator_thread
    lines = [record(i) for i in range(300)]
    lines.insert(120, b"")  # a blank line and a reject before the failing record shift
    lines.insert(121, b'{"id": 5}')  # shard lines against source lines
    src = write_lines(tmp_path / "in.jsonl", lines)
    work = tmp_path / "w"
    assert load(emu, [str(src)], work) == 3
    emu.set_faults(fail_ids={"p-000150"})
    code, summary = wait_json(work, capsys)
    assert code == 4
    (failure,) = summary["failures"]
    # p-000150 is the 51st record of shard 1 (records 100-199), on source line 153.
    assert failure["lines"] == [{"shard_line": 51, "id": "p-000150", "path": str(src), "line": 153}]
    assert f"line 51 ({src} line 153)" in failure["error_summary"]
    assert "--resend-failed" in summary["resend_command"]
    assert f"--work-dir {work}" in summary["resend_command"]
    # The server is fixed; the command the summary gave sends that shard again.
    emu.set_faults(fail_ids=set())
    before = {s["index"]: s["request_id"] for s in read_manifest(work)["shards"]}
    capsys.readouterr()
    assert load(emu, [str(src)], work, "--resend-failed", "--json") == 3
    loaded = json.loads(capsys.readouterr().out)
    assert (loaded["resent"], loaded["uploaded"], loaded["skipped"]) == (1, 3, 2)
    shards = {s["index"]: s for s in read_manifest(work)["shards"]}
    assert shards[1]["request_id"] != before[1]
    assert shards[1]["failed_request_ids"] == [before[1]]
    assert [shards[i]["request_id"] for i in (0, 2)] == [before[0], before[2]]
    code, summary = wait_json(work, capsys)
    assert code == 0 and summary["failed"] == 0
