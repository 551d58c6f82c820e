"""Partitioned runs (`load --partition I/N`) and `merge`: the shares, and the merged run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import orjson
import pytest
from conftest import API_KEY
from helpers import assert_exactly_once, read_manifest, record, write_lines
from hypothesis import given
from hypothesis import strategies as st

import bulkload
from bulkload import cli
from bulkload._inputs import Source
from bulkload._partition import share_of
from bulkload.emulator import EmulatorThread


def fake(path: str, size: int) -> Source:
    return Source(path, Path(path), None, size, 0)


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=10**9), max_size=60),
    count=st.integers(min_value=1, max_value=9),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_property_every_file_in_exactly_one_balanced_partition(
    sizes: list[int], count: int, seed: int
) -> None:
    sources = [fake(f"data/part-{i:03d}.jsonl", size) for i, size in enumerate(sizes)]
    shares = [share_of(sources, i, count) for i in range(count)]
    # Every file in exactly one share; each share keeps the input order.
    every = [s.display for share in shares for s in share]
    assert sorted(every) == sorted(s.display for s in sources)
    for share in shares:
        assert share == sorted(share, key=sources.index)
    # Balanced within the largest file.
    loads = [sum(s.size or 0 for s in share) for share in shares]
    assert max(loads) - min(loads) <= max(sizes, default=0)
    # Deterministic: the same assignment whatever order the list was built in.
    shuffled = sources[:]
    random.Random(seed).shuffle(shuffled)
    again = [{s.display for s in share_of(shuffled, i, count)} for i in range(count)]
    assert again == [{s.display for s in share} for share in shares]


def test_the_public_function_takes_inputs_as_load_does(tmp_path: Path) -> None:
    """`partition_inputs` answers with the files each worker loads, from INPUT specs (no
    private type needed): the same shares as `load --partition` uses."""
    for i, size in enumerate([500, 300, 200, 100]):
        (tmp_path / f"part-{i}.jsonl").write_bytes(b'{"id":"x"}\n' * size)
    shares = [bulkload.partition_inputs([str(tmp_path)], i, 2) for i in range(2)]
    assert sorted(p for share in shares for p in share) == sorted(
        str(tmp_path / f"part-{i}.jsonl") for i in range(4)
    )
    assert shares[0] == [str(tmp_path / "part-0.jsonl"), str(tmp_path / "part-3.jsonl")]


def test_partition_refuses_stdin_and_bad_specs() -> None:
    with pytest.raises(bulkload.ConfigError, match="standard input"):
        share_of([Source("-", None, None, None, None)], 0, 2)
    with pytest.raises(bulkload.ConfigError, match="0 <= I < N"):
        share_of([], 2, 2)
    with pytest.raises(bulkload.ConfigError, match="standard input"):
        bulkload.partition_inputs(["-"], 0, 2)
    assert cli.main(["load", "ns", "x.jsonl", "--partition", "2/2", "--dry-run"]) == 2
    assert cli.main(["load", "ns", "x.jsonl", "--partition", "one", "--dry-run"]) == 2


def make_dataset(tmp: Path) -> tuple[list[str], list[bytes]]:
    """Five files of unequal sizes (one compressed); every line a valid record."""
    paths, lines = [], []
    n = 0
    for f, count in enumerate([400, 100, 250, 50, 300]):
        chunk = [record(n + i) for i in range(count)]
        n += count
        suffix = ".jsonl.gz" if f == 2 else ".jsonl"
        paths.append(str(write_lines(tmp / f"part-{f}{suffix}", chunk)))
        lines += chunk
    return paths, lines


def load_cli(base_url: str, paths: list[str], work: Path, *extra: str) -> int:
    return cli.main(
        ["load", "products", *paths, "--work-dir", str(work), "--base-url", base_url,
         "--shard-records", "120", "--quiet", *extra]
    )  # fmt: skip


def test_two_partitions_load_merge_and_wait(
    emulator_thread: EmulatorThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SAFETYKIT_API_KEY", API_KEY)
    paths, lines = make_dataset(tmp_path)
    base = emulator_thread.base_url
    for i in (0, 1):
        assert load_cli(base, paths, tmp_path / f"w{i}", "--partition", f"{i}/2") == 0
    assert_exactly_once(emulator_thread, lines)
    m0, m1 = read_manifest(tmp_path / "w0"), read_manifest(tmp_path / "w1")
    assert m0["partition"]["index"] == 0 and m1["partition"]["count"] == 2
    assert m0["partition"]["inputs"] == m1["partition"]["inputs"]
    assert [i["path"] for i in m0["partition"]["inputs"]] == paths
    mine = {i["path"] for i in m0["inputs"]} | {i["path"] for i in m1["inputs"]}
    assert mine == set(paths) and not {i["path"] for i in m0["inputs"]} & {
        i["path"] for i in m1["inputs"]
    }

    merged = tmp_path / "merged" / "manifest.json"
    capsys.readouterr()
    assert cli.main(["merge", str(tmp_path / "w1"), str(tmp_path / "w0"), "-o", str(merged)]) == 0
    assert "merged 2 partitions" in capsys.readouterr().out
    doc = orjson.loads(merged.read_bytes())
    assert doc == bulkload.merge_manifests([tmp_path / "w0", tmp_path / "w1"]) | {
        "work_dir": str(merged.parent)
    }
    assert [s["index"] for s in doc["shards"]] == list(range(len(doc["shards"])))
    assert [s["partition"] for s in doc["shards"]] == sorted(s["partition"] for s in doc["shards"])
    first_of_1 = next(s for s in doc["shards"] if s["partition"] == 1)
    assert first_of_1["original_index"] == 0 and first_of_1["work_dir"] == str(tmp_path / "w1")
    assert doc["totals"]["records"] == len(lines) == sum(s["records"] for s in doc["shards"])
    assert (
        doc["totals"]["uploaded"]
        == doc["totals"]["shards"]
        == len(m0["shards"]) + len(m1["shards"])
    )

    # wait --results on the merged manifest: every request, joined to its source line.
    results = tmp_path / "results"
    capsys.readouterr()
    assert cli.main(["wait", str(merged), "--results", str(results), "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["mismatches"] == [] and summary["objects"] == len(lines)
    joined = [orjson.loads(x) for x in (results / "results.jsonl").read_bytes().splitlines()]
    by_id = {j["id"]: (j["source"], j["line"]) for j in joined}
    assert len(by_id) == len(lines)
    assert by_id["p-000401"] == (paths[1], 2)  # part-1 starts at record 400
    assert by_id["p-000551"] == (paths[2], 52)  # the compressed one
    # `wait` recorded its findings and kept the merge's own keys.
    after = orjson.loads(merged.read_bytes())
    assert all(s["processing_status"] == "succeeded" for s in after["shards"])
    assert after["merged_from"] == doc["merged_from"]
    assert after["partition"] == doc["partition"]
    assert [(s["partition"], s["original_index"]) for s in after["shards"]] == [
        (s["partition"], s["original_index"]) for s in doc["shards"]
    ]
    assert cli.main(["status", str(merged), "--json"]) == 0


def dry(paths: list[str], work: Path, *extra: str, namespace: str = "products") -> None:
    code = cli.main(
        ["load", namespace, *paths, "--work-dir", str(work), "--dry-run", "--quiet", *extra]
    )
    assert code in (0, 3)


def merge_error(capsys: pytest.CaptureFixture[str], *argv: Path) -> str:
    capsys.readouterr()
    out = argv[-1]
    code = cli.main(["merge", *(str(a) for a in argv[:-1]), "--output", str(out)])
    assert code == 1
    assert not out.exists()
    return capsys.readouterr().err


def test_merge_detects_overlap_missing_and_mismatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths, _ = make_dataset(tmp_path)
    out = tmp_path / "merged.json"
    for i in range(3):
        dry(paths, tmp_path / f"p{i}", "--partition", f"{i}/3")
    p0, p1, p2 = (tmp_path / f"p{i}" for i in range(3))

    err = merge_error(capsys, p0, p2, out)
    assert "partition(s) 1/3 missing" in err

    dry(paths, tmp_path / "p1-again", "--partition", "1/3")
    err = merge_error(capsys, p0, p1, tmp_path / "p1-again", p2, out)
    assert "partition 1/3 is given 2 times" in err
    assert "is in both" in err  # and so are its inputs

    dry(paths, tmp_path / "q0", "--partition", "0/2")
    err = merge_error(capsys, tmp_path / "q0", p1, p2, out)
    assert "partitions of different counts" in err

    dry(paths, tmp_path / "other-ns", "--partition", "0/3", namespace="users")
    err = merge_error(capsys, tmp_path / "other-ns", p1, p2, out)
    assert "differ in namespace" in err

    dry(paths, tmp_path / "ids", "--partition", "0/3", "--id-field", "sku")
    err = merge_error(capsys, tmp_path / "ids", p1, p2, out)
    assert "differ in id_field" in err

    # Plain runs that share an input.
    dry(paths[:2], tmp_path / "a")
    dry(paths[1:], tmp_path / "b")
    err = merge_error(capsys, tmp_path / "a", tmp_path / "b", out)
    assert f"input {paths[1]} is in both" in err

    # A worker that split a different list (a file more) than the others.
    extra = str(write_lines(tmp_path / "late.jsonl", [record(10**5)]))
    dry([*paths, extra], tmp_path / "late", "--partition", "0/3")
    err = merge_error(capsys, tmp_path / "late", p1, p2, out)
    assert "split different input lists" in err

    # The complete set merges; a work dir's own manifest is never overwritten.
    assert cli.main(["merge", str(p0), str(p1), str(p2), "-o", str(out)]) == 0
    assert cli.main(["merge", str(p0), str(p1), str(p2), "-o", str(p0)]) == 1
    assert cli.main(["merge", str(out), "-o", str(out)]) == 1  # already merged, and itself
    copy = tmp_path / "copy-0.json"
    copy.write_bytes((p0 / "manifest.json").read_bytes())
    capsys.readouterr()
    assert cli.main(["merge", str(copy), str(p1), str(p2), "-o", str(copy)]) == 1
    assert "one of the manifests being merged" in capsys.readouterr().err
    assert orjson.loads(copy.read_bytes())["partition"]["index"] == 0
    assert read_manifest(p0)["partition"]["index"] == 0
    # Plain runs with disjoint inputs merge too, in the order given.
    dry(paths[2:], tmp_path / "c")
    doc = bulkload.merge_manifests([tmp_path / "a", tmp_path / "c"])
    assert [i["path"] for i in doc["inputs"]] == paths
    assert {s["partition"] for s in doc["shards"]} == {None}


def test_partition_with_nothing_to_do_still_writes_its_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    src = write_lines(tmp_path / "only.jsonl", [record(1)])
    assert cli.main(["load", "products", str(src), "--partition", "1/2", "--dry-run", "-q"]) == 0
    manifest = read_manifest(tmp_path / "bulkload-products-part-1-of-2")
    assert manifest["inputs"] == [] and manifest["shards"] == []
    assert manifest["partition"]["index"] == 1
    assert cli.main(["load", "products", str(src), "--partition", "0/2", "--dry-run", "-q"]) == 0
    doc = bulkload.merge_manifests(
        [tmp_path / "bulkload-products-part-0-of-2", tmp_path / "bulkload-products-part-1-of-2"]
    )
    assert doc["totals"]["records"] == 1


def test_two_runs_cannot_share_a_work_dir(tmp_path: Path) -> None:
    from bulkload._journal import lock_work_dir, unlock_work_dir

    src = write_lines(tmp_path / "in.jsonl", [record(1)])
    held = lock_work_dir(tmp_path / "w")  # as a run in another process would
    try:
        with pytest.raises(bulkload.StateError, match="in use by another bulkload run"):
            bulkload.load("products", [str(src)], dry_run=True, work_dir=tmp_path / "w")
    finally:
        unlock_work_dir(held)
    # Released (also when a run ends by an error), the work dir is usable again, twice.
    for _ in range(2):
        assert (
            bulkload.load("products", [str(src)], dry_run=True, work_dir=tmp_path / "w").records
            == 1
        )
