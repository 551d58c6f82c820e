"""What a person reads at the end of a load: what happened, in words, and what to do next."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulkload import cli


def test_a_file_of_the_wrong_kind_is_named_not_loaded_0_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pretty = tmp_path / "export.jsonl"
    pretty.write_bytes(b'{\n  "id": "a",\n  "price": 1\n}\n{\n  "id": "b"\n}\n')
    argv = ["load", "products", str(pretty), "--dry-run", "--work-dir", str(tmp_path / "w")]
    assert cli.main([*argv, "--quiet"]) == 3
    out = capsys.readouterr().out
    assert out.startswith("bulkload: nothing to load into products: every one of 7 lines")
    assert f"note: {pretty}: all 7 lines were rejected; it looks like pretty-printed JSON" in out
    assert "bulkload wait" not in out and "loaded 0 records" not in out
    assert "next: fix the inputs" in out
