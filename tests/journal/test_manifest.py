"""manifest.json is rewritten while a load runs, but never so often that writing it becomes
the load's work: the interval grows with what the last write cost (a million inputs make a
manifest of hundreds of MB)."""

from __future__ import annotations

import time
from pathlib import Path

from bulkload._journal import RunState
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
