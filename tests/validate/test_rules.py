"""The line rules: records, rejects and blank lines, with their exact bytes and messages."""

from __future__ import annotations

import base64
import bz2
import contextlib
import gzip
import json
import lzma
import math
import pickle
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
import zstandard
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bulkload._inputs import Chunk, iter_chunks, resolve_inputs
from bulkload._rejects import Reject, reject_json
from bulkload._validate import ChunkResult, ValidateOptions, validate_chunk
from bulkload._validate.jsonscan import scan as _scan
from bulkload._validate.rules import _careful

DEFAULT = ValidateOptions()
DEEP = b'{"id":"deep","d":' + b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"}"

#: (line, expected error; None for a valid record). Each is also checked at its line number.
CATALOGUE: list[tuple[bytes, str | None]] = [
    (b'{"id":"a","price":1.10}', None),
    (b'{"id":"a",', "invalid JSON at column 11: the line ends before the object is closed"),
    (b'{"id":"a"', "invalid JSON at column 10: the line ends before the object is closed"),
    (b'{"id" "a"}', "invalid JSON at column 7: expected ':' after a key, found '\"'"),
    (b'{"id":"a",}', "invalid JSON at column 11: trailing comma before '}'"),
    (b"{'id':'a'}", 'invalid JSON at column 2: expected a key in double quotes, found "\'"'),
    (b'{"id":"a","n":01}', "invalid JSON at column 15: invalid number"),
    (b'{"id":"a","t":tru}', "invalid JSON at column 15: invalid literal (expected true)"),
    (
        b'{"id":"a","e":"\\x"}',
        "invalid JSON at column 16: invalid escape sequence '\\\\x' in a string",
    ),
    (b"[1,2]", "expected a JSON object, got an array"),
    (b'"just a string"', "expected a JSON object, got a string"),
    (b"42", "expected a JSON object, got a number"),
    (b"true", "expected a JSON object, got a boolean"),
    (b"null", "expected a JSON object, got null"),
    (b'{"name":"x"}', "missing id"),
    (b'{"id":null}', "id is null"),
    (b'{"id":""}', "empty id"),
    (b'{"id":42}', "id is a number; use --coerce-id to turn integer ids into strings"),
    (b'{"id":4.2}', "id is a number"),
    (b'{"id":{"a":1}}', "id is an object"),
    (b'{"id":["a"]}', "id is an array"),
    (b'{"id":true}', "id is a boolean"),
    (b'{"id":"a","x":NaN}', "invalid JSON at column 15: NaN is not valid JSON"),
    (b'{"id":"a","x":Infinity}', "invalid JSON at column 15: Infinity is not valid JSON"),
    (b'{"id":"a","x":-Infinity}', "invalid JSON at column 15: -Infinity is not valid JSON"),
    (b'{"id":"a","x":"\xff"}', "invalid UTF-8 at column 16"),
    (b'{"id":"\xc3"}', "invalid UTF-8 at column 8"),
    (
        b'{"id":"a","x":"a\x00b"}',
        "invalid JSON at column 17: raw control character U+0000 inside a string "
        "(write it as \\u0000)",
    ),
    (b'{"id":"a"}\x00', "unexpected text after the JSON object, at column 11"),
    (b'\xef\xbb\xbf{"id":"a"}', "byte order mark in the middle of the file"),
    (b'{"id":"a"} trailing', "unexpected text after the JSON object, at column 12"),
    (b'{"id":"a"}{"id":"b"}', "a second JSON value after the object, at column 11"),
    (b'{"id":"a"} {"id":"b"}', "a second JSON value after the object, at column 12"),
    (b'{"id":"\\ud800"}', "unpaired surrogate escape \\ud800 in a string"),
    (DEEP, None),
    (b'{"id":"a","big":123456789012345678901234567890,"f":1.10,"e":1E-400,"z":-0.0}', None),
    (b'{"id":"a","e":1E+400}', "the number 1E+400 does not fit a 64-bit float"),
    (b'{"id":"a","e":[-1e400]}', "the number -1e400 does not fit a 64-bit float"),
    (
        b'{"id":"a","n":1' + b"0" * 309 + b"}",
        "the number 10000000000000000000...0000000000 does not fit",
    ),
    (b'{"id":"a","n":1' + b"0" * 308 + b"}", None),  # 1e308 fits
    (b'{"id":"a","s":"\\udc00 alone"}', "unpaired surrogate escape \\udc00"),
    (b'{"id":"a","\\ud800":1}', "unpaired surrogate escape \\ud800"),
    (b'{"id":"a","s":"\\ud800\\u0041"}', "unpaired surrogate escape \\ud800"),
    (b'{"id":"a","s":"\\\\ud800"}', None),  # an escaped backslash, then text
    (b'{"id":"a","x":' + b"[" * 1023 + b"]" * 1023 + b"}", None),  # depth 1,024
    (
        b'{"id":"a","x":' + b"[" * 1024 + b"]" * 1024 + b"}",
        "nesting deeper than 1,024 levels of arrays and objects, at column 1038",
    ),
    (b'  \t{"id":"spaces"} \t ', None),
    ('{"id":"sep\u2028\u2029\u0085","s":"é😀"}'.encode(), None),
    (b'{"id":"\\ud83d\\ude00"}', None),  # an escaped surrogate pair is fine
    (b'{"id":"a","id":"b"}', None),
    (b'{"x":{"id":1},"id":"top"}', None),
    (b'{"id":"col","s":"\xc3\xa9\xc3\xa9",x}', "invalid JSON at column 22: expected a key"),
]


