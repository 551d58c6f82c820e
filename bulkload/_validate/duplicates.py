"""``--check-duplicates``: every id seen more than once in a run, with its lines.

Shards go up in parallel, so when an id occurs twice the older version may win on the
server. Finding repeats among hundreds of millions of ids cannot be done with one in-memory
set, so this is an external hash partition: while reading, each ``(id, source, line)`` is
appended to one of ``PARTITIONS`` spill files chosen by the id's hash; afterwards each
partition is grouped in memory on its own. Memory is bounded by the largest partition:
about ``records / 256 × ~150 bytes`` (100 million records → ~60 MB), and disk by about
``records × (id length + 20 bytes)``, removed when the check ends.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

import orjson

PARTITIONS = 256
#: Bytes buffered per partition before a write: 256 × 32 KiB = 8 MiB at most, writes
#: still large. Bytes, not one object per entry: orjson 3.13 gives every ``dumps`` result
#: a ~4 KB allocation, and 256 × 512 held entries took +550 MB over 2 million ids.
_BUFFER = 32 * 1024


class DuplicateFinder:
    """Collects ids while a run reads; ``finish()`` writes the repeats to a JSONL file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._files: list[BinaryIO] = [
            open(directory / f"part-{i:03d}", "wb")  # noqa: SIM115 - closed in finish/close
            for i in range(PARTITIONS)
        ]
        self._buffers = [bytearray() for _ in range(PARTITIONS)]
        self._sources: dict[str, int] = {}

    def add(self, source: str, ids: Iterable[str], line_nos: Sequence[int]) -> None:
        src = self._sources.setdefault(source, len(self._sources))
        buffers = self._buffers
        for rid, line in zip(ids, line_nos, strict=True):
            # hash() of a str is stable within one process, which is all this needs.
            part = hash(rid) % PARTITIONS
            buf = buffers[part]
            buf += orjson.dumps((rid, src, line), option=orjson.OPT_APPEND_NEWLINE)
            if len(buf) >= _BUFFER:
                self._flush(part)

    def _flush(self, part: int) -> None:
        buf = self._buffers[part]
        if buf:
            self._files[part].write(buf)
            buf.clear()

    def finish(self, out: Path) -> tuple[int, int]:
        """Write ``{"id", "count", "occurrences": [{"source", "line"}]}`` per repeated id to
        ``out``; return (ids repeated, extra occurrences)."""
        for part in range(PARTITIONS):
            self._flush(part)
        self.close()
        names = {v: k for k, v in self._sources.items()}
        repeated = extra = 0
        with open(out, "wb") as sink:
            for part in range(PARTITIONS):
                seen: dict[str, list[tuple[int, int]]] = {}
                with open(self.directory / f"part-{part:03d}", "rb") as f:
                    for raw in f:
                        rid, src, line = orjson.loads(raw)
                        seen.setdefault(rid, []).append((src, line))
                for rid, where in seen.items():
                    if len(where) > 1:
                        repeated += 1
                        extra += len(where) - 1
                        occurrences = [{"source": names[s], "line": n} for s, n in where]
                        doc = {"id": rid, "count": len(where), "occurrences": occurrences}
                        sink.write(orjson.dumps(doc) + b"\n")
        shutil.rmtree(self.directory, ignore_errors=True)
        return repeated, extra

    def close(self) -> None:
        for f in self._files:
            f.close()

    def discard(self) -> None:
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)
