"""The baseline: the loader a data engineer writes in ten minutes.

    SAFETYKIT_API_KEY=... python -m benchmarks.naive_loader BASE_URL NAMESPACE INPUT...

Reads lines until it has a shard of about 64 MiB in memory, asks for an upload URL
(one import call), PUTs the shard, and goes on: one thing at a time, one HTTP client
(httpx). No validation, no retries, no manifest: it is what bulkload is measured against,
not an example to follow. Directories are read as their ``*.jsonl`` files, recursively and
sorted; ``.jsonl.gz`` and ``.jsonl.zst`` files through ``gzip.open`` and ``zstandard``, as
such a script would.
Prints ``{"shards": N, "lines": N, "bytes": N}`` at the end.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
from pathlib import Path
from typing import IO

import httpx
import zstandard

SHARD_BYTES = 64 * 1024 * 1024


def open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    if path.suffix == ".zst":
        raw = zstandard.ZstdDecompressor().stream_reader(path.open("rb"), read_across_frames=True)
        return io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8")
    return path.open(encoding="utf-8")


def main(argv: list[str]) -> int:
    base_url, namespace, *inputs = argv
    auth = {"Authorization": f"Bearer {os.environ['SAFETYKIT_API_KEY']}"}
    files: list[Path] = []
    for name in inputs:
        path = Path(name)
        files += sorted(path.rglob("*.jsonl*")) if path.is_dir() else [path]

    shards = lines = sent = 0
    with httpx.Client(timeout=600) as client:

        def upload(batch: list[str]) -> None:
            nonlocal shards, sent
            body = "".join(batch).encode()
            resp = client.post(f"{base_url}/v1/data/{namespace}/import", headers=auth)
            resp.raise_for_status()
            url = resp.json()["upload_url"]
            put = client.put(url, content=body, headers={"Content-Type": "application/json"})
            put.raise_for_status()
            shards += 1
            sent += len(body)

        batch: list[str] = []
        size = 0
        for path in files:
            with open_text(path) as f:
                for line in f:
                    batch.append(line)
                    size += len(line)
                    lines += 1
                    if size >= SHARD_BYTES:
                        upload(batch)
                        batch, size = [], 0
        if batch:
            upload(batch)
    print(json.dumps({"shards": shards, "lines": lines, "bytes": sent}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