def lines_of(result: ChunkResult, data: bytes) -> list[bytes]:
    return [data[a:b] for a, b in zip([0, *result.ends], result.ends, strict=False)]


def test_catalogue() -> None:
    data = b"\n".join(line for line, _ in CATALOGUE)
    result = validate_chunk(data, 7, DEFAULT)
    errors = {r.line: r.error for r in result.rejects}
    records = dict(zip(result.line_nos, lines_of(result, result.data), strict=True))
    for i, (line, expected) in enumerate(CATALOGUE):
        no = 7 + i
        if expected is None:
            assert no not in errors, (line, errors.get(no))
            assert records[no] == line + b"\n"  # byte for byte, a newline added at the end
        else:
            assert errors[no].startswith(expected), (line, errors.get(no))
    assert {r.line: r.raw for r in result.rejects} == {
        7 + i: line for i, (line, e) in enumerate(CATALOGUE) if e
    }
    assert result.lines == len(CATALOGUE) == len(result.ends) + len(result.rejects)


def test_last_line_without_newline_crlf_and_blank() -> None:
    data = b'{"id":"a"}\r\n\r\n  \t\n\n{"id":"b"}\r\n{"id":"c"}'
    result = validate_chunk(data, 1, DEFAULT)
    assert result.data == b'{"id":"a"}\n{"id":"b"}\n{"id":"c"}\n'
    assert result.ends == [11, 22, 33]
    assert result.line_nos == [1, 5, 6]
    assert (result.blank, result.lines, result.rejects) == (3, 6, [])


def test_crlf_only_the_line_ending_is_dropped() -> None:
    data = b'{"id":"a",\r"x":1}\r\r\n'  # a CR between tokens is JSON whitespace: kept
    assert validate_chunk(data, 1, DEFAULT).data == b'{"id":"a",\r"x":1}\r\n'
    reject = validate_chunk(b'{"id":5}\r\n', 1, DEFAULT).rejects[0]
    assert reject.raw == b'{"id":5}\r'  # the original line, without its \n only


def test_empty_chunk() -> None:
    result = validate_chunk(b"", 1, DEFAULT)
    assert list(result.line_nos) == []
    assert result == ChunkResult(b"", [], result.line_nos, [], 0, 0, None)


@pytest.mark.parametrize("pad", [0, 100])
def test_line_over_the_size_limit(pad: int) -> None:
    fits = b'{"id":"a","p":"' + b"x" * 32 + b'"}'  # 50 bytes with its newline
    big = b'{"id":"b","p":"' + b"x" * 33 + b'"}'
    filler = b'{"id":"f"}\n' * pad
    result = validate_chunk(
        filler + fits + b"\n" + big + b"\n", 1, ValidateOptions(max_record_bytes=50)
    )
    assert result.line_nos[-1] == pad + 1
    (reject,) = result.rejects
    assert reject.line == pad + 2
    assert reject.error == "line is 51 bytes, more than the shard size 50; raise --shard-size"


def test_collect_ids() -> None:
    data = b'{"id":"a"}\n{"id":"\\u00e9"}\n{"id":"c","x":1}\n'
    opts = ValidateOptions(collect_ids=True)
    assert validate_chunk(data, 1, opts).ids == ["a", "é", "c"]
    assert validate_chunk(data + b"bad\n", 1, opts).ids == ["a", "é", "c"]
    assert validate_chunk(data, 1, DEFAULT).ids is None


