"""Decoding compressed inputs: every gzip decoder installed, the bounded zstd reader, the
command-line tools for reference.

    python -m benchmarks.bench_decompress [--quick]

For the ``gz`` and ``zst`` datasets (16 parts each of the products records). Each row
decodes every part to the end into a reused 8 MiB buffer and reports MB/s and CPU s/GB
*of output* (decompressed bytes: the records), user + system, child processes included:

- ``one stream``: the parts one after another in this process (what one big file costs:
  a gzip or zstd stream cannot be split, so one file is one core's work);
- ``N processes``: one part per task in a pool of one process per core (the design
  proposed for directories of compressed parts);
- ``stdlib GzipFile, 8 MiB reads``: how bulkload read gzip before ``open_stream`` (its
  zstd reader of then, a ``decompressobj`` per frame, held a whole call's output at once,
  400 MB for a 12 KB file of zeros, and is gone);
- zstd ``stream_reader`` at several read sizes without the frame walker, to show what
  noticing truncation costs;
- ``gzip -dc``, ``pigz -dc``, ``zstd -dc`` to /dev/null, where installed.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from ._common import cpu, log, warm
from ._internals import GZIP_BACKENDS, open_stream
from .datasets import Dataset, standard

#: The reader's block size, as bulkload's: every decoder fills buffers this big.
BLOCK = 8 << 20

Opener = Callable[[BinaryIO], Any]


def _drain(stream: Any) -> int:
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    n = 0
    while True:
        fill = 0
        while fill < BLOCK and (k := stream.readinto(view[fill:])):
            fill += k
        n += fill
        if fill < BLOCK:
            return n


def decode_file(path: str, how: str) -> int:
    """Decode one file the way ``how`` names (see ``OPENERS``); its decoded bytes."""
    with open(path, "rb") as raw:
        return _drain(OPENERS[how](raw))


def _stream_reader(read_size: int) -> Opener:
    def opener(raw: BinaryIO) -> Any:
        return zstandard.ZstdDecompressor().stream_reader(
            raw, read_size=read_size, read_across_frames=True, closefd=False
        )

    return opener


def _gzip(backend: str) -> Opener:
    return partial(open_stream, codec="gz", gzip_backend=backend)


OPENERS: dict[str, Opener] = {
    **{f"gz {b}": _gzip(b) for b in GZIP_BACKENDS},
    "gz today": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    "zst open_stream": partial(open_stream, codec="zst"),
    "zst stream_reader 128K": _stream_reader(128 << 10),
    "zst stream_reader 1M": _stream_reader(1 << 20),
    "zst stream_reader 4M": _stream_reader(4 << 20),
}


def _result(n: int, wall: float, used: float, stored: int) -> dict[str, Any]:
    return {
        "mb_s": n / wall / 1e6,
        "cpu_s_per_gb": used / (n / 1e9),
        "bytes": n,
        "input_mb_s": stored / wall / 1e6,
    }


def one_stream(files: list[Path], how: str) -> dict[str, Any]:
    wall, start = time.perf_counter(), cpu()
    n = sum(decode_file(str(p), how) for p in files)
    return _result(n, time.perf_counter() - wall, cpu() - start, _stored(files))


def pooled(files: list[Path], how: str, workers: int) -> dict[str, Any]:
    """One file per task; the pool is forked here so that its CPU time is counted."""
    wall, start = time.perf_counter(), cpu()
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        n = sum(pool.map(decode_file, [str(p) for p in files], [how] * len(files)))
    return _result(n, time.perf_counter() - wall, cpu() - start, _stored(files))


def tool(files: list[Path], cmd: list[str], expected: int) -> dict[str, Any]:
    """``cmd FILE > /dev/null`` for each file, one after another."""
    wall, start = time.perf_counter(), cpu()
    for path in files:
        subprocess.run([*cmd, str(path)], check=True, stdout=subprocess.DEVNULL, timeout=600)
    return _result(expected, time.perf_counter() - wall, cpu() - start, _stored(files))


def _stored(files: list[Path]) -> int:
    return sum(p.stat().st_size for p in files)


def measure(dataset: Dataset, repeat: int = 1) -> dict[str, Any]:
    """Every row for one compressed dataset: ``{label: result}``, best of ``repeat``."""
    codec = dataset.compression
    assert codec in ("gz", "zst"), dataset.name
    files = dataset.files
    workers = os.cpu_count() or 1
    warm(files)
    rows: dict[str, Callable[[], dict[str, Any]]] = {}
    if codec == "gz":
        for backend in GZIP_BACKENDS:
            rows[f"{backend}, one stream"] = partial(one_stream, files, f"gz {backend}")
            rows[f"{backend}, {workers} processes"] = partial(
                pooled, files, f"gz {backend}", workers
            )
        rows["before: stdlib GzipFile, 8 MiB reads"] = partial(one_stream, files, "gz today")
        tools = {"gzip -dc": ["gzip", "-dc"], "pigz -dc": ["pigz", "-dc"]}
    else:
        rows["open_stream (stream_reader 1 MiB + frame walker), one stream"] = partial(
            one_stream, files, "zst open_stream"
        )
        rows[f"open_stream, {workers} processes"] = partial(
            pooled, files, "zst open_stream", workers
        )
        for size in ("128K", "1M", "4M"):
            rows[f"stream_reader {size}, no truncation check"] = partial(
                one_stream, files, f"zst stream_reader {size}"
            )
        tools = {"zstd -dc": ["zstd", "-dcq"]}
    for label, cmd in tools.items():
        if shutil.which(cmd[0]):
            rows[label] = partial(tool, files, cmd, dataset.bytes)
    out: dict[str, Any] = {}
    for label, fn in rows.items():
        runs = [fn() for _ in range(repeat)]
        best = max(runs, key=lambda r: r["mb_s"])
        if label.startswith(("gzip", "pigz", "zstd")):
            best["tool"] = True
        elif best["bytes"] != dataset.bytes:
            raise RuntimeError(f"{label}: decoded {best['bytes']} bytes, not {dataset.bytes}")
        log(f"  {label:60} {best['mb_s']:7,.0f} MB/s {best['cpu_s_per_gb']:5.2f} CPU s/GB")
        out[label] = best
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smaller datasets")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    sets = standard(args.quick)
    results = {name: measure(sets[name], args.repeat) for name in ("gz", "zst")}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
