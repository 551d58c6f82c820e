"""Journals written by earlier versions still replay: a work dir left by bulkload at 81c995b
(every event kind it wrote: run, shard, ticket, abandon, failed, retry, uploaded, finish,
processing; made by ``fixtures/journal-81c995b/make_golden.py``) gives the same manifest."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson

from bulkload._journal import RunState

GOLDEN = Path(__file__).parent / "fixtures" / "journal-81c995b"


def replay(tmp_path: Path, journal: bytes) -> RunState:
    work = tmp_path / "w"
    (work / "state").mkdir(parents=True)
    (work / "state" / "journal.jsonl").write_bytes(journal)
    return RunState.open(work)


def test_a_journal_of_81c995b_replays_to_the_manifest_it_wrote(tmp_path: Path) -> None:
    state = replay(tmp_path, (GOLDEN / "journal.jsonl").read_bytes())
    old = orjson.loads((GOLDEN / "manifest.json").read_bytes())
    new = state.manifest()
    assert new["namespace"] == old["namespace"] and new["runs"] == old["runs"] == 2
    assert new["totals"] == old["totals"]
    assert new["finished_at"] == old["finished_at"]
    assert len(new["shards"]) == len(old["shards"]) == 5
    for was, now in zip(old["shards"], new["shards"], strict=True):
        # Every key the old version wrote has the same value; new keys may be added.
        assert {k: now.get(k) for k in was} == was
    assert new["shards"][0]["abandoned_request_ids"], "the expired URL's request is kept"
    assert new["shards"][2]["processing_status"] == "failed"


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    journal = (GOLDEN / "journal.jsonl").read_bytes()
    whole = replay(tmp_path, journal).manifest()
    shutil.rmtree(tmp_path / "w")
    torn = replay(tmp_path, journal + b'{"t":"uploaded","index":2,"et').manifest()
    assert torn == {**whole, "work_dir": torn["work_dir"]}
