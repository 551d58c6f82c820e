"""Hashes for a shard's identity: MD5 (what S3's ETag is) against faster ones, on this CPU.

    python -m benchmarks.bench_hash [--mib 256] [--rounds 4]

A buffer of product records (``--mib`` MiB, from the products file) is hashed ``--rounds``
times, and for at least a second, in 4 MiB slices (bulkload hashes shards in 4 MiB slices), so that the hash alone is
measured, not the read: one stream in this process, and N streams at once in N processes
(one per core; forked here, so that their CPU is counted). MB/s is the total over wall
time, CPU s/GB user + system per 10^9 bytes hashed.

MD5 stays needed where the store's ETag is checked against it (plain and SSE-S3 S3
objects) and for ``--content-md5``; a faster hash could serve as resume's identity of a
shard where the ETag cannot be an MD5 (SSE-KMS, SSE-C, opaque stores).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from ._common import MiB, log
from .datasets import ensure_data

SLICE = 4 * MiB
#: Each stream hashes for at least this long: xxh3 goes through 1 GiB in ~40 ms.
MIN_SECONDS = 1.0


def _hashers() -> dict[str, Callable[[], Any]]:
    found: dict[str, Callable[[], Any]] = {
        "md5": lambda: hashlib.md5(usedforsecurity=False),
        "sha1": lambda: hashlib.sha1(usedforsecurity=False),
        "sha256": hashlib.sha256,
        "blake2b": hashlib.blake2b,
        "blake2s": hashlib.blake2s,
    }
    try:
        import xxhash
    except ImportError:
        log("  xxhash is not installed (pip install xxhash): its rows are left out")
    else:
        found["xxh64"] = xxhash.xxh64
        found["xxh3_64"] = xxhash.xxh3_64
        found["xxh3_128"] = xxhash.xxh3_128
    return found


class _Crc32:
    """zlib.crc32 as a hasher (a checksum, not an identity: 32 bits collide)."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: memoryview) -> None:
        self.value = zlib.crc32(data, self.value)


_buffer = b""


def _load(path: str, size: int) -> None:
    global _buffer
    with open(path, "rb") as f:
        _buffer = f.read(size)


def hash_rounds(name: str, rounds: int) -> tuple[int, float, float]:
    """Hash the loaded buffer with ``name``, ``rounds`` times and for at least
    ``MIN_SECONDS``; the bytes hashed, and the wall and CPU seconds it took here."""
    make = _Crc32 if name == "crc32" else _hashers()[name]
    view = memoryview(_buffer)
    n = done = 0
    wall, start = time.perf_counter(), time.process_time()
    while done < rounds or time.perf_counter() - wall < MIN_SECONDS:
        h = make()
        for at in range(0, len(view), SLICE):
            h.update(view[at : at + SLICE])
        n += len(view)
        done += 1
    return n, time.perf_counter() - wall, time.process_time() - start


def measure(name: str, rounds: int, streams: int) -> dict[str, float]:
    """One stream here, or ``streams`` at once in as many processes: the total over the
    slowest stream's wall time, and the CPU of all (each measured where it ran, so that
    starting the processes is not counted)."""
    if streams == 1:
        runs = [hash_rounds(name, rounds)]
    else:
        ctx = multiprocessing.get_context("fork")  # the children inherit the buffer
        with ProcessPoolExecutor(streams, mp_context=ctx) as pool:
            pool.submit(int).result()  # started before the clock matters
            runs = list(pool.map(hash_rounds, [name] * streams, [rounds] * streams))
    n = sum(r[0] for r in runs)
    wall = max(r[1] for r in runs)
    used = sum(r[2] for r in runs)
    return {"mb_s": n / wall / 1e6, "cpu_s_per_gb": used / (n / 1e9), "bytes": n}


def run(path: Path, size: int, rounds: int, streams: int) -> dict[str, dict[str, Any]]:
    _load(str(path), size)
    out: dict[str, dict[str, Any]] = {}
    for name in [*_hashers(), "crc32"]:
        one = measure(name, rounds, 1)
        many = measure(name, rounds, streams)
        out[name] = {"one": one, "streams": many, "n_streams": streams}
        log(
            f"  {name:9} 1 stream {one['mb_s']:7,.0f} MB/s {one['cpu_s_per_gb']:5.2f} CPU s/GB; "
            f"{streams} streams {many['mb_s']:7,.0f} MB/s {many['cpu_s_per_gb']:5.2f} CPU s/GB"
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    path = ensure_data(256 * MiB)
    results = run(path, args.mib * MiB, args.rounds, os.cpu_count() or 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
