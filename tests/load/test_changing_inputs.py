"""An input removed or truncated while its shards are being sent: a local problem, named as
such, not retried as a network error, and the summary says what was and was not uploaded."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from conftest import API_KEY
from helpers import read_manifest, record, write_lines

import bulkload
from bulkload.cli._summary import load_summary
from bulkload.emulator import Emulator


@pytest.mark.parametrize("change", ["truncated", "removed"])
async def test_an_input_that_changes_under_its_shards_fails_them_at_once_by_name(
    emulator: Emulator, tmp_path: Path, change: str
) -> None:
    src = write_lines(tmp_path / "in.jsonl", [record(i) for i in range(300)])
    size = src.stat().st_size
    # The first two import calls are held (each until the client gives up after its 1 s
    # timeout), so the test can change the input after the shards were planned and before
    # any byte of them is sent: it acts when the first held call ends, a second before the
    # retry's answer can come. The queue takes every shard, so reading (and its own check
    # that the file did not change while it was read) is over by then.
    emulator.set_faults(hang_first_n=2, hang_s=60)
    async with bulkload.Loader(
        "products", api_key=API_KEY, base_url=emulator.base_url, work_dir=tmp_path / "w",
        shard_max_records=100, upload_concurrency=1, queue_depth=10, timeout=1.0,
        max_retries=3,
    ) as loader:  # fmt: skip
        task = asyncio.create_task(loader.load([str(src)]))
        await emulator.wait_for(lambda: emulator.counters()["import"].get("cancelled", 0) >= 1)
        if change == "truncated":
            os.truncate(src, 1000)
        else:
            src.unlink()
        result = await task

    assert result.exit_code == 4
    assert (result.failed, result.uploaded, result.records_uploaded) == (3, 0, 0)
    assert result.restart_needed
    errors = [s["error"] for s in read_manifest(tmp_path / "w")["shards"]]
    wanted = (
        f"{src} changed during the load: it has 1,000 bytes now"
        if change == "truncated"
        else f"{src} was removed during the load"
    )
    assert all(e.startswith(wanted) and "restart" in e for e in errors), errors
    # One attempt per shard: a local problem is not retried as a network error.
    assert all(r.put_attempts <= 1 for r in emulator.requests())
    assert not emulator.stored_objects()
    summary = "\n".join(load_summary(result))
    assert "uploaded 0 of 300 records into products (0 of 3 shards); 3 shard(s) failed" in summary
    assert "--restart" in summary and "rerun the same command" not in summary
    assert size > 1000


async def test_a_change_seen_while_reading_stops_the_run_and_says_what_went_up(
    emulator: Emulator, tmp_path: Path
) -> None:
    """The reader is still handing shards over (the queue is full) when the file shrinks:
    it stops the run with a SourceError naming the file, and the error carries what had
    been uploaded before."""
    src = write_lines(tmp_path / "in.jsonl", [record(i) for i in range(300)])
    emulator.set_faults(hang_first_n=2, hang_s=60)
    async with bulkload.Loader(
        "products", api_key=API_KEY, base_url=emulator.base_url, work_dir=tmp_path / "w",
        shard_max_records=100, upload_concurrency=1, queue_depth=1, timeout=1.0,
    ) as loader:  # fmt: skip
        task = asyncio.create_task(loader.load([str(src)]))
        await emulator.wait_for(lambda: emulator.counters()["import"].get("cancelled", 0) >= 1)
        os.truncate(src, 1000)
        with pytest.raises(bulkload.SourceError, match="shrank from 15,552 to 1,000 bytes") as err:
            await task
    (note,) = err.value.__notes__
    assert note.startswith("before it stopped: 0 of ") and "shard(s) uploaded (0 records)" in note
    manifest = read_manifest(tmp_path / "w")
    assert manifest["finished_at"] is None and manifest["shards"]
