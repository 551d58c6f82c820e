"""Remote inputs through fsspec: S3 (moto's server on loopback, a real HTTP S3 API, not a
mock) and plain HTTP, loaded into the emulator exactly once."""

from __future__ import annotations

import gzip
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import API_KEY
from helpers import assert_exactly_once, read_manifest, read_rejects, record

import bulkload
from bulkload import cli
from bulkload.emulator import EmulatorThread

pytest.importorskip("s3fs")
fsspec = pytest.importorskip("fsspec")
moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

BUCKET = "exports"
CREDENTIALS = {"key": "testing", "secret": "testing"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh bucket; fsspec pointed at moto, as FSSPEC_S3_ENDPOINT_URL would do."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": s3_endpoint, **CREDENTIALS})
    fsspec.filesystem("s3").invalidate_cache()
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=BUCKET)
    yield client
    for obj in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    client.delete_bucket(Bucket=BUCKET)


def put(client: Any, key: str, lines: list[bytes], *, gz: bool = False) -> None:
    body = b"\n".join(lines) + b"\n"
    client.put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(body) if gz else body)


def test_s3_glob_loads_every_object_once_and_resumes(
    emulator_thread: EmulatorThread,
    s3: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a = [record(i) for i in range(0, 700)]
    b = [record(i) for i in range(700, 1200)]
    c = [record(i) for i in range(1200, 1500)]
    put(s3, "daily/2024/a.jsonl", a)
    put(s3, "daily/2024/b.jsonl.gz", [*b[:10], b'{"id": 5}', *b[10:]], gz=True)  # line 11 bad
    put(s3, "daily/2024/c.jsonl", c)
    put(s3, "daily/2024/notes.txt", [b"not data"])
    put(s3, "other/d.jsonl", [record(99_999)])
    monkeypatch.setenv("SAFETYKIT_API_KEY", API_KEY)
    work = tmp_path / "w"
    argv = ["load", "products", f"s3://{BUCKET}/daily/*/*.jsonl*", "--work-dir", str(work),
            "--base-url", emulator_thread.base_url, "--shard-records", "200", "--quiet"]  # fmt: skip
    assert cli.main(argv) == 3
    assert_exactly_once(emulator_thread, a + b + c)
    url = f"s3://{BUCKET}/daily/2024/"
    manifest = read_manifest(work)
    assert [(i["path"], i["compression"]) for i in manifest["inputs"]] == [
        (url + "a.jsonl", None), (url + "b.jsonl.gz", "gz"), (url + "c.jsonl", None)
    ]  # fmt: skip
    assert all(i["size"] and i["mtime_ns"] for i in manifest["inputs"])
    assert [(r["source"], r["line"]) for r in read_rejects(work)] == [(url + "b.jsonl.gz", 11)]

    # A rerun resumes: the listing matches, every shard is recognised, nothing is sent.
    puts = len(emulator_thread.put_log())
    capsys.readouterr()
    assert cli.main([*argv, "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["skipped"] == len(manifest["shards"])
    assert len(emulator_thread.put_log()) == puts

    # wait --results re-reads the objects to join each result to its line.
    results = tmp_path / "results"
    assert cli.main(["wait", str(work), "--results", str(results), "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["mismatches"] == []
    joined = {
        (j := orjson.loads(x))["id"]: (j["source"], j["line"])
        for x in (results / "results.jsonl").read_bytes().splitlines()
    }
    assert joined["p-000710"] == (url + "b.jsonl.gz", 12)


def test_s3_prefix_parquet_and_storage_options(
    emulator_thread: EmulatorThread, s3: Any, s3_endpoint: str, tmp_path: Path
) -> None:
    lines = [record(i) for i in range(300)]
    put(s3, "dump/part-0.jsonl", lines[:100])
    put(s3, "dump/sub/part-1.ndjson", lines[100:200])
    put(s3, "dump/.hidden/x.jsonl", [record(10**6)])
    put(s3, "dump/_SUCCESS", [])
    expected = lines[:200]
    inputs = [f"s3://{BUCKET}/dump"]
    pa = None
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        pass
    if pa is not None:
        import io

        buf = io.BytesIO()
        docs = [orjson.loads(line) for line in lines[200:]]
        pq.write_table(pa.Table.from_pylist(docs), buf, row_group_size=40)
        s3.put_object(Bucket=BUCKET, Key="tables/t.parquet", Body=buf.getvalue())
        inputs.append(f"s3://{BUCKET}/tables/t.parquet")
        expected += lines[200:]
    fsspec.config.conf.pop("s3")  # the library's storage_options alone must suffice
    result = bulkload.load(
        "products", inputs, api_key=API_KEY, base_url=emulator_thread.base_url,
        work_dir=tmp_path / "w", storage_options={"endpoint_url": s3_endpoint, **CREDENTIALS},
    )  # fmt: skip
    assert result.exit_code == 0
    assert_exactly_once(emulator_thread, expected)
    with pytest.raises(bulkload.SourceError, match="no such object"):
        bulkload.load(
            "products", [f"s3://{BUCKET}/missing.jsonl"], dry_run=True, work_dir=tmp_path / "x",
            storage_options={"endpoint_url": s3_endpoint, **CREDENTIALS},
        )  # fmt: skip
    with pytest.raises(bulkload.SourceError, match="matches no objects"):
        bulkload.load(
            "products", [f"s3://{BUCKET}/nothing/*.jsonl"], dry_run=True, work_dir=tmp_path / "x",
            storage_options={"endpoint_url": s3_endpoint, **CREDENTIALS},
        )  # fmt: skip


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_http_input_is_streamed(emulator_thread: EmulatorThread, tmp_path: Path) -> None:
    served = tmp_path / "site"
    served.mkdir()
    lines = [record(i) for i in range(500)]
    (served / "export.jsonl.gz").write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_Quiet, directory=str(served))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/export.jsonl.gz"
        result = bulkload.load(
            "products", [url], api_key=API_KEY, base_url=emulator_thread.base_url,
            work_dir=tmp_path / "w",
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert result.exit_code == 0
    assert_exactly_once(emulator_thread, lines)
    assert read_manifest(tmp_path / "w")["inputs"][0]["path"] == url
