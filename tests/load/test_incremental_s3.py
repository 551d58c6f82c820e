"""Scheduled loads over ``s3://`` (moto's server on loopback): a file's identity is the
store's listing (size, ETag), so objects loaded before are skipped without being read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import API_KEY
from helpers import assert_exactly_once, record

from bulkload import cli
from bulkload.emulator import EmulatorThread

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

from inputs.test_remote import BUCKET, put, s3, s3_endpoint  # noqa: F401 (fixtures)


def night(emu: EmulatorThread, work: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    argv = ["load", "products", f"s3://{BUCKET}/exports/**/*.jsonl", "--work-dir", str(work),
            "--base-url", emu.base_url, "--shard-records", "100", "--incremental", "--ledger",
            str(work.parent / "ledger.sqlite"), "--quiet", "--json"]  # fmt: skip
    assert cli.main(argv) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


def test_three_nights_over_s3_skip_old_objects_unread(
    emulator_thread: EmulatorThread,
    s3: Any,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SAFETYKIT_API_KEY", API_KEY)
    emu, work = emulator_thread, tmp_path / "work"

    def body(lines: list[bytes]) -> int:
        return sum(len(line) + 1 for line in lines)

    a = [record(i) for i in range(0, 300)]
    b = [record(i, v=1) for i in range(300, 500)]
    put(s3, "exports/2026-11-27/a.jsonl", a)
    put(s3, "exports/2026-11-27/b.jsonl", b)
    first = night(emu, work, capsys)
    assert first["ledger"]["reasons"] == {"new": 2}
    assert first["bytes_read"] == body(a) + body(b)
    assert_exactly_once(emu, a + b)

    c = [record(i) for i in range(500, 620)]
    put(s3, "exports/2026-11-28/c.jsonl", c)
    second = night(emu, work, capsys)
    assert second["ledger"]["reasons"] == {"loaded": 2, "new": 1}
    # Only the new object was read: the others were judged by their listing alone.
    assert second["bytes_read"] == body(c)
    assert_exactly_once(emu, a + b + c)

    # b re-exported with the same size and other bytes: its ETag tells.
    b2 = [record(i, v=2) for i in range(300, 500)]
    assert body(b2) == body(b)
    put(s3, "exports/2026-11-27/b.jsonl", b2)
    s3.delete_object(Bucket=BUCKET, Key="exports/2026-11-27/a.jsonl")
    third = night(emu, work, capsys)
    reasons = {
        Path(d["path"]).name: (d["reason"], d["detail"]) for d in third["ledger"]["decisions"]
    }
    assert set(reasons) == {"b.jsonl", "c.jsonl"}
    assert reasons["c.jsonl"][0] == "loaded"
    assert reasons["b.jsonl"][0] == "changed" and "etag" in reasons["b.jsonl"][1].lower()
    assert third["bytes_read"] == body(b2)
    assert_exactly_once(emu, a + b + c + b2)
