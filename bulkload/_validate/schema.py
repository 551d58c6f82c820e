"""A record against the user's JSON Schema (``--schema``, ``schema=``).

bulkload itself only asks that a line be a JSON object with a non-empty string ``id``.
Everything else a migration knows about its records can be said in a JSON Schema (draft
2020-12 unless the schema's ``$schema`` names another draft); a record that does not satisfy
it is a reject like any other, with a reason that starts with the JSON pointer of the
offending value::

    /price: "12,50" is not of type "number"
    /title: required property is missing
    /currency: "EURO" is not one of "USD", "EUR", "GBP"
    /colour: "red" is an unexpected property (additionalProperties: false)

The validator is jsonschema-rs (Rust). Measured on the benchmark's products
(``benchmarks/bench_schema.py``), it checks a record from a Python dict at ~1 CPU s/GB,
where fastjsonschema takes ~12 and the reference ``jsonschema`` ~200. It cannot read JSON
text itself (its Python API takes Python values only), so each line is decoded first,
which costs as much again: msgspec, one line at a time, the dict dropped at once (decoding a
whole block into a list and checking that was 2× slower: 50 MB of live objects per block).

The check-only report groups these reasons by what they say (``_reasons.py``).

Valid records cost one ``is_valid`` call; only a failing record is explained, by a second
pass over it that collects every error (deterministic: sorted by where the value is in the
record, the library's order among errors at the same place).

:class:`SchemaCheck` is small and picklable: worker processes get the schema's JSON and
compile it on first use. The schema is checked when it is loaded, before any input is read,
and every problem with it is a :class:`ConfigError` that names it: not JSON (line and
column), not a valid schema (which keyword, where), a ``$ref`` that points to nothing or
outside the file. Nothing is ever fetched: a loader has no business on the network, and a
schema's meaning must not change with a server's answer.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import operator
import os
import re
import sys
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeAlias

import msgspec
import orjson

from .._errors import ConfigError, option

if TYPE_CHECKING:
    # Imported where a schema is compiled: it adds ~8 MB to the RSS of every process that
    # imports it (the loader, the fork server, each worker), and most loads have no schema.
    import jsonschema_rs

#: What ``schema=`` takes: the schema itself, or the path of its file.
SchemaSource: TypeAlias = Mapping[str, Any] | str | os.PathLike[str]

#: A value in a reason is cut to this many characters: enough for an id, a price, a date or
#: a short title; a whole description would drown the words that say what is wrong.
MAX_VALUE_CHARS = 60
#: An enum's allowed values are listed up to about this many characters.
_MAX_OPTIONS_CHARS = 80

_DECODE = msgspec.json.Decoder().decode
#: msgspec recurses once per nesting level and stops near Python's recursion limit (1,000),
#: while bulkload accepts records 1,024 levels deep: such a record is decoded by orjson, and
#: if it may also hold an integer past 64 bits (which orjson reads as an inexact float), by
#: msgspec again under a limit this much above the current stack: 1,024 levels and a margin
#: for the frames msgspec and jsonschema-rs may add.
_DEEPEST = 1024 + 100

#: orjson reads integers past 64 bits as floats, losing digits; any run of 19 digits may be
#: one (inside a string too: a false alarm only costs the slower path).
_LONG_INTEGER = re.compile(rb"[0-9]{19}")

_TYPE_NAMES = ("array", "boolean", "integer", "null", "number", "object", "string")


# --- loading ------------------------------------------------------------------------------


def load_schema(source: SchemaSource) -> dict[str, Any]:
    """The schema at ``source`` (a path, or the schema as a mapping), checked: valid JSON,
    a valid JSON Schema, every ``$ref`` resolvable inside it. Raises :class:`ConfigError`
    that names the problem. Reads nothing but the schema file, fetches nothing."""
    return _load(source)[0]


def _load(source: SchemaSource) -> tuple[dict[str, Any], jsonschema_rs.Validator]:
    if isinstance(source, Mapping):
        where = option("--schema", "the schema= dict")
        try:  # a copy that is plain JSON: what the caller holds may change or not be JSON
            schema = json.loads(json.dumps(source, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: the schema is not JSON data: {exc}") from exc
    elif isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        where = option(f"--schema {path}", f"schema={path!r}")
        schema = _read(Path(path), where)
    else:
        raise ConfigError(
            f"{option('--schema', 'schema=')} takes a JSON Schema as a dict or the path of its "
            f"file, not {type(source).__name__}"
        )
    if not isinstance(schema, dict):
        raise ConfigError(f"{where}: a JSON Schema is a JSON object, not {_kind(schema)}")
    return schema, _compile(schema, where)


def _read(path: Path, where: str) -> Any:
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a BOM is an editor's, not JSON
    except FileNotFoundError as exc:
        raise ConfigError(f"{where}: no such file") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{where}: is a directory, not a schema file") from exc
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text (byte {exc.start:,})") from exc

    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"the number {text} is too large for a double")
        return value

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(text, parse_float=finite, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{where}: not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"{where}: not JSON: {exc}") from exc


def _compile(schema: dict[str, Any], where: str) -> jsonschema_rs.Validator:
    import jsonschema_rs  # see the TYPE_CHECKING import

    try:
        # offline: a $ref to a URL is an error, never a download. Formats are checked
        # (draft 2020-12 makes that optional): whoever writes "format": "date-time" in a
        # migration's schema means it; unknown formats are ignored, as the spec says.
        return jsonschema_rs.validator_for(schema, validate_formats=True, offline=True)
    except jsonschema_rs.ValidationError as exc:
        raise ConfigError(f"{where}: {_schema_problem(schema, exc)}") from exc
    except (jsonschema_rs.ReferencingError, ValueError) as exc:
        raise ConfigError(f"{where}: not a usable JSON Schema: {exc}") from exc


def _schema_problem(schema: dict[str, Any], exc: jsonschema_rs.ValidationError) -> str:
    """A bad schema in words: which keyword, where, and what to do."""
    import jsonschema_rs  # see the TYPE_CHECKING import

    message = str(exc.message)
    if isinstance(exc.kind, jsonschema_rs.ValidationErrorKind.Referencing):
        if message.startswith("Unknown meta-schema"):
            return (
                f'"$schema" names a meta-schema bulkload does not know ({schema.get("$schema")!r}); '
                'use "https://json-schema.org/draft/2020-12/schema", or leave "$schema" out'
            )
        for ref, at, target in _refs(schema):
            if f"'{target}'" in message or f"'{ref}'" in message or _fragment(ref, message):
                if "does not exist" in message:
                    return f"$ref {_show(ref)} at {_pointer(at)} points to nothing in the schema"
                return (
                    f"$ref {_show(ref)} at {_pointer(at)} refers to {target}, outside the "
                    "schema; bulkload fetches nothing (no network, no other files): copy it "
                    'under "$defs" and refer to it as "#/$defs/NAME"'
                )
        return f"an unresolvable $ref: {message}"
    location = _pointer(exc.instance_path)
    keyword = exc.schema_path[-1] if exc.schema_path else ""
    value = _value_at(schema, exc.instance_path)
    if exc.instance_path and exc.instance_path[-1] == "type" and keyword in ("anyOf", "type"):
        names = ", ".join(f'"{name}"' for name in _TYPE_NAMES)
        text = f"{_show(value)} is not a JSON Schema type (one of {names})"
    elif (
        isinstance(exc.kind, jsonschema_rs.ValidationErrorKind.Format)
        and exc.kind.format == "regex"
    ):
        text = f"{_show(value)} is not a valid regular expression (ECMA 262)"
    else:
        text = message.splitlines()[0]
    return f"not a valid JSON Schema: at {location}: {text}"


def _refs(
    node: Any, at: tuple[str | int, ...] = (), base: str = ""
) -> Iterator[tuple[str, tuple[str | int, ...], str]]:
    """Every ``$ref``/``$dynamicRef`` in the schema: its text, where it is, and the URI it
    resolves to (against the ``$id``s around it)."""
    if isinstance(node, dict):
        if isinstance(node.get("$id"), str):
            base = urllib.parse.urljoin(base, node["$id"])
        for key in ("$ref", "$dynamicRef"):
            if isinstance(node.get(key), str):
                yield (
                    node[key],
                    at,
                    urllib.parse.urldefrag(urllib.parse.urljoin(base, node[key]))[0],
                )
        for key, value in node.items():
            yield from _refs(value, (*at, key), base)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _refs(value, (*at, index), base)


def _fragment(ref: str, message: str) -> bool:
    """Does the library's message (``Pointer '/x' does not exist``, ``Anchor 'a' ...``)
    name this ref's fragment?"""
    fragment = urllib.parse.unquote(urllib.parse.urldefrag(ref)[1])
    return bool(fragment) and f"'{fragment}'" in message


