"""The work floor: what the unavoidable parts of a load cost, each measured alone, in CPU
seconds per GB of records, to set bulkload's own CPU s/GB against.

    python -m benchmarks.bench_floor [--quick] [--dataset gz]

For every dataset, one pass in this process over every file, whose parts are timed apart
(``time.process_time`` around each call; one thread, so it is this work's CPU):

- ``decompress`` (compressed datasets): ``open_stream`` (the fastest decoder installed)
  filling 8 MiB blocks; a plain file's ``readinto`` counts as reading instead;
- ``read + validate``: reading plain bytes and bulkload's own ``validate_chunk`` on blocks
  of whole lines (the search for the last newline included);
- ``md5``: MD5 of the same bytes (S3's ETag is checked against it, resume recognises
  shards by it);
- ``send``: the same bytes PUT by 8 parallel ``curl -T`` to the sink (the upload ceiling
  of ``bench_upload``; its CPU is curl's alone), over plain HTTP, and over HTTPS where
  measured (the ``https`` stage).

The floor is decompress + read/validate + md5 + send over HTTP: a loader that does what
bulkload must, with nothing else. Each part is measured in one process; spreading them
over cores (workers, a pool) costs more, and that overhead is what the ratio shows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from typing import Any

from ._common import warm
from ._internals import ValidateOptions, open_stream, validate_chunk
from .bench_validate import whole_line_blocks
from .datasets import Dataset, standard

PARTS = ("decompress", "read_validate", "md5")


class _Timed:
    """A stream whose ``readinto`` calls are timed (CPU seconds of this process)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.cpu_s = 0.0

    def readinto(self, buffer: memoryview) -> int:
        started = time.process_time()
        n: int = self.stream.readinto(buffer)
        self.cpu_s += time.process_time() - started
        return n


def local_parts(dataset: Dataset) -> dict[str, Any]:
    """CPU s/GB of decompress, read + validate and MD5 over ``dataset``, in one pass."""
    opts = ValidateOptions()
    spent = dict.fromkeys(("read", "validate", "md5"), 0.0)
    n = 0
    warm(dataset.files)
    wall = time.perf_counter()
    for path in dataset.files:
        with path.open("rb") as raw:
            stream = _Timed(
                raw if dataset.compression is None else open_stream(raw, dataset.compression)
            )
            validating = 0.0
            for block in whole_line_blocks(stream):
                t0 = time.process_time()
                result = validate_chunk(block, 1, opts)
                t1 = time.process_time()
                hashlib.md5(block, usedforsecurity=False).digest()
                spent["md5"] += time.process_time() - t1
                validating += t1 - t0
                if result.rejects:
                    raise RuntimeError(f"{path}: unexpected rejects")
                n += len(block)
            spent["read"] += stream.cpu_s
            spent["validate"] += validating
    if n != dataset.bytes:
        raise RuntimeError(f"{dataset.name}: read {n} bytes, not {dataset.bytes}")
    gb = n / 1e9
    decompress = spent["read"] / gb if dataset.compression else 0.0
    read = 0.0 if dataset.compression else spent["read"] / gb
    return {
        "decompress": decompress,
        "read_validate": read + spent["validate"] / gb,
        "md5": spent["md5"] / gb,
        "wall_s": time.perf_counter() - wall,
    }


def floor_of(parts: dict[str, Any], send: float | None) -> float | None:
    """The floor (CPU s/GB): the local parts plus the send over plain HTTP."""
    if send is None:
        return None
    return float(sum(parts[p] for p in PARTS)) + send


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smaller datasets")
    parser.add_argument("--dataset", action="append", help="only this dataset (repeatable)")
    args = parser.parse_args(argv)
    sets = standard(args.quick)
    out = {name: local_parts(sets[name]) for name in args.dataset or list(sets)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
