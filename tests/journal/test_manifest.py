"""manifest.json is rewritten while a load runs, but never so often that writing it becomes
the load's work: the interval grows with what the last write cost (a million inputs make a
manifest of hundreds of MB)."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from bulkload._journal import RunState, events
from bulkload._journal.state import MANIFEST, MANIFEST_SHARE

from .test_golden import GOLDEN, replay


def test_an_unforced_rewrite_waits_longer_the_more_the_last_one_cost(tmp_path: Path) -> None:
    state = replay(tmp_path, (GOLDEN / "journal.jsonl").read_bytes())
    path = tmp_path / "w" / MANIFEST
    state.write_manifest(force=True)
    first = path.stat().st_mtime_ns
    # As if that write had taken 2 s: the next unforced one may come 2 / 5 % = 40 s later.
    state._manifest_cost = 2.0
    state._last_manifest = time.monotonic() - 5.0  # 5 s ago: past the 1 s minimum
    state.dirty = True
    state.write_manifest(force=False)
    assert path.stat().st_mtime_ns == first and state.dirty, "written too soon"
    state._last_manifest = time.monotonic() - 2.0 / MANIFEST_SHARE
    state.write_manifest(force=False)
    assert not state.dirty, "due by then, and written"
    state.dirty = True
    state.write_manifest(force=True)  # the end of a run, or a follow step: at once
    assert not state.dirty
    assert isinstance(state, RunState)


def test_the_manifest_written_in_pieces_is_byte_for_byte_the_whole_dump(tmp_path: Path) -> None:
    """Written an input and a shard at a time (never held whole), the file is exactly what
    one ``orjson.dumps(manifest, OPT_INDENT_2)`` gives: for a run with inputs and shards,
    and for an empty one."""
    state = replay(tmp_path, (GOLDEN / "journal.jsonl").read_bytes())
    assert state.manifest()["inputs"] and len(state.manifest()["shards"]) == 5
    (tmp_path / "empty").mkdir()
    empty = RunState.open(tmp_path / "empty")
    for each in (state, empty):
        each.write_manifest(force=True)
        whole = orjson.dumps(each.manifest(), option=orjson.OPT_INDENT_2) + b"\n"
        assert (each.work_dir / MANIFEST).read_bytes() == whole


def test_long_lists_are_written_in_pieces_and_stay_byte_for_byte(tmp_path: Path) -> None:
    """2,500 inputs (three orjson calls of up to 1,000) and shards of many sources."""
    work = tmp_path / "w"
    work.mkdir()
    state = RunState.open(work)
    inputs = [{"path": f"in/part-{i:05d}.jsonl", "size": i, "mtime_ns": i * 7} for i in range(2500)]
    state.start(
        events.Run(
            namespace="products",
            run_id="r1",
            base_url="http://127.0.0.1:1",
            inputs=inputs,
            options={"shard_size": 1},
            cwd=str(tmp_path),
            started_at="2026-11-29T00:00:00Z",
            partition=None,
        )
    )
    for index in range(3):
        sources = [
            {"path": f"in/part-{i:05d}.jsonl", "first_line": 1, "last_line": 9}
            for i in range(index * 800, index * 800 + 800)
        ]
        state.record(
            events.Shard(index=index, records=7200, bytes=9, md5="0" * 32, sources=sources)
        )
    state.write_manifest(force=True)
    written = (work / MANIFEST).read_bytes()
    assert written == orjson.dumps(state.manifest(), option=orjson.OPT_INDENT_2) + b"\n"
    assert len(orjson.loads(written)["inputs"]) == 2500
    state.close()