def _kind(value: Any) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return kinds.get(type(value), "a number")


# --- checking -----------------------------------------------------------------------------


#: bulkload's own line rule as a subschema: a JSON object whose ``id`` is a non-empty string.
_ID_RULE = {
    "type": "object",
    "required": ["id"],
    "properties": {"id": {"type": "string", "minLength": 1}},
}


class SchemaCheck:
    """The user's JSON Schema, ready to judge records.

    ``SchemaCheck(source)`` loads and checks the schema at once (:func:`load_schema`: a
    :class:`ConfigError` before any input is read). Pickled, it is the schema's JSON only;
    each process compiles it on first use, so it can ride along with the validation options
    to worker processes. Equal schemas make equal, equally hashed checks.
    """

    __slots__ = ("_key", "_validator", "_with_id", "schema")

    def __init__(self, source: SchemaSource) -> None:
        schema, validator = _load(source)
        self._init(schema, validator)

    def _init(self, schema: dict[str, Any], validator: jsonschema_rs.Validator | None) -> None:
        #: The schema, as plain JSON data (a copy: do not change it).
        self.schema = schema
        self._key = json.dumps(schema, sort_keys=True, ensure_ascii=False)
        self._validator = validator
        self._with_id: jsonschema_rs.Validator | None = None

    @classmethod
    def _restore(cls, schema: dict[str, Any]) -> SchemaCheck:
        check = cls.__new__(cls)
        check._init(schema, None)  # compiled on first use, in the process that uses it
        return check

    def __reduce__(self) -> tuple[Any, ...]:
        return (SchemaCheck._restore, (self.schema,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SchemaCheck) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    @property
    def digest(self) -> str:
        """``sha256:…`` of the schema's content (keys sorted): what a resume compares."""
        return "sha256:" + hashlib.sha256(self._key.encode()).hexdigest()

    def __repr__(self) -> str:
        title = self.schema.get("title") or self.schema.get("$id")
        return f"SchemaCheck({title!r})" if title else "SchemaCheck(<schema>)"

    def _compiled(self) -> jsonschema_rs.Validator:
        validator = self._validator
        if validator is None:
            # The schema was checked where it was loaded; a ConfigError here would mean a
            # different jsonschema-rs in this process, and says so in its message.
            validator = self._validator = _compile(self.schema, "the schema (in a worker)")
        return validator

    def _compiled_with_id(self) -> jsonschema_rs.Validator | None:
        """The schema and bulkload's id rule (an object with a non-empty string ``id``) as
        one validator: the fast path's single call per record (0.45 CPU s/GB less than a
        Python check of the id around the schema's call). The rule is added to the root's
        ``allOf``, so ``$ref``/``$defs``/``$id`` resolve as before. None when the schema
        uses ``unevaluatedProperties`` (the rule's ``properties`` would count ``id`` as
        evaluated and change the verdict) or has a ``$ref`` at its root."""
        if '"unevaluatedProperties"' in self._key or "$ref" in self.schema:
            # (A root $ref: drafts 4-7 ignore its sibling keywords, the rule with them.)
            return None
        validator = self._with_id
        if validator is None:
            combined = {**self.schema, "allOf": [*self.schema.get("allOf", []), _ID_RULE]}
            validator = self._with_id = _compile(combined, "the schema with the id rule")
        return validator

    def check(self, line: bytes) -> str | None:
        """None if the record on ``line`` (one JSON object, as bulkload accepted and will
        upload it) satisfies the schema; else the reason, in words."""
        record = _parse(line)
        if self._compiled().is_valid(record):
            return None
        return self._explain(record)

    def check_block(self, data: bytes, ends: Sequence[int]) -> list[tuple[int, str]]:
        """The records of a block that fail: ``(index, reason)`` in record order.

        ``data`` holds the records back to back, each ending in ``\\n`` (a ChunkResult's
        ``data``), and ``ends[i]`` is where record ``i`` ends. The loop is C throughout
        (``map`` over the lines, no Python per record) until a record fails.
        """
        is_valid = self._compiled().is_valid
        try:
            verdicts = list(map(is_valid, map(_DECODE, io.BytesIO(data))))
        except RecursionError:  # a record too deep for msgspec: see _parse
            verdicts = [is_valid(_parse(line)) for line in io.BytesIO(data)]
        if len(verdicts) != len(ends):
            raise ValueError(f"check_block: {len(verdicts)} lines in data, {len(ends)} ends")
        if all(verdicts):
            return []
        failed = itertools.compress(itertools.count(), map(operator.not_, verdicts))
        out = []
        for index in failed:
            start = ends[index - 1] if index else 0
            out.append((index, self._explain(_parse(data[start : ends[index]]))))
        return out

    def check_lines(self, data: bytes) -> list[tuple[int, str]] | None:
        """bulkload's fast path and the schema in one decode per line: None if a line of
        ``data`` is not a JSON object with a non-empty string ``id`` (or not JSON at all,
        or nested too deep for msgspec): the caller's careful path then judges the block
        line by line. Else the records that fail the schema, as :meth:`check_block`.

        It replaces the fast path's id-only decode when a schema is given (measured: 0.4
        CPU s/GB less than that decode followed by :meth:`check_block`). It may decline a
        line the id-only decode takes (a lone surrogate escape elsewhere in the line, say),
        never the other way round, so the careful path keeps the last word.
        """
        combined = self._compiled_with_id()
        if combined is not None:
            return self._check_lines_combined(data, combined.is_valid)
        is_valid = self._compiled().is_valid

        def judge(line: bytes) -> bool | None:
            record = _DECODE(line)
            if type(record) is not dict:
                return None
            record_id = record.get("id")
            if type(record_id) is not str or not record_id:
                return None
            return is_valid(record)

        try:
            verdicts = list(map(judge, io.BytesIO(data)))
        except (msgspec.DecodeError, RecursionError):
            return None
        if None in verdicts:
            return None
        if all(verdicts):
            return []
        lines = io.BytesIO(data).readlines()
        failed = itertools.compress(itertools.count(), map(operator.not_, verdicts))
        return [(index, self._explain(_parse(lines[index]))) for index in failed]

    def _check_lines_combined(self, data: bytes, is_valid: Any) -> list[tuple[int, str]] | None:
        """``check_lines`` with the id rule inside the validator: C from the decode to the
        verdict; only a failed record is looked at in Python (an id problem sends the block
        to the careful path, which words it; otherwise the schema is explained)."""
        try:
            verdicts = list(map(is_valid, map(_DECODE, io.BytesIO(data))))
        except (msgspec.DecodeError, RecursionError):
            return None
        if all(verdicts):
            return []
        lines = io.BytesIO(data).readlines()
        out = []
        for index in itertools.compress(itertools.count(), map(operator.not_, verdicts)):
            record = _parse(lines[index])
            record_id = record.get("id") if type(record) is dict else None
            if type(record_id) is not str or not record_id:
                return None
            out.append((index, self._explain(record)))
        return out

    def _explain(self, record: Any) -> str:
        found: list[tuple[tuple[int, ...], str]] = []
        for error in self._compiled().iter_errors(record):
            for path, text in _describe(error, record):
                found.append((_document_order(record, path), f"{_pointer(path)}: {text}"))
        if not found:  # is_valid said no, so this is not expected; still a reason in words
            return "/: does not match the schema"
        found.sort(key=operator.itemgetter(0))  # stable: the library's order among equals
        first = found[0][1]
        return f"{first} (and {len(found) - 1} more)" if len(found) > 1 else first


def _parse(line: bytes) -> Any:
    """The record on ``line``, every number exact (duplicate keys: the last wins)."""
    try:
        return _DECODE(line)
    except RecursionError:
        pass
    if not _LONG_INTEGER.search(line):
        return orjson.loads(line)
    # Deep, and perhaps an integer orjson would turn into a float: msgspec, with room for
    # 1,024 levels above this frame. The limit is only ever raised, and only for such a
    # record (legal, and absurd in practice).
    depth = 0
    frame: FrameType | None = sys._getframe()
    while frame is not None:
        depth += 1
        frame = frame.f_back
    if sys.getrecursionlimit() < depth + _DEEPEST:
        sys.setrecursionlimit(depth + _DEEPEST)
    return _DECODE(line)


_Path: TypeAlias = Sequence[str | int]


def _describe(error: jsonschema_rs.ValidationError, record: Any) -> list[tuple[_Path, str]]:
    """One error of the library as ``(path of the value, words)``; several for an
    ``additionalProperties`` that found several unexpected members.

    jsonschema-rs 0.61 leaves a member named ``""`` out of ``instance_path``: an error in
    such a member's value is reported at its parent (the verdict is right, the pointer
    one level short)."""
    import jsonschema_rs  # see the TYPE_CHECKING import

    path = list(error.instance_path)
    kind = error.kind
    value = _value_at(record, path)
    shown = _show(value)
    K = jsonschema_rs.ValidationErrorKind
    if isinstance(kind, K.Required):
        return [([*path, kind.property], "required property is missing")]
    if isinstance(kind, K.AdditionalProperties | K.UnevaluatedProperties):
        which = "additional" if isinstance(kind, K.AdditionalProperties) else "unevaluated"
        return [
            (
                [*path, name],
                f"{_show(value[name])} is an unexpected property ({which}Properties: false)",
            )
            for name in kind.unexpected
        ]
    if isinstance(kind, K.PropertyNames):
        inner = kind.error
        return [(path, f"property name {_describe(inner, inner.instance)[0][1]}")]
    if isinstance(kind, K.AnyOf | K.OneOfNotValid):
        which = "anyOf" if isinstance(kind, K.AnyOf) else "oneOf"
        types = _only_types(kind.context, path)
        if types:
            return [(path, f"{shown} is not of type {types}")]
        return [(path, f"{shown} matches none of the {which} choices")]
    words = _WORDS.get(type(kind).__name__)
    if words is None:
        return [(path, _cut(str(error.message).splitlines()[0], 2 * MAX_VALUE_CHARS))]
    return [(path, f"{shown} {words(kind)}")]


def _only_types(context: list[list[jsonschema_rs.ValidationError]], path: _Path) -> str:
    """For an anyOf/oneOf whose every choice failed on its type alone (the common way to
    write "string or null"), the types; else ''."""
    import jsonschema_rs  # see the TYPE_CHECKING import

    names: list[str] = []
    for errors in context:
        if (
            len(errors) != 1
            or list(errors[0].instance_path) != list(path)
            or not isinstance(errors[0].kind, jsonschema_rs.ValidationErrorKind.Type)
        ):
            return ""
        names += errors[0].kind.types
    return " or ".join(f'"{name}"' for name in dict.fromkeys(names))


def _limit(text: str) -> Any:
    return lambda kind: text.format(limit=_number(kind.limit))


#: The words after the value, by the library's error kind. They depend on the schema only,
#: never on the value: :func:`reason_shape` relies on it to group reasons.
_WORDS: dict[str, Any] = {
    "Type": lambda kind: "is not of type " + " or ".join(f'"{t}"' for t in kind.types),
    "Enum": lambda kind: f"is not one of {_options(kind.options)}",
    "Constant": lambda kind: f"is not the constant {_show(kind.expected_value)}",
    "Pattern": lambda kind: f"does not match the pattern {_show(kind.pattern)}",
    "Format": lambda kind: f'is not a valid "{kind.format}"',
    "Minimum": _limit("is less than the minimum {limit}"),
    "Maximum": _limit("is greater than the maximum {limit}"),
    "ExclusiveMinimum": _limit("is not greater than {limit} (exclusiveMinimum)"),
    "ExclusiveMaximum": _limit("is not less than {limit} (exclusiveMaximum)"),
    "MultipleOf": lambda kind: f"is not a multiple of {_number(kind.multiple_of)}",
    "MinLength": _limit("is shorter than {limit} characters"),
    "MaxLength": _limit("is longer than {limit} characters"),
    "MinItems": _limit("has fewer than {limit} items"),
    "MaxItems": _limit("has more than {limit} items"),
    "MinProperties": _limit("has fewer than {limit} properties"),
    "MaxProperties": _limit("has more than {limit} properties"),
    "UniqueItems": lambda kind: "has duplicate items (uniqueItems)",
    "Contains": lambda kind: 'has no item that matches "contains"',
    "FalseSchema": lambda kind: "is not allowed here (the schema is false)",
    "Not": lambda kind: 'matches the schema under "not"',
    "OneOfMultipleValid": lambda kind: "matches more than one of the oneOf choices",
    "BacktrackLimitExceeded": lambda kind: "is too costly to match against its pattern",
    "RegexEngineFailure": lambda kind: "could not be matched against its pattern",
}


def _number(value: Any) -> str:
    return json.dumps(value, default=str)  # a Decimal limit is written as its digits


def _options(options: list[Any]) -> str:
    shown = ""
    for i, option_ in enumerate(options):
        text = _show(option_)
        if shown and len(shown) + len(text) > _MAX_OPTIONS_CHARS:
            return f"{shown}, … ({len(options)} in all)"
        shown = f"{shown}, {text}" if i else text
    return shown


def _show(value: Any) -> str:
    """The value as JSON, cut to :data:`MAX_VALUE_CHARS` (a string keeps its closing
    quote, so it still reads as one)."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) <= MAX_VALUE_CHARS:
        return text
    if isinstance(value, str):
        return text[: MAX_VALUE_CHARS - 2] + '…"'
    return text[: MAX_VALUE_CHARS - 1] + "…"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _value_at(node: Any, path: _Path) -> Any:
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _document_order(record: Any, path: _Path) -> tuple[int, ...]:
    """Where ``path`` is in the record, as positions: members in the order the line has
    them, a missing member (``required``) after those of its object."""
    order = []
    node = record
    for part in path:
        if isinstance(node, dict):
            keys = list(node)
            order.append(keys.index(part) if part in node else len(keys))
            node = node.get(str(part))
        elif isinstance(node, list) and isinstance(part, int):
            order.append(part)
            node = node[part] if part < len(node) else None
        else:
            order.append(0)
            node = None
    return tuple(order)


#: A pointer is written as it is unless a reader could misread it: an empty member name,
#: or one holding ": " (the separator of a reason) or a control character. Then it is
#: written as a JSON string.
_PLAIN_PART = re.compile(r"(?:(?!: )[^\x00-\x1f])+")


def _pointer(path: Sequence[str | int]) -> str:
    """RFC 6901 JSON pointer of ``path``; the whole record is ``/``."""
    if not path:
        return "/"
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in path]
    text = "/" + "/".join(parts)
    if all(_PLAIN_PART.fullmatch(p) for p in parts):
        return text
    return json.dumps(text, ensure_ascii=False)


#: The phrases that follow the value in a reason: the start of each of _WORDS and of
#: _describe's own words. ``_reasons.reason_shape`` finds the last of them in a reason's
#: text; the value before it is what varies from record to record.
REASON_PHRASES = (
    "is not of type ",
    "is not one of ",
    "is not the constant ",
    "does not match the pattern ",
    "is not a valid ",
    "is less than the minimum ",
    "is greater than the maximum ",
    "is not greater than ",
    "is not less than ",
    "is not a multiple of ",
    "is shorter than ",
    "is longer than ",
    "has fewer than ",
    "has more than ",
    "has duplicate items",
    "has no item that matches",
    "is not allowed here",
    "matches the schema under",
    "matches more than one of",
    "matches none of the ",
    "is an unexpected property",
    "is too costly to match",
    "could not be matched",
)
