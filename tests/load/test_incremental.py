"""Scheduled loads (``--incremental``): the same command every night over a growing export
loads each file once; proven from what the emulator stored, not from what bulkload says."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import API_KEY
from helpers import assert_exactly_once, read_manifest

import bulkload
from bulkload import cli
from bulkload._ledger import Ledger, Outcome
from bulkload.emulator import EmulatorThread, Faults


def write_version(
    folder: Path, name: str, version: int, count: int, *, bad: int = 0
) -> list[bytes]:
    """``folder/name`` holding ``count`` records of this version of the file (plus ``bad``
    rejected lines at the end); the valid lines."""
    lines = [
        orjson.dumps({"id": f"{name}-{n}", "version": version, "pad": "x" * (n % 30)})
        for n in range(count)
    ]
    body = b"".join(line + b"\n" for line in lines) + b'{"id": 7}\n' * bad
    (folder / name).write_bytes(body)
    # Distinct times per version: a rewrite within one clock tick must still look changed.
    stamp = 1_700_000_000_000_000_000 + version * 1_000_000_000 + hash(name) % 1000
    os.utime(folder / name, ns=(stamp, stamp))
    return lines


def argv(emu: EmulatorThread, exports: Path, work: Path, *extra: str) -> list[str]:
    return ["load", "products", str(exports), "--work-dir", str(work), "--base-url",
            emu.base_url, "--shard-records", "150", "--incremental", "--quiet", "--json",
            "--ledger", str(work.parent / "ledger.sqlite"), *extra]  # fmt: skip


def night(
    emu: EmulatorThread,
    exports: Path,
    work: Path,
    capsys: pytest.CaptureFixture[str],
    *extra: str,
    code: int = 0,
) -> dict[str, Any]:
    assert cli.main(argv(emu, exports, work, *extra)) == code
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


def decided(doc: dict[str, Any]) -> dict[str, str]:
    return {Path(d["path"]).name: d["reason"] for d in doc["ledger"]["decisions"]}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFETYKIT_API_KEY", API_KEY)


@pytest.mark.usefixtures("env")
def test_three_nights_over_a_growing_directory(
    emulator_thread: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Night 2 uploads only the new files; night 3 only the new one and the re-exported
    one (a deleted file is simply not there); the store holds every record of every version
    of every file exactly once, and each night's manifest is kept, findable."""
    emu = emulator_thread
    exports, work = tmp_path / "exports", tmp_path / "work"
    exports.mkdir()
    expected = []
    for name in ("a.jsonl", "b.jsonl", "c.jsonl"):
        expected += write_version(exports, name, 1, 400)

    first = night(emu, exports, work, capsys)
    assert decided(first) == {"a.jsonl": "new", "b.jsonl": "new", "c.jsonl": "new"}
    assert first["ledger"]["recorded"] == 3
    assert_exactly_once(emu, expected)

    expected += write_version(exports, "d.jsonl", 1, 300)
    expected += write_version(exports, "e.jsonl", 1, 50)
    puts_before = len(emu.requests())
    second = night(emu, exports, work, capsys)
    assert decided(second) == {"a.jsonl": "loaded", "b.jsonl": "loaded", "c.jsonl": "loaded",
                               "d.jsonl": "new", "e.jsonl": "new"}  # fmt: skip
    assert second["records"] == 350, "only the new files were read"
    assert second["ledger"]["archived"]["run_id"] == first["ledger"]["run_id"]
    assert_exactly_once(emu, expected)
    assert len(emu.requests()) - puts_before == second["shards"]

    expected += write_version(exports, "b.jsonl", 2, 420)  # re-exported, with changes
    (exports / "c.jsonl").unlink()
    expected += write_version(exports, "f.jsonl", 1, 10)
    third = night(emu, exports, work, capsys)
    assert decided(third) == {"a.jsonl": "loaded", "b.jsonl": "changed", "d.jsonl": "loaded",
                              "e.jsonl": "loaded", "f.jsonl": "new"}  # fmt: skip
    assert third["records"] == 430
    assert_exactly_once(emu, expected)

    # Each night's run is kept where status and wait find it; the work dir holds tonight's.
    runs = sorted(p.name for p in (work / "runs").iterdir())
    assert runs == sorted([first["ledger"]["run_id"], second["ledger"]["run_id"]])
    first_id = first["ledger"]["run_id"]
    assert read_manifest(work / "runs" / first_id)["run_id"] == first_id
    assert read_manifest(work)["run_id"] == third["ledger"]["run_id"]
    assert cli.main(["status", str(work / "runs" / first["ledger"]["run_id"]),
                     "--base-url", emu.base_url, "--json"]) == 0  # fmt: skip
    capsys.readouterr()

    # The ledger: b's current entry is its second version; --history has both.
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        current = {Path(e.identity.key).name: e for e in ledger.entries("products")}
        assert current["b.jsonl"].run_id == third["ledger"]["run_id"]
        history = [e for e in ledger.entries("products", history=True)
                   if e.identity.key.endswith("b.jsonl")]  # fmt: skip
        assert len(history) == 2
        assert [r.outcome for r in ledger.runs("products")] == [Outcome.COMPLETE] * 3

    # A fourth night with nothing new sends nothing and says so.
    requests = len(emu.requests())
    fourth = night(emu, exports, work, capsys)
    assert fourth["ledger"]["load"] == 0 and fourth["shards"] == 0
    assert len(emu.requests()) == requests


