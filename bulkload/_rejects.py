"""A block's rejects in a handful of buffers, and their lines of ``rejects.jsonl``.

A file of bad lines (a JSON array, pretty-printed JSON, Latin-1) rejects every line: a
million per block of short lines. Held as one object each (a record, its raw ``bytes``, its
serialized line; orjson 3.13 gives every ``dumps`` result a ~4 KB allocation), 1,000,000
rejects of ``{"id":1}`` took 2.8 GB. :class:`Rejects` holds any number of them in a fixed
number of Python objects: line numbers, error indexes and offsets in ``array``s, raw bytes
and error texts back to back in two ``bytearray``s. It pickles as those few buffers (cheap
to send back from a worker process), its line numbers shift in place (a worker numbers
lines from 1 in its range), and :meth:`Rejects.jsonl` writes the lines of rejects.jsonl in
pieces of about a MiB, each entry's JSON made and dropped on the way.

``rejects.jsonl`` (contract): ``source`` exactly as given, ``line``, ``error``, and ``raw``,
the line itself; a line that is not UTF-8 has ``raw: null`` and ``raw_base64``. A line
longer than a shard was set aside to a file (``_long``): ``raw: null``, ``raw_file``,
``raw_bytes`` and ``raw_head``, its first KiB as text.
"""

from __future__ import annotations

import base64
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

#: The entry's bytes are the raw line.
RAW = 0
#: The entry's bytes are JSON members (``"raw":null,"raw_file":…``) to write as they are.
ASIDE = 1
#: The raw line, longer than a shard: the reader saves it to a file and writes it ASIDE.
TOO_LONG = 2
#: Distinct error texts remembered while a block's rejects are built; beyond this the
#: cache starts over (a text may then be stored twice, never lost).
_CACHE = 4096
#: rejects.jsonl is written in pieces of about this size.
_PIECE = 1 << 20


@dataclass(slots=True)
class Reject:
    """One rejected line, as a view (tests, messages); ``raw`` is the line without its
    ``\\n``, or for an entry of kind ASIDE the members that say where it went."""

    line: int
    error: str
    raw: bytes
    kind: int = RAW


class _Compact:
    """What the compact containers share: they compare and print as the list they hold."""

    __slots__ = ()

    def __len__(self) -> int:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if isinstance(other, type(self) | list | tuple):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        inside = repr(list(self)) if len(self) <= 5 else f"<{len(self)}>"
        return f"{type(self).__name__}({inside})"


class Rejects(_Compact):
    """Rejected lines of a block: ``add`` them in line order; ``len``, iteration and
    indexing give :class:`Reject` views."""

    __slots__ = ("_cache", "_data", "_ends", "_error_ends", "_errors", "_kinds", "_which", "lines")

    def __init__(self) -> None:
        self.lines = array("q")
        self._which = array("i")  # entry -> index in the error table
        self._errors = bytearray()  # the error table: UTF-8 texts back to back
        self._error_ends = array("q")
        self._data = bytearray()  # each entry's bytes back to back
        self._ends = array("q")
        self._kinds = array("b")
        self._cache: dict[str, int] = {}

    def add(self, line: int, error: str, raw: bytes | memoryview, kind: int = RAW) -> None:
        index = self._cache.get(error)
        if index is None:
            if len(self._cache) >= _CACHE:
                self._cache.clear()
            index = len(self._error_ends)
            self._errors += error.encode()
            self._error_ends.append(len(self._errors))
            self._cache[error] = index
        self.lines.append(line)
        self._which.append(index)
        self._data += raw
        self._ends.append(len(self._data))
        self._kinds.append(kind)

    def __len__(self) -> int:
        return len(self.lines)

    def has(self, kind: int) -> bool:
        return kind in self._kinds

    @property
    def nbytes(self) -> int:
        """Bytes of raw lines held."""
        return len(self._data)

    def _error(self, i: int) -> str:
        k = self._which[i]
        start = self._error_ends[k - 1] if k else 0
        return self._errors[start : self._error_ends[k]].decode()

    def _raw(self, i: int) -> bytes:
        start = self._ends[i - 1] if i else 0
        return bytes(self._data[start : self._ends[i]])

    def __getitem__(self, i: int) -> Reject:
        if i < 0:
            i += len(self)
        return Reject(self.lines[i], self._error(i), self._raw(i), self._kinds[i])

    def __iter__(self) -> Iterator[Reject]:
        return (self[i] for i in range(len(self)))

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.lines, self._which, self._errors, self._error_ends, self._data,
                self._ends, self._kinds)  # fmt: skip

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        (self.lines, self._which, self._errors, self._error_ends, self._data, self._ends,
         self._kinds) = state  # fmt: skip
        self._cache = {}

    def shift(self, by: int) -> None:
        """Add ``by`` to every line number (a worker's range-relative numbers)."""
        if by:
            self.lines = array("q", [n + by for n in self.lines])

    def merged(self, other: Rejects) -> Rejects:
        """Both sets of rejects in one, in line order."""
        if not other:
            return self
        if not self:
            return other
        out = Rejects()
        a = b = 0
        while a < len(self) or b < len(other):
            if b >= len(other) or (a < len(self) and self.lines[a] <= other.lines[b]):
                r, a = self[a], a + 1
            else:
                r, b = other[b], b + 1
            out.add(r.line, r.error, r.raw, r.kind)
        return out

    def jsonl(self, source: str) -> Iterator[bytes]:
        """The lines of rejects.jsonl for these rejects of ``source``, in ~1 MiB pieces."""
        head = b'{"source":' + orjson.dumps(source) + b',"line":'
        out = bytearray()
        errors: dict[int, bytes] = {}  # a few serialized texts, reused while they last
        data = memoryview(self._data)
        start = 0
        for i, line in enumerate(self.lines):
            k = self._which[i]
            error = errors.get(k)
            if error is None:
                if len(errors) >= _CACHE:
                    errors.clear()
                error = errors[k] = orjson.dumps(self._error(i))
            end = self._ends[i]
            raw = data[start:end]
            start = end
            out += head
            out += b"%d" % line
            out += b',"error":'
            out += error
            if self._kinds[i] == ASIDE:
                out += b","
                out += raw
            else:
                out += _raw_members(raw)
            out += b"}\n"
            if len(out) >= _PIECE:
                yield bytes(out)
                out.clear()
        data.release()
        if out:
            yield bytes(out)


