"""Rejects counted by what their reasons say: the report of a check without uploading.

``bulkload load … --dry-run --schema FILE`` (or any run with rejects) can end with the most
common reasons, a count and an example line each. Reasons are grouped by their *shape*, the
reason without the value that differs from record to record, so that every price written
as text is one line of the report::

    /price: "12,50" is not of type "number"     ┐
    /price: "9,99" is not of type "number"      ├─ /price: … is not of type "number"  × 3
    /price: true is not of type "number"        ┘
    /images/3: "ftp://x" does not match …       ── /images/*: … does not match …

Pure and streaming: :class:`ReasonCounter` is fed one reject at a time and holds one example
per shape, never the rejects themselves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .schema import REASON_PHRASES

#: Distinct reason shapes a :class:`ReasonCounter` keeps apart; past that, new shapes are
#: counted together as "other reasons", so that a file of a million different mistakes
#: cannot grow it without bound.
MAX_SHAPES = 10_000

#: A schema reason: its pointer (plain, or a JSON string when it holds ": "), the value,
#: and the words from the last of the phrases that follow a value.
_SCHEMA_REASON = re.compile(
    r'(?P<pointer>"(?:[^"\\]|\\.)*"|/.*?): (?:property name )?.*?'
    r"(?P<words>(?:"
    + "|".join(map(re.escape, REASON_PHRASES))
    + r")(?:(?!"
    + "|".join(map(re.escape, REASON_PHRASES))
    + r").)*)$",
    re.DOTALL,
)
_MORE = re.compile(r" \(and [\d,]+ more\)$")
_INDEX = re.compile(r"(?<=/)\d+(?=/|$)")
_NUMBER = re.compile(r"\d[\d,.]*")


def reason_shape(reason: str) -> str:
    """What a reason says without the value that differs between records: the pointer
    (array indexes as ``*``) and the words. ``/price: "12,50" is not of type "number"`` and
    ``/price: true is not of type "number"`` are both ``/price: … is not of type "number"``.
    A reason that is not the schema's (``invalid JSON at column 17: …``) has its numbers
    replaced by ``N``."""
    reason = _MORE.sub("", reason)
    if reason.endswith(": required property is missing"):
        pointer = reason[: -len(": required property is missing")]
        return f"{_INDEX.sub('*', pointer)}: required property is missing"
    match = _SCHEMA_REASON.match(reason)
    if match is None:
        return _NUMBER.sub("N", reason)
    pointer = match["pointer"]
    if not pointer.startswith('"'):
        pointer = _INDEX.sub("*", pointer)
    return f"{pointer}: … {match['words']}"


def reason_pointer(reason: str) -> str | None:
    """The RFC 6901 pointer a schema reason starts with (``/price``; ``""`` for the whole
    record), or None for a reason that is not the schema's (those never start with ``/``):
    for a ``pointer`` member of rejects.jsonl that scripts can use as it is."""
    if reason.startswith('"/'):
        text, _ = json.JSONDecoder().raw_decode(reason)
        return str(text)
    if reason.startswith("/"):
        pointer = reason.split(": ", 1)[0]
        return "" if pointer == "/" else pointer
    return None


@dataclass(frozen=True, slots=True)
class ReasonCount:
    """One kind of reject: its shape, how many lines, and the first of them as an example."""

    shape: str
    count: int
    reason: str
    source: str
    line: int
    raw: bytes | str | None


class ReasonCounter:
    """Counts rejects by :func:`reason_shape`, keeping one example each. Fed one reject at a
    time (a run's rejects may be millions; only the shapes are held)."""

    def __init__(self, max_shapes: int = MAX_SHAPES) -> None:
        self.total = 0
        self._max = max_shapes
        self._counts: dict[str, int] = {}
        self._examples: dict[str, tuple[str, str, int, bytes | str | None]] = {}
        #: Rejects whose shape came after ``max_shapes`` others.
        self.other = 0

    def add(self, reason: str, source: str, line: int, raw: bytes | str | None) -> None:
        self.total += 1
        shape = reason_shape(reason)
        count = self._counts.get(shape)
        if count is None:
            if len(self._counts) >= self._max:
                self.other += 1
                return
            self._examples[shape] = (reason, source, line, raw)
            count = 0
        self._counts[shape] = count + 1

    def top(self, n: int = 10) -> list[ReasonCount]:
        """The ``n`` most common shapes, most common first (ties: the first seen first)."""
        ranked = sorted(self._counts.items(), key=lambda item: -item[1])[:n]
        return [ReasonCount(shape, count, *self._examples[shape]) for shape, count in ranked]


def top_reasons(
    rejects: Iterable[tuple[str, str, int, bytes | str | None]], n: int = 10
) -> list[ReasonCount]:
    """The ``n`` most common reasons among ``(reason, source, line, raw)`` rejects."""
    counter = ReasonCounter()
    for reject in rejects:
        counter.add(*reject)
    return counter.top(n)