@pytest.mark.usefixtures("env")
def test_changed_files_named_skipped_or_forced(
    emulator_thread: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emu = emulator_thread
    exports, work = tmp_path / "exports", tmp_path / "work"
    exports.mkdir()
    a1 = write_version(exports, "a.jsonl", 1, 100)
    b1 = write_version(exports, "b.jsonl", 1, 100)
    night(emu, exports, work, capsys)
    a2 = write_version(exports, "a.jsonl", 2, 120)

    skipped = night(emu, exports, work, capsys, "--skip-changed")
    assert decided(skipped) == {"a.jsonl": "changed-skipped", "b.jsonl": "loaded"}
    assert skipped["records"] == 0
    assert_exactly_once(emu, a1 + b1)

    # In words: the summary names the changed file and what changed.
    assert cli.main([a for a in argv(emu, exports, work, "--skip-changed", "--dry-run")
                     if a != "--json"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "changed, SKIPPED (--skip-changed): " in out and "a.jsonl" in out
    assert "size 5,440 → 6,670 bytes" in out, out

    forced = night(emu, exports, work, capsys, "--force")
    assert decided(forced) == {"a.jsonl": "forced", "b.jsonl": "forced"}
    assert_exactly_once(emu, a1 + b1 + a2 + b1)  # --force sends b again: asked for


@pytest.mark.usefixtures("env")
def test_a_failed_shard_keeps_its_file_out_of_the_ledger_until_resumed(
    emulator_thread: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file split across shards with one failed shard is not loaded: the next night
    resumes that run first (its uploaded shards are not sent again), then loads the new
    files."""
    emu = emulator_thread
    exports, work = tmp_path / "exports", tmp_path / "work"
    exports.mkdir()
    expected = write_version(exports, "a.jsonl", 1, 600)  # 4 shards of 150
    emu.set_faults(put_503_first_n=4)  # every PUT of this run fails: its shards fail
    failed = night(emu, exports, work, capsys, "--max-retries", "0", code=4)
    assert failed["failed"] == failed["shards"] == 4
    assert failed["ledger"]["recorded"] == 0
    assert [Path(p).name for p in failed["ledger"]["not_loaded"]] == ["a.jsonl"]

    expected += write_version(exports, "b.jsonl", 1, 30)
    second = night(emu, exports, work, capsys)
    assert second["ledger"]["archived"]["run_id"] == failed["ledger"]["run_id"]
    assert second["ledger"]["resumed"] == failed["ledger"]["run_id"]
    assert second["resumed_run"]["uploaded"] == 4
    assert decided(second) == {"a.jsonl": "loaded", "b.jsonl": "new"}
    assert_exactly_once(emu, expected)


@pytest.mark.usefixtures("env")
def test_a_plain_load_before_is_adopted(
    emulator_thread: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A schedule that ran plain loads into its work dir turns incremental: the finished
    plain run's files are recorded from its manifest, and not sent again."""
    emu = emulator_thread
    exports, work = tmp_path / "exports", tmp_path / "work"
    exports.mkdir()
    expected = write_version(exports, "a.jsonl", 1, 200)
    plain = [a for a in argv(emu, exports, work) if a not in ("--incremental", "--json")]
    plain = plain[: plain.index("--ledger")]
    assert cli.main(plain) == 0
    capsys.readouterr()
    expected += write_version(exports, "b.jsonl", 1, 20)
    doc = night(emu, exports, work, capsys)
    assert decided(doc) == {"a.jsonl": "loaded", "b.jsonl": "new"}
    assert doc["ledger"]["repaired"][0]["recorded"] == 1
    assert_exactly_once(emu, expected)


@pytest.mark.usefixtures("env")
def test_ledger_command_lists_and_forgets(
    emulator_thread: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emu = emulator_thread
    exports, work = tmp_path / "exports", tmp_path / "work"
    exports.mkdir()
    a = write_version(exports, "a.jsonl", 1, 50)
    b = write_version(exports, "b.jsonl", 1, 50)
    first = night(emu, exports, work, capsys)
    ledger = str(tmp_path / "ledger.sqlite")

    assert cli.main(["ledger", "list", "products", "--ledger", ledger, "--json"]) == 0
    loads = json.loads(capsys.readouterr().out)["loads"]
    assert sorted(Path(e["path"]).name for e in loads) == ["a.jsonl", "b.jsonl"]
    assert {e["run_id"] for e in loads} == {first["ledger"]["run_id"]}
    assert all(e["request_ids"] and e["size"] for e in loads)

    assert cli.main(["ledger", "forget", "products", str(exports / "a.jsonl"),
                     "--ledger", ledger]) == 0  # fmt: skip
    assert "forgot 1 load(s)" in capsys.readouterr().out
    again = night(emu, exports, work, capsys)
    assert decided(again) == {"a.jsonl": "new", "b.jsonl": "loaded"}
    assert_exactly_once(emu, a + b + a)  # forgotten: loaded again, as asked

    assert cli.main(["ledger", "list", "products", "--ledger", ledger, "--runs"]) == 0
    out = capsys.readouterr().out
    assert "2 run(s) of 'products'" in out and "complete" in out
    backup = tmp_path / "copy.sqlite"
    assert cli.main(["ledger", "backup", "products", str(backup), "--ledger", ledger]) == 0
    with Ledger.open(backup) as copy:
        assert len(copy.entries("products")) == 2


def test_ledger_options_without_incremental_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "a.jsonl"
    src.write_bytes(b'{"id": "1"}\n')
    for extra in (["--skip-changed"], ["--force"], ["--ledger", "x.sqlite"], ["--checksum"]):
        assert cli.main(["load", "ns", str(src), "--dry-run", *extra]) == 2
        assert "add --incremental" in capsys.readouterr().err
    both = ["--incremental", "--force", "--skip-changed"]
    assert cli.main(["load", "ns", str(src), "--dry-run", *both]) == 2
    assert "choose one" in capsys.readouterr().err


def test_load_records_refuses_incremental(tmp_path: Path) -> None:
    async def go() -> None:
        async with bulkload.Loader("ns", dry_run=True, incremental=True,
                                   work_dir=tmp_path / "w") as loader:  # fmt: skip
            await loader.load_records([{"id": "1"}])

    import asyncio

    with pytest.raises(bulkload.ConfigError, match="not files"):
        asyncio.run(go())


@pytest.mark.usefixtures("env")
def test_dry_run_decides_without_touching_the_ledger_or_the_work_dir(
    emulator_thread: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emu = emulator_thread
    exports, work = tmp_path / "exports", tmp_path / "work"
    exports.mkdir()
    write_version(exports, "a.jsonl", 1, 50)
    dry = night(emu, exports, work, capsys, "--dry-run")
    assert decided(dry) == {"a.jsonl": "new"} and dry["records"] == 50
    assert not (tmp_path / "ledger.sqlite").exists()
    assert not (work / "manifest.json").exists()
    real = night(emu, exports, work, capsys)
    assert decided(real) == {"a.jsonl": "new"}
    write_version(exports, "b.jsonl", 1, 5)
    dry = night(emu, exports, work, capsys, "--dry-run")
    assert decided(dry) == {"a.jsonl": "loaded", "b.jsonl": "new"} and dry["records"] == 5
    assert read_manifest(work)["run_id"] == real["ledger"]["run_id"], "its run is untouched"


# -- two runs at once, and kill -9 across nights (the real CLI, in processes) -----------------


def env_vars() -> dict[str, str]:
    return {**os.environ, "SAFETYKIT_API_KEY": API_KEY}


def command(emu: EmulatorThread, exports: Path, work: Path, ledger: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bulkload", "load", "products", str(exports), "--work-dir",
            str(work), "--base-url", emu.base_url, "--shard-records", "80", "--incremental",
            "--ledger", str(ledger), "--quiet", *extra]  # fmt: skip


def test_two_runs_at_once_one_waits_then_skips(
    emulator_thread: EmulatorThread, tmp_path: Path
) -> None:
    """A cron overlap: the second run of the namespace waits for the first (the ledger's
    claim, SQLite's lock), then finds every file loaded; with no wait it refuses, naming
    the run that holds the namespace and what to do."""
    emu = emulator_thread
    exports = tmp_path / "exports"
    exports.mkdir()
    expected = []
    for n in range(3):
        expected += write_version(exports, f"{n}.jsonl", 1, 400)
    ledger = tmp_path / "ledger.sqlite"
    # The first run is held at its import calls (429, again and again) until released.
    emu.set_faults(import_429_first_n=1_000_000, retry_after_s=0.05)
    first = subprocess.Popen(
        command(emu, exports, tmp_path / "w1", ledger, "--max-retries", "100000"),
        env=env_vars(), stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        # It holds the namespace before its first import call.
        emu.wait_for(lambda: bool(emu.counters().get("import")), timeout=60)
        refused = subprocess.run(
            command(emu, exports, tmp_path / "w2", ledger, "--ledger-wait", "0"),
            env=env_vars(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert refused.returncode == 1, refused.stderr
        assert "is held for namespace 'products' by run" in refused.stderr
        assert "--ledger-wait" in refused.stderr
        waiting = subprocess.Popen(
            command(emu, exports, tmp_path / "w3", ledger, "--json"),
            env=env_vars(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert waiting.stderr is not None
        said = waiting.stderr.readline()  # blocks until it says it waits
        assert b"waiting for run" in said and b"holds this namespace" in said
        emu.set_faults(Faults())  # release the first run
        out, err = waiting.communicate(timeout=120)
        assert waiting.returncode == 0, err.decode()
        doc = json.loads(out)
        assert doc["ledger"]["load"] == 0 and doc["ledger"]["skip"] == 3
        assert doc["ledger"]["waited"] > 0
    finally:
        emu.set_faults(Faults())
        first.communicate(timeout=120)
    assert first.returncode == 0
    assert_exactly_once(emu, expected)


def test_kill_9_at_random_moments_across_nights(
    emulator_thread: EmulatorThread, tmp_path: Path
) -> None:
    """Three nights of a growing export (new files, one re-exported with changes, one
    deleted), each night's command SIGKILLed at random moments and started again until it
    ends on its own: every record of every version of every file went up exactly once."""
    emu = emulator_thread
    emu.set_faults(latency_s=0.005)
    exports, work, ledger = tmp_path / "exports", tmp_path / "work", tmp_path / "ledger.sqlite"
    exports.mkdir()
    rng = random.Random(int(os.environ.get("BULKLOAD_CHAOS_SEED", "20261129")))
    expected: list[bytes] = []
    plan = [
        {"a.jsonl": 500, "b.jsonl": 300, "c.jsonl": 200},
        {"d.jsonl": 400, "e.jsonl": 10},
        {"b.jsonl": 330, "f.jsonl": 250},  # b re-exported; c deleted below
    ]
    kills = 0
    for number, files in enumerate(plan, start=1):
        for name, count in files.items():
            expected += write_version(exports, name, number, count)
        if number == 3:
            (exports / "c.jsonl").unlink()
        cmd = command(emu, exports, work, ledger, "--concurrency", "3")
        for attempt in range(40):
            proc = subprocess.Popen(cmd, env=env_vars(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)  # fmt: skip
            base = len(emu.requests())
            puts = sum(emu.counters().get("put", {}).values())
            k = rng.randint(0, 5)
            moment = rng.choice(["imports", "puts", "mid-put"])

            def reached(
                base: int = base, puts: int = puts, k: int = k, moment: str = moment
            ) -> bool:
                if proc.poll() is not None:
                    return True
                if moment == "imports":
                    return len(emu.requests()) >= base + k
                if moment == "puts":
                    return sum(emu.counters().get("put", {}).values()) >= puts + k
                return emu.puts_in_flight > 0

            # The predicate also watches the process: its end wakes the wait.
            threading.Thread(target=lambda p=proc: (p.wait(), emu.notify()), daemon=True).start()
            emu.wait_for(reached, timeout=60)
            if proc.poll() is None and attempt < 3:
                proc.kill()
                proc.communicate()
                kills += 1
                continue
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()
            break
    assert kills >= 6
    assert_exactly_once(emu, expected)
    with Ledger.open(ledger) as book:
        names = {Path(e.identity.key).name: e for e in book.entries("products")}
        assert set(names) == {"a.jsonl", "b.jsonl", "c.jsonl", "d.jsonl", "e.jsonl", "f.jsonl"}
        assert all(r.outcome is not None for r in book.runs("products"))


@pytest.mark.usefixtures("env")
def test_partitions_share_a_ledger_and_keep_their_files_night_after_night(
    emulator_thread: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--incremental --partition I/N splits by a hash of each file's key: a file stays with
    its worker as the export grows, the workers' shares never overlap, and their
    manifests merge."""
    emu = emulator_thread
    exports = tmp_path / "exports"
    exports.mkdir()
    expected = []
    # 16 files: a share is empty with probability 2^-15 (the keys hash the tmp path).
    for n in range(16):
        expected += write_version(exports, f"{n}.jsonl", 1, 10)
    shares: dict[int, set[str]] = {}
    for night_no in (1, 2):
        if night_no == 2:
            for n in range(16, 24):
                expected += write_version(exports, f"{n}.jsonl", 1, 10)
        for index in (0, 1):
            work = tmp_path / f"part-{index}"
            doc = night(emu, exports, work, capsys, "--partition", f"{index}/2")
            mine = {Path(d["path"]).name for d in doc["ledger"]["decisions"]}
            loaded = {
                Path(d["path"]).name for d in doc["ledger"]["decisions"] if d["reason"] == "new"
            }
            if night_no == 1:
                shares[index] = mine
                assert loaded == mine
            else:
                assert shares[index] <= mine, "a file moved to another worker"
                assert loaded == mine - shares[index]
    assert shares[0].isdisjoint(shares[1]) and shares[0] and shares[1]
    assert_exactly_once(emu, expected)
    merged = tmp_path / "merged.json"
    assert cli.main(["merge", str(tmp_path / "part-0"), str(tmp_path / "part-1"),
                     "--output", str(merged), "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["merged"] == 2


@pytest.mark.usefixtures("env")
def test_resend_failed_reaches_last_nights_run(
    emulator_thread: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`wait` found a request that failed processing; the command it prints
    (`load … --resend-failed`) resends it from that run before tonight's new files."""
    emu = emulator_thread
    exports, work = tmp_path / "exports", tmp_path / "work"
    exports.mkdir()
    lines = write_version(exports, "a.jsonl", 1, 300)
    first = night(emu, exports, work, capsys)
    emu.set_faults(fail_ids={"a.jsonl-200"})
    assert cli.main(["wait", str(work), "--base-url", emu.base_url, "--timeout", "60",
                     "--json"]) == 4  # fmt: skip
    capsys.readouterr()
    emu.set_faults(Faults())
    lines += write_version(exports, "b.jsonl", 1, 10)
    requests = len(emu.requests())
    second = night(emu, exports, work, capsys, "--resend-failed")
    assert second["ledger"]["resumed"] == first["ledger"]["run_id"]
    assert second["resumed_run"]["resent"] == 1
    assert decided(second) == {"a.jsonl": "loaded", "b.jsonl": "new"}
    assert len(emu.requests()) - requests == 2  # the resent shard, and b's
