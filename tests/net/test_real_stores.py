"""bulkload against the way real object stores answer: opaque ETags (SSE-KMS, DSSE, SSE-C,
S3-compatible stores), bodies damaged on the way, and SigV4 URLs that must go out byte for
byte. The emulator verifies every PUT's signature as S3 does, with a session token full of
``+``, ``/`` and ``=``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from conftest import API_KEY
from helpers import assert_exactly_once, read_manifest, record, write_lines

from bulkload import cli
from bulkload.emulator import EmulatorThread

N = 450  # 5 shards of 100, the last one short


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFETYKIT_API_KEY", API_KEY)


def lines() -> list[bytes]:
    return [record(i) for i in range(N)]


def load(emu: EmulatorThread, tmp_path: Path, *extra: str) -> tuple[int, dict]:
    src = tmp_path / "in.jsonl"
    if not src.exists():
        write_lines(src, lines())
    argv = ["load", "products", str(src), "--work-dir", str(tmp_path / "w"), "--base-url",
            emu.base_url, "--shard-records", "100", "--quiet", "--json", "--max-retries", "2",
            *extra]  # fmt: skip
    return cli.main(argv), {}


def summary(capsys: pytest.CaptureFixture[str]) -> dict:
    out: dict = json.loads(capsys.readouterr().out)
    return out


@pytest.mark.parametrize(
    ("mode", "why"),
    [
        ("sse-kms", "SSE-KMS (aws:kms)"),
        ("sse-kms-dsse", "SSE-KMS (aws:kms:dsse)"),
        ("sse-c", "SSE-C (AES256)"),
    ],
)
def test_a_bucket_whose_etags_are_not_md5s_loads_with_one_put_per_shard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: str, why: str
) -> None:
    with EmulatorThread(api_key=API_KEY, etag_mode=mode) as emu:
        code, _ = load(emu, tmp_path)
        result = summary(capsys)
        assert code == 0 and result["uploaded"] == 5
        assert_exactly_once(emu, lines())
        assert len(emu.put_log()) == 5, "one PUT per shard: nothing retried"
        etags = {r.etag for r in emu.requests()}
    shards = read_manifest(tmp_path / "w")["shards"]
    assert all(s["etag_verified"] is False for s in shards)
    assert all(why in s["etag_note"] and "not an MD5" in s["etag_note"] for s in shards)
    assert {s["etag"] for s in shards} == etags, "the store's own ETags are recorded"
    assert result["etag_unverified"] == 5 and len(result["etag_notes"]) == 1


def etag_notes(tmp_path: Path, capsys: pytest.CaptureFixture[str], **emulator: Any) -> list[str]:
    """The summary's lines about ETags after a CLI load of 5 shards into such an emulator."""
    with EmulatorThread(api_key=API_KEY, **emulator) as emu:
        src = write_lines(tmp_path / "in.jsonl", lines())
        argv = ["load", "products", str(src), "--work-dir", str(tmp_path / "w"),
                "--base-url", emu.base_url, "--shard-records", "100", "--quiet"]  # fmt: skip
        assert cli.main(argv) == 0
    out = capsys.readouterr().out
    return [line for line in out.splitlines() if "could not be checked byte for byte" in line]


def test_the_summary_says_once_what_protects_data_the_etag_cannot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = etag_notes(tmp_path, capsys, etag_mode="sse-kms")
    assert len(notes) == 1
    assert "5 uploaded shard(s)" in notes[0] and "SSE-KMS (aws:kms)" in notes[0]
    assert "Content-Length" in notes[0] and "TLS" in notes[0] and "wait --results" in notes[0]


def test_opaque_etags_that_differ_per_object_are_one_reason_in_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store whose ETags are not hex at all (the sink answers ``"discarded-<size>"``, as
    GCS-style and multipart ETags differ per object): one reason, with one example ETag,
    not one per shard; the manifest keeps each shard's own."""
    notes = etag_notes(tmp_path, capsys, discard_bodies=True)
    assert len(notes) == 1 and "5 uploaded shard(s)" in notes[0]
    assert notes[0].count("is not an MD5") == 1, notes[0]
    shards = read_manifest(tmp_path / "w")["shards"]
    assert all(s["etag"][:40] in s["etag_note"] for s in shards), "each note names its ETag"
    assert len({s["etag"] for s in shards}) > 1


