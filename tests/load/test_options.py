"""Options for real exports and shared links: duplicates, --wait, bandwidth, disk, warnings."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import orjson
import pytest
from conftest import API_KEY
from helpers import assert_exactly_once, read_manifest, record, write_lines

import bulkload
from bulkload import cli
from bulkload.emulator import EmulatorThread


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFETYKIT_API_KEY", API_KEY)


def test_check_duplicates_lists_every_repeated_id_with_its_lines(tmp_path: Path) -> None:
    a = [record(i) for i in range(300)]
    a.insert(50, record(7, title="again"))  # line 51 repeats p-000007 (line 8)
    b = [record(i) for i in range(1000, 1100)] + [record(299)]  # b line 101 repeats a's
    write_lines(tmp_path / "a.jsonl", a)
    write_lines(tmp_path / "b.jsonl", b)
    result = bulkload.load(
        "products",
        [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")],
        work_dir=tmp_path / "w",
        dry_run=True,
        check_duplicates=True,
        shard_max_records=64,
    )
    assert result.duplicate_ids == 2
    found = {
        d["id"]: d["occurrences"]
        for d in map(orjson.loads, (tmp_path / "w" / "duplicates.jsonl").read_bytes().splitlines())
    }
    a_path, b_path = str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")
    assert found == {
        "p-000007": [{"source": a_path, "line": 8}, {"source": a_path, "line": 51}],
        "p-000299": [{"source": a_path, "line": 301}, {"source": b_path, "line": 101}],
    }
    assert read_manifest(tmp_path / "w")["totals"]["duplicate_ids"] == 2
    assert not (tmp_path / "w" / "state" / "duplicates").exists(), "spill files are removed"


def test_load_wait_results_in_one_command(
    emulator_thread: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_lines(tmp_path / "in.jsonl", [record(i) for i in range(250)] + [b"[]"])
    code = cli.main(
        ["load", "products", str(src), "--work-dir", str(tmp_path / "w"), "--quiet", "--json",
         "--base-url", emulator_thread.base_url, "--shard-records", "100",
         "--wait", "--results", str(tmp_path / "results")]
    )  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert code == 3, "every request succeeded; one line was rejected"
    assert summary["wait"]["succeeded"] == 3 and summary["wait"]["objects"] == 250
    assert len((tmp_path / "results" / "results.jsonl").read_bytes().splitlines()) == 250


def test_max_bandwidth_paces_uploads(emulator_thread: EmulatorThread, tmp_path: Path) -> None:
    lines = [record(i, pad="z" * 500) for i in range(10000)]  # ~5.6 MB
    src = write_lines(tmp_path / "in.jsonl", lines)
    size = src.stat().st_size
    rate = 5e6
    started = time.monotonic()
    result = bulkload.load(
        "products", [str(src)], api_key=API_KEY, base_url=emulator_thread.base_url,
        work_dir=tmp_path / "w", max_bandwidth=rate, shard_max_records=1000,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.exit_code == 0
    assert_exactly_once(emulator_thread, lines)
    # A lower bound only: the cap may never be beaten. Allowance: a 1 MiB burst, and the
    # last slice, which is paid for before it is sent.
    assert elapsed >= (size - 2 * (1 << 20)) / rate


def test_full_disk_while_writing_shards_stops_cleanly(
    emulator_thread: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real ENOSPC: the shard file is /dev/full. The run stops with one clear message,
    the manifest stays valid, and a rerun with room completes."""
    lines = [record(i) + b"\r" for i in range(200)]  # CRLF: shards must be copied to disk
    src = write_lines(tmp_path / "in.jsonl", lines)
    work = tmp_path / "w"
    (work / "shards").mkdir(parents=True)
    os.symlink("/dev/full", work / "shards" / "shard-000000.jsonl.partial")
    argv = ["load", "products", str(src), "--work-dir", str(work), "--quiet",
            "--base-url", emulator_thread.base_url]  # fmt: skip
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "disk filled up" in err and "rerun to resume" in err and "Traceback" not in err
    read_manifest(work)  # still valid JSON
    (work / "shards" / "shard-000000.jsonl.partial").unlink(missing_ok=True)
    assert cli.main(argv) == 0
    assert_exactly_once(emulator_thread, [record(i) for i in range(200)])


