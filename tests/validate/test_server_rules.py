"""bulkload's verdict on a line equals the server's, for lines at the edges of what it parses.

The model of the server is independent of bulkload's code: SafetyKit parses with orjson (as
the emulator does), so a line is a record iff ``orjson.loads`` gives an object whose ``id``
is a non-empty string. Both the fast path (whole blocks of records) and the careful path
(any block with a reject) are checked against it.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkload._validate import ValidateOptions, validate_chunk

DEFAULT = ValidateOptions()


def server_accepts(line: bytes) -> bool:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return isinstance(doc, dict) and isinstance(doc.get("id"), str) and doc["id"] != ""


def bulkload_accepts(line: bytes) -> bool:
    result = validate_chunk(line + b"\n", 1, DEFAULT)
    assert result.lines == 1 and result.blank == 0, line
    return len(result.ends) == 1


# -- the strategies: lines near each limit ---------------------------------------------------

DIGITS = st.text("0123456789", min_size=1, max_size=400).map(lambda d: d.lstrip("0") or "0")
NUMBERS = st.builds(
    lambda sign, whole, frac, exp: f"{sign}{whole}{frac}{exp}",
    st.sampled_from(["", "-"]),
    DIGITS,
    st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=30).map(lambda f: "." + f)),
    st.one_of(
        st.just(""),
        st.builds(
            lambda e, sign, n, pad: f"{e}{sign}{'0' * pad}{n}",
            st.sampled_from("eE"),
            st.sampled_from(["", "+", "-"]),
            st.integers(0, 500),
            st.integers(0, 2),
        ),
    ),
)
HEX = "0123456789abcdefABCDEF"
ESCAPES = st.one_of(
    st.builds(lambda h: "\\u" + h, st.sampled_from(["d800", "DBFF", "dc00", "DFFF", "d83d"])),
    st.just("\\ud83d\\ude00"),  # a pair
    st.text(HEX, min_size=4, max_size=4).map(lambda h: "\\u" + h),
    st.sampled_from(["\\\\", "\\n", '\\"', "a", "é", "\\\\ud800"]),
)
STRINGS = st.lists(ESCAPES, max_size=4).map(lambda parts: '"' + "".join(parts) + '"')


def nested(depth: int, inner: str, kinds: list[bool]) -> str:
    """``inner`` inside ``depth`` arrays/objects (kinds: True for an object)."""
    text = inner
    for is_object in kinds[:depth] + [False] * (depth - len(kinds)):
        text = '{"a":' + text + "}" if is_object else "[" + text + "]"
    return text


# Depth of the whole line = 1 (the outer object) + the depth of the value.
DEEP = st.builds(nested, st.integers(1015, 1030), st.sampled_from(["1", "[]", "{}"]),
                 st.lists(st.booleans(), max_size=40))  # fmt: skip
VALUES = st.one_of(NUMBERS, STRINGS, DEEP, st.sampled_from(["null", "true", "[1,2]", "{}"]))
IDS = st.one_of(
    STRINGS,
    NUMBERS,
    st.sampled_from(['""', '"a"', "null", "true", "[]", "{}", '"\\ud800"', '"x\\u0000"']),
)


@st.composite
def lines(draw: Any) -> bytes:
    members = draw(st.lists(st.tuples(st.one_of(STRINGS, st.just('"k"')), VALUES), max_size=3))
    if draw(st.booleans()):
        members.insert(draw(st.integers(0, len(members))), ('"id"', draw(IDS)))
    text = "{" + ",".join(f"{k}:{v}" for k, v in members) + "}"
    if draw(st.booleans()):  # a mutation: one character cut out or doubled
        at = draw(st.integers(0, len(text)))
        text = (
            text[:at] + text[at + 1 :]
            if draw(st.booleans())
            else text[:at] + text[at:][:1] + text[at:]
        )
    return text.encode()


@settings(max_examples=400, deadline=None, database=None)
@given(line=lines())
def test_verdict_is_the_servers_careful_path(line: bytes) -> None:
    if not line.strip():
        return
    assert bulkload_accepts(line) == server_accepts(line), line[:300]


@settings(max_examples=150, deadline=None, database=None)
@given(line=lines(), others=st.integers(0, 20))
def test_verdict_is_the_servers_fast_path(line: bytes, others: int) -> None:
    """Among valid records a line takes the fast path: it must not let anything through."""
    if not line.strip():
        return
    record = b'{"id":"r","p":1.5}'
    block = b"\n".join([record] * others + [line] + [record] * others) + b"\n"
    result = validate_chunk(block, 1, DEFAULT)
    accepted = len(result.ends) == 2 * others + 1
    assert accepted == server_accepts(line), line[:300]
    assert result.lines == 2 * others + 1


def test_the_limits_themselves() -> None:
    """The examples of the rules, each at its edge."""
    at_limit = b'{"id":"a","x":' + b"[" * 1023 + b"]" * 1023 + b"}"
    over = b'{"id":"a","x":' + b"[" * 1024 + b"]" * 1024 + b"}"
    for line, ok in [
        (at_limit, True),
        (over, False),
        (b'{"id":"a","x":1e400}', False),
        (b'{"id":"a","x":1e-400}', True),
        (b'{"id":"a","x":123456789012345678901234567890}', True),
        (b'{"id":"a","x":"\\ud800"}', False),
        (b'{"id":"a","x":"\\ud83d\\ude00"}', True),
        # Where a double ends: the largest, one that rounds down to it, one that rounds up.
        (b'{"id":"a","x":1.7976931348623157e308}', True),
        (b'{"id":"a","x":1.7976931348623158e308}', True),
        (b'{"id":"a","x":1.7976931348623159e308}', False),
        (b'{"id":"a","x":-1.7976931348623159e308}', False),
        (b'{"id":"a","x":' + b"9" * 308 + b"}", True),
        (b'{"id":"a","x":' + b"9" * 309 + b"}", False),
        # Integers at the edges of 64 bits (the fast path's certifier refuses past them).
        (b'{"id":"a","x":18446744073709551615}', True),
        (b'{"id":"a","x":18446744073709551616}', True),
        (b'{"id":"a","x":-9223372036854775809}', True),
    ]:
        assert server_accepts(line) is ok, line[:40]
        assert bulkload_accepts(line) is ok, line[:40]
        assert (len(validate_chunk(line + b"\n" + b'{"id":"b"}\n', 1, DEFAULT).ends) == 2) is ok
    # Every digit goes up unchanged.
    big = b'{"id":"a","x":123456789012345678901234567890,"y":1.10}'
    assert validate_chunk(big + b"\n", 1, DEFAULT).data == big + b"\n"
    assert json.loads(big)["x"] == 123456789012345678901234567890
