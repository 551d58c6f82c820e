"""`status` and `wait`: every request followed to its end, results fetched and joined."""

from __future__ import annotations

import collections
import json
import urllib.request
from pathlib import Path

import orjson
import pytest
from conftest import API_KEY
from helpers import read_manifest, record, write_lines

import bulkload
from bulkload import cli
from bulkload._follow import Follower
from bulkload.emulator import Emulator, EmulatorThread


def load_some(emu: EmulatorThread, tmp: Path, n: int = 600, per_shard: int = 100) -> Path:
    src = write_lines(tmp / "in.jsonl", [record(i) for i in range(n)])
    result = bulkload.load(
        "products", [str(src)], api_key=API_KEY, base_url=emu.base_url,
        work_dir=tmp / "w", shard_max_records=per_shard,
    )  # fmt: skip
    assert result.exit_code == 0
    return tmp / "w"


def wait_cli(work: Path, *extra: str) -> int:
    return cli.main(["wait", str(work), "--quiet", "--json", *extra])


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFETYKIT_API_KEY", API_KEY)


def test_wait_follows_every_request_and_joins_results_to_source_lines(
    emulator_thread: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emulator_thread.ingest_delay = 0.3
    work = load_some(emulator_thread, tmp_path)
    results = tmp_path / "results"
    capsys.readouterr()
    assert wait_cli(work, "--results", str(results)) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["requests"], summary["succeeded"], summary["objects"]) == (6, 6, 600)
    assert summary["mismatches"] == []
    manifest = read_manifest(work)
    for shard in manifest["shards"]:
        assert shard["processing_status"] == "succeeded"
        assert shard["data_count"] == 100
        assert (results / f"{shard['request_id']}.jsonl").exists()
    joined = [orjson.loads(x) for x in (results / "results.jsonl").read_bytes().splitlines()]
    assert len(joined) == 600
    by_id = {j["id"]: j for j in joined}
    # record(i) is on line i + 1 of in.jsonl
    assert by_id["p-000042"]["line"] == 43
    assert by_id["p-000042"]["source"] == str(tmp_path / "in.jsonl")
    assert by_id["p-000042"]["output"]["labels"]


def test_wait_reports_failed_requests_with_their_source_lines(
    emulator_thread: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emulator_thread.set_faults(fail_ids={"p-000150"})
    work = load_some(emulator_thread, tmp_path)
    capsys.readouterr()
    assert wait_cli(work) == 4
    summary = json.loads(capsys.readouterr().out)
    assert summary["failed"] == 1 and summary["succeeded"] == 5
    failure = summary["failures"][0]
    assert failure["shard"] == 1
    assert "p-000150" in failure["error_summary"]
    assert failure["sources"] == [
        {"path": str(tmp_path / "in.jsonl"), "first_line": 101, "last_line": 200}
    ]
    # The text form names the shard, its lines, and the error.
    assert cli.main(["status", str(work)]) == 4
    out = capsys.readouterr().out
    assert "FAILED shard 1" in out and "lines 101-200" in out


def test_expired_data_urls_and_status_5xx_are_survived_and_reruns_skip_downloads(
    emulator_thread: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = load_some(emulator_thread, tmp_path)
    emulator_thread.set_faults(expired_data_url_first_n=2, status_5xx_rate=0.3)
    results = tmp_path / "results"
    assert wait_cli(work, "--results", str(results)) == 0
    assert len(list(results.glob("req_*.jsonl"))) == 6
    downloads = emulator_thread.counters()["results"].get("200", 0)
    assert emulator_thread.counters()["results"].get("403", 0) == 2
    capsys.readouterr()
    assert wait_cli(work, "--results", str(results)) == 0
    assert emulator_thread.counters()["results"].get("200", 0) == downloads, "nothing fetched twice"
    assert json.loads(capsys.readouterr().out)["objects"] == 600


async def test_library_watch_yields_each_status_change(emulator: Emulator, tmp_path: Path) -> None:
    src = write_lines(tmp_path / "in.jsonl", [record(i) for i in range(300)])
    emulator.ingest_delay = 0.2
    async with bulkload.Loader(
        "products",
        api_key=API_KEY,
        base_url=emulator.base_url,
        work_dir=tmp_path / "w",
        shard_max_records=100,
    ) as loader:
        await loader.load([str(src)])
    changes = []
    async with Follower(tmp_path / "w", api_key=API_KEY, poll_start=0.05) as follower:
        async for change in follower.watch():
            changes.append(change)
    final = {c.shard: c.status for c in changes}
    assert final == {0: "succeeded", 1: "succeeded", 2: "succeeded"}


def test_wait_max_rps_caps_calls_with_a_thousand_requests(
    emulator_thread: EmulatorThread, tmp_path: Path
) -> None:
    """1,000 requests that never finish; `wait --max-rps 20` for 3 s: never 21 calls in a
    second, as the emulator saw them."""
    emu = emulator_thread
    shards = []
    for i in range(1000):
        req = urllib.request.Request(
            f"{emu.base_url}/v1/data/products/import",
            data=b"{}",
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req) as resp:
            rid = json.loads(resp.read())["requestId"]
        shards.append({"index": i, "request_id": rid, "status": "uploaded", "records": 1,
                       "bytes": 10, "md5": "", "sources": []})  # fmt: skip
    manifest = tmp_path / "manifest.json"
    manifest.write_text(
        json.dumps({"namespace": "products", "base_url": emu.base_url, "shards": shards})
    )
    before = len(emu.call_log("status"))
    assert wait_cli(manifest, "--max-rps", "20", "--timeout", "3") == 1
    times = [t for t in emu.call_log("status")[before:]]
    assert len(times) >= 40
    per_window = collections.Counter()
    for t in times:
        # every one-second window that starts at a call
        per_window[t] = sum(1 for u in times if t <= u < t + 1.0)
    assert max(per_window.values()) <= 20


def test_wait_refuses_a_work_dir_that_a_load_is_still_writing(
    emulator_thread: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bulkload._journal import lock_work_dir, unlock_work_dir

    work = load_some(emulator_thread, tmp_path)
    held = lock_work_dir(work)  # as a running `bulkload load` holds it
    try:
        assert wait_cli(work) == 1
        assert "in use by a running `bulkload load`" in capsys.readouterr().err
    finally:
        unlock_work_dir(held)
    assert wait_cli(work) == 0
