"""The ledger in one process, on real SQLite files: the file and its schema, a run's life,
three nights over a growing export, force, forget, repair, merge."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bulkload._ledger import (
    SCHEMA_VERSION,
    Action,
    FileIdentity,
    Ledger,
    LedgerError,
    Outcome,
    Reason,
    describe_location,
    file_md5,
    proven_from_manifest,
)
from bulkload._ledger.file import APPLICATION_ID, MIGRATIONS, migrate

NS = "products"
DAY = 86_400 * 10**9
T0 = 1_733_011_200 * 10**9  # 2024-12-01T00:00:00Z


def export(directory: Path, name: str, body: bytes, *, at: int) -> Path:
    """A file of the export, with a fixed modification time (nanoseconds)."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    os.utime(path, ns=(at, at))
    return path


def night(ledger: Ledger, run_id: str, files: list[Path], **kw: Any) -> dict[str, str]:
    """One nightly run as the wiring does it: begin, decide, "load" (record every file it
    decided to load, as if all its shards were uploaded), finish. {file name: reason}."""
    ledger.begin(NS, run_id, files[0].parent / "work", f"bulkload load {NS} …")
    md5s = kw.pop("md5s", {})
    identities = [FileIdentity.of_path(f, content_md5=md5s.get(f.name)) for f in files]
    decisions = ledger.decide(NS, identities, **kw)
    for i, d in enumerate(decisions):
        if d.load:
            ledger.record_loaded(run_id, d.identity, shards=[i], request_ids=[f"req_{run_id}_{i}"])
    ledger.finish(run_id, Outcome.COMPLETE)
    return {Path(d.identity.display).name: str(d.reason) for d in decisions}


# -- the file ---------------------------------------------------------------------------------


def test_a_new_ledger_is_a_versioned_wal_database_marked_as_a_ledger(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "ledger.sqlite"
    with Ledger.open(path) as ledger:
        assert ledger.created and ledger.path == path
        raw = sqlite3.connect(path)
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert raw.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"runs", "loads", "claims"}
        raw.close()
    with Ledger.open(path) as again:
        assert not again.created


def test_another_database_a_text_file_and_a_newer_schema_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "app.db"
    sqlite3.connect(other).execute("CREATE TABLE users (id)").connection.close()
    with pytest.raises(LedgerError, match="not a bulkload ledger; give ledger= a path of its own"):
        Ledger.open(other)
    text = tmp_path / "notes.txt"
    text.write_text("a text file, long enough to have a header's worth of bytes " * 4)
    with pytest.raises(LedgerError, match="is not a bulkload ledger"):
        Ledger.open(text)
    newer = tmp_path / "newer.sqlite"
    Ledger.open(newer).close()
    raw = sqlite3.connect(newer)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(LedgerError, match="schema version 99, written by a newer bulkload"):
        Ledger.open(newer)


def test_migrations_run_one_version_at_a_time_and_a_failing_one_changes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite"
    with Ledger.open(path) as ledger:
        ledger.begin(NS, "r1", tmp_path, "first")
        ledger.record_loaded("r1", FileIdentity(key="/x", size=1), shards=[0], request_ids=["q"])
        ledger.finish("r1", Outcome.COMPLETE)
    conn = sqlite3.connect(path, isolation_level=None)
    broken = (*MIGRATIONS, "ALTER TABLE loads ADD COLUMN note TEXT;\nTHIS IS NOT SQL;")
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, path, broken)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    columns = [r[1] for r in conn.execute("PRAGMA table_info(loads)")]
    assert "note" not in columns  # the half-applied migration was rolled back whole
    good = (*MIGRATIONS, "ALTER TABLE loads ADD COLUMN note TEXT;")
    assert migrate(conn, path, good) == SCHEMA_VERSION + 1
    assert conn.execute("SELECT file_key, note FROM loads").fetchall() == [("/x", None)]
    conn.close()


