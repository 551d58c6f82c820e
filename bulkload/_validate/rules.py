"""A block of lines → records to upload and rejects, by the contract's line rules.

Pure and picklable, so the pipeline can run :func:`validate_chunk` in a process pool.

Two tiers keep it both fast and exact:

1. **Fast path**, per block: UTF-8 is checked for the whole block at once (msgspec does not
   look inside strings it skips), then msgspec's typed decoder, which only builds ``id``,
   runs over every line inside a single ``try``. If every line is a record and nothing needs
   changing, the block goes up as it is: no per-line Python work beyond the decode call.
2. **Careful path**, per line, for any block the fast path declines (a bad or blank line, a
   record to edit for ``--id-field``/``--coerce-id``, a line over the size limit). Lines
   msgspec rejects get a second opinion from :func:`scan` (``_jsonscan``), a small iterative
   JSON grammar checker, which also words the error. It exists because msgspec refuses some
   valid JSON: nesting deeper than the recursion limit (a 1,000-level object is a valid
   record).

Both paths also apply SafetyKit's own limits (``_jsonscan``): numbers that fit a double,
no unpaired surrogate escape such as ``"\\ud800"`` anywhere, at most 1,024 levels of
nesting. Such lines are legal JSON grammar, but the server refuses the whole request that
holds one, so they are rejects here. (Until this rule, a lone surrogate was accepted outside
the id; one such line cost a whole shard of up to 100,000 records.)

``--id-field``/``--coerce-id`` edit records surgically: the ``id`` member's value is
replaced (or ``"id":…,`` inserted after the opening brace) and every other byte is kept, so
floats like ``1.10`` and integers beyond 64 bits elsewhere in the record are unchanged.
"""

from __future__ import annotations

import codecs
import functools
import io
import itertools
import json
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from .._config import KiB, MiB
from .._rejects import TOO_LONG, Ids, Rejects
from .jsonscan import (
    INTEGER,
    KINDS,
    NUMBER_STARTS,
    NUMBER_TAILS,
    STRING,
    JsonError,
    Refused,
    risky,
    scan,
    skip,
)
from .schema import SchemaCheck
from .serverjson import certify, refused


@dataclass(frozen=True, slots=True)
class ValidateOptions:
    id_field: str = "id"
    coerce_id: bool = False
    #: A record longer than one shard can never be uploaded; reject it with a clear reason.
    max_record_bytes: int = 64 * MiB
    collect_ids: bool = False
    #: ``--schema``: every record, as uploaded, must satisfy it (picklable: worker processes
    #: get it by pickle and compile it once each).
    schema: SchemaCheck | None = None


@dataclass(slots=True)
class ChunkResult:
    data: bytes  # the records' upload bytes, each ending in b"\n"
    ends: list[int]  # exclusive end offset of each record in data
    line_nos: Sequence[int]  # a range when every line is a record
    rejects: Rejects
    blank: int
    lines: int
    ids: Ids | None


class _Id(msgspec.Struct, gc=False):  # gc=False: nothing to trace, cheaper to allocate
    id: Annotated[str, msgspec.Meta(min_length=1)]


_ID_DECODER = msgspec.json.Decoder(_Id)
_STR_DECODER = msgspec.json.Decoder(str)
# RecursionError: msgspec recurses per nesting level and gives up near Python's recursion
# limit. UnicodeDecodeError: invalid UTF-8 inside the id itself.
_DECODE_ERRORS = (msgspec.DecodeError, RecursionError, UnicodeDecodeError)

#: UTF-8 is checked in slices whose decoded str (up to 4 bytes a character) stays under
#: glibc's 128 KiB mmap threshold: decoding a whole 8 MiB block, or 1 MiB slices, maps fresh
#: pages for every str and measured 2.7x slower (0.8 vs 2.2 GB/s).
_UTF8_SLICE = 16 * KiB


@functools.lru_cache(maxsize=8)
def _raw_decoder(id_field: str) -> msgspec.json.Decoder[Any]:
    """A decoder that returns the id field's value as raw JSON text (msgspec.Raw), and
    whether the record also has an ``id`` member (only needed when they differ). For a
    dotted field (``user.id``) the key itself is optional, and ``head`` is the value of its
    first part (``user``), to look into when the record has no key with the dot in it."""
    dotted = "." in id_field
    key: Any = msgspec.Raw | msgspec.UnsetType if dotted else msgspec.Raw
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = (
        [("key", key, msgspec.UNSET)] if dotted else [("key", key)]
    )
    rename = {"key": id_field}
    if id_field != "id":
        fields.append(("orig", msgspec.Raw | msgspec.UnsetType, msgspec.UNSET))
        rename["orig"] = "id"
    if dotted:
        fields.append(("head", msgspec.Raw | msgspec.UnsetType, msgspec.UNSET))
        rename["head"] = id_field.split(".", 1)[0]
    struct = msgspec.defstruct("_IdRaw", fields, rename=rename, gc=False)
    return msgspec.json.Decoder(struct)


