"""Loses nothing: kills, interrupts, resume, faults — proven from what the emulator stored."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import psutil
import pytest
from conftest import API_KEY
from helpers import assert_exactly_once, read_manifest, read_rejects, record, write_lines

import bulkload
from bulkload import cli
from bulkload.emulator import EmulatorThread


def make_dataset(tmp: Path, files: int = 3, per_file: int = 1500) -> tuple[list[str], list[bytes]]:
    """A few files of valid records with one bad line each; the inputs and the valid lines."""
    paths, expected = [], []
    for f in range(files):
        lines = [record(f * per_file + i, pad="y" * (i % 40)) for i in range(per_file)]
        expected += lines
        lines.insert(per_file // 2, b'{"id": null}')
        paths.append(str(write_lines(tmp / f"part-{f}.jsonl", lines)))
    return paths, expected


def journal_uploaded(work: Path) -> set[str]:
    """Request ids the run's journal records as uploaded (its idea of "completed")."""
    path = work / "state" / "journal.jsonl"
    if not path.exists():
        return set()
    by_index: dict[int, str] = {}
    done = set()
    for raw in path.read_bytes().splitlines():
        try:
            e = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue  # a torn last line
        if e.get("t") == "ticket":
            by_index[e["index"]] = e["request_id"]
        elif e.get("t") == "uploaded":
            done.add(by_index[e["index"]])
    return done


def loader_cmd(emu: EmulatorThread, work: Path, inputs: list[str], *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "bulkload", "load", "products", *inputs,
        "--work-dir", str(work), "--base-url", emu.base_url, "--quiet", *extra,
    ]  # fmt: skip


def env() -> dict[str, str]:
    return {**os.environ, "SAFETYKIT_API_KEY": API_KEY}


def put_attempts(emu: EmulatorThread) -> int:
    return sum(emu.counters().get("put", {}).values())