# -- --id-field and --coerce-id: surgical edits -------------------------------------------------


def edit(line: bytes, **options: Any) -> bytes | str:
    result = validate_chunk(line + b"\n", 1, ValidateOptions(collect_ids=True, **options))
    if result.rejects:
        return result.rejects[0].error
    assert result.ids is not None
    with contextlib.suppress(RecursionError):  # the 1,000-level record is too deep for json
        assert json.loads(result.data)["id"] == result.ids[0]
    return result.data[:-1]


REST = b'"f":1.10,"big":123456789012345678901234567890,"e":1e-400'


def test_coerce_id() -> None:
    assert edit(b'{"id":42,' + REST + b"}", coerce_id=True) == b'{"id":"42",' + REST + b"}"
    huge = b"123456789012345678901234567890"
    assert edit(b'{ "id" : ' + huge + b" }", coerce_id=True) == b'{ "id" : "' + huge + b'" }'
    assert edit(b'{"id":"already"}', coerce_id=True) == b'{"id":"already"}'
    assert edit(b'{"id":-7}', coerce_id=True) == b'{"id":"-7"}'
    assert edit(b'{"x":{"id":7},"id":7}', coerce_id=True) == b'{"x":{"id":7},"id":"7"}'
    assert edit(b'{"id":7,"x":{"id":75}}', coerce_id=True) == b'{"id":"7","x":{"id":75}}'
    assert edit(b'{"\\u0069d":7}', coerce_id=True) == b'{"\\u0069d":"7"}'
    assert edit(b'{"id":1.5}', coerce_id=True) == (
        "id is a number; --coerce-id turns only integers into strings"
    )
    assert edit(b'{"id":true}', coerce_id=True) == "id is a boolean"
    assert edit(DEEP.replace(b'"deep"', b"12"), coerce_id=True) == DEEP.replace(b'"deep"', b'"12"')


def test_id_field() -> None:
    assert edit(b'{"sku":"s1",' + REST + b"}", id_field="sku") == (
        b'{"id":"s1","sku":"s1",' + REST + b"}"
    )
    assert (
        edit(b' { "sku":"s\\u00e9" } ', id_field="sku") == b' {"id":"s\\u00e9", "sku":"s\\u00e9" } '
    )
    assert edit(b'{"id":5,"sku":"s1"}', id_field="sku") == b'{"id":"s1","sku":"s1"}'
    assert edit(b'{"id":"s1","sku":"s1"}', id_field="sku") == b'{"id":"s1","sku":"s1"}'
    nested = b'{"a":{"id":"s1"},"sku":"s1","id":"old","b":[{"id":"s1"}]}'
    assert edit(nested, id_field="sku") == nested.replace(b'"old"', b'"s1"')
    assert edit(b'{"sku":12,"id":null}', id_field="sku", coerce_id=True) == b'{"sku":12,"id":"12"}'
    assert edit(b'{"id":"a"}', id_field="sku") == "missing sku (--id-field)"
    assert edit(b'{"sku":""}', id_field="sku") == "empty sku (--id-field)"
    assert edit(b'{"sku":null}', id_field="sku") == "sku is null (--id-field)"
    assert edit(b'{"sku":12}', id_field="sku") == (
        "sku is a number (--id-field); use --coerce-id to turn integer ids into strings"
    )
    assert str(edit(b'{"sku":"a","x":NaN}', id_field="sku")).startswith("invalid JSON at column")


def test_edit_respects_the_size_limit() -> None:
    line = b'{"sku":"' + b"x" * 30 + b'"}'  # 41 bytes with the newline; 79 after the edit
    opts = ValidateOptions(id_field="sku", max_record_bytes=60)
    (reject,) = validate_chunk(line + b"\n", 1, opts).rejects
    assert reject.error == "line is 79 bytes, more than the shard size 60; raise --shard-size"


# -- rejects.jsonl --------------------------------------------------------------------------------


def test_reject_json_round_trip() -> None:
    reject = Reject(12, "invalid JSON at column 3: x", b'{"id":\t"\\u2028\xe2\x80\xa8"\r')
    line = reject_json("data/a.jsonl", reject)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    doc = orjson.loads(line)
    assert doc == {
        "source": "data/a.jsonl",
        "line": 12,
        "error": "invalid JSON at column 3: x",
        "raw": reject.raw.decode(),
    }
    binary = Reject(3, "invalid UTF-8 at column 2", b"{\xff\x00\n-")
    doc = orjson.loads(reject_json("-", binary))
    assert doc["raw"] is None
    assert base64.b64decode(doc["raw_base64"]) == binary.raw