def _dig(value: bytes | None, path: str) -> bytes | None:
    """The raw value at the dotted ``path`` inside the raw JSON ``value`` (one member per
    part, each an object's); None if a part is missing or not inside an object."""
    for part in path.split("."):
        if value is None:
            return None
        kind, _, members = scan(value)
        if kind != b"{":
            return None
        found = [(a, z) for key, a, z in members if _key_text(key) == part]
        value = value[found[-1][0] : found[-1][1]] if found else None
    return value


def validate_chunk(data: bytes, first_line: int, opts: ValidateOptions) -> ChunkResult:
    """Split ``data`` (whole lines, as ``iter_chunks`` yields them) into records and rejects.

    Every line is exactly one of: a record (in ``data``/``ends``/``line_nos``), a reject,
    or blank. Records go up byte for byte, except a CRLF's ``\\r`` and id edits.
    """
    if opts.id_field == "id":
        result = _fast(data, first_line, opts)
        if result is not None:
            return result
    return _careful(data, first_line, opts, check_utf8=not _utf8_ok(data))


def _utf8_ok(data: bytes) -> bool:
    if data.isascii():  # ~25 GB/s, and common: many JSON writers escape non-ASCII
        return True
    decode = codecs.getincrementaldecoder("utf-8")("strict").decode
    try:
        with memoryview(data) as view:
            for start in range(0, len(data), _UTF8_SLICE):
                decode(view[start : start + _UTF8_SLICE])
        decode(b"", True)
    except UnicodeDecodeError:
        return False
    return True


def _fast(data: bytes, first_line: int, opts: ValidateOptions) -> ChunkResult | None:
    """The whole block as records, or None if any line needs the careful path."""
    # Dropping the CR of every CRLF at once is safe: "\r\n" can only end a line (a raw CR
    # or LF inside a string is invalid anyway), and a trailing CR is JSON whitespace, so no
    # line changes its verdict. A CR at the very end, without LF, is left to the careful path.
    body = data.replace(b"\r\n", b"\n") if b"\r" in data else data
    if body.endswith(b"\r"):
        return None
    decode = _ID_DECODER.decode
    ids: Ids | None = None
    failed: list[tuple[int, str]] = []
    if opts.schema is not None and not opts.collect_ids:
        # The id rule and the schema in one decode per line (None: the careful path).
        checked = opts.schema.check_lines(body)
        if checked is None:
            return None
        failed = checked
    else:
        try:
            if opts.collect_ids:
                ids = Ids()
                add = ids.append
                for line in io.BytesIO(body):
                    add(decode(line).id)
            else:
                for line in io.BytesIO(body):
                    decode(line)
        except _DECODE_ERRORS:
            return None
    ends = list(itertools.accumulate(map(len, io.BytesIO(body))))
    # msgspec looked only at each id: the rest of every line (its UTF-8, its numbers, its
    # depth) is held to the server's rules here.
    if not certify(body, ends):
        return None
    if body and not body.endswith(b"\n"):
        body += b"\n"
        ends[-1] += 1
    if len(body) > opts.max_record_bytes:
        sizes = map(operator.sub, ends, itertools.chain((0,), ends))
        if max(sizes) > opts.max_record_bytes:
            return None
    if opts.schema is not None and opts.collect_ids:
        failed = opts.schema.check_block(body, ends)
    if failed:
        return _without(body, ends, first_line, failed, ids)
    lines = range(first_line, first_line + len(ends))
    return ChunkResult(body, ends, lines, Rejects(), 0, len(ends), ids)


def _without(
    body: bytes, ends: list[int], first_line: int, failed: list[tuple[int, str]], ids: Ids | None
) -> ChunkResult:
    """A block of records of which ``failed`` (index, reason) did not satisfy the schema:
    those become rejects, with their lines as they were, and the rest goes up."""
    bad = dict(failed)
    parts: list[bytes] = []
    kept_ends: list[int] = []
    line_nos: list[int] = []
    rejects = Rejects()
    kept_ids = Ids() if ids is not None else None
    size = start = 0
    for index, end in enumerate(ends):
        record = body[start:end]
        start = end
        reason = bad.get(index)
        if reason is not None:
            rejects.add(first_line + index, reason, record[:-1])
            continue
        parts.append(record)
        size += len(record)
        kept_ends.append(size)
        line_nos.append(first_line + index)
        if kept_ids is not None and ids is not None:
            kept_ids.append(ids[index])
    return ChunkResult(b"".join(parts), kept_ends, line_nos, rejects, 0, len(ends), kept_ids)


