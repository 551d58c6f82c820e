"""Read and validation throughput on product-like JSONL.

    python -m benchmarks.bench_validate [--size-mib 256] [--workers 2]

Generates (once, cached under ``bench-data/``, see ``benchmarks/datasets.py``) a file of
~600-byte product records, then streams it through ``iter_chunks`` and measures, per stage,
MB/s (10^6 bytes per second of wall time) and CPU s/GB (user + system seconds per 10^9
bytes, worker processes included):

- ``read_raw``: the file's bytes alone, ``readinto`` a reused buffer;
- ``read``: ``iter_chunks`` alone (whole lines; from the page cache);
- ``validate``: ``iter_chunks`` + ``validate_chunk`` in this process;
- ``validate_pool``: the same over a ProcessPoolExecutor, at most 2 blocks per worker in
  flight, as the pipeline does: each block is pickled to a worker and its records back;
- ``validate_pool_ranges``: bulkload's ``--workers`` method: workers get byte ranges of the
  file, find their own lines and read them from the page cache, and send records back only
  when they differ from the file; this process reads nothing (no transfer of 8 MiB blocks);
- ``validate_id_field``: ``--id-field sku`` (every record edited), on the first 64 MiB;
- ``orjson_loop``: for comparison, ``orjson.loads`` per line plus an id check.

``read_only``, ``validate_here`` and ``validate_pool_ranges`` also take several sources
(one pool for all of them): ``benchmarks/run.py`` uses them as the read and validation
ceilings of every dataset. They call bulkload's own ``iter_chunks``/``validate_chunk``, so
the ceiling moves with bulkload's validation code.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from ._common import DATA_DIR, MiB, cpu
from ._internals import (
    Chunk,
    ChunkResult,
    RangeResult,
    Source,
    ValidateOptions,
    iter_chunks,
    open_stream,
    resolve_inputs,
    validate_chunk,
    validate_ranges,
)
from .datasets import ensure_data

__all__ = [
    "DATA_DIR",
    "ensure_data",
    "measure",
    "read_only",
    "read_raw",
    "validate_file",
    "validate_here",
    "validate_pool_files",
    "validate_pool_ranges",
    "whole_line_blocks",
]

BLOCK = 8 * MiB


def measure(name: str, nbytes: Callable[[], int]) -> dict[str, float]:
    wall, start = time.perf_counter(), cpu()
    n = nbytes()
    wall, used = time.perf_counter() - wall, cpu() - start
    result = {"mb_s": n / wall / 1e6, "cpu_s_per_gb": used / (n / 1e9), "bytes": n}
    print(f"  {name:18} {result['mb_s']:8,.0f} MB/s {result['cpu_s_per_gb']:7.2f} CPU s/GB")
    return result


Sources = Source | Sequence[Source]


def sourced_chunks(sources: Sources, limit: int | None = None) -> Iterator[tuple[Source, Chunk]]:
    seen = 0
    for source in [sources] if isinstance(sources, Source) else sources:
        for chunk in iter_chunks(source, BLOCK):
            yield source, chunk
            seen += len(chunk.data)
            if limit is not None and seen >= limit:
                return


def chunks(sources: Sources, limit: int | None = None) -> Iterator[Chunk]:
    return (chunk for _, chunk in sourced_chunks(sources, limit))


def read_only(sources: Sources) -> int:
    return sum(len(c.data) for c in chunks(sources))


def read_raw(paths: Sequence[str | Path]) -> int:
    """The bytes alone: ``readinto`` one reused buffer, no line handling (what the
    machine allows)."""
    n = 0
    buf = bytearray(BLOCK)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while k := f.readinto(buf):
                n += k
    return n


def validate_here(sources: Sources, opts: ValidateOptions, limit: int | None = None) -> int:
    n = 0
    for chunk in chunks(sources, limit):
        result = validate_chunk(chunk.data, chunk.first_line, opts)
        assert not result.rejects, list(result.rejects)[:1]
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


def validate_pool_ranges(sources: Sources, workers: int) -> int:
    """bulkload's own worker method: fixed byte ranges of each file, each worker finding its
    lines and reading them from the page cache (``_validate.worker.validate_ranges``); small files go
    several to a task; this process reads nothing. Only records that differ from the file
    come back."""
    n = 0
    opts = ValidateOptions()
    block = 8 * MiB
    tasks: list[list[tuple[str, int, int, int]]] = []
    small: list[tuple[str, int, int, int]] = []
    for source in [sources] if isinstance(sources, Source) else sources:
        assert source.size is not None
        path, size = str(source.path), source.size
        if size < block:
            small.append((path, 0, size, size))
            if sum(r[2] for r in small) >= block:
                tasks.append(small)
                small = []
            continue
        tasks += [[(path, a, min(a + block, size), size)] for a in range(0, size, block)]
    if small:
        tasks.append(small)
    # bulkload starts its workers from a forkserver; forked here (this process has one
    # thread), they are this process's children, so their CPU time is counted.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        window: deque[Future[list[RangeResult | BaseException]]] = deque()
        for task in tasks:
            window.append(pool.submit(validate_ranges, task, opts, 1 << 30))
            if len(window) >= 2 * workers:
                n += _task_bytes(window.popleft())
        while window:
            n += _task_bytes(window.popleft())
    return n


def whole_line_blocks(stream: Any, size: int = BLOCK) -> Iterator[bytes]:
    """The stream's bytes (``readinto``) as blocks of whole lines of about ``size``."""
    buf = bytearray(size)
    view = memoryview(buf)
    tail = b""
    while True:
        fill = 0
        while fill < size and (n := stream.readinto(view[fill:])):
            fill += n
        block = tail + bytes(view[:fill])
        if fill < size:
            if block:
                yield block
            return
        cut = block.rfind(b"\n") + 1
        tail = block[cut:]
        if cut:
            yield block[:cut]


def validate_file(path: str, codec: str | None, opts: ValidateOptions) -> tuple[int, int]:
    """Decode (``open_stream``, the fastest gzip decoder) and validate one whole file, in
    a worker: the design proposed for compressed inputs. Its (bytes, lines)."""
    n = lines = 0
    with open(path, "rb") as raw:
        stream = raw if codec is None else open_stream(raw, codec)
        for block in whole_line_blocks(stream):
            result = validate_chunk(block, lines + 1, opts)
            assert not result.rejects, list(result.rejects)[:1]
            n += len(block)
            lines += result.lines
    return n, lines


def validate_pool_files(sources: Sources, workers: int) -> int:
    """One file per task (decoded in the worker), at most 2 tasks per worker in flight:
    compressed inputs spread over the cores without the main process reading them."""
    n = 0
    opts = ValidateOptions()
    todo = [sources] if isinstance(sources, Source) else list(sources)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        window: deque[Future[tuple[int, int]]] = deque()
        for source in todo:
            window.append(pool.submit(validate_file, str(source.path), source.compression, opts))
            if len(window) >= 2 * workers:
                n += window.popleft().result()[0]
        while window:
            n += window.popleft().result()[0]
    return n


def _task_bytes(future: Future[list[RangeResult | BaseException]]) -> int:
    n = 0
    for r in future.result():
        assert isinstance(r, RangeResult)
        assert not r.result.rejects
        n += r.end - r.start
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
        "read_raw": measure("read, raw", lambda: read_raw([path])),
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
