"""The ledger between real processes: two runs at once, partitions, a killed run's claim,
a writer killed mid-transaction. Children are ``tests/ledger_child.py``; every wait is a
read of a line a child printed (a barrier releases them together), never a sleep."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bulkload._ledger import Ledger, LedgerBusyError, Outcome

CHILD = Path(__file__).with_name("ledger_child.py")


_started: list[Child] = []


@pytest.fixture(autouse=True)
def _reap_children() -> Iterator[None]:
    """Every child ends with its test (killed if the test failed early), pipes closed."""
    yield
    while _started:
        child = _started.pop()
        if child.proc.poll() is None:
            child.proc.kill()
        child.proc.wait(timeout=30)
        for pipe in (child.proc.stdin, child.proc.stdout, child.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


class Child:
    """One ``ledger_child.py`` process, line by line."""

    def __init__(self, *args: str | Path) -> None:
        _started.append(self)
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=30)
            assert self.proc.stderr is not None
            raise AssertionError(f"child ended ({self.proc.returncode}): {self.proc.stderr.read()}")
        doc: dict[str, Any] = json.loads(line)
        return doc

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def end(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        self.proc.kill()


def begin_child(ledger: Path, run_id: str, *extra: str) -> Child:
    child = Child("begin", ledger, "products", run_id, "--work-dir", f"/tmp/w-{run_id}", *extra)
    assert child.read() == {"ready": child.pid}
    return child


def release_together(*children: Child) -> list[dict[str, Any]]:
    """The barrier: every child is ready and blocked on stdin; go, all at once."""
    for c in children:
        c.send("go")
    return [c.read() for c in children]


def test_two_runs_at_once_one_gets_the_ledger_the_other_is_refused_naming_it(
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger.sqlite"
    Ledger.open(ledger).close()  # created once, so the race is on the claim only
    for attempt in range(4):
        a = begin_child(ledger, f"a{attempt}")
        b = begin_child(ledger, f"b{attempt}")
        answers = release_together(a, b)
        winners = [(c, doc) for c, doc in zip((a, b), answers, strict=True) if "claimed" in doc]
        losers = [(c, doc) for c, doc in zip((a, b), answers, strict=True) if "busy" in doc]
        assert len(winners) == 1 and len(losers) == 1, answers
        (winner, won), (loser, lost) = winners[0], losers[0]
        message = lost["busy"]
        assert f"run {won['claimed']} (pid {winner.pid} on {socket.gethostname()}" in message
        assert f"work dir /tmp/w-{won['claimed']}" in message
        assert "Let that run finish" in message and "bulkload ledger release products" in message
        assert [h["pid"] for h in lost["holders"]] == [winner.pid]
        assert loser.end() == 3
        winner.send("finish")
        assert winner.read() == {"finished": won["claimed"]}
        assert winner.end() == 0
    with Ledger.open(ledger) as check:
        assert not check.holders("products")
        assert {r.outcome for r in check.runs("products")} == {Outcome.COMPLETE}
        assert len(check.runs("products")) == 4  # the refused runs never started


def test_a_second_run_waits_for_the_first_then_takes_the_ledger(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite"
    first = begin_child(ledger, "first")
    assert "claimed" in release_together(first)[0]
    second = begin_child(ledger, "second", "--wait", "60")
    waiting = release_together(second)[0]
    assert [h["run_id"] for h in waiting["waiting"]] == ["first"]
    first.send("finish")
    assert first.read() == {"finished": "first"}
    took = second.read()
    assert took["claimed"] == "second"
    assert took["waited"] > 0
    assert took["recovered"] == [] and took["unsettled"] == []
    assert first.end() == 0 and second.end() == 0


def test_a_run_that_ends_without_finishing_is_left_unsettled_for_the_next(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite"
    quitter = begin_child(ledger, "quitter")
    assert "claimed" in release_together(quitter)[0]
    assert quitter.end() == 0  # stdin closed: close() without finish()
    with Ledger.open(ledger) as mine:
        begun = mine.begin("products", "next", tmp_path, "next", wait=0)
        assert [r.run_id for r in begun.unsettled] == ["quitter"]
        assert begun.recovered == ()  # close() released the claim: nothing stale


@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "zombie"])
def test_the_claim_of_a_killed_run_is_taken_over(tmp_path: Path, reaped: bool) -> None:
    ledger = tmp_path / "ledger.sqlite"
    victim = begin_child(ledger, "victim")
    assert "claimed" in release_together(victim)[0]
    os.kill(victim.pid, signal.SIGKILL)
    if reaped:
        victim.proc.wait(timeout=30)
    else:
        # Dead but not yet waited for by its parent: a zombie, which still has its pid.
        os.waitid(os.P_PID, victim.pid, os.WEXITED | os.WNOWAIT)
    try:
        with Ledger.open(ledger) as mine:
            begun = mine.begin("products", "after", tmp_path, "after", wait=0)
            [(holder, why)] = begun.recovered
            assert holder.run_id == "victim" and holder.pid == victim.pid
            assert why == (
                f"process {victim.pid} no longer exists"
                if reaped
                else f"process {victim.pid} has exited"
            )
            assert [r.run_id for r in begun.unsettled] == ["victim"]
            assert [h.run_id for h in mine.holders("products")] == ["after"]
    finally:
        victim.proc.wait(timeout=30)


def test_partitions_of_one_run_share_the_ledger_and_nothing_else_does(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite"
    p0 = begin_child(ledger, "p0", "--partition", "0/2/g1")
    p1 = begin_child(ledger, "p1", "--partition", "1/2/g1")
    assert all("claimed" in doc for doc in release_together(p0, p1))
    again = begin_child(ledger, "p0-again", "--partition", "0/2/g1")
    other = begin_child(ledger, "other-list", "--partition", "1/2/g2")
    plain = begin_child(ledger, "plain")
    refused = release_together(again, other, plain)
    assert "partition 0/2 is already being loaded" in refused[0]["busy"]
    assert "different input list" in refused[1]["busy"]
    assert "another run holds it" in refused[2]["busy"]
    assert [c.end() for c in (again, other, plain)] == [3, 3, 3]
    for p in (p0, p1):
        p.send("finish")
        assert "finished" in p.read()
        assert p.end() == 0


def test_a_writer_killed_mid_transaction_leaves_a_whole_consistent_ledger(
    tmp_path: Path,
) -> None:
    rng = random.Random(15)
    rows = 200
    for trial in range(4):
        ledger = tmp_path / f"ledger-{trial}.sqlite"
        writer = Child("write", ledger, "products", f"w{trial}", "--rows", rows)
        assert writer.read() == {"claimed": f"w{trial}"}
        seen = rng.randint(1, 12)
        for i in range(seen):
            assert writer.read() == {"committed": i}
        writer.kill()  # most likely inside the next transaction
        writer.proc.wait(timeout=30)
        db = sqlite3.connect(ledger)
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        per_batch = dict(
            db.execute(
                "SELECT shards, count(*) FROM loads GROUP BY shards ORDER BY min(id)"
            ).fetchall()
        )
        db.close()
        batches = sorted(json.loads(k)[0] for k in per_batch)
        # Every reported commit survived, the batches are a prefix, and each is whole.
        assert batches == list(range(len(batches))) and len(batches) >= seen
        assert set(per_batch.values()) == {rows}
        with Ledger.open(ledger) as after:
            begun = after.begin("products", f"after{trial}", tmp_path, "after", wait=0)
            assert [h.run_id for h, _ in begun.recovered] == [f"w{trial}"]
            assert len(after.entries("products")) == len(batches) * rows


def test_a_busy_error_is_a_state_error_with_exit_code_1(tmp_path: Path) -> None:
    from bulkload._errors import ExitCode, StateError

    with Ledger.open(tmp_path / "l.sqlite") as one, Ledger.open(tmp_path / "l.sqlite") as two:
        one.begin("products", "one", tmp_path, "one")
        with pytest.raises(LedgerBusyError) as caught:
            two.begin("products", "two", tmp_path, "two", wait=0)
        assert isinstance(caught.value, StateError)
        assert caught.value.exit_code == ExitCode.FATAL
        assert "Waited 0 s" in str(caught.value)
