"""Exactly once across nights and kills: the ledger's protocol (``tests/ledger_sim.py``, a
miniature loader that uses it as the wiring should) is SIGKILLed at random steps over five
nightly runs of a growing export; every record of every version of every file that existed
at the end of a night reached the store exactly once."""

from __future__ import annotations

import collections
import json
import os
import random
import subprocess
import sys
from pathlib import Path

from bulkload._ledger import FileIdentity, Ledger, Reason

SIM = Path(__file__).with_name("ledger_sim.py")


def write(inputs: Path, name: str, version: int, lines: int, at: int) -> set[bytes]:
    body = [json.dumps({"id": f"{name}:{version}:{n}"}).encode() for n in range(lines)]
    path = inputs / name
    path.write_bytes(b"".join(line + b"\n" for line in body))
    os.utime(path, ns=(at, at))
    return set(body)


#: Where a kill lands: after the n-th durable step of any kind, or right after a step of
#: a kind that opens a window (the journal's "uploaded" or "finish" before the ledger's
#: commit, the ledger's commit, the archive of a finished run, a run's first event).
MOMENTS = ("any", "uploaded", "finish", "any", "recorded", "archived", "run")


def run_night(cmd: list[str], rng: random.Random, kills: int, moments: list[str]) -> list[str]:
    """Start the nightly command until one run ends on its own, SIGKILLing up to ``kills``
    of them, each at ``moments[0]`` (which moves on only once a kill landed there: a moment
    that a run never reaches is tried again in the next one); the moments of the kills."""
    done: list[str] = []
    for _ in range(60):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        moment = moments[0] if len(done) < kills else None
        limit = rng.randint(1, 15)
        steps = 0
        while moment is not None:
            line = proc.stdout.readline()
            if not line or "done" in json.loads(line):
                break
            steps += 1
            kind = json.loads(line)["step"]
            if (moment == "any" and steps >= limit) or kind == moment:
                proc.kill()
                break
        _, err = proc.communicate(timeout=60)
        if proc.returncode == -9:
            assert moment is not None
            done.append(moment)
            moments.append(moments.pop(0))
            continue
        assert proc.returncode == 0, err.decode()
        return done
    raise AssertionError("the nightly run never finished")


def test_every_record_goes_up_exactly_once_across_nights_and_kills(tmp_path: Path) -> None:
    rng = random.Random(1515)
    inputs, server, work = tmp_path / "exports", tmp_path / "server", tmp_path / "work"
    inputs.mkdir()
    server.mkdir()
    ledger = tmp_path / "ledger.sqlite"
    cmd = [sys.executable, str(SIM), str(ledger), str(work), str(inputs), str(server)]
    expected: set[bytes] = set()
    t = 1_733_011_200 * 10**9
    day = 86_400 * 10**9
    # Night by night: which files appear, change or go.
    plan: list[dict[str, tuple[int, int] | None]] = [
        {"a.jsonl": (1, 25), "b.jsonl": (1, 17), "c.jsonl": (1, 0), "d.jsonl": (1, 14)},
        {"e.jsonl": (1, 16), "b.jsonl": (2, 28)},  # new e, re-exported b
        {"c.jsonl": None, "f.jsonl": (1, 39)},  # c deleted, new f
        {},  # nothing new: a run that loads nothing
        {"a.jsonl": (2, 15), "g.jsonl": (1, 2), "h.jsonl": (1, 31)},
    ]
    killed: list[str] = []
    moments = list(MOMENTS)
    for night, changes in enumerate(plan):
        for name, spec in changes.items():
            if spec is None:
                (inputs / name).unlink()
            else:
                expected |= write(inputs, name, spec[0], spec[1], t + night * day)
        killed += run_night(cmd, rng, rng.randint(3, 6), moments)
        got = collections.Counter(
            line for f in server.glob("*.jsonl") for line in f.read_bytes().splitlines()
        )
        missing = expected - set(got)
        twice = {line: n for line, n in got.items() if n > 1}
        assert not missing, f"night {night}: never arrived: {sorted(missing)[:5]}"
        assert not twice, f"night {night}: arrived more than once: {twice}"
        assert set(got) == expected
    # Every window was hit: the journal ahead of the ledger (a resume's and a finished
    # run's, which only a repair closes), the ledger's commit, a run's first event.
    assert {"uploaded", "finish", "recorded", "any"} <= set(killed), killed
    with Ledger.open(ledger) as check:
        now = [FileIdentity.of_path(f) for f in sorted(inputs.glob("*.jsonl"))]
        assert {d.reason for d in check.decide("products", now)} == {Reason.LOADED}
        assert all(r.outcome is not None for r in check.runs("products"))
        assert not check.holders("products")
    # Every run's journal stays findable by its id.
    archived = {p.stem for p in (work / "runs").glob("*.jsonl")}
    with Ledger.open(ledger) as check:
        loaded_by = {e.run_id for e in check.entries("products", history=True)}
    assert loaded_by <= archived