def test_readers_do_not_wait_for_a_writer_and_a_stuck_writer_is_named(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with Ledger.open(path) as ledger:
        ledger.begin(NS, "r1", tmp_path, "first")
        ledger.record_loaded("r1", FileIdentity(key="/x", size=1), shards=[0], request_ids=["q"])
    stuck = sqlite3.connect(path, isolation_level=None)
    stuck.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        with Ledger.open(path, timeout=0.05) as ledger:
            assert [e.identity.key for e in ledger.entries(NS)] == ["/x"]  # WAL: no wait
            with pytest.raises(LedgerError, match="stayed locked by another process"):
                ledger.begin(NS, "r2", tmp_path, "second")
    finally:
        stuck.execute("ROLLBACK")
        stuck.close()


def test_the_default_location_sits_next_to_the_default_work_dir(tmp_path: Path) -> None:
    here = describe_location("products", cwd=tmp_path, environ={})
    assert here.path == tmp_path / "bulkload-products.ledger.sqlite"
    assert here.origin == "default" and "ledger=" in here.describe()
    given = describe_location("products", "ledgers/nightly.sqlite", cwd=tmp_path, environ={})
    assert given.path == tmp_path / "ledgers" / "nightly.sqlite" and given.origin == "option"
    directory = describe_location("products", "ledgers/", cwd=tmp_path, environ={})
    assert directory.path == tmp_path / "ledgers" / "bulkload-products.ledger.sqlite"
    env = describe_location("users", cwd=tmp_path, environ={"BULKLOAD_LEDGER": str(tmp_path)})
    assert env.path == tmp_path / "bulkload-users.ledger.sqlite"
    assert env.origin == "environment" and "$BULKLOAD_LEDGER" in env.describe()


def test_backup_is_a_whole_ledger(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        ledger.begin(NS, "r1", tmp_path, "first")
        ledger.record_loaded("r1", FileIdentity(key="/x", size=1), shards=[0], request_ids=["q"])
        copy = ledger.backup(tmp_path / "copy.sqlite")
    with Ledger.open(copy) as restored:
        assert [e.run_id for e in restored.entries(NS)] == ["r1"]


# -- nights -----------------------------------------------------------------------------------


def test_three_nights_over_a_growing_export_load_exactly_what_is_new_or_changed(
    tmp_path: Path,
) -> None:
    data = tmp_path / "exports"
    a = export(data, "a.jsonl", b'{"id":"a1"}\n', at=T0)
    b = export(data, "b.jsonl", b'{"id":"b1"}\n', at=T0)
    c = export(data, "c.jsonl", b'{"id":"c1"}\n', at=T0)
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        assert night(ledger, "n1", [a, b, c]) == {"a.jsonl": "new", "b.jsonl": "new",
                                                  "c.jsonl": "new"}  # fmt: skip
        # Night 2: d is new, b was re-exported with other records.
        d = export(data, "d.jsonl", b'{"id":"d1"}\n', at=T0 + DAY)
        export(data, "b.jsonl", b'{"id":"b1","v":2}\n', at=T0 + DAY)
        assert night(ledger, "n2", [a, b, c, d]) == {
            "a.jsonl": "loaded", "b.jsonl": "changed", "c.jsonl": "loaded", "d.jsonl": "new",
        }  # fmt: skip
        # Night 3: c is gone, e is new, a was touched (same bytes, new time).
        c.unlink()
        e = export(data, "e.jsonl", b'{"id":"e1"}\n', at=T0 + 2 * DAY)
        os.utime(a, ns=(T0 + 2 * DAY, T0 + 2 * DAY))
        decided = night(ledger, "n3", [a, b, d, e])
        assert decided == {"a.jsonl": "changed", "b.jsonl": "loaded", "d.jsonl": "loaded",
                           "e.jsonl": "new"}  # fmt: skip
        current = {Path(x.identity.key).name: x.run_id for x in ledger.entries(NS)}
        # c stays in the ledger: deleting an input forgets nothing.
        assert current == {"a.jsonl": "n3", "b.jsonl": "n2", "c.jsonl": "n1", "d.jsonl": "n2",
                           "e.jsonl": "n3"}  # fmt: skip
        history = [(Path(x.identity.key).name, x.run_id) for x in ledger.entries(NS, history=True)]
        assert ("b.jsonl", "n1") in history and ("a.jsonl", "n1") in history
        # Files each run loaded (a later load of a file does not undo an earlier one).
        runs = {r.run_id: (r.outcome, r.files) for r in ledger.runs(NS)}
        assert runs == {"n1": (Outcome.COMPLETE, 3), "n2": (Outcome.COMPLETE, 2),
                        "n3": (Outcome.COMPLETE, 2)}  # fmt: skip


def test_the_summary_words_say_when_by_which_run_and_what_changed(tmp_path: Path) -> None:
    data = tmp_path / "exports"
    a = export(data, "a.jsonl", b'{"id":"a1"}\n', at=T0)
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        night(ledger, "n1", [a])
        [same] = ledger.decide(NS, [FileIdentity.of_path(a)])
        assert same.action is Action.SKIP and same.previous is not None
        assert same.detail == (
            f"loaded {same.previous.loaded_at} by run n1; same size and modification time"
        )
        export(data, "a.jsonl", b'{"id":"a1","longer":true}\n', at=T0 + DAY)
        [changed] = ledger.decide(NS, [FileIdentity.of_path(a)])
        assert changed.reason is Reason.CHANGED
        assert changed.detail.endswith("size 12 → 26 bytes")
        assert changed.to_dict()["previous_run_id"] == "n1"


def test_content_md5_skips_a_touched_file_and_catches_a_rewrite_that_kept_size_and_time(
    tmp_path: Path,
) -> None:
    data = tmp_path / "exports"
    a = export(data, "a.jsonl", b'{"id":"a1"}\n', at=T0)
    b = export(data, "b.jsonl", b'{"id":"b1"}\n', at=T0)
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        md5s = {p.name: file_md5(p) for p in (a, b)}
        night(ledger, "n1", [a, b], md5s=md5s)
        os.utime(a, ns=(T0 + DAY, T0 + DAY))  # touched: same bytes
        export(data, "b.jsonl", b'{"id":"b2"}\n', at=T0)  # same size, time put back
        # Without hashing, the time says a changed and b did not: the touch costs a reload;
        # the kept time would lose b's new record.
        plain = ledger.decide(NS, [FileIdentity.of_path(a), FileIdentity.of_path(b)])
        assert [str(d.reason) for d in plain] == ["changed", "loaded"]
        assert plain[0].content_would_settle
        hashed = ledger.decide(
            NS, [FileIdentity.of_path(p, content_md5=file_md5(p)) for p in (a, b)]
        )
        assert [str(d.reason) for d in hashed] == ["loaded", "changed"]
        assert hashed[0].detail.endswith("same content MD5")


def test_force_loads_everything_and_skip_changed_refuses_changed_files(tmp_path: Path) -> None:
    data = tmp_path / "exports"
    a = export(data, "a.jsonl", b'{"id":"a1"}\n', at=T0)
    b = export(data, "b.jsonl", b'{"id":"b1"}\n', at=T0)
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        night(ledger, "n1", [a, b])
        export(data, "b.jsonl", b'{"id":"b1","v":2}\n', at=T0 + DAY)
        c = export(data, "c.jsonl", b'{"id":"c1"}\n', at=T0 + DAY)
        assert night(ledger, "n2", [a, b, c], skip_changed=True) == {
            "a.jsonl": "loaded", "b.jsonl": "changed-skipped", "c.jsonl": "new",
        }  # fmt: skip
        forced = ledger.decide(NS, [FileIdentity.of_path(p) for p in (a, b, c)], force=True)
        assert all(d.load and d.reason is Reason.FORCED for d in forced)
        assert "forced (loaded " in forced[0].detail and "by run n1)" in forced[0].detail
        assert night(ledger, "n3", [a, b, c], force=True) == dict.fromkeys(
            ("a.jsonl", "b.jsonl", "c.jsonl"), "forced"
        )
        # A forced load is recorded like any other: the next night skips all three.
        assert set(night(ledger, "n4", [a, b, c]).values()) == {"loaded"}


def test_inputs_without_identity_are_always_loaded_and_never_recorded(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        ledger.begin(NS, "r1", tmp_path, "first")
        stdin, pipe = FileIdentity.unidentified("-"), FileIdentity.of_path(fifo)
        assert not pipe.identified and pipe.key == str(fifo.resolve())
        for _ in range(2):
            decisions = ledger.decide(NS, [stdin, pipe])
            assert [d.reason for d in decisions] == [Reason.NO_IDENTITY] * 2
            assert not ledger.record_loaded("r1", stdin, shards=[0], request_ids=["q"])
            assert not ledger.record_loaded("r1", pipe, shards=[1], request_ids=["q"])
        assert ledger.entries(NS) == []


def test_a_file_named_twice_is_loaded_once(tmp_path: Path) -> None:
    a = export(tmp_path / "exports", "a.jsonl", b'{"id":"a1"}\n', at=T0)
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        twice = [FileIdentity.of_path(a), FileIdentity.of_path(f"{a.parent}/../exports/a.jsonl")]
        assert [d.reason for d in ledger.decide(NS, twice)] == [Reason.NEW, Reason.REPEATED]


def test_namespaces_are_apart(tmp_path: Path) -> None:
    a = export(tmp_path / "exports", "a.jsonl", b'{"id":"a1"}\n', at=T0)
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        night(ledger, "n1", [a])
        [other] = ledger.decide("users", [FileIdentity.of_path(a)])
        assert other.reason is Reason.NEW
        assert ledger.namespaces() == [NS]


# -- a run's rules ----------------------------------------------------------------------------


def test_recording_needs_the_runs_claim(tmp_path: Path) -> None:
    x = FileIdentity(key="/x", size=1)
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        with pytest.raises(LedgerError, match="does not hold its namespace"):
            ledger.record_loaded("nobody", x, shards=[0], request_ids=["q"])
        ledger.begin(NS, "r1", tmp_path, "first")
        ledger.finish("r1", Outcome.COMPLETE)
        with pytest.raises(LedgerError, match="it finished"):
            ledger.record_loaded("r1", x, shards=[0], request_ids=["q"])


def test_a_process_keeps_the_namespace_from_its_resume_to_its_new_run(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with Ledger.open(path) as mine, Ledger.open(path) as other:
        mine.begin(NS, "old", tmp_path, "resume")
        mine.finish("old", Outcome.COMPLETE, release=False)
        with pytest.raises(LedgerError, match="held for namespace 'products' by run old"):
            other.begin(NS, "intruder", tmp_path, "cron overlap", wait=0)
        begun = mine.begin(NS, "new", tmp_path, "new files", wait=0)
        assert begun.run.run_id == "new" and not begun.resumed
        assert [h.run_id for h in mine.holders(NS)] == ["new"]


def test_begin_with_a_known_run_id_resumes_it(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        ledger.begin(NS, "r1", tmp_path, "first")
        ledger.finish("r1", Outcome.INTERRUPTED)
        begun = ledger.begin(NS, "r1", tmp_path, "again")
        assert begun.resumed and begun.run.resumes == 1 and begun.run.outcome is None
        with pytest.raises(LedgerError, match="loaded namespace 'products', not 'users'"):
            ledger.begin("users", "r1", tmp_path, "wrong")


def test_descriptions_lose_query_strings(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        command = "bulkload load products https://h/x.jsonl?X-Amz-Signature=abc s3://b/k"
        begun = ledger.begin(NS, "r1", tmp_path, command)
        assert begun.run.description == "bulkload load products https://h/x.jsonl?… s3://b/k"


# -- forget -----------------------------------------------------------------------------------


def test_forget_a_file_a_pattern_or_a_run_and_they_load_again(tmp_path: Path) -> None:
    data = tmp_path / "exports"
    files = [export(data, f"{n}.jsonl", f'{{"id":"{n}"}}\n'.encode(), at=T0) for n in "abcd"]
    a, b, c, d = files
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        night(ledger, "n1", [a, b, c])
        export(data, "b.jsonl", b'{"id":"b","v":2}\n', at=T0 + DAY)
        night(ledger, "n2", files)  # b changed, d new
        assert ledger.forget(NS, key=str(a)) == 1
        assert ledger.forget(NS, key=str(a)) == 0  # already forgotten
        assert night(ledger, "n3", [a]) == {"a.jsonl": "new"}
        # Forgetting run n2: b falls back to its n1 entry (so it is "changed"), d is new.
        assert ledger.forget(NS, run_id="n2") == 2
        decided = {Path(x.identity.display).name: x.reason for x in ledger.decide(
            NS, [FileIdentity.of_path(p) for p in files])}  # fmt: skip
        assert decided == {"a.jsonl": Reason.LOADED, "b.jsonl": Reason.CHANGED,
                           "c.jsonl": Reason.LOADED, "d.jsonl": Reason.NEW}  # fmt: skip
        assert ledger.forget(NS, match=f"{data}/[bc].jsonl") == 2
        assert {Path(x.identity.key).name for x in ledger.entries(NS)} == {"a.jsonl"}
        forgotten = [x for x in ledger.entries(NS, history=True) if x.forgotten_at]
        assert len(forgotten) == 5
        with pytest.raises(ValueError, match="exactly one"):
            ledger.forget(NS, key="x", run_id="n1")
        with pytest.raises(LedgerError, match="no run nope"):
            ledger.forget(NS, run_id="nope")


def test_a_relative_path_is_forgotten_by_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = export(tmp_path / "exports", "a.jsonl", b'{"id":"a1"}\n', at=T0)
    monkeypatch.chdir(tmp_path)
    with Ledger.open("ledger.sqlite") as ledger:
        night(ledger, "n1", [a])
        assert ledger.forget(NS, key="exports/a.jsonl") == 1


def test_a_running_run_cannot_be_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with Ledger.open(path) as running, Ledger.open(path) as admin:
        running.begin(NS, "r1", tmp_path, "nightly")
        with pytest.raises(LedgerError, match="still running"):
            admin.forget(NS, run_id="r1")


# -- repair -----------------------------------------------------------------------------------


def manifest(work: Path, files: list[Path], shards: list[dict[str, Any]], **kw: Any) -> dict:
    """A manifest as ``RunState.manifest()`` gives it, for files loaded by a run."""
    return {
        "namespace": NS,
        "run_id": kw.pop("run_id", "crashed"),
        "work_dir": str(work),
        "cwd": str(files[0].parent),
        "started_at": "2024-12-01T02:00:00.000Z",
        "finished_at": kw.pop("finished_at", None),
        "inputs": [
            {"path": f.name, "size": f.stat().st_size, "mtime_ns": f.stat().st_mtime_ns}
            for f in files
        ],
        "shards": shards,
        **kw,
    }


def shard(index: int, status: str, *paths: str) -> dict[str, Any]:
    return {
        "index": index,
        "status": status,
        "request_id": f"req_{index}" if status != "pending" else None,
        "sources": [{"path": p, "first_line": 1, "last_line": 2} for p in paths],
    }


def test_repair_records_what_the_journal_proves_once_and_settles_the_run(tmp_path: Path) -> None:
    data = tmp_path / "exports"
    a, b, c, d = (export(data, f"{n}.jsonl", b'{"id":"x"}\n' * 3, at=T0) for n in "abcd")
    doc = manifest(
        tmp_path / "work",
        [a, b, c, d],
        [
            shard(0, "uploaded", "a.jsonl"),
            shard(1, "uploaded", "a.jsonl", "b.jsonl"),
            shard(2, "failed", "b.jsonl", "c.jsonl"),  # b and c are not loaded
            shard(3, "uploaded", "c.jsonl", "d.jsonl"),
        ],
        finished_at="2024-12-01T03:00:00.000Z",
    )
    proven = proven_from_manifest(doc)
    assert [(p.identity.display, p.shards, p.request_ids) for p in proven.files] == [
        ("a.jsonl", (0, 1), ("req_0", "req_1")),
        ("d.jsonl", (3,), ("req_3",)),
    ]
    assert proven.unproven == ("b.jsonl", "c.jsonl")
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        ledger.begin(NS, "crashed", tmp_path / "work", "the run that was killed")
        ledger.close()  # as a kill would: no finish
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        begun = ledger.begin(NS, "tonight", tmp_path / "w2", "tonight")
        assert [r.run_id for r in begun.unsettled] == ["crashed"]
        report = ledger.repair("tonight", proven)
        assert report.recorded == ("a.jsonl", "d.jsonl") and report.already == 0
        again = ledger.repair("tonight", proven)
        assert again.recorded == () and again.already == 2
        [run] = [r for r in ledger.runs(NS) if r.run_id == "crashed"]
        assert run.outcome is Outcome.PARTIAL and "settled by run tonight" in (run.note or "")
        entries = {Path(e.identity.key).name: e for e in ledger.entries(NS)}
        assert set(entries) == {"a.jsonl", "d.jsonl"}
        assert entries["a.jsonl"].repaired_by == "tonight"
        assert entries["a.jsonl"].run_id == "crashed"
        decided = ledger.decide(NS, [FileIdentity.of_path(p) for p in (a, b, c, d)])
        assert [str(x.reason) for x in decided] == ["loaded", "new", "new", "loaded"]
        # A second begin does not list it again: it is settled.
        ledger.finish("tonight", Outcome.COMPLETE)
        assert ledger.begin(NS, "later", tmp_path, "later").unsettled == ()


def test_an_unfinished_run_proves_only_files_it_read_past(tmp_path: Path) -> None:
    data = tmp_path / "exports"
    a, b, c = (export(data, f"{n}.jsonl", b'{"id":"x"}\n', at=T0) for n in "abc")
    doc = manifest(
        tmp_path / "work",
        [a, b, c],
        [shard(0, "uploaded", "a.jsonl", "b.jsonl"), shard(1, "uploaded", "b.jsonl")],
    )
    proven = proven_from_manifest(doc)
    # b may go on in a shard not journaled yet; c was never reached.
    assert [p.identity.display for p in proven.files] == ["a.jsonl"]
    assert proven.unproven == ("b.jsonl", "c.jsonl") and not proven.finished
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        ledger.begin(NS, "tonight", tmp_path, "tonight")
        ledger.repair("tonight", proven)
        assert [r.outcome for r in ledger.runs(NS) if r.run_id == "crashed"] == [Outcome.CRASHED]


def test_a_dry_run_proves_nothing_and_files_it_rejected_wholly_are_loaded(tmp_path: Path) -> None:
    data = tmp_path / "exports"
    good, bad = export(data, "good.jsonl", b"{}\n", at=T0), export(data, "bad.jsonl", b"[]", at=T0)
    shards = [shard(0, "uploaded", "good.jsonl")]
    finished = "2024-12-01T03:00:00.000Z"
    dry = proven_from_manifest(manifest(tmp_path, [good, bad], shards, dry_run=True,
                                        finished_at=finished))  # fmt: skip
    assert dry.files == () and dry.unproven == ("good.jsonl", "bad.jsonl")
    real = proven_from_manifest(manifest(tmp_path, [good, bad], shards, finished_at=finished))
    # Every line of bad.jsonl was rejected: it has no shard, and it was read whole.
    assert [(p.identity.display, p.shards) for p in real.files] == [
        ("good.jsonl", (0,)),
        ("bad.jsonl", ()),
    ]


def test_a_work_dir_loaded_before_the_ledger_existed_is_adopted_once(tmp_path: Path) -> None:
    data = tmp_path / "exports"
    a = export(data, "a.jsonl", b'{"id":"x"}\n', at=T0)
    doc = manifest(tmp_path / "old-work", [a], [shard(0, "uploaded", "a.jsonl")],
                   finished_at="2024-11-01T03:00:00.000Z")  # fmt: skip
    del doc["run_id"]
    first, second = proven_from_manifest(doc), proven_from_manifest(dict(doc))
    assert first.run_id == second.run_id and first.run_id.startswith("adopted-")
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        ledger.begin(NS, "tonight", tmp_path, "tonight")
        assert ledger.repair("tonight", first).recorded == ("a.jsonl",)
        assert ledger.repair("tonight", second).recorded == ()
        [adopted] = [r for r in ledger.runs(NS) if r.run_id == first.run_id]
        assert adopted.outcome is Outcome.COMPLETE
        assert adopted.description == "adopted from its work dir"


def test_repair_refuses_a_running_run_and_another_namespace(tmp_path: Path) -> None:
    a = export(tmp_path / "exports", "a.jsonl", b'{"id":"x"}\n', at=T0)
    doc = manifest(tmp_path, [a], [shard(0, "uploaded", "a.jsonl")], run_id="busy")
    path = tmp_path / "ledger.sqlite"
    with Ledger.open(path) as one, Ledger.open(path) as two:
        one.begin(NS, "busy", tmp_path, "a partition", partition=_part(0))
        two.begin(NS, "mine", tmp_path, "another partition", partition=_part(1))
        with pytest.raises(LedgerError, match=r"run busy \(pid .* is still running"):
            two.repair("mine", proven_from_manifest(doc))
        with pytest.raises(LedgerError, match="repair it from a run of its namespace"):
            two.repair("mine", proven_from_manifest({**doc, "namespace": "users"}))


def _part(index: int) -> Any:
    from bulkload._ledger import Partition

    return Partition(index, 2, "group")


def test_a_merged_manifest_cannot_prove_loads() -> None:
    with pytest.raises(LedgerError, match="merged manifest"):
        proven_from_manifest({"namespace": NS, "merged_from": [], "shards": []})


# -- merge ------------------------------------------------------------------------------------


def machine(tmp_path: Path, name: str, run_id: str, files: dict[str, int]) -> Path:
    """The ledger of one machine that loaded ``files`` ({key: size})."""
    path = tmp_path / f"{name}.sqlite"
    with Ledger.open(path) as ledger:
        ledger.begin(NS, run_id, tmp_path / name, f"partition on {name}")
        for i, (key, size) in enumerate(files.items()):
            identity = FileIdentity(key=key, size=size, etag=f"etag:{key}-{size}")
            ledger.record_loaded(run_id, identity, shards=[i], request_ids=[f"req_{run_id}_{i}"])
        ledger.finish(run_id, Outcome.COMPLETE)
    return path


def state(path: Path) -> set[tuple[Any, ...]]:
    with Ledger.open(path) as ledger:
        loads = {
            (e.identity.key, e.run_id, e.request_ids, e.forgotten_at is not None)
            for e in ledger.entries(NS, history=True)
        }
        runs = {(r.run_id, r.outcome) for r in ledger.runs(NS)}
    return loads | runs


def test_merge_is_a_union_that_can_be_repeated_in_any_order(tmp_path: Path) -> None:
    one = machine(tmp_path, "m1", "p0", {"s3://b/1.jsonl": 1, "s3://b/2.jsonl": 2})
    two = machine(tmp_path, "m2", "p1", {"s3://b/3.jsonl": 3})
    ab, ba = tmp_path / "ab.sqlite", tmp_path / "ba.sqlite"
    with Ledger.open(ab) as ledger:
        report = ledger.merge([one, two])
        assert (report.runs_added, report.loads_added, report.overlaps) == (2, 3, ())
        again = ledger.merge([two, one])
        assert (again.runs_added, again.loads_added) == (0, 0)
    with Ledger.open(ba) as ledger:
        ledger.merge([two])
        ledger.merge([one])
    assert state(ab) == state(ba)
    with Ledger.open(ab) as ledger:
        keys = [e.identity.key for e in ledger.entries(NS)]
        assert keys == ["s3://b/1.jsonl", "s3://b/2.jsonl", "s3://b/3.jsonl"]
        [skip] = ledger.decide(NS, [FileIdentity.of_object("s3://b/3.jsonl", size=3,
                                                           etag="etag:s3://b/3.jsonl-3")])  # fmt: skip
        assert skip.reason is Reason.LOADED and skip.previous and skip.previous.run_id == "p1"


def test_merge_carries_forgetting_and_names_files_loaded_twice(tmp_path: Path) -> None:
    one = machine(tmp_path, "m1", "p0", {"s3://b/1.jsonl": 1, "s3://b/2.jsonl": 2})
    two = machine(tmp_path, "m2", "p1", {"s3://b/2.jsonl": 2, "s3://b/3.jsonl": 3})
    with Ledger.open(two) as ledger:
        ledger.forget(NS, key="s3://b/3.jsonl")
    merged = tmp_path / "merged.sqlite"
    with Ledger.open(merged) as ledger:
        ledger.merge([one])
        ledger.begin(NS, "r", tmp_path, "x")
        report = ledger.merge([two])
        assert len(report.overlaps) == 1
        assert report.overlaps[0].startswith("s3://b/2.jsonl was loaded with the same identity")
        assert "run p0 (this ledger) and run p1" in report.overlaps[0]
        assert {e.identity.key for e in ledger.entries(NS)} == {"s3://b/1.jsonl",
                                                                "s3://b/2.jsonl"}  # fmt: skip
        assert ledger.holders(NS)[0].run_id == "r"  # claims of other machines are not merged
    with Ledger.open(one) as ledger:
        ledger.forget(NS, key="s3://b/1.jsonl")
    with Ledger.open(merged) as ledger:
        assert ledger.merge([one]).forgotten == 1
        assert {e.identity.key for e in ledger.entries(NS)} == {"s3://b/2.jsonl"}


def test_merge_refuses_itself_missing_files_and_other_databases(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    other = tmp_path / "app.db"
    sqlite3.connect(other).execute("CREATE TABLE users (id)").connection.close()
    with Ledger.open(path) as ledger:
        with pytest.raises(LedgerError, match="into itself"):
            ledger.merge([path])
        with pytest.raises(LedgerError, match="no such ledger file"):
            ledger.merge([tmp_path / "nope.sqlite"])
        with pytest.raises(LedgerError, match="not a bulkload ledger"):
            ledger.merge([other])


# -- claims -----------------------------------------------------------------------------------


def test_partitions_are_one_run_when_they_split_the_same_list() -> None:
    from bulkload._ledger import Partition

    listing = [("/x/a.jsonl", 10), ("/x/b.jsonl", 20)]
    zero, one = Partition.of_inputs(0, 2, listing), Partition.of_inputs(1, 2, listing)
    assert zero.group == one.group and str(one) == "1/2"
    assert Partition.of_inputs(0, 2, [*listing, ("/x/c.jsonl", 5)]).group != zero.group
    assert Partition.of_inputs(0, 3, listing).group != zero.group
    with pytest.raises(ValueError, match="0 <= I < N"):
        Partition(2, 2, "g")


def test_a_claim_from_another_host_is_honoured_until_released(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with Ledger.open(path) as ledger:
        ledger.begin(NS, "elsewhere", tmp_path, "a run on another machine")
        ledger.close()
    # The row as a process of another machine leaves it (the ledger file was copied here).
    raw = sqlite3.connect(path)
    raw.execute(
        "INSERT INTO claims (namespace, holder, run_id, host, pid, token, claimed_at) "
        "VALUES (?, 'far', 'elsewhere', 'etl-7', 4242, NULL, '2024-12-01T02:00:00.000Z')",
        (NS,),
    )
    raw.commit()
    raw.close()
    with Ledger.open(path) as ledger:
        with pytest.raises(LedgerError, match=r"run elsewhere \(pid 4242 on etl-7"):
            ledger.begin(NS, "here", tmp_path, "tonight", wait=0)
        [released] = ledger.release(NS)
        assert (released.host, released.pid) == ("etl-7", 4242)
        assert ledger.begin(NS, "here", tmp_path, "tonight", wait=0).run.run_id == "here"


def test_a_live_local_run_is_not_released(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with Ledger.open(path) as running, Ledger.open(path) as admin:
        running.begin(NS, "nightly", tmp_path, "nightly")
        with pytest.raises(LedgerError, match="is alive on this host: stop it"):
            admin.release(NS)
        assert [h.run_id for h in admin.holders(NS)] == ["nightly"]


def test_every_commit_is_synchronous(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        conn = ledger._open_conn()
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