def test_picklable_for_a_process_pool() -> None:
    data = b'{"id":"a"}\nbad\n\n'
    opts = ValidateOptions(id_field="sku", coerce_id=True, max_record_bytes=99, collect_ids=True)
    assert pickle.loads(pickle.dumps(opts)) == opts
    result = validate_chunk(data, 5, DEFAULT)
    assert pickle.loads(pickle.dumps(result)) == result
    with ProcessPoolExecutor(1) as pool:
        assert pool.submit(validate_chunk, data, 5, DEFAULT).result() == result


# -- properties ------------------------------------------------------------------------------------

IDS = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
# No surrogates (not UTF-8) and no non-ASCII digits: the stdlib's number regex uses \d,
# which would accept "1٣" outside a string once a mutation opens one up.
TEXT = st.text(st.characters(exclude_categories=("Cs", "Nd")) | st.sampled_from("09"), max_size=10)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
RECORDS = st.builds(
    lambda id_, extra, ascii_only, pad: (
        pad + json.dumps({"id": id_, **extra}, ensure_ascii=ascii_only).encode() + pad
    ),
    IDS,
    st.dictionaries(st.text(max_size=5).filter(lambda k: k != "id"), JSON_VALUES, max_size=4),
    st.booleans(),
    st.sampled_from([b"", b" ", b"\t "]),
)
BLANKS = st.sampled_from([b"", b" ", b"\t", b"\r", b" \t\r "])
BAD = st.sampled_from([line for line, error in CATALOGUE if error])
LINES = st.lists(
    st.tuples(st.one_of(RECORDS, BLANKS, BAD), st.booleans()),  # (line, CRLF ending)
    max_size=30,
)


def classify(line: bytes) -> str:
    if not line.strip(b" \t\r"):
        return "blank"
    return "reject" if line in {bad for bad, error in CATALOGUE if error} else "record"


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(lines=LINES, trailing_newline=st.booleans(), block_size=st.integers(1, 300))
def test_every_line_once_through_files(
    tmp_path: Path, lines: list[tuple[bytes, bool]], trailing_newline: bool, block_size: int
) -> None:
    # A BOM first in the file is not a line's content: iter_chunks drops it.
    assume(not (lines and lines[0][0].startswith(b"\xef\xbb\xbf")))
    raw = [line + (b"\r" if crlf and line else b"") for line, crlf in lines]
    if raw and not raw[-1] and not trailing_newline:  # "a\n" + "" is the same file as "a\n"
        raw.pop()
        lines.pop()
        trailing_newline = True
    content = b"\n".join(raw) + (b"\n" if trailing_newline and raw else b"")
    results: dict[str, list[tuple[Chunk, ChunkResult]]] = {}
    compressors: dict[str, Callable[[bytes], bytes]] = {
        "": bytes,
        ".gz": gzip.compress,
        ".bz2": bz2.compress,
        ".xz": lzma.compress,
        ".zst": zstandard.ZstdCompressor().compress,
    }
    for suffix, compress in compressors.items():
        path = tmp_path / f"in.jsonl{suffix}"
        path.write_bytes(compress(content))
        (source,) = resolve_inputs([str(path)])
        results[suffix] = [
            (c, validate_chunk(c.data, c.first_line, DEFAULT))
            for c in iter_chunks(source, block_size)
        ]
    plain = results.pop("")
    assert all(got == plain for got in results.values())
    records: dict[int, bytes] = {}
    rejects: dict[int, bytes] = {}
    blank = total = 0
    for _, result in plain:
        for no, rec in zip(result.line_nos, lines_of(result, result.data), strict=True):
            assert no not in records
            records[no] = rec
        for reject in result.rejects:
            assert reject.line not in rejects
            rejects[reject.line] = reject.raw
        blank += result.blank
        total += result.lines
        assert result.lines == len(result.ends) + len(result.rejects) + result.blank
    assert total == len(raw) == len(records) + len(rejects) + blank
    for no, (line, original) in enumerate(zip([line for line, _ in lines], raw, strict=True), 1):
        kind = classify(line)
        assert kind != "record" or records[no] == line + b"\n"
        assert kind != "reject" or rejects[no] == original
    assert blank == sum(classify(line) == "blank" for line, _ in lines)