def test_plain_http_to_a_remote_host_warns(caplog: pytest.LogCaptureFixture) -> None:
    async def open_close() -> None:
        async with bulkload.Loader("products", api_key="k", base_url="http://api.example.com"):
            pass

    with caplog.at_level(logging.WARNING, logger="bulkload"):
        bulkload._runtime.run_async(open_close())
    assert any("unencrypted" in r.getMessage() for r in caplog.records)
    assert all(r.getMessage() != "k" for r in caplog.records)


def test_repr_never_shows_the_key() -> None:
    loader = bulkload.Loader("products", api_key="sk-very-secret", base_url="https://x.test")
    assert "sk-very-secret" not in repr(loader)
    assert "sk-very-secret" not in repr(vars(loader))


def test_tls_is_verified_and_ca_bundle_trusts_a_private_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The emulator over HTTPS with a certificate from a private CA: refused by default
    (verification is on), accepted with --ca-bundle, and every record arrives."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = __import__("ssl").create_default_context(__import__("ssl").Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    lines = [record(i) for i in range(100)]
    src = write_lines(tmp_path / "in.jsonl", lines)
    with EmulatorThread(api_key=API_KEY, ssl_context=server_ctx) as emu:
        assert emu.base_url.startswith("https://")
        argv = ["load", "products", str(src), "--quiet", "--base-url", emu.base_url,
                "--max-retries", "0"]  # fmt: skip
        assert cli.main([*argv, "--work-dir", str(tmp_path / "w1")]) == 1
        err = capsys.readouterr().err
        assert "CERTIFICATE_VERIFY_FAILED" in err and "--ca-bundle" in err, err
        assert (
            cli.main([*argv, "--work-dir", str(tmp_path / "w2"), "--ca-bundle", str(bundle)]) == 0
        )
        assert_exactly_once(emu, lines)


def test_max_rejects_stops_the_run_with_exit_1(
    emulator_thread: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [record(i) for i in range(100)]
    for at in (10, 20, 30):
        lines.insert(at, b"{not json")
    src = write_lines(tmp_path / "in.jsonl", lines)
    argv = ["load", "products", str(src), "--quiet", "--base-url", emulator_thread.base_url]
    assert cli.main([*argv, "--work-dir", str(tmp_path / "w1"), "--max-rejects", "2"]) == 1
    err = capsys.readouterr().err
    assert "more than 2 lines rejected" in err and "--max-rejects" in err
    read_manifest(tmp_path / "w1")  # valid after the stop
    # At the limit, the run goes through: exit 3 (rejects), every valid record uploaded.
    assert cli.main([*argv, "--work-dir", str(tmp_path / "w2"), "--max-rejects", "3"]) == 3
    assert_exactly_once(emulator_thread, [record(i) for i in range(100)])


def test_key_file_and_base_url_from_the_environment(
    emulator_thread: EmulatorThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("SAFETYKIT_API_KEY")
    monkeypatch.setenv("SAFETYKIT_BASE_URL", emulator_thread.base_url)
    src = write_lines(tmp_path / "in.jsonl", [record(i) for i in range(10)])
    argv = ["load", "products", str(src), "--quiet", "--work-dir", str(tmp_path / "w")]
    assert cli.main(argv) == 1
    assert "no API key" in capsys.readouterr().err
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY + "\n")
    assert cli.main([*argv, "--api-key-file", str(key_file)]) == 0
    assert_exactly_once(emulator_thread, [record(i) for i in range(10)])
    # status and wait find the base URL in the manifest, and the key in the same file.
    monkeypatch.delenv("SAFETYKIT_BASE_URL")
    assert cli.main(["wait", str(tmp_path / "w"), "--api-key-file", str(key_file), "-q"]) == 0
    assert API_KEY not in capsys.readouterr().out


def test_the_text_summary_says_what_happened_and_what_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_lines(tmp_path / "in.jsonl", [record(1), record(1), b"[]", b""])
    work = tmp_path / "w"
    argv = ["load", "products", str(src), "--dry-run", "--check-duplicates", "--quiet"]
    assert cli.main([*argv, "--work-dir", str(work)]) == 3
    out = capsys.readouterr().out
    assert "lines 4: 2 records, 1 rejected, 1 blank" in out
    assert f"rejects:  {work / 'rejects.jsonl'}" in out
    assert f"duplicates: 1 ids seen more than once, listed with their lines in {work}" in out
    assert "next: run again without --dry-run to upload" in out
