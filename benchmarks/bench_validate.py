"""Read and validation throughput on product-like JSONL.

    python -m benchmarks.bench_validate [--size-mib 256] [--workers 2]

Generates (once, cached under ``bench-data/``) a file of ~600-byte product records, then
streams it through ``iter_chunks`` and measures, per stage, MB/s (10^6 bytes per second of
wall time) and CPU s/GB (user + system seconds per 10^9 bytes, worker processes included):

- ``read``: ``iter_chunks`` alone (from the page cache);
- ``validate``: ``iter_chunks`` + ``validate_chunk`` in this process;
- ``validate_pool``: the same over a ProcessPoolExecutor, at most 2 blocks per worker in
  flight, as the pipeline does: each block is pickled to a worker and its records back;
- ``validate_pool_ranges``: a prototype that sends workers byte ranges of the file instead
  (they read the page cache themselves) and gets records back only when they differ from
  the block, to show what the executor's transfer of 8 MiB blocks costs;
- ``validate_id_field``: ``--id-field sku`` (every record edited), on the first 64 MiB;
- ``orjson_loop``: for comparison, ``orjson.loads`` per line plus an id check.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from bulkload._config import MiB
from bulkload._sources import Chunk, Source, iter_chunks, resolve_inputs
from bulkload._validate import ChunkResult, ValidateOptions, validate_chunk

DATA_DIR = Path("bench-data")
BLOCK = 8 * MiB
WORDS = (  # noqa: SIM905 -- a sentence reads better than 28 quoted words
    "wireless charger cable cotton shirt organic coffee beans steel bottle kids toy lamp desk "
    "chair premium pack black white large small vintage leather bag phone case garden hose"
).split()


def product(rng: random.Random, i: int) -> dict[str, Any]:
    title = " ".join(rng.choices(WORDS, k=6)).title()
    if i % 5 == 0:
        title += " — édition spéciale ✓"  # some non-ASCII, as real catalogues have
    return {
        "id": f"prod-{i:010d}",
        "sku": f"SKU{rng.randrange(10**9):09d}",
        "title": title,
        "description": " ".join(rng.choices(WORDS, k=38)),
        "price": round(rng.uniform(1, 500), 2),
        "currency": "USD",
        "tags": rng.choices(WORDS, k=4),
        "in_stock": rng.random() > 0.2,
        "seller": {"id": f"s{rng.randrange(10**6)}", "name": "Shop " + rng.choice(WORDS)},
        "images": [f"https://cdn.example.com/img/{i}/{k}.jpg" for k in range(2)],
        "created_at": "2026-05-01T12:00:00Z",
    }


def ensure_data(size: int, directory: Path = DATA_DIR) -> Path:
    """The cached benchmark file of about ``size`` bytes, generated on first use."""
    path = directory / f"products-{size // MiB}MiB.jsonl"
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(42)
    tmp = path.with_suffix(".tmp")
    written = i = 0
    with open(tmp, "wb") as f:
        while written < size:
            batch = b"".join(orjson.dumps(product(rng, i + k)) + b"\n" for k in range(1000))
            f.write(batch)
            written += len(batch)
            i += 1000
    os.replace(tmp, path)
    return path


def cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure(name: str, nbytes: Callable[[], int]) -> dict[str, float]:
    wall, start = time.perf_counter(), cpu()
    n = nbytes()
    wall, used = time.perf_counter() - wall, cpu() - start
    result = {"mb_s": n / wall / 1e6, "cpu_s_per_gb": used / (n / 1e9), "bytes": n}
    print(f"  {name:18} {result['mb_s']:8,.0f} MB/s {result['cpu_s_per_gb']:7.2f} CPU s/GB")
    return result


def chunks(source: Source, limit: int | None = None) -> Iterator[Chunk]:
    seen = 0
    for chunk in iter_chunks(source, BLOCK):
        yield chunk
        seen += len(chunk.data)
        if limit is not None and seen >= limit:
            return


def read_only(source: Source) -> int:
    return sum(len(c.data) for c in chunks(source))


def validate_here(source: Source, opts: ValidateOptions, limit: int | None = None) -> int:
    n = 0
    for chunk in chunks(source, limit):
        result = validate_chunk(chunk.data, chunk.first_line, opts)
        assert not result.rejects, result.rejects[:1]
        n += len(chunk.data)
    return n


def validate_pool(source: Source, workers: int) -> int:
    n = 0
    opts = ValidateOptions()
    with ProcessPoolExecutor(workers) as pool:
        window: deque[Future[ChunkResult]] = deque()
        for chunk in chunks(source):
            window.append(pool.submit(validate_chunk, chunk.data, chunk.first_line, opts))
            n += len(chunk.data)
            if len(window) >= 2 * workers:
                assert not window.popleft().result().rejects
        while window:
            assert not window.popleft().result().rejects
    return n


_fd: int | None = None


def _validate_range(
    path: str, offset: int, length: int, first_line: int, opts: ValidateOptions
) -> tuple[ChunkResult, bool]:
    """In a worker: read the block itself (page cache), and send back the records only if
    they differ from the block (they rarely do)."""
    global _fd
    if _fd is None:
        _fd = os.open(path, os.O_RDONLY)
    data = os.pread(_fd, length, offset)
    result = validate_chunk(data, first_line, opts)
    if result.data is data:
        result.data = b""
        return result, True
    return result, False


def validate_pool_ranges(source: Source, workers: int) -> int:
    """A prototype for the pipeline: workers get byte ranges, not bytes (see module doc)."""
    n = 0
    opts = ValidateOptions()
    path = str(source.path)
    with ProcessPoolExecutor(workers) as pool:
        window: deque[tuple[Chunk, Future[tuple[ChunkResult, bool]]]] = deque()

        def take() -> None:
            chunk, future = window.popleft()
            result, unchanged = future.result()
            if unchanged:
                result.data = chunk.data
            assert not result.rejects

        for chunk in chunks(source):
            job = pool.submit(
                _validate_range, path, chunk.offset, len(chunk.data), chunk.first_line, opts
            )
            window.append((chunk, job))
            n += len(chunk.data)
            if len(window) >= 2 * workers:
                take()
        while window:
            take()
    return n


def orjson_loop(source: Source) -> int:
    n = 0
    for chunk in chunks(source):
        for line in io.BytesIO(chunk.data):
            record = orjson.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                raise AssertionError(line)
        n += len(chunk.data)
    return n


def run(path: str | Path | None = None, workers: int = 2) -> dict[str, dict[str, float]]:
    """Measure every stage on ``path`` (default: the cached 256 MiB file)."""
    path = Path(path) if path is not None else ensure_data(256 * MiB)
    (source,) = resolve_inputs([str(path)])
    read_only(source)  # warm the page cache, so that every stage reads from memory
    print(f"{path}: {path.stat().st_size / 1e6:,.0f} MB, {os.cpu_count()} CPUs")
    return {
        "read": measure("read", lambda: read_only(source)),
        "validate": measure("validate", lambda: validate_here(source, ValidateOptions())),
        f"validate_pool_{workers}": measure(
            f"validate, {workers} procs", lambda: validate_pool(source, workers)
        ),
        f"validate_pool_ranges_{workers}": measure(
            f"  ranges, {workers} procs", lambda: validate_pool_ranges(source, workers)
        ),
        "validate_id_field": measure(
            "validate --id-field",
            lambda: validate_here(source, ValidateOptions(id_field="sku"), 64 * MiB),
        ),
        "orjson_loop": measure("orjson per line", lambda: orjson_loop(source)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    results = run(ensure_data(args.size_mib * MiB), args.workers)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    main()
