"""The second opinion: an iterative JSON grammar checker (RFC 8259), and SafetyKit's limits.

:func:`scan` judges the lines the fast typed decoder refused, words the error, and finds the
top-level members. It is iterative, so depth costs nothing but its own limit.

SafetyKit parses uploads with orjson and refuses a whole request (up to 100,000 records) for
one line it cannot parse, although the JSON grammar allows it. So three limits beyond the
grammar are rules here (``Refused``), checked on every line:

- a number must fit a double: ``1e400`` overflows (``1e-400`` is 0.0 and fine; integers
  beyond 64 bits are fine too and go up with every digit);
- strings (keys included) must be valid Unicode: no unpaired surrogate escape ``"\\ud800"``;
- nesting at most ``MAX_DEPTH`` arrays and objects deep, the outer object included.

msgspec's typed decoder checks none of the first and third when it skips a field (the third
depends on Python's recursion limit): the careful path asks :func:`risky` of each line it
decoded, and the fast path has ``serverjson.certify`` check whole blocks.
"""

from __future__ import annotations

import math
import re

#: orjson's limit, which is SafetyKit's: depth 1,024 parses, 1,025 does not.
MAX_DEPTH = 1024
#: A number overflows a double only if it has an exponent of 3+ digits, or 210+ digits
#: before its point (2-digit exponents add at most 99 to the 309 digits of ~1.8e308).
_RISKY_DIGITS = 200
#: Digits and signs to "0", E to e: a risky exponent then reads "e000" (signs included, so
#: "e+400" reads "e0000"), a risky run of digits "0" × 200.
_NUMBER_CLASSES = bytes.maketrans(b"0123456789+-E", b"000000000000e")
_RISKY_EXPONENT = b"e000"
_RISKY_RUN = b"0" * _RISKY_DIGITS
#: A line shorter than this cannot nest deeper than MAX_DEPTH (each level is two brackets).
_DEEP_LINE = 2 * MAX_DEPTH
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
#: One escape at a time, so that an escaped backslash is never read as starting another.
_ESCAPE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)


_WS = re.compile(rb"[ \t\n\r]*+")
# Possessive quantifiers: a failed match must not backtrack exponentially on long strings.
STRING = re.compile(rb'"(?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*+"')
_STRING_BODY = re.compile(rb'(?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*+')
_NUMBER = re.compile(rb"-?+(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?+(?:[eE][+-]?+[0-9]++)?+")
INTEGER = re.compile(rb"-?(?:0|[1-9][0-9]*)")
_ID_KEY = re.compile(rb'"id"[ \t\n\r]*+:[ \t\n\r]*+')
NUMBER_STARTS = frozenset(bytes([c]) for c in b"-0123456789")
#: A number the regex matched only a prefix of, such as 01, 1., 1e or 1-, is invalid.
NUMBER_TAILS = frozenset(bytes([c]) for c in b"0123456789.eE+-")
_LITERALS = {ord("t"): b"true", ord("f"): b"false", ord("n"): b"null"}
KINDS = {
    b"{": "an object",
    b"[": "an array",
    b'"': "a string",
    b"t": "a boolean",
    b"f": "a boolean",
    b"n": "null",
    **{c: "a number" for c in NUMBER_STARTS},
}


class JsonError(Exception):
    def __init__(self, pos: int, message: str) -> None:
        super().__init__(message)
        self.pos = pos
        self.message = message


class Refused(JsonError):
    """Valid JSON grammar that SafetyKit's parser refuses (see the module doc)."""


def scan(b: bytes) -> tuple[bytes, int, list[tuple[bytes, int, int]]]:
    """Check that ``b`` starts, after whitespace, with one valid JSON value.

    Iterative, so any depth is fine. Returns the value's first byte (its kind), the offset
    just after it and, for an object, its top-level members as (key token, value start,
    value end). Raises JsonError at the first error.
    """
    n = len(b)
    stack = bytearray()  # b"{" or b"[" for each open container
    members: list[tuple[bytes, int, int]] = []
    key = b""
    value_start = 0
    pos = skip(b, 0)
    kind = b[pos : pos + 1]
    while True:
        # A value starts at pos.
        if pos >= n:
            raise JsonError(pos, "the line ends where a value should be")
        c = b[pos]
        if c == 0x7B or c == 0x5B:  # { [
            stack.append(c)
            if len(stack) > MAX_DEPTH:
                raise Refused(
                    pos, f"nesting deeper than {MAX_DEPTH:,} levels of arrays and objects"
                )
            pos = skip(b, pos + 1)
            if b[pos : pos + 1] == (b"}" if c == 0x7B else b"]"):
                stack.pop()
                pos += 1
            else:
                if c == 0x7B:
                    pos, found = _key(b, pos)
                    if len(stack) == 1:
                        key, value_start = found, pos
                continue
        elif c == 0x22:  # "
            match = STRING.match(b, pos)
            if match is None:
                raise _string_error(b, pos)
            _check_surrogates(b, pos, match.end())
            pos = match.end()
        elif c in _LITERALS:
            literal = _LITERALS[c]
            if not b.startswith(literal, pos):
                if b[pos : pos + 3].lower() == b"nan":
                    raise JsonError(pos, "NaN is not valid JSON")
                raise JsonError(pos, f"invalid literal (expected {literal.decode()})")
            pos += len(literal)
        elif c in b"-0123456789":
            match = _NUMBER.match(b, pos)
            if b.startswith(b"-Infinity", pos):
                raise JsonError(pos, "-Infinity is not valid JSON")
            if match is None or b[match.end() : match.end() + 1] in NUMBER_TAILS:
                raise JsonError(pos, "invalid number")
            _check_number(b, pos, match.end())
            pos = match.end()
        else:
            raise JsonError(pos, _unexpected(b, pos))
        # A value ends at pos: close the containers it completes.
        while True:
            if not stack:
                return kind, pos, members
            top = stack[-1]
            if len(stack) == 1 and top == 0x7B:
                members.append((key, value_start, pos))
            pos = skip(b, pos)
            what = "object" if top == 0x7B else "array"
            if pos >= n:
                raise JsonError(pos, f"the line ends before the {what} is closed")
            c = b[pos]
            if c == 0x2C:  # ,
                pos = skip(b, pos + 1)
                if top == 0x7B:
                    pos, found = _key(b, pos)
                    if len(stack) == 1:
                        key, value_start = found, pos
                elif b[pos : pos + 1] == b"]":
                    raise JsonError(pos, "trailing comma before ']'")
                break
            if c == (0x7D if top == 0x7B else 0x5D):
                stack.pop()
                pos += 1
                continue
            close = "}" if top == 0x7B else "]"
            raise JsonError(pos, f"expected ',' or '{close}' in an {what}, found {_char(b, pos)}")