def test_md5_etags_are_still_checked_and_damage_is_retried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with EmulatorThread(api_key=API_KEY) as emu:
        emu.set_faults(put_damage_first_n=2)
        code, _ = load(emu, tmp_path)
        result = summary(capsys)
        assert code == 0
        assert_exactly_once(emu, lines())
        damaged = [p for p in emu.put_log() if p.damaged]
        assert len(damaged) == 2 and len(emu.put_log()) == 7, "each damaged body sent again"
    shards = read_manifest(tmp_path / "w")["shards"]
    assert all(s["etag_verified"] is True and s["etag"] == s["md5"] for s in shards)
    assert result["etag_unverified"] == 0


def test_damage_that_persists_fails_the_shard_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with EmulatorThread(api_key=API_KEY) as emu:
        emu.set_faults(put_damage_rate=1.0)
        code, _ = load(emu, tmp_path)
        result = summary(capsys)
    assert code == 4 and result["failed"] == 5
    error = read_manifest(tmp_path / "w")["shards"][0]["error"]
    assert "is not the shard's MD5" in error and "damaged on the way" in error
    assert "--no-etag-check" in error, "the way out for stores whose ETags are never MD5s"


def test_a_store_with_opaque_etags_and_no_sse_headers_needs_no_etag_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with EmulatorThread(api_key=API_KEY, etag_mode="opaque") as emu:
        code, _ = load(emu, tmp_path)
        assert code == 4, "without SSE headers a 32-hex ETag is taken for an MD5"
        capsys.readouterr()
        code, _ = load(emu, tmp_path, "--no-etag-check")
        result = summary(capsys)
        assert code == 0 and result["uploaded"] == 5
        assert_exactly_once(emu, lines())
    shards = read_manifest(tmp_path / "w")["shards"]
    assert all(s["etag_verified"] is False for s in shards)
    assert all(s["etag_note"] == "the ETag check is turned off" for s in shards)


def test_puts_send_the_issued_url_byte_for_byte_and_only_the_documented_headers(
    emulator_thread: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emu = emulator_thread
    token = emu.aws_session_token or ""
    assert {"+", "/", "="} <= set(token), "the default session token exercises quoting"
    code, _ = load(emu, tmp_path)
    assert code == 0
    journal = (tmp_path / "w/state/journal.jsonl").read_bytes().splitlines()
    issued = {}
    for raw in journal:
        event = orjson.loads(raw)
        if event["t"] == "ticket":
            parts = urlsplit(event["upload_url"])
            issued[event["request_id"]] = f"{parts.path}?{parts.query}"
    puts = emu.put_log()
    assert len(puts) == 5
    for put in puts:
        assert put.outcome == "200"
        assert put.raw_target == issued[put.request_id], "not re-quoted on the way"
        assert "%2B" in put.raw_target and "%2F" in put.raw_target
        assert put.content_type == "application/json"
        assert put.content_length is not None and put.content_length > 0
        assert "content-md5" not in put.header_names, "SigV2 and GCS V2 URLs sign it"
        assert "transfer-encoding" not in put.header_names
        assert not [h for h in put.header_names if h.startswith("x-amz-")]


def test_content_md5_makes_an_sse_kms_store_prove_the_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Opt-in: with --content-md5 the store checks each body itself, so a damaged one is
    refused (nothing stored) and sent again, even where the ETag proves nothing."""
    with EmulatorThread(api_key=API_KEY, etag_mode="sse-kms") as emu:
        emu.set_faults(put_damage_first_n=1)
        code, _ = load(emu, tmp_path, "--content-md5")
        result = summary(capsys)
        assert code == 0 and result["etag_unverified"] == 0
        assert_exactly_once(emu, lines())
        refused = [p for p in emu.put_log() if p.error_code == "BadDigest"]
        assert len(refused) == 1 and refused[0].damaged
        assert all("content-md5" in p.header_names for p in emu.put_log())
    shards = read_manifest(tmp_path / "w")["shards"]
    assert all(s["etag_verified"] is True for s in shards)
    assert all(
        s["etag_note"].startswith("checked by the store against Content-MD5") for s in shards
    )