@settings(max_examples=60, deadline=None, database=None)
@given(lines=st.lists(st.one_of(RECORDS, BLANKS, BAD), max_size=20), crlf=st.booleans())
def test_fast_path_agrees_with_careful_path(lines: list[bytes], crlf: bool) -> None:
    data = (b"\r\n" if crlf else b"\n").join(lines)
    for opts in (DEFAULT, ValidateOptions(collect_ids=True), ValidateOptions(coerce_id=True)):
        fast = validate_chunk(data, 3, opts)
        careful = _careful(data, 3, opts, check_utf8=True)
        assert replace(fast, line_nos=list(fast.line_nos)) == careful


def scan_ok(text: bytes) -> bool:
    """Our verdict on a JSON text: UTF-8 is checked first, as validate_chunk does."""
    try:
        text.decode("utf-8")
        _, end, _ = _scan(text)
    except Exception:
        return False
    return not text[end:].strip(b" \t\n\r")


def stdlib_ok(text: bytes) -> bool:
    """The stdlib's verdict, with SafetyKit's limits added: numbers fit a double, strings
    are valid Unicode (the stdlib keeps unpaired surrogates)."""

    def refuse(name: str) -> None:
        raise ValueError(name)

    def number(token: str) -> float:
        if math.isinf(float(token)):
            raise ValueError(token)
        return 0.0

    def unicode(value: Any) -> None:
        if isinstance(value, str):
            value.encode("utf-8")  # UnicodeEncodeError is a ValueError
        elif isinstance(value, dict):
            for key, item in value.items():
                unicode(key)
                unicode(item)
        elif isinstance(value, list):
            for item in value:
                unicode(item)

    try:
        doc = json.loads(
            text.decode("utf-8"), parse_constant=refuse, parse_float=number, parse_int=number
        )
        unicode(doc)
    except ValueError:  # includes UnicodeError and JSONDecodeError
        return False
    return True


MUTATIONS = st.lists(
    st.tuples(
        st.integers(0, 200),
        st.sampled_from([b"", b'"', b",", b"}", b"]", b"\\", b"\x01", b"e", b"-", b"0", b" "]),
    ),
    max_size=3,
)


@settings(max_examples=300, deadline=None, database=None)
@given(
    value=JSON_VALUES, separators=st.sampled_from([(",", ":"), (", ", ": ")]), mutations=MUTATIONS
)
def test_scanner_agrees_with_the_stdlib(
    value: Any, separators: tuple[str, str], mutations: list[tuple[int, bytes]]
) -> None:
    text = bytearray(json.dumps(value, separators=separators, ensure_ascii=False).encode())
    for at, replacement in mutations:
        at = min(at, len(text))
        text[at : at + 1] = replacement
    line = bytes(text)
    assume(line.strip(b" \t\r\n"))
    assert scan_ok(line) == stdlib_ok(line), line
    try:
        msgspec.json.decode(line)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        pass
    else:
        assert scan_ok(line), line  # whatever msgspec accepts, the second opinion does too


def test_id_field_with_a_dot_is_a_path() -> None:
    assert edit(b'{"user":{"id":"u1","n":1},"x":1.10}', id_field="user.id") == (
        b'{"id":"u1","user":{"id":"u1","n":1},"x":1.10}'
    )
    assert edit(b'{"id":"old","user":{"id":"u1"}}', id_field="user.id") == (
        b'{"id":"u1","user":{"id":"u1"}}'
    )
    deeper = b'{"a":{"b":{"c":"x"}}}'
    assert edit(deeper, id_field="a.b.c") == b'{"id":"x","a":{"b":{"c":"x"}}}'
    # A key that holds the dot itself wins over the path.
    assert edit(b'{"user.id":"lit","user":{"id":"u1"}}', id_field="user.id") == (
        b'{"id":"lit","user.id":"lit","user":{"id":"u1"}}'
    )
    assert edit(b'{"user":{"name":"x"}}', id_field="user.id") == "missing user.id (--id-field)"
    assert edit(b'{"user":"u1"}', id_field="user.id") == "missing user.id (--id-field)"
    assert edit(b'{"user":{"id":7}}', id_field="user.id", coerce_id=True) == (
        b'{"id":"7","user":{"id":7}}'
    )
    assert edit(b'{"user":{"id":""}}', id_field="user.id") == "empty user.id (--id-field)"
    # The same verdict when msgspec refuses the line and the scanner judges it (deep).
    deep = b'{"user":{"id":"u1"},"d":' + b"[" * 1010 + b"]" * 1010 + b"}"
    assert edit(deep, id_field="user.id") == b'{"id":"u1",' + deep[1:]
