"""SafetyKit's JSON rules, certified for a whole block at once.

The server refuses a whole request of up to 100,000 records for one line its JSON parser
refuses: invalid UTF-8, a number that does not fit a double (``1e400``), an unpaired
surrogate escape, nesting deeper than 1,024 levels. msgspec's typed decoder, which the fast
path runs per line to find each ``id``, skips the other fields without checking those.

:func:`refused` finds the lines of a block the server refuses, and :func:`certify` says that
there are none: simdjson parses the lines as one JSON array, 64 KiB at a time, at about
4 GB/s. simdjson is at least as strict
as the server on every rule above (it refuses integers beyond 64 bits too, and nests one
level less for the array around the lines), so a slice it accepts is certified. A slice it
refuses is judged line by line by orjson, the parser the emulator models the server with:
integers beyond 64 bits pass there; a line orjson refuses sends the block to the careful
path, which asks its scanner only about those lines (it names the line and the reason).

Measured on ~600-byte product records (256 MiB, one process): the check costs ~0.26 CPU s/GB,
and it replaces the block's own UTF-8 check (~0.46 CPU s/GB where the data is not ASCII),
since simdjson validates UTF-8 as it parses. A byte-class pre-scan in pure Python cost
~1 CPU s/GB, and more on data full of hex strings (``e`` followed by digits).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

import orjson
import simdjson

#: Lines checked per parse: below glibc's mmap threshold, so the wrapped copy comes from the
#: heap (8 MiB at once cost a fresh mapping and its page faults: 0.9 against 3.8 GB/s).
_SLICE = 64 * 1024
#: A longer line is left to the careful path: a parser sized for it would keep that memory.
_MAX_LINE = 1 << 20

_local = threading.local()


def _parser() -> simdjson.Parser:
    """One parser per thread (a parser is not thread-safe; it reuses its buffers)."""
    parser: simdjson.Parser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = simdjson.Parser(max_capacity=4 * _MAX_LINE)
    return parser


def refused(body: bytes, ends: Sequence[int]) -> set[int] | None:
    """The indexes of the lines of ``body`` (lines ending at offsets ``ends``) that
    SafetyKit's parser refuses: lines that are not JSON (blank ones included), or that break
    its rules on UTF-8, numbers, surrogates or depth. None when a line is too long to check
    here: judge each line on its own."""
    parse = _parser().parse
    count = len(ends)
    bad: set[int] = set()
    start = i = 0
    while i < count:
        j = max(i + 1, bisect.bisect_right(ends, start + _SLICE, i))
        stop = ends[j - 1]
        if stop - start > _MAX_LINE:
            return None
        piece = body[start:stop]
        # Lines as the elements of one array: newlines become commas (a last line may lack
        # its newline); a line with two values or none makes the slice fail, as it must.
        inner = piece.replace(b"\n", b",")
        if inner.endswith(b","):
            inner = inner[:-1]
        try:
            document = parse(b"[" + inner + b"]")
        except (ValueError, RuntimeError):  # simdjson's errors: both kinds, by error code
            bad.update(i + k for k in _server_refuses(piece))
        else:
            del document  # a parser refuses to parse again while a document is alive
        start, i = stop, j
    return bad


def certify(body: bytes, ends: Sequence[int]) -> bool:
    """Whether SafetyKit's parser accepts every line of ``body``: a block of lines that
    msgspec decoded. False: some line may be refused; judge the block line by line."""
    return refused(body, ends) == set()


def _server_refuses(piece: bytes) -> list[int]:
    """The server's verdict on each line of a slice, by its own parser: those it refuses."""
    lines = piece.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # after the last newline
    out = []
    for k, line in enumerate(lines):
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError:
            out.append(k)
    return out
