"""After the upload: results joined back to source lines, and the server's line numbers too.

Both need the same thing: which source file and line each record of a shard came from. A
shard only records its source line *ranges* (rejected and blank lines in between included),
so the sources are re-read and re-validated with the run's options; the k-th record of a
range is the k-th line the validator accepts there. Relative INPUT paths are found from the
directory the load ran in (``cwd`` in the manifest), so ``wait`` works from anywhere; a
source that cannot be read from here is named, and nothing is claimed about its records.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from .._inputs import Source, format_of, is_url, iter_chunks, reopen
from .._journal import RunState, ShardEntry
from .._model import RECORDS_SOURCE, STDIN, ProcessingStatus, ShardStatus
from .._validate import ValidateOptions, validate_chunk

#: Where records came from when bulkload cannot read them again.
_UNREADABLE_KINDS = {STDIN: "standard input", RECORDS_SOURCE: "load_records()"}
#: How the server names a line of the uploaded object in an ``error_summary``.
_LINE_REF = re.compile(r"\bline (\d+)\b")
#: Missing ids listed per shard before the rest are only counted.
_MAX_LISTED = 100


class SourceLines:
    """Reads the run's inputs front to back and hands out, for a line range of one input,
    the ``(id, line)`` of each record in it. One cursor per input: shards are in input
    order, so a whole run is read once, and memory holds one range at a time."""

    def __init__(self, state: RunState) -> None:
        options = state.run.get("options", {})
        self._vopts = ValidateOptions(
            id_field=options.get("id_field", "id"),
            coerce_id=bool(options.get("coerce_id", False)),
            max_record_bytes=int(options.get("shard_max_bytes", 64 << 20)),
            collect_ids=True,
        )
        self._inputs: dict[str, dict[str, Any]] = {
            i["path"]: i for i in state.run.get("inputs", [])
        }
        cwd = state.run.get("cwd")
        self._cwd = Path(cwd) if cwd else None
        self._open: dict[str, tuple[Iterator[tuple[str, int]], deque[tuple[str, int]]]] = {}
        #: Inputs that could not be read, with the reason: their records were not checked.
        self.unreadable: dict[str, str] = {}

    def take(self, path: str, first: int, last: int) -> list[tuple[str, int]] | None:
        """The records on lines ``first..last`` of input ``path``; None if unreadable.
        Ranges of one input must be asked for in order."""
        if path in self.unreadable:
            return None
        if path not in self._open:
            source = self._source(path)
            if source is None:
                return None
            self._open[path] = (self._records(source), deque())
        records, ahead = self._open[path]
        out: list[tuple[str, int]] = []
        while True:
            if not ahead:
                nxt = next(records, None)
                if nxt is None:
                    return out
                ahead.append(nxt)
            rid, line = ahead[0]
            if line > last:
                return out
            ahead.popleft()
            if line >= first:
                out.append((rid, line))

    def _source(self, path: str) -> Source | None:
        info = self._inputs.get(path, {})
        if path in _UNREADABLE_KINDS:
            self.unreadable[path] = f"records from {_UNREADABLE_KINDS[path]} cannot be read again"
            return None
        if is_url(path):
            remote: Source | None = reopen(path, info)
            if remote is None:
                self.unreadable[path] = "its store cannot be reached from here"
            return remote
        local = Path(path)
        if not local.is_absolute() and not local.exists() and self._cwd is not None:
            local = self._cwd / local
        if not local.is_file():
            where = f" (nor in {self._cwd}, where the load ran)" if self._cwd else ""
            self.unreadable[path] = f"not found from {os.getcwd()}{where}"
            return None
        return Source(
            display=path,
            path=local,
            compression=info.get("compression"),
            size=None,
            mtime_ns=None,
            format=info.get("format") or format_of(path),
        )

    def _records(self, source: Source) -> Iterator[tuple[str, int]]:
        for chunk in iter_chunks(source):
            result = validate_chunk(chunk.data, chunk.first_line, self._vopts)
            yield from zip(result.ids or [], result.line_nos, strict=False)

    def of_shard(self, entry: ShardEntry) -> list[tuple[str, str, int]] | None:
        """``(id, path, line)`` of each record of the shard, in upload order; None when
        one of its inputs cannot be read."""
        records: list[tuple[str, str, int]] = []
        for rng in entry.sources:
            got = self.take(rng["path"], rng["first_line"], rng["last_line"])
            if got is None:
                return None
            records += [(rid, rng["path"], line) for rid, line in got]
        return records


def locate_lines(
    summary: str, records: list[tuple[str, str, int]]
) -> tuple[str, list[dict[str, Any]]]:
    """The server's ``error_summary`` with each ``line N`` (a line of the uploaded shard)
    followed by the source file and line it came from, and those places as a list."""
    places: list[dict[str, Any]] = []

    def name(match: re.Match[str]) -> str:
        k = int(match.group(1))
        if not 1 <= k <= len(records):
            return match.group(0)
        rid, path, line = records[k - 1]
        places.append({"shard_line": k, "id": rid, "path": path, "line": line})
        return f"{match.group(0)} ({path} line {line:,})"

    return _LINE_REF.sub(name, summary), places


def unreadable_notes(lines: SourceLines) -> list[str]:
    return [
        f"{path}: {why}; its records were not checked" for path, why in lines.unreadable.items()
    ]


def reconcile(state: RunState, out: Path) -> tuple[list[str], list[str]]:
    """Join every downloaded result to the source file and line of its record (written to
    ``out/results.jsonl``); return (mismatches, notes on what could not be checked).

    An id that occurs several times in one shard is joined occurrence by occurrence; when
    the server answers fewer times than the id was sent (it may merge repeats of one
    object), the missing answers are not reported as missing records."""
    lines = SourceLines(state)
    mismatches: list[str] = []
    joined_tmp = out / "results.jsonl.part"
    with open(joined_tmp, "wb") as joined:
        for index in sorted(state.shards):
            entry = state.shards[index]
            proc = entry.processing or {}
            if (
                entry.status != ShardStatus.UPLOADED
                or proc.get("processing_status") != ProcessingStatus.SUCCEEDED
            ):
                continue
            mismatches += _join_shard(entry, lines.of_shard(entry), out, joined)
    os.replace(joined_tmp, out / "results.jsonl")
    return mismatches, unreadable_notes(lines)


def _join_shard(
    entry: ShardEntry,
    records: list[tuple[str, str, int]] | None,
    out: Path,
    joined: Any,
) -> list[str]:
    where = f"shard {entry.index} ({entry.request_id})"
    expected: dict[str, deque[tuple[str, int]]] = {}
    for rid, path, line in records or []:
        expected.setdefault(rid, deque()).append((path, line))
    answered: set[str] = set()
    mismatches: list[str] = []
    count = (entry.processing or {}).get("data_count")
    seen = 0
    with open(out / f"{entry.request_id}.jsonl", "rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            seen += 1
            doc = orjson.loads(raw)
            rid = str(doc.get("id"))
            places = expected.get(rid)
            origin = places.popleft() if places else None
            if origin is None and records is not None and rid not in answered:
                mismatches.append(
                    f"{where}: result for id {doc.get('id')!r} that the shard did not send"
                )
            answered.add(rid)
            doc["source"] = origin[0] if origin else None
            doc["line"] = origin[1] if origin else None
            doc["request_id"] = entry.request_id
            joined.write(orjson.dumps(doc) + b"\n")
    if count is not None and seen != count:
        mismatches.append(f"{where}: data_count is {count} but the results file has {seen} lines")
    if count is not None and count != entry.records:
        mismatches.append(f"{where}: {entry.records} records sent, {count} results")
    if records is not None:
        missing = [
            (rid, place)
            for rid, places in expected.items()
            if rid not in answered
            for place in places
        ]
        for rid, (src, line) in missing[:_MAX_LISTED]:
            mismatches.append(f"{where}: no result for id {rid!r} from {src} line {line}")
        if len(missing) > _MAX_LISTED:
            mismatches.append(
                f"{where}: … and {len(missing) - _MAX_LISTED} more ids without a result"
            )
    return mismatches
