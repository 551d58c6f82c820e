"""The input side at its edges: a full disk, wrong kinds of files, inputs that change while
they are read, lines far longer than a shard, rows from a database cursor, nested ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulkload import cli


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