def skip(b: bytes, pos: int) -> int:
    """Past the whitespace at pos."""
    return _WS.match(b, pos).end()  # type: ignore[union-attr]  # *+ always matches


def _key(b: bytes, pos: int) -> tuple[int, bytes]:
    """Parse ``"key" :`` at pos; return where the value starts, and the key token."""
    if b[pos : pos + 1] != b'"':
        if pos >= len(b):
            raise JsonError(pos, "the line ends before the object is closed")
        if b[pos : pos + 1] == b"}":
            raise JsonError(pos, "trailing comma before '}'")
        raise JsonError(pos, f"expected a key in double quotes, found {_char(b, pos)}")
    match = STRING.match(b, pos)
    if match is None:
        raise _string_error(b, pos)
    _check_surrogates(b, pos, match.end())
    after = skip(b, match.end())
    if b[after : after + 1] != b":":
        raise JsonError(after, f"expected ':' after a key, found {_char(b, after)}")
    return skip(b, after + 1), match.group()


def _string_error(b: bytes, pos: int) -> JsonError:
    """Why the string starting at pos is invalid."""
    end = _STRING_BODY.match(b, pos + 1).end()  # type: ignore[union-attr]
    if end >= len(b):
        return JsonError(pos, "the string is not closed before the end of the line")
    c = b[end]
    if c < 0x20:
        return JsonError(
            end, f"raw control character U+{c:04X} inside a string (write it as \\u{c:04x})"
        )
    escape = b[end : end + (6 if b[end + 1 : end + 2] == b"u" else 2)].decode("utf-8", "replace")
    return JsonError(end, f"invalid escape sequence {escape!r} in a string")


def _char(b: bytes, pos: int) -> str:
    if pos >= len(b):
        return "the end of the line"
    char = b[pos : pos + 4].decode("utf-8", "replace")[0]
    return repr(char) if char.isprintable() and not char.isspace() else f"U+{ord(char):04X}"


def _unexpected(b: bytes, pos: int) -> str:
    if b.startswith(b"Infinity", pos):
        return "Infinity is not valid JSON"
    if b.startswith(b"NaN", pos):
        return "NaN is not valid JSON"
    if b[pos : pos + 1] == b"'":
        return 'unexpected character "\'" (JSON strings use double quotes)'
    return f"unexpected character {_char(b, pos)}"


def _check_number(b: bytes, start: int, end: int) -> None:
    if end - start < 5:  # "1e400" is the shortest number that overflows
        return
    token = b[start:end]
    if _is_risky_number(token) and math.isinf(float(token)):
        shown = token if len(token) <= 40 else token[:20] + b"..." + token[-10:]
        raise Refused(
            start,
            f"the number {shown.decode('ascii')} does not fit a 64-bit float (SafetyKit "
            "refuses it; send it as a string)",
        )


def _is_risky_number(token: bytes) -> bool:
    classes = token.translate(_NUMBER_CLASSES)
    return _RISKY_EXPONENT in classes or _RISKY_RUN in classes


def _check_surrogates(b: bytes, start: int, end: int) -> None:
    """Refuse an unpaired surrogate escape in the string token ``b[start:end]``."""
    if _SURROGATE.search(b, start, end) is None:
        return
    high = -1  # where a high surrogate waits for its low half
    high_end = -1
    for match in _ESCAPE.finditer(b, start + 1, end - 1):
        digits = match.group(1)
        code = int(digits, 16) if digits else -1
        if high >= 0:
            if match.start() == high_end and 0xDC00 <= code <= 0xDFFF:
                high = -1
                continue
            break
        if 0xD800 <= code <= 0xDBFF:
            high, high_end = match.start(), match.end()
        elif 0xDC00 <= code <= 0xDFFF:
            high = match.start()
            break
    if high >= 0:
        escape = b[high : high + 6].decode("ascii")
        raise Refused(
            high,
            f"unpaired surrogate escape {escape} in a string (not valid Unicode; SafetyKit "
            "refuses it)",
        )


def risky(line: bytes) -> bool:
    """Whether ``line`` (valid JSON grammar) may break one of SafetyKit's limits on numbers
    and depth; False means it certainly does not. Surrogates are not looked at: msgspec
    refuses unpaired ones even in the fields it skips."""
    if len(line) > _DEEP_LINE and _brackets(line) > MAX_DEPTH:
        return True
    return _is_risky_number(line)


def _brackets(data: bytes) -> int:
    # replace() finds with memchr (~8 GB/s); count() of one byte walks every byte (~1.7).
    return 2 * len(data) - len(data.replace(b"{", b"")) - len(data.replace(b"[", b""))
