"""bulkload.dask: one loader per partition on a real LocalCluster (2 worker processes),
including a worker killed mid-run whose partition resumes on its rerun."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import API_KEY
from helpers import assert_exactly_once, read_manifest, read_rejects, record, write_lines

from bulkload import cli
from bulkload.emulator import EmulatorThread

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")
bulkload_dask = pytest.importorskip("bulkload.dask")

# The kill switch below is defined here; the workers cannot import this test module, so
# its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def dataset(tmp: Path, files: int = 6, per_file: int = 400) -> tuple[list[str], list[bytes]]:
    paths, lines = [], []
    for f in range(files):
        chunk = [record(f * per_file + i) for i in range(per_file)]
        body = chunk[:]
        if f == 3:
            body.insert(7, b'{"no": "id"}')  # line 8 of part-3
        paths.append(str(write_lines(tmp / "data" / f"part-{f}.jsonl", body)))
        lines += chunk
    return paths, lines


def test_files_load_as_partition_tasks_and_merge(
    client: Any, emulator_thread: EmulatorThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()
    paths, lines = dataset(tmp_path)
    root = tmp_path / "run"
    manifest = bulkload_dask.load(
        "products", [str(tmp_path / "data")], npartitions=2, work_root=root, client=client,
        api_key=API_KEY, base_url=emulator_thread.base_url, shard_max_records=150,
    )  # fmt: skip
    assert_exactly_once(emulator_thread, lines)
    assert manifest == orjson.loads((root / "manifest.json").read_bytes())
    assert manifest["totals"]["records"] == len(lines) and manifest["totals"]["rejected"] == 1
    assert {m["partition"] for m in manifest["merged_from"]} == {0, 1}
    assert sorted(i["path"] for i in manifest["inputs"]) == paths
    bad = paths[3]
    owner = next(
        i
        for i in range(2)
        if bad in {x["path"] for x in read_manifest(root / f"part-{i}-of-2")["inputs"]}
    )
    assert [(r["source"], r["line"]) for r in read_rejects(root / f"part-{owner}-of-2")] == [
        (bad, 8)
    ]
    # The merged manifest is one run for `wait`.
    monkeypatch.setenv("SAFETYKIT_API_KEY", API_KEY)
    assert cli.main(["wait", str(root), "--results", str(tmp_path / "r"), "--quiet"]) == 0


def kill_once(flag: Path, after_uploads: int) -> Callable[[Any], None]:
    """A progress callback that SIGKILLs its own worker process, once across the cluster,
    after a few shards of its partition were uploaded."""

    def on_progress(p: Any) -> None:
        if p.uploaded < after_uploads or flag.exists():
            return
        try:
            fd = os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    return on_progress


def test_a_worker_killed_mid_run_resumes_its_partition(
    client: Any, emulator_thread: EmulatorThread, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    paths, lines = dataset(tmp_path, files=4, per_file=600)
    emulator_thread.set_faults(latency_s=0.03)  # each partition takes a second or two
    flag = tmp_path / "killed"
    root = tmp_path / "run"
    manifest = bulkload_dask.load(
        "products", paths, npartitions=2, work_root=root, client=client,
        api_key=API_KEY, base_url=emulator_thread.base_url, shard_max_records=60,
        upload_concurrency=2, on_progress=kill_once(flag, after_uploads=3),
    )  # fmt: skip
    assert flag.exists(), "no worker was killed"
    assert_exactly_once(emulator_thread, lines)
    assert manifest["totals"]["uploaded"] == manifest["totals"]["shards"] == 2400 // 60
    runs = sorted(read_manifest(root / f"part-{i}-of-2")["runs"] for i in range(2))
    assert runs == [1, 2], "the killed partition ran twice, resuming; the other once"
    # The rerun skipped what the killed run had uploaded: one import call per shard, plus
    # at most the calls in flight when the worker died (their requests got no data).
    assert emulator_thread.counters()["import"]["200"] <= 40 + 2


def test_a_bag_partition_that_fails_is_retried(
    client: Any, emulator_thread: EmulatorThread, tmp_path: Path
) -> None:
    db = pytest.importorskip("dask.bag")
    records = [{"id": f"b{i}", "n": i} for i in range(900)]
    bag = db.from_sequence(records, npartitions=3)
    emulator_thread.set_faults(put_503_first_n=1)  # the first PUT anywhere fails …
    manifest = bulkload_dask.load(
        "products", bag, work_root=tmp_path / "run", client=client, retries=1,
        api_key=API_KEY, base_url=emulator_thread.base_url, max_retries=0,
    )  # fmt: skip
    # … its partition raised (a failed shard), Dask retried it, the retry resumed.
    assert_exactly_once(emulator_thread, [orjson.dumps(r) for r in records])
    assert manifest["totals"]["records"] == 900 and manifest["totals"]["failed"] == 0
    assert sum(m["totals"]["records"] for m in manifest["merged_from"]) == 900
    runs = [read_manifest(tmp_path / "run" / f"part-{i}-of-3")["runs"] for i in range(3)]
    assert sorted(runs) == [1, 1, 2]


def test_failures_after_all_retries_are_reported(
    client: Any, emulator_thread: EmulatorThread, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    paths, _ = dataset(tmp_path, files=2, per_file=50)
    emulator_thread.set_faults(put_503_rate=1.0)
    with pytest.raises(bulkload_dask.PartitionError) as info:
        bulkload_dask.load(
            "products", paths, npartitions=2, work_root=tmp_path / "run", client=client,
            retries=0, api_key=API_KEY, base_url=emulator_thread.base_url, max_retries=0,
        )  # fmt: skip
    assert sorted(info.value.failures) == [0, 1]
    assert "partition 0/2" in str(info.value) and "shard(s) failed" in str(info.value)
    merged = info.value.manifest
    assert merged is not None and merged["totals"]["failed"] == 2
    assert all("PartitionFailed" in m["error"] for m in merged["merged_from"])
    # Fixed, a second call resumes both partitions and succeeds.
    emulator_thread.set_faults(put_503_rate=0.0)
    again = bulkload_dask.load(
        "products", paths, npartitions=2, work_root=tmp_path / "run", client=client,
        api_key=API_KEY, base_url=emulator_thread.base_url,
    )  # fmt: skip
    assert again["totals"]["uploaded"] == 2 and again["totals"]["failed"] == 0


def test_a_dataframe_is_loaded_with_parquet_types(
    client: Any, emulator_thread: EmulatorThread, tmp_path: Path
) -> None:
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame(
        {
            "id": [f"d{i}" for i in range(200)],
            "n": list(range(200)),
            "when": pd.date_range("2024-01-01", periods=200, freq="h", tz="UTC"),
            "x": [float("nan") if i == 5 else i / 2 for i in range(200)],
        }
    )
    manifest = bulkload_dask.load(
        "products", dd.from_pandas(frame, npartitions=2), work_root=tmp_path / "run",
        client=client, api_key=API_KEY, base_url=emulator_thread.base_url,
    )  # fmt: skip
    assert manifest["totals"]["records"] == 200
    docs = {
        d["id"]: d for d in (orjson.loads(line) for _, line in emulator_thread.stored_records())
    }
    assert len(docs) == 200
    when = docs["d5"].pop("when")  # pandas 3 keeps µs, pandas 2 ns: 6 or 9 digits
    assert when.startswith("2024-01-01T05:00:00.000000") and when.endswith("Z")
    assert docs["d5"] == {"id": "d5", "n": 5, "x": None}
    assert docs["d7"]["x"] == 3.5