def _careful(data: bytes, first_line: int, opts: ValidateOptions, check_utf8: bool) -> ChunkResult:
    decode = _raw_decoder(opts.id_field).decode
    edits = opts.id_field != "id"
    parts: list[bytes] = []
    ends: list[int] = []
    line_nos: list[int] = []
    rejects = Rejects()
    ids = Ids() if opts.collect_ids else None
    blank = size = index = 0
    # The lines SafetyKit's parser refuses, found for the whole block at once (None: a line
    # too long for that; each line is then asked on its own).
    doubtful = refused(data, list(itertools.accumulate(map(len, io.BytesIO(data)))))
    for index, line in enumerate(io.BytesIO(data)):
        no = first_line + index
        raw = line[:-1] if line.endswith(b"\n") else line
        body = raw[:-1] if raw.endswith(b"\r") else raw
        verdict: str | tuple[bytes, str] | None
        if check_utf8 and (column := _bad_utf8_column(raw)):
            verdict = f"invalid UTF-8 at column {column}"
        else:
            try:
                st = decode(body)
            except _DECODE_ERRORS:
                verdict = _second_opinion(body, opts)
            else:
                # msgspec skipped numbers and depths that SafetyKit may refuse.
                if index in doubtful if doubtful is not None else risky(body):
                    verdict = _second_opinion(body, opts)
                else:
                    key = st.key
                    if key is msgspec.UNSET:  # a dotted --id-field: look inside its head
                        head = None if st.head is msgspec.UNSET else bytes(st.head)
                        token = _dig(head, opts.id_field.split(".", 1)[1])
                    else:
                        token = bytes(key)
                    if not edits:
                        id_token = token
                    else:
                        id_token = None if st.orig is msgspec.UNSET else bytes(st.orig)
                    verdict = _judge(body, token, opts, id_token, None)
        if verdict is None:
            blank += 1
            continue
        if isinstance(verdict, str):
            rejects.add(no, verdict, raw)
            continue
        record, record_id = verdict
        if opts.schema is not None and (reason := opts.schema.check(record)) is not None:
            rejects.add(no, reason, raw)  # the schema sees the record as it would go up
            continue
        out = line if record is raw and line.endswith(b"\n") else record + b"\n"
        if len(out) > opts.max_record_bytes:
            error = (
                f"line is {len(out):,} bytes, more than the shard size "
                # Data in rejects.jsonl, made in worker processes too: one wording for all.
                f"{opts.max_record_bytes:,}; raise --shard-size"
            )
            rejects.add(no, error, raw, TOO_LONG)  # the reader saves it to a file
            continue
        parts.append(out)
        size += len(out)
        ends.append(size)
        line_nos.append(no)
        if ids is not None:
            ids.append(record_id)
    lines = index + 1 if data else 0
    return ChunkResult(b"".join(parts), ends, line_nos, rejects, blank, lines, ids)