#: How much of a line set aside is shown in its reject, as text.
HEAD_TEXT = 1024


def aside_members(path: str, length: int, head: bytes) -> bytes:
    """The members of a reject whose line was saved to ``path`` instead (kind ASIDE)."""
    text = head[:HEAD_TEXT].decode("utf-8", "replace")
    doc = {"raw": None, "raw_file": path, "raw_bytes": length, "raw_head": text}
    return orjson.dumps(doc)[1:-1]


def too_long(length: int, limit: int, path: str) -> str:
    return (
        f"line is {length:,} bytes, more than the shard size {limit:,}, so it can never be "
        f"uploaded; it was saved to {path} (raise --shard-size, shard_max_bytes in Python, to load it)"
    )


def _raw_members(raw: memoryview) -> bytes:
    try:
        text = str(raw, "utf-8")
    except UnicodeDecodeError:
        return b',"raw":null,"raw_base64":"' + base64.b64encode(raw) + b'"'
    return b',"raw":' + orjson.dumps(text)


class Tally:
    """Counts of one source's lines, to tell a file of the wrong kind when it ends."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.records = self.rejected = 0
        self.first: Reject | None = None

    def count(self, records: int, rejects: Rejects) -> None:
        self.records += records
        self.rejected += len(rejects)
        if self.first is None and rejects:
            self.first = rejects[0]


def looks_like(first: Reject) -> str:
    """What kind of file it is, judged by its first rejected line."""
    raw = first.raw
    if first.kind == ASIDE:  # too long for a shard: judge by its head
        raw = str(orjson.loads(b"{" + raw + b"}").get("raw_head", "")).encode()
    text = raw.lstrip(b" \t\xef\xbb\xbf")
    if first.error.startswith("invalid UTF-8"):
        return (
            "text in another encoding than UTF-8 (Latin-1 or Windows-1252, say; convert it, "
            "e.g. iconv -f latin1 -t utf-8)"
        )
    if b"\r" in raw.rstrip(b"\r"):
        return "a file with CR line ends (old Mac style; \\n must end each line)"
    if text.startswith(b"["):
        return "a JSON array (one value for the whole file, not one object per line)"
    if text.rstrip() == b"{" or "ends before the object is closed" in first.error:
        return "pretty-printed JSON (one object spread over many lines)"
    return f"something other than JSON lines (its first error, line {first.line:,}: {first.error})"


class Ids(_Compact):
    """A block's record ids (``--check-duplicates``) as one UTF-8 buffer and the end of each:
    over 300,000 small records to a block, a list of ``str`` held ~20 MB per block where this
    holds the ids' bytes. Iterating gives the ids as ``str``, one at a time."""

    __slots__ = ("_data", "_ends")

    def __init__(self) -> None:
        self._data = bytearray()
        self._ends = array("q")

    def append(self, rid: str) -> None:
        self._data += rid.encode("utf-8", "surrogatepass")  # lone surrogates are rejects
        self._ends.append(len(self._data))

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i: int) -> str:
        i = i + len(self) if i < 0 else i
        start = self._ends[i - 1] if i else 0
        return self._data[start : self._ends[i]].decode("utf-8", "surrogatepass")

    def __iter__(self) -> Iterator[str]:
        data, start = self._data, 0
        for end in self._ends:
            yield data[start:end].decode("utf-8", "surrogatepass")
            start = end

    def __getstate__(self) -> tuple[Any, ...]:
        return (self._data, self._ends)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._data, self._ends = state


def reject_json(source: str, reject: Reject) -> bytes:
    """One line of rejects.jsonl, ending in ``\\n``; a line that is not UTF-8 is kept
    exactly as ``raw_base64`` (``raw`` is then null)."""
    one = Rejects()
    one.add(reject.line, reject.error, reject.raw, reject.kind)
    return b"".join(one.jsonl(source))
