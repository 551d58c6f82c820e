"""What an input is, before anything reads it: a ``Source``, its ``Chunk``s of lines, and the
rules that tell a file's kind from its name. The leaf of ``_inputs``: every other module of
the package imports it, and it imports none of them.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import SourceError
from .._rejects import Rejects

#: What a directory INPUT contributes: JSON lines files, optionally compressed. ``.json``
#: is included because Spark and many exporters write JSON lines under that name.
JSONL_NAME = re.compile(r"\.(?:jsonl|ndjson|json)(?:\.(?:gz|bz2|xz|zst))?$", re.IGNORECASE)
#: Directories contribute JSONL files only (the contract); these are named in a hint.
TABULAR_NAME = re.compile(r"\.(?:parquet|csv(?:\.(?:gz|bz2|xz|zst))?)$", re.IGNORECASE)
#: Tabular inputs, by the suffix before any compression suffix: each row becomes one line.
_FORMAT_BY_SUFFIX = {".parquet": "parquet", ".csv": "csv"}
_COMPRESSION_BY_SUFFIX = {".gz": "gz", ".bz2": "bz2", ".xz": "xz", ".zst": "zst"}


class Stop(Exception):
    """Raised where reading or resolving notices that the run was asked to stop."""


@dataclass(frozen=True, slots=True)
class Source:
    """One input file (or stdin), as the user named it."""

    display: str
    path: Path | None
    compression: str | None
    size: int | None
    mtime_ns: int | None
    #: ``jsonl``, ``parquet`` or ``csv`` (by suffix); only JSONL is ever sent zero-copy.
    format: str = "jsonl"
    #: A remote input (``s3://…``): the URL to read and its fsspec file system; ``path`` is
    #: then None, as for stdin.
    url: str | None = None
    fs: Any = field(default=None, compare=False, repr=False)
    #: A remote object's identity token from its listing (``etag:…``, ``md5:…``,
    #: ``generation:…``): an incremental load recognises it by this without reading it.
    etag: str | None = None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Every file handed to a worker process is pickled: the dataclass's own state
        # (a Python loop over the fields each way) and the Path's parts cost 14 µs a file,
        # 0.27 s of CPU for 20,000 small files; this, a tuple and a str, about a tenth.
        path = None if self.path is None else str(self.path)
        fields = (self.compression, self.size, self.mtime_ns, self.format, self.url, self.fs)
        return (_source, (self.display, path, *fields, self.etag))


def _source(display: str, path: str | None, *fields: Any) -> Source:
    """A pickled Source (see ``Source.__reduce__``)."""
    return Source(display, None if path is None else Path(path), *fields)


@dataclass(frozen=True, slots=True)
class Chunk:
    """Whole lines of one source: every line ends with ``\\n`` except possibly the very last
    line of the source. ``offset`` counts bytes of the decompressed stream, BOM included."""

    data: bytes
    first_line: int
    offset: int
    #: Lines judged while reading (a CSV row with the wrong number of fields, a line too
    #: long for a shard): each one's place in ``data`` is a blank line, so later lines keep
    #: their numbers.
    rejects: Rejects | None = None
    #: Bytes of the stream this chunk stands for beyond ``data`` (a line set aside).
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class LongLines:
    """Where lines longer than a shard go: streamed to a file each, never held in memory
    (such a line can never be uploaded; the file keeps it, so nothing is lost)."""

    directory: Path
    #: A line longer than this, with its newline, is set aside.
    max_bytes: int

    def path_for(self, display: str, line: int) -> Path:
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", display)[-80:]
        tag = hashlib.md5(display.encode(), usedforsecurity=False).hexdigest()[:8]
        return self.directory / f"{name}.{tag}.line-{line}"


def compression_of(name: str) -> str | None:
    """The codec implied by a file name's last suffix, or None for plain text."""
    return _COMPRESSION_BY_SUFFIX.get(os.path.splitext(name)[1].lower())


def format_of(name: str) -> str:
    """``parquet``, ``csv`` or ``jsonl``, from the suffix (before a compression suffix)."""
    base = name[: -len(os.path.splitext(name)[1])] if compression_of(name) else name
    return _FORMAT_BY_SUFFIX.get(os.path.splitext(base)[1].lower(), "jsonl")


def check_format(source: Source) -> None:
    """Refuse a combination bulkload cannot read, before reading it."""
    if source.format == "parquet" and source.compression is not None:
        raise SourceError(
            f"{source.display}: Parquet files are compressed inside; bulkload reads them "
            "only uncompressed (decompress it and drop the suffix)",
            path=source.display,
        )