def _bad_utf8_column(raw: bytes) -> int:
    """1-based byte column of the first invalid UTF-8 sequence, or 0 if there is none."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start + 1
    return 0


def _second_opinion(body: bytes, opts: ValidateOptions) -> str | tuple[bytes, str] | None:
    """Judge a line msgspec refused: None for blank, an error, or the record and its id."""
    stripped = body.lstrip(b" \t\r")
    if not stripped:
        return None
    if stripped.startswith(b"\xef\xbb\xbf"):
        return "byte order mark in the middle of the file"
    try:
        kind, end, members = scan(body)
    except Refused as exc:
        return f"{exc.message}, at column {_column(body, exc.pos)}"
    except JsonError as exc:
        return f"invalid JSON at column {_column(body, exc.pos)}: {exc.message}"
    if kind != b"{":
        return f"expected a JSON object, got {KINDS[kind]}"
    rest = skip(body, end)
    if rest < len(body):
        column = _column(body, rest)
        try:
            scan(body[rest:])
        except JsonError:
            return f"unexpected text after the JSON object, at column {column}"
        return f"a second JSON value after the object, at column {column}"
    token = id_token = head = None
    first = opts.id_field.split(".", 1)[0]
    for key, start, stop in members:  # the last wins, as in msgspec and most parsers
        name = _key_text(key)
        if name == opts.id_field:
            token = body[start:stop]
        if name == "id":
            id_token = body[start:stop]
        if name == first:
            head = body[start:stop]
    if token is None and first != opts.id_field:  # a dotted --id-field: look inside
        token = _dig(head, opts.id_field.split(".", 1)[1])
    return _judge(body, token, opts, id_token, members)


def _judge(
    body: bytes,
    token: bytes | None,
    opts: ValidateOptions,
    id_token: bytes | None,
    members: list[tuple[bytes, int, int]] | None,
) -> str | tuple[bytes, str]:
    """Check the id field's raw value ``token`` and apply --id-field/--coerce-id.

    ``id_token`` is the raw value of the record's ``id`` member (None if it has none);
    ``members`` the top-level members if the scanner already found them. Returns an error,
    or the record (``body`` itself when unchanged) and its id.
    """
    name = opts.id_field
    flag = "" if name == "id" else " (--id-field)"
    if token is None:
        return f"missing {name}{flag}"
    first = token[:1]
    if first == b'"':
        if token == b'""':
            return f"empty {name}{flag}"
        # Decoding costs a call per record, so only when the text is wanted or may hold a
        # lone surrogate (which needs a \\u escape).
        value = _string_value(token) if opts.collect_ids or b"\\u" in token else ""
        if value is None:
            return (
                f"{name} contains an unpaired surrogate escape (\\ud800-\\udfff); ids must be "
                "valid Unicode"
            )
        new = token
    elif first in NUMBER_STARTS:
        if not INTEGER.fullmatch(token):
            extra = "; --coerce-id turns only integers into strings" if opts.coerce_id else ""
            return f"{name} is a number{flag}{extra}"
        if not opts.coerce_id:
            return f"{name} is a number{flag}; use --coerce-id to turn integer ids into strings"
        value = token.decode("ascii")
        new = b'"' + token + b'"'
    else:
        return f"{name} is {KINDS[first]}{flag}"
    if name == "id" and new is token:
        return body, value
    if id_token is None:
        brace = body.index(b"{")
        return body[: brace + 1] + b'"id":' + new + b"," + body[brace + 1 :], value
    start, stop = _id_span(body, id_token, members)
    if body[start:stop] == new:
        return body, value
    return body[:start] + new + body[stop:], value


def _id_span(
    body: bytes, token: bytes, members: list[tuple[bytes, int, int]] | None
) -> tuple[int, int]:
    """Where the value of the top-level ``id`` member is in ``body`` (a valid object).

    ``token`` is that value as msgspec saw it. If the key is repeated, this is the last one,
    the one msgspec and most JSON parsers keep. Usually one regex search finds it; anything
    unusual (the same value nested too, an escaped spelling of the key) asks the scanner.
    """
    if members is None and b"\\u0069" not in body and b"\\u0064" not in body:
        found = []
        for match in _ID_KEY.finditer(body):
            start = match.end()
            stop = start + len(token)
            # In valid JSON nothing but whitespace or , } ] follows a complete value, so
            # the second test only rules out a longer number, such as 75 for 7.
            if body.startswith(token, start) and body[stop : stop + 1] not in NUMBER_TAILS:
                found.append(start)
        if len(found) == 1 and _is_top_level(body, found[0]):
            return found[0], found[0] + len(token)
    if members is None:
        members = scan(body)[2]
    return [(start, stop) for key, start, stop in members if _key_text(key) == "id"][-1]


def _is_top_level(body: bytes, pos: int) -> bool:
    """Is the value at ``pos``, found after ``"id":``, a member of the outermost object?

    In valid JSON, a ``"id"`` followed by ``:`` is a key at some depth: the brackets opened
    before it, counted outside strings.
    """
    prefix = body[: body.rindex(b'"id"', 0, pos)]
    if prefix.strip(b" \t\r\n") == b"{":  # the common case: id is the first key
        return True
    bare = STRING.sub(b"", prefix)
    opened = bare.count(b"{") + bare.count(b"[")
    return opened - bare.count(b"}") - bare.count(b"]") == 1


def _string_value(token: bytes) -> str | None:
    """The text of a JSON string token; None if it holds a lone surrogate."""
    if b"\\u" not in token:
        return _STR_DECODER.decode(token)
    value: str = json.loads(token)  # msgspec refuses lone surrogates; the stdlib keeps them
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def _key_text(key: bytes) -> str:
    if b"\\" in key:
        text: str = json.loads(key)
        return text
    return key[1:-1].decode("utf-8")


def _column(body: bytes, pos: int) -> int:
    """1-based column in characters, as an editor shows it."""
    return len(body[:pos].decode("utf-8", "replace")) + 1


_ID_KEY = re.compile(rb'"id"[ \t\n\r]*+:[ \t\n\r]*+')