def test_chaos_sigkill_at_random_moments_then_resume(
    emulator_thread: EmulatorThread, tmp_path: Path
) -> None:
    """SIGKILL the CLI at random moments (at least 5 times), resume each time; in the end
    every valid record arrived exactly once and no completed shard was uploaded again."""
    emu = emulator_thread
    emu.set_faults(latency_s=0.01)
    inputs, expected = make_dataset(tmp_path)
    work = tmp_path / "work"
    cmd = loader_cmd(emu, work, inputs, "--shard-records", "60", "--concurrency", "4")
    rng = random.Random(20261128)
    completed_attempts: dict[str, int] = {}
    kills = 0
    for _ in range(30):
        # Half the runs validate and hash in worker processes: a resume must find the same
        # shards either way.
        mode = rng.choice([[], ["--workers", "2"]])
        proc = subprocess.Popen(
            cmd + mode, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        moment = rng.choice(["after-puts", "mid-put", "after-imports"])
        base_puts = put_attempts(emu)
        base_imports = sum(emu.counters().get("import", {}).values())
        k = rng.randint(1, 6)

        def reached() -> bool:
            if proc.poll() is not None:
                return True
            if moment == "after-puts":
                return put_attempts(emu) >= base_puts + k
            if moment == "mid-put":
                return emu.puts_in_flight > 0 and put_attempts(emu) > base_puts
            return sum(emu.counters().get("import", {}).values()) >= base_imports + k

        emu.wait_for(reached, timeout=60)
        if proc.poll() is None and kills < 6:
            proc.kill()
            proc.communicate()
            kills += 1
            # Whatever the journal says is complete must never be PUT again.
            attempts = {r.request_id: r.put_attempts for r in emu.requests()}
            for rid in journal_uploaded(work):
                completed_attempts.setdefault(rid, attempts[rid])
            continue
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 3, err.decode()
        break
    assert kills >= 5
    assert_exactly_once(emu, expected)
    final = {r.request_id: r.put_attempts for r in emu.requests()}
    again = {rid: (n, final[rid]) for rid, n in completed_attempts.items() if final[rid] != n}
    assert not again, f"completed shards uploaded again: {again}"
    manifest = read_manifest(work)
    assert manifest["totals"]["uploaded"] == manifest["totals"]["shards"]
    assert manifest["totals"]["records"] == len(expected)
    assert len(read_rejects(work)) == 3, "rejects are regenerated whole, each bad line once"
    # Every request that holds data is in the manifest: nothing went up under a lost id.
    holding = {r.request_id for r in emu.requests() if r.put_successes}
    assert holding == {s["request_id"] for s in manifest["shards"]}


def test_worker_processes_exit_with_a_killed_loader(
    emulator_thread: EmulatorThread, tmp_path: Path
) -> None:
    """SIGKILL leaves the loader no time to stop its worker processes; they notice on their
    own, rather than waiting on their task queue forever."""
    emu = emulator_thread
    emu.set_faults(hang_first_n=1000, hang_s=3)  # import calls hang: the run is held
    inputs, _ = make_dataset(tmp_path)
    cmd = loader_cmd(emu, tmp_path / "work", inputs, "--workers", "2", "--shard-records", "60")
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        emu.wait_for(lambda: sum(emu.counters().get("import", {}).values()) > 0, timeout=60)
        children = psutil.Process(proc.pid).children(recursive=True)
        workers = [p for p in children if "forkserver" in " ".join(p.cmdline())]
        assert len(workers) >= 3  # the fork server and its two workers
    finally:
        proc.kill()
        proc.communicate()
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"outlived the loader: {[p.cmdline() for p in alive]}"


def test_a_worker_killed_mid_run_stops_the_run_with_advice_and_resume_completes(
    emulator_thread: EmulatorThread, tmp_path: Path
) -> None:
    """A worker process killed (the OOM killer, say) is a clear error, exit 1, and the same
    command resumes: every record arrives exactly once."""
    emu = emulator_thread
    # The first imports hang: the reader fills the upload queue and waits while a worker
    # is killed, then goes on, and meets the broken pool.
    emu.set_faults(hang_first_n=8, hang_s=2)
    # Files over reader.SMALL_FILE (~340 KB): validated in place, hashed from the files, so
    # that the reader, slower, still has work for the pool when the uploads start (files
    # copied whole into the spool are all hashed before the first upload).
    inputs, expected = make_dataset(tmp_path, per_file=5000)
    cmd = loader_cmd(emu, tmp_path / "work", inputs, "--shard-records", "60")
    proc = subprocess.Popen(
        [*cmd, "--workers", "2"], env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    emu.wait_for(lambda: sum(emu.counters().get("import", {}).values()) > 0, timeout=60)
    children = psutil.Process(proc.pid).children(recursive=True)
    workers = [p for p in children if p.ppid() != proc.pid]  # the fork server's children
    workers[0].kill()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err.decode()
    assert "a worker process died" in err.decode()
    assert "rerun the same command to resume" in err.decode()
    done = subprocess.run(cmd, env=env(), capture_output=True, timeout=120, check=False)
    assert done.returncode == 3, done.stderr.decode()
    assert_exactly_once(emu, expected)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_cleanly_and_the_same_command_resumes(
    emulator_thread: EmulatorThread, tmp_path: Path, signum: int, code: int
) -> None:
    emu = emulator_thread
    emu.set_faults(latency_s=0.02)
    inputs, expected = make_dataset(tmp_path, files=2, per_file=3000)
    work = tmp_path / "work"
    cmd = loader_cmd(emu, work, inputs, "--shard-records", "50", "--concurrency", "2")
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    emu.wait_for(lambda: put_attempts(emu) >= 3 or proc.poll() is not None, timeout=60)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err.decode()
    assert "To resume:" in err.decode()
    manifest = read_manifest(work)  # valid JSON, flushed
    assert manifest["finished_at"] is None
    assert 0 < manifest["totals"]["uploaded"] < 120
    rerun = subprocess.run(cmd, env=env(), capture_output=True, timeout=120)
    assert rerun.returncode == 3, rerun.stderr.decode()
    assert_exactly_once(emu, expected)


def test_resume_skips_uploaded_shards_and_refuses_changed_inputs(
    emulator_thread: EmulatorThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SAFETYKIT_API_KEY", API_KEY)
    src = write_lines(tmp_path / "in.jsonl", [record(i) for i in range(400)])
    argv = ["load", "products", str(src), "--work-dir", str(tmp_path / "w"), "--quiet",
            "--base-url", emulator_thread.base_url, "--shard-records", "100"]  # fmt: skip
    assert cli.main(argv) == 0
    imports = emulator_thread.counters()["import"]["200"]
    assert cli.main(argv) == 0  # everything already uploaded: no new import call
    assert emulator_thread.counters()["import"]["200"] == imports
    write_lines(src, [record(i) for i in range(401)])
    capsys.readouterr()
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "inputs changed" in err and "--restart" in err
    assert cli.main([*argv, "--restart"]) == 0
    assert any(p.name.startswith("manifest.before-") for p in (tmp_path / "w").iterdir())


def test_faults_every_record_still_arrives_exactly_once(
    emulator_thread: EmulatorThread, tmp_path: Path
) -> None:
    emu = emulator_thread
    emu.set_faults(
        import_5xx_rate=0.2,
        import_429_first_n=4,
        retry_after_s=0.2,
        put_drop_rate=0.1,
        put_503_rate=0.1,
        expired_url_first_n=3,
    )
    inputs, expected = make_dataset(tmp_path, files=2, per_file=1000)
    result = bulkload.load(
        "products",
        inputs,
        api_key=API_KEY,
        base_url=emu.base_url,
        work_dir=tmp_path / "w",
        shard_max_records=50,
        upload_concurrency=4,
        max_retries=10,
    )
    assert (result.failed, result.exit_code) == (0, 3)
    assert_exactly_once(emu, expected)
    counters = emu.counters()
    assert counters["import"].get("429", 0) == 4
    assert counters["put"].get("dropped", 0) + counters["put"].get("503", 0) > 0
    manifest = read_manifest(tmp_path / "w")
    abandoned = [rid for s in manifest["shards"] for rid in s["abandoned_request_ids"]]
    assert len(abandoned) == 3, "each expired URL was replaced, its request id kept"


def test_slow_responses_past_the_timeout_are_retried(
    emulator_thread: EmulatorThread, tmp_path: Path
) -> None:
    emulator_thread.set_faults(hang_first_n=2, hang_s=30)
    src = write_lines(tmp_path / "in.jsonl", [record(i) for i in range(200)])
    result = bulkload.load(
        "products", [str(src)], api_key=API_KEY, base_url=emulator_thread.base_url,
        work_dir=tmp_path / "w", shard_max_records=100, timeout=0.5,
    )  # fmt: skip
    assert result.exit_code == 0
    assert_exactly_once(emulator_thread, [record(i) for i in range(200)])


def test_emulator_stopped_and_restarted_mid_run(tmp_path: Path) -> None:
    inputs, expected = make_dataset(tmp_path, files=1, per_file=3000)
    with EmulatorThread(api_key=API_KEY, port=0, data_dir=tmp_path / "emu") as emu:
        emu.set_faults(latency_s=0.01)
        outcome: list[bulkload.LoadResult] = []
        worker = threading.Thread(
            target=lambda: outcome.append(
                bulkload.load(
                    "products",
                    inputs,
                    api_key=API_KEY,
                    base_url=emu.base_url,
                    work_dir=tmp_path / "w",
                    shard_max_records=50,
                    upload_concurrency=2,
                    max_retries=10,
                )
            )
        )
        worker.start()
        emu.wait_for(lambda: emu.counters().get("put", {}).get("200", 0) >= 5, timeout=60)
        emu.stop()
        emu.start()
        worker.join(timeout=120)
        assert outcome and outcome[0].failed == 0
        assert_exactly_once(emu, expected)


def test_shard_failing_after_all_retries_is_marked_and_retried_next_run(
    emulator_thread: EmulatorThread, tmp_path: Path
) -> None:
    emulator_thread.set_faults(put_500_first_n=2)
    src = write_lines(tmp_path / "in.jsonl", [record(i) for i in range(100)])
    kwargs = dict(
        api_key=API_KEY, base_url=emulator_thread.base_url, work_dir=tmp_path / "w",
        shard_max_records=50, upload_concurrency=1, max_retries=0,
    )  # fmt: skip
    first = bulkload.load("products", [str(src)], **kwargs)
    assert (first.failed, first.exit_code) == (2, 4)
    manifest = read_manifest(tmp_path / "w")
    assert all(s["status"] == "failed" and "500" in s["error"] for s in manifest["shards"])
    second = bulkload.load("products", [str(src)], **kwargs)
    assert (second.failed, second.uploaded, second.exit_code) == (0, 2, 0)
    assert_exactly_once(emulator_thread, [record(i) for i in range(100)])


def test_secrets_never_leave_the_process(emulator_thread: EmulatorThread, tmp_path: Path) -> None:
    """The key appears in no file and no output; URL signatures only in the private state."""
    emu = emulator_thread
    emu.set_faults(expired_url_first_n=1, put_503_first_n=1, import_5xx_first_n=1)
    inputs, _ = make_dataset(tmp_path, files=1, per_file=300)
    work = tmp_path / "work"
    run = subprocess.run(
        [*loader_cmd(emu, work, inputs, "--shard-records", "100", "-vv", "--json")],
        env=env(),
        capture_output=True,
        timeout=120,
    )
    assert run.returncode == 3, run.stderr.decode()
    bad = subprocess.run(
        [*loader_cmd(emu, tmp_path / "w2", inputs, "-vv")],
        env={**env(), "SAFETYKIT_API_KEY": "sk-live-not-the-right-one"},
        capture_output=True,
        timeout=60,
    )
    assert bad.returncode == 1 and b"API key" in bad.stderr
    assert b"sk-live-not-the-right-one" not in bad.stdout + bad.stderr
    outputs = run.stdout + run.stderr
    assert API_KEY.encode() not in outputs
    assert b"Signature" not in outputs
    for path in work.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert API_KEY.encode() not in data, path
            if "state" not in path.parts:
                assert b"Signature" not in data, path
    journal = work / "state" / "journal.jsonl"
    assert journal.stat().st_mode & 0o777 == 0o600
    assert (work / "state").stat().st_mode & 0o777 == 0o700


def test_whole_run_errors_have_one_clear_message(
    emulator_thread: EmulatorThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SAFETYKIT_API_KEY", API_KEY)
    good = write_lines(tmp_path / "good.jsonl", [record(i) for i in range(10)])
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    gz_unsuffixed = tmp_path / "data.jsonl"
    write_lines(tmp_path / "x.jsonl.gz", [record(1)])
    gz_unsuffixed.write_bytes((tmp_path / "x.jsonl.gz").read_bytes())
    corrupt = tmp_path / "corrupt.jsonl.gz"
    corrupt.write_bytes((tmp_path / "x.jsonl.gz").read_bytes()[:-12])
    parquet = tmp_path / "table.jsonl"
    parquet.write_bytes(b"PAR1" + bytes(100))
    cases = [
        ([str(tmp_path / "nope.jsonl")], [], "nope.jsonl"),
        ([str(empty_dir)], [], "no JSONL"),
        ([str(gz_unsuffixed)], [], ".gz"),
        ([str(corrupt)], [], "corrupt.jsonl.gz"),
        ([str(parquet)], [], "Parquet"),
        ([str(good)], ["--base-url", "http://127.0.0.1:9"], "127.0.0.1:9"),
        ([str(good)], ["--base-url", "http://no-such-host.invalid"], "no-such-host.invalid"),
        ([str(good)], ["--base-url", emulator_thread.base_url + "/wrong/prefix"], "404"),
    ]
    for i, (inputs, extra, needle) in enumerate(cases):
        argv = ["load", "products", *inputs, "--work-dir", str(tmp_path / f"w{i}"),
                "--quiet", "--max-retries", "1", "--timeout", "5"]  # fmt: skip
        if "--base-url" not in extra:
            argv += ["--base-url", emulator_thread.base_url]
        code = cli.main(argv + extra)
        err = capsys.readouterr().err
        assert code == 1, (needle, err)
        assert needle in err, (needle, err)
        assert "Traceback" not in err
        assert err.count("bulkload: error:") == 1, err
