"""``--schema``: a record against the user's JSON Schema (``bulkload._validate.schema``).

Each common keyword with a record that passes and one that fails, with the exact reason
(pointer and words); every kind of bad schema as a ConfigError that names it; the check
pickled into fresh processes; the reference ``jsonschema`` library as an independent oracle
on generated records; and the grouping of reasons for the check-only report.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import pickle
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkload._errors import ConfigError, ExitCode
from bulkload._validate.reasons import ReasonCounter, reason_pointer, reason_shape, top_reasons
from bulkload._validate.schema import MAX_VALUE_CHARS, SchemaCheck, load_schema

PRODUCT_SCHEMA = Path(__file__).resolve().parents[2] / "benchmarks" / "product-schema.json"


def line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode()


def block(records: list[dict[str, Any]]) -> tuple[bytes, list[int]]:
    lines = [line(r) + b"\n" for r in records]
    return b"".join(lines), list(itertools.accumulate(map(len, lines)))


def obj(properties: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, **more}


# --- every common keyword: passes, fails, and says where and why -------------------------

SELLER_DEFS = {
    "$defs": {
        "seller": {
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "string"}},
        }
    }
}

KEYWORDS = [
    # (schema, a record that passes, a record that fails, the reason)
    pytest.param(
        obj({"price": {"type": "number"}}),
        {"id": "a", "price": 12.5},
        {"id": "a", "price": "12,50"},
        '/price: "12,50" is not of type "number"',
        id="type",
    ),
    pytest.param(
        obj({"n": {"type": "integer"}}),
        {"id": "a", "n": 3.0},  # JSON Schema: a number with no fraction is an integer
        {"id": "a", "n": 3.5},
        '/n: 3.5 is not of type "integer"',
        id="type-integer",
    ),
    pytest.param(
        obj({"brand": {"type": ["string", "null"]}}),
        {"id": "a", "brand": None},
        {"id": "a", "brand": 5},
        '/brand: 5 is not of type "null" or "string"',
        id="type-union",
    ),
    pytest.param(
        {"required": ["id", "title"]},
        {"id": "a", "title": "t"},
        {"id": "a"},
        "/title: required property is missing",
        id="required",
    ),
    pytest.param(
        obj({"seller": obj({"name": {"type": "string"}}, required=["name"])}),
        {"id": "a", "seller": {"name": "n"}},
        {"id": "a", "seller": {}},
        "/seller/name: required property is missing",
        id="required-nested",
    ),
    pytest.param(
        obj({"seller": obj({"name": {"type": "string"}})}),
        {"id": "a", "seller": {"name": "shop"}},
        {"id": "a", "seller": {"name": 7}},
        '/seller/name: 7 is not of type "string"',
        id="properties-nested",
    ),
    pytest.param(
        obj({"currency": {"enum": ["USD", "EUR"]}}),
        {"id": "a", "currency": "EUR"},
        {"id": "a", "currency": "EURO"},
        '/currency: "EURO" is not one of "USD", "EUR"',
        id="enum",
    ),
    pytest.param(
        obj({"kind": {"const": "product"}}),
        {"id": "a", "kind": "product"},
        {"id": "a", "kind": "offer"},
        '/kind: "offer" is not the constant "product"',
        id="const",
    ),
    pytest.param(
        obj({"created_at": {"type": "string", "format": "date-time"}}),
        {"id": "a", "created_at": "2026-05-01T12:00:00Z"},
        {"id": "a", "created_at": "yesterday"},
        '/created_at: "yesterday" is not a valid "date-time"',
        id="format-date-time",
    ),
    pytest.param(
        obj({"day": {"format": "date"}}),
        {"id": "a", "day": "2026-02-28"},
        {"id": "a", "day": "2026-02-30"},
        '/day: "2026-02-30" is not a valid "date"',
        id="format-date",
    ),
    pytest.param(
        obj({"email": {"format": "email"}}),
        {"id": "a", "email": "a@example.com"},
        {"id": "a", "email": "not an address"},
        '/email: "not an address" is not a valid "email"',
        id="format-email",
    ),
    pytest.param(
        obj({"url": {"format": "uri"}}),
        {"id": "a", "url": "https://example.com/x"},
        {"id": "a", "url": "no scheme"},
        '/url: "no scheme" is not a valid "uri"',
        id="format-uri",
    ),
    pytest.param(
        obj({"price": {"minimum": 0}}),
        {"id": "a", "price": 0},
        {"id": "a", "price": -1},
        "/price: -1 is less than the minimum 0",
        id="minimum",
    ),
    pytest.param(
        obj({"price": {"exclusiveMinimum": 0}}),
        {"id": "a", "price": 0.01},
        {"id": "a", "price": 0},
        "/price: 0 is not greater than 0 (exclusiveMinimum)",
        id="exclusiveMinimum",
    ),
    pytest.param(
        obj({"stars": {"maximum": 5}}),
        {"id": "a", "stars": 5},
        {"id": "a", "stars": 6},
        "/stars: 6 is greater than the maximum 5",
        id="maximum",
    ),
    pytest.param(
        obj({"sku": {"pattern": "^SKU[0-9]+$"}}),
        {"id": "a", "sku": "SKU123"},
        {"id": "a", "sku": "sku-123"},
        '/sku: "sku-123" does not match the pattern "^SKU[0-9]+$"',
        id="pattern",
    ),
    pytest.param(
        obj({"title": {"minLength": 1, "maxLength": 5}}),
        {"id": "a", "title": "héllo"},  # characters, not bytes
        {"id": "a", "title": ""},
        '/title: "" is shorter than 1 characters',
        id="minLength",
    ),
    pytest.param(
        obj({"id": {"type": "string"}}, additionalProperties=False),
        {"id": "a"},
        {"id": "a", "colour": "red"},
        '/colour: "red" is an unexpected property (additionalProperties: false)',
        id="additionalProperties",
    ),
    pytest.param(
        {**obj({"seller": {"$ref": "#/$defs/seller"}}), **SELLER_DEFS},
        {"id": "a", "seller": {"id": "s1"}},
        {"id": "a", "seller": {"id": 1}},
        '/seller/id: 1 is not of type "string"',
        id="ref-to-defs",
    ),
    pytest.param(
        {**obj({"seller": {"$ref": "#/$defs/seller"}}), **SELLER_DEFS},
        {"id": "a", "seller": {"id": "s1"}},
        {"id": "a", "seller": {}},
        "/seller/id: required property is missing",
        id="ref-to-defs-required",
    ),
    pytest.param(
        obj({"tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}}),
        {"id": "a", "tags": ["x", "y"]},
        {"id": "a", "tags": ["x", 2]},
        '/tags/1: 2 is not of type "string"',
        id="items",
    ),
    pytest.param(
        obj({"tags": {"maxItems": 2}}),
        {"id": "a", "tags": [1, 2]},
        {"id": "a", "tags": [1, 2, 3]},
        "/tags: [1,2,3] has more than 2 items",
        id="maxItems",
    ),
    pytest.param(
        obj({"tags": {"uniqueItems": True}}),
        {"id": "a", "tags": [1, 2]},
        {"id": "a", "tags": [1, 1]},
        "/tags: [1,1] has duplicate items (uniqueItems)",
        id="uniqueItems",
    ),
    pytest.param(
        obj({"brand": {"anyOf": [{"type": "string"}, {"type": "null"}]}}),
        {"id": "a", "brand": "b"},
        {"id": "a", "brand": 1},
        '/brand: 1 is not of type "string" or "null"',
        id="anyOf-of-types",
    ),
    pytest.param(
        obj({"n": {"oneOf": [{"minimum": 5}, {"maximum": 0}]}}),
        {"id": "a", "n": 6},
        {"id": "a", "n": 3},
        "/n: 3 matches none of the oneOf choices",
        id="oneOf",
    ),
    pytest.param(
        {"propertyNames": {"pattern": "^[a-z_]+$"}},
        {"id": "a", "in_stock": True},
        {"id": "a", "InStock": True},
        '/: property name "InStock" does not match the pattern "^[a-z_]+$"',
        id="propertyNames",
    ),
]


@pytest.mark.parametrize(("schema", "good", "bad", "reason"), KEYWORDS)
def test_each_keyword_passes_and_fails_with_pointer_and_words(
    schema: dict[str, Any], good: dict[str, Any], bad: dict[str, Any], reason: str
) -> None:
    check = SchemaCheck(schema)
    assert check.check(line(good)) is None
    assert check.check(line(bad)) == reason
    # The oracle agrees that the one passes and the other fails.
    reference = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    assert reference.is_valid(good)
    if "format" not in json.dumps(schema):  # the reference checks some formats only with extras
        assert not reference.is_valid(bad)


def test_several_errors_give_the_first_in_the_record_and_a_count() -> None:
    check = SchemaCheck(
        obj(
            {"id": {}, "price": {"type": "number"}, "currency": {"enum": ["USD"]}},
            required=["title"],
            additionalProperties=False,
        )
    )
    reason = check.check(b'{"id":"a","currency":"EUR","price":"1","x":1,"y":2}')
    # currency comes first in the line; then price, x, y, and the missing title
    assert reason == '/currency: "EUR" is not one of "USD" (and 4 more)'
    # The same record with its members in another order: another first error.
    assert check.check(b'{"price":"1","id":"a","currency":"EUR","x":1,"y":2}') == (
        '/price: "1" is not of type "number" (and 4 more)'
    )


def test_long_values_are_cut_and_still_read_as_json() -> None:
    check = SchemaCheck(obj({"title": {"maxLength": 10}, "meta": {"type": "string"}}))
    reason = check.check(line({"id": "a", "title": "x" * 500}))
    assert reason is not None
    value = reason.removeprefix("/title: ").removesuffix(" is longer than 10 characters")
    assert len(value) == MAX_VALUE_CHARS
    assert value.startswith('"xxx') and value.endswith('…"')
    reason = check.check(line({"id": "a", "meta": {"k": list(range(100))}}))
    assert reason is not None and reason.startswith('/meta: {"k":[0,1,2,')
    assert "…  is not" not in reason and '… is not of type "string"' in reason


def test_pointers_escape_and_quote_what_would_mislead() -> None:
    check = SchemaCheck(
        obj({"a/b~c": {"type": "string"}, "x: y": {"type": "string"}, "é": {"type": "string"}})
    )
    assert check.check(b'{"id":"a","a/b~c":1}') == '/a~1b~0c: 1 is not of type "string"'
    assert check.check(b'{"id":"a","x: y":1}') == '"/x: y": 1 is not of type "string"'
    assert check.check('{"id":"a","é":1}'.encode()) == '/é: 1 is not of type "string"'


def test_records_bulkload_accepts_at_its_edges() -> None:
    """Integers past 64 bits (orjson refuses them) and 1,024 levels of nesting (msgspec
    refuses them), alone and together: checked, not crashed on."""
    check = SchemaCheck(obj({"n": {"type": "integer", "minimum": 0}, "deep": {"type": "array"}}))
    big = b'{"id":"a","n":123456789012345678901234567890}'
    assert check.check(big) is None
    assert check.check(b'{"id":"a","n":-123456789012345678901234567890}') == (
        "/n: -123456789012345678901234567890 is less than the minimum 0"
    )
    nest = b"[" * 1023 + b"]" * 1023
    deep = b'{"id":"a","deep":' + nest + b"}"
    assert check.check(deep) is None
    assert check.check(b'{"id":"a","n":-1,"deep":' + nest + b"}") == (
        "/n: -1 is less than the minimum 0"
    )
    both = b'{"id":"a","n":-123456789012345678901234567890,"deep":' + nest + b"}"
    assert check.check(both) == "/n: -123456789012345678901234567890 is less than the minimum 0"
    data = b"\n".join([big, deep, both]) + b"\n"
    ends = [len(big) + 1, len(big) + len(deep) + 2, len(data)]
    assert check.check_block(data, ends) == [(2, check.check(both))]
    # Too deep for msgspec under Python's default recursion limit: the fast path's check
    # declines the block (None) or, once the limit was raised, agrees.
    assert check.check_lines(data) in (None, check.check_block(data, ends))


def test_check_block_gives_the_failing_records_in_order() -> None:
    check = SchemaCheck(obj({"price": {"type": "number"}}, required=["price"]))
    records = [
        {"id": "0", "price": 1},
        {"id": "1", "price": "12,50"},
        {"id": "2", "price": 2},
        {"id": "3"},
        {"id": "4", "price": 3},
    ]
    data, ends = block(records)
    assert check.check_block(data, ends) == [
        (1, '/price: "12,50" is not of type "number"'),
        (3, "/price: required property is missing"),
    ]
    assert check.check_block(*block(records[::2])) == []
    assert check.check_block(b"", []) == []
    with pytest.raises(ValueError, match="2 lines in data, 1 ends"):
        check.check_block(data[: ends[1]], ends[:1])


#: Records with an id, and a price that is good, bad or missing.
PRICED = st.lists(
    st.fixed_dictionaries(
        {"id": st.text(min_size=1, max_size=5)},
        optional={"price": st.one_of(st.integers(-5, 5), st.text(max_size=3), st.none())},
    ),
    max_size=30,
)
PRICE_SCHEMA = obj({"price": {"type": "number", "minimum": 0}}, required=["price"])


@given(PRICED)
def test_check_block_agrees_with_check_line_by_line(records: list[dict[str, Any]]) -> None:
    check = SchemaCheck(PRICE_SCHEMA)
    expected = [(i, r) for i, rec in enumerate(records) if (r := check.check(line(rec)))]
    assert check.check_block(*block(records)) == expected


@pytest.mark.parametrize(
    "declined",
    [
        b'["not", "an", "object"]',
        b'{"sku": "no id"}',
        b'{"id": ""}',
        b'{"id": 7}',
        b'{"id": "a", "id": null}',  # the last one counts, as for SafetyKit
        b'{"id": "a"',
        b"",
        # lines the server refuses, which the careful path rejects with their own reason
        b'{"id": "a", "x": 1e400}',
        b'{"id": "a", "x": "\\ud800"}',
    ],
)
def test_check_lines_leaves_what_bulkload_itself_refuses_to_the_careful_path(
    declined: bytes,
) -> None:
    check = SchemaCheck(obj({"price": {"type": "number"}}))
    good, bad = b'{"id":"a","price":1}', b'{"id":"b","price":"1"}'
    assert check.check_lines(good + b"\n" + declined + b"\n" + bad + b"\n") is None
    assert check.check_lines(good + b"\n" + bad + b"\n") == [
        (1, '/price: "1" is not of type "number"')
    ]
    assert check.check_lines(good + b"\r\n" + good) == []
    assert check.check_lines(b"") == []


@given(PRICED)
def test_check_lines_agrees_with_check_block(records: list[dict[str, Any]]) -> None:
    check = SchemaCheck(PRICE_SCHEMA)
    data, ends = block(records)
    assert check.check_lines(data) == check.check_block(data, ends)


def test_the_benchmark_schema_accepts_the_benchmark_products() -> None:
    from benchmarks.datasets import product

    check = SchemaCheck(PRODUCT_SCHEMA)
    rng = random.Random(7)
    data, ends = block([product(rng, i) for i in range(2_000)])
    assert check.check_block(data, ends) == []


# --- a bad schema is a usage error that names the problem ---------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            b'{"type": "object",\n "properties": {]}',
            "not JSON: Expecting property name enclosed in double quotes at line 2, column 17",
            id="not-json",
        ),
        pytest.param(b"\xff\xfe{}", "not UTF-8 text (byte 0)", id="not-utf8"),
        pytest.param(b'{"minimum": NaN}', "not JSON: NaN is not JSON", id="nan"),
        pytest.param(
            b'{"maximum": 1e400}', "not JSON: the number 1e400 is too large for a double", id="huge"
        ),
        pytest.param(
            b'["type", "object"]', "a JSON Schema is a JSON object, not an array", id="array"
        ),
        pytest.param(b"", "not JSON: Expecting value at line 1, column 1", id="empty"),
    ],
)
def test_a_schema_file_that_is_not_a_json_object(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "schema.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_schema(path)
    assert str(info.value) == f"schema={str(path)!r}: {message}"
    assert info.value.exit_code == ExitCode.USAGE


def test_a_schema_file_that_cannot_be_read(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as info:
        load_schema(missing)
    assert str(info.value) == f"schema={str(missing)!r}: no such file"
    with pytest.raises(ConfigError, match="is a directory, not a schema file"):
        load_schema(str(tmp_path))


def test_a_utf8_bom_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_bytes(b'\xef\xbb\xbf{"type": "object"}')
    assert load_schema(path) == {"type": "object"}
    assert SchemaCheck(path).schema == {"type": "object"}


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        pytest.param(
            obj({"price": {"type": "numbr"}}),
            'not a valid JSON Schema: at /properties/price/type: "numbr" is not a JSON Schema '
            'type (one of "array", "boolean", "integer", "null", "number", "object", "string")',
            id="type-name",
        ),
        pytest.param(
            obj({"price": {"minimum": "0"}}),
            'not a valid JSON Schema: at /properties/price/minimum: "0" is not of type "number"',
            id="keyword-value",
        ),
        pytest.param(
            {"required": "id"},
            'not a valid JSON Schema: at /required: "id" is not of type "array"',
            id="required-not-array",
        ),
        pytest.param(
            obj({"sku": {"pattern": "SKU[0-9"}}),
            'not a valid JSON Schema: at /properties/sku/pattern: "SKU[0-9" is not a valid '
            "regular expression (ECMA 262)",
            id="regex",
        ),
        pytest.param(
            obj({"seller": {"$ref": "#/$defs/seller"}}),
            '$ref "#/$defs/seller" at /properties/seller points to nothing in the schema',
            id="ref-missing-def",
        ),
        pytest.param(
            obj({"seller": {"$ref": "#shop"}}),
            '$ref "#shop" at /properties/seller points to nothing in the schema',
            id="ref-missing-anchor",
        ),
        pytest.param(
            obj({"seller": {"$ref": "https://schemas.example.com/seller.json"}}),
            '$ref "https://schemas.example.com/seller.json" at /properties/seller refers to '
            "https://schemas.example.com/seller.json, outside the schema; bulkload fetches "
            'nothing (no network, no other files): copy it under "$defs" and refer to it as '
            '"#/$defs/NAME"',
            id="ref-remote",
        ),
        pytest.param(
            {"$id": "https://example.com/p.json", **obj({"s": {"$ref": "seller.json#/x"}})},
            '$ref "seller.json#/x" at /properties/s refers to https://example.com/seller.json, '
            "outside the schema; bulkload fetches nothing (no network, no other files): copy it "
            'under "$defs" and refer to it as "#/$defs/NAME"',
            id="ref-relative",
        ),
        pytest.param(
            {"$schema": "https://example.com/my-meta", "type": "object"},
            "\"$schema\" names a meta-schema bulkload does not know ('https://example.com/my-meta');"
            ' use "https://json-schema.org/draft/2020-12/schema", or leave "$schema" out',
            id="unknown-meta-schema",
        ),
    ],
)
def test_an_invalid_schema_is_named_before_any_record(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        SchemaCheck(schema)
    assert str(info.value) == f"the schema= dict: {message}"
    assert info.value.exit_code == ExitCode.USAGE


def test_a_schema_that_is_not_json_data_or_not_a_schema_source() -> None:
    with pytest.raises(ConfigError, match="the schema= dict: the schema is not JSON data"):
        load_schema({"enum": {1, 2}})
    with pytest.raises(ConfigError, match="the schema= dict: the schema is not JSON data"):
        load_schema({"maximum": float("inf")})
    with pytest.raises(
        ConfigError, match="takes a JSON Schema as a dict or the path of its file, not list"
    ):
        load_schema([{"type": "object"}])  # type: ignore[arg-type]


def test_the_schema_is_copied_and_other_drafts_are_honoured() -> None:
    given_schema: dict[str, Any] = obj({"n": {"type": "integer"}})
    check = SchemaCheck(given_schema)
    given_schema["properties"]["n"]["type"] = "string"  # the caller's dict changes later
    assert check.check(b'{"id":"a","n":1}') is None
    # Draft 4's exclusiveMinimum is a boolean beside minimum; 2020-12 would refuse it.
    draft4 = SchemaCheck(
        {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "properties": {"n": {"minimum": 0, "exclusiveMinimum": True}},
        }
    )
    assert draft4.check(b'{"id":"a","n":0}') is not None
    assert draft4.check(b'{"id":"a","n":1}') is None


# --- in other processes --------------------------------------------------------------------


def test_pickled_it_is_the_schema_alone_and_judges_alike() -> None:
    check = SchemaCheck(PRODUCT_SCHEMA)
    copy = pickle.loads(pickle.dumps(check))
    assert copy == check and hash(copy) == hash(check)
    assert len(pickle.dumps(check)) < 4 * len(PRODUCT_SCHEMA.read_bytes())
    bad = (
        b'{"id":"a","sku":"x","title":"t","price":-1,"currency":"USD","seller":{},"created_at":"z"}'
    )
    assert copy.check(bad) == check.check(bad) is not None
    assert SchemaCheck({"type": "object"}) != check


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_fresh_process_gives_the_same_verdicts(method: str) -> None:
    check = SchemaCheck(PRODUCT_SCHEMA)
    from benchmarks.datasets import product

    rng = random.Random(3)
    records = [product(rng, i) for i in range(200)]
    records[5]["price"] = "12,50"
    records[17]["currency"] = "EURO"
    del records[42]["seller"]["name"]
    records[99]["images"] = ["https://cdn.example.com/img/a.jpg", "ftp://x"]
    records[150]["colour"] = "red"
    data, ends = block(records)
    here = check.check_block(data, ends)
    assert [i for i, _ in here] == [5, 17, 42, 99, 150]
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        there = pool.submit(check.check_block, data, ends).result(timeout=60)
        one = pool.submit(check.check, line(records[99])).result(timeout=60)
    assert there == here
    assert one == here[3][1] == '/images/1: "ftp://x" does not match the pattern "^https://"'


# --- the reference implementation as an oracle ----------------------------------------------

ORACLE_SCHEMAS = [
    # a product: types, required, enum, bounds, lengths, no other members, $ref to $defs
    {
        "type": "object",
        "required": ["id", "price"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "minLength": 1},
            "price": {"type": "number", "minimum": 0, "exclusiveMaximum": 1000},
            "qty": {"type": "integer", "maximum": 10},
            "currency": {"enum": ["USD", "EUR", 1, None]},
            "title": {"type": "string", "maxLength": 4},
            "seller": {"$ref": "#/$defs/seller"},
            "sku": {"type": "string", "pattern": "^[A-Z]"},
        },
        "$defs": {
            "seller": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "rating": {"minimum": 1}},
            }
        },
    },
    # arrays and combinators
    {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
            "pair": {"prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
            "set": {"uniqueItems": True},
            "any": {"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]},
            "one": {"oneOf": [{"type": "number"}, {"type": "integer"}]},
            "not": {"not": {"type": "boolean"}},
            "const": {"const": {"a": [1, "x"]}},
            "price": {"multipleOf": 0.5},
        },
        "dependentRequired": {"tags": ["set"]},
        "minProperties": 1,
    },
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False, width=64)
    | st.sampled_from(["", "USD", "EUR", "Abc", "abc", "x" * 5, "é", "A\n"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["a", "name", "rating", "x"]), children, max_size=3)
    ),
    max_leaves=8,
)


def members(
    strategies: dict[str, st.SearchStrategy[Any]], required: tuple[str, ...] = ()
) -> st.SearchStrategy[dict[str, Any]]:
    """Records' other members: each key present or not (``required`` ones always), its
    value three times in four one that the schema may accept, else any JSON value: both
    verdicts come up often."""

    def value(key: str) -> st.SearchStrategy[Any]:
        return st.one_of(strategies[key], strategies[key], strategies[key], json_values)

    return st.fixed_dictionaries(
        {key: value(key) for key in required},
        optional={key: value(key) for key in strategies if key not in required},
    )


# Values at the edges where implementations differ: 1, 1.0 and true (equal, equal, not
# equal in JSON Schema), integral floats as integers, empty and non-ASCII strings.
ORACLE_MEMBERS = [
    members(
        {
            "price": st.floats(-1, 1001) | st.integers(-5, 2000),
            "qty": st.integers(0, 12) | st.sampled_from([10.0, 10.5]),
            "currency": st.sampled_from(["USD", "EUR", "GBP", 1, 1.0, True, None]),
            "title": st.text(max_size=6),
            "seller": st.fixed_dictionaries(
                {},
                optional={
                    "name": st.text(max_size=2),
                    "rating": st.integers(-1, 3) | st.sampled_from([1.0, 0.5]),
                },
            ),
            "sku": st.text(alphabet="aAZé\n", max_size=3),
        },
        required=("price",),
    ),
    members(
        {
            "tags": st.lists(st.text(max_size=2), max_size=4),
            "pair": st.lists(st.integers(0, 3) | st.text(max_size=2), max_size=3),
            "set": st.lists(
                st.sampled_from([1, 1.0, True, False, 0, "a", None, [1], [1.0]]), max_size=3
            ),
            "any": st.text(max_size=2) | st.integers(-2, 2),
            "one": st.integers(-2, 2) | st.sampled_from([1.5, 2.0, -0.0]),
            "not": st.booleans(),
            "const": st.sampled_from(
                [{"a": [1, "x"]}, {"a": [1.0, "x"]}, {"a": [True, "x"]}, {"a": [1]}]
            ),
            "price": st.sampled_from([0.5, 1, 1.5, 0.1, 3, 2.25, 1e300, 7.0]),
        }
    ),
]


@settings(max_examples=400, deadline=None)
@given(data=st.data(), schema_index=st.sampled_from(range(len(ORACLE_SCHEMAS))))
def test_the_verdict_agrees_with_the_reference_jsonschema(
    data: st.DataObject, schema_index: int
) -> None:
    record = {"id": data.draw(st.text(min_size=1, max_size=3))}
    record.update(data.draw(ORACLE_MEMBERS[schema_index]))
    # now and then a member no schema names, or none of the required price
    record.update(data.draw(st.sampled_from([{}, {}, {}, {}, {"other": 1}])))
    if data.draw(st.integers(0, 9)) == 0:
        record.pop("price", None)
    reason = _CHECKS[schema_index].check(line(record))
    assert (reason is None) == _ORACLES[schema_index].is_valid(record), reason
    if reason is not None:
        assert reason.startswith(("/", '"/')) and ": " in reason


_CHECKS = [SchemaCheck(s) for s in ORACLE_SCHEMAS]
_ORACLES = [jsonschema.Draft202012Validator(s) for s in ORACLE_SCHEMAS]


# --- the check-only report: reasons grouped by what they say ------------------------------


@pytest.mark.parametrize(
    ("reason", "shape"),
    [
        ('/price: "12,50" is not of type "number"', '/price: … is not of type "number"'),
        ("/price: true is not of type \"number\" (and 3 more)", '/price: … is not of type "number"'),
        ('/images/3: "ftp://x" does not match the pattern "^https://"', '/images/*: … does not match the pattern "^https://"'),
        ("/seller/name: required property is missing", "/seller/name: required property is missing"),
        ("/items/12/sku: required property is missing", "/items/*/sku: required property is missing"),
        ('/currency: "is not of type " is not one of "USD"', '/currency: … is not one of "USD"'),
        ('"/x: y": 1 is not of type "string"', '"/x: y": … is not of type "string"'),
        ('/: property name "A" does not match the pattern "^[a-z]+$"', '/: … does not match the pattern "^[a-z]+$"'),
        ('/colour: "red" is an unexpected property (additionalProperties: false)', "/colour: … is an unexpected property (additionalProperties: false)"),
        ("invalid JSON at column 17: expected ',' or '}'", "invalid JSON at column N: expected ',' or '}'"),
        ("missing id", "missing id"),
    ],
)  # fmt: skip
def test_reason_shape_drops_the_value_and_array_indexes(reason: str, shape: str) -> None:
    assert reason_shape(reason) == shape


@pytest.mark.parametrize(
    ("reason", "pointer"),
    [
        ('/price: "12,50" is not of type "number"', "/price"),
        ("/seller/name: required property is missing (and 1 more)", "/seller/name"),
        ('/: property name "A" does not match the pattern "^[a-z]+$"', ""),
        ('"/x: y": 1 is not of type "string"', "/x: y"),
        ('/a~1b: 1 is not of type "string"', "/a~1b"),
        ("missing id", None),
        ("invalid JSON at column 3: unexpected end", None),
    ],
)
def test_reason_pointer_for_scripts(reason: str, pointer: str | None) -> None:
    assert reason_pointer(reason) == pointer


def test_every_reason_the_check_makes_has_a_value_free_shape() -> None:
    """For each keyword, two records with different bad values give one shape."""
    for param in KEYWORDS:
        schema, _good, bad, reason = param.values
        check = SchemaCheck(schema)
        shape = reason_shape(reason)
        assert "…" in shape or shape.endswith("required property is missing"), shape
        assert check.check(line(bad)) == reason
        assert reason_shape(reason + " (and 2 more)") == shape


@pytest.mark.parametrize(
    ("schema", "bad", "worse", "reason"),
    [
        ({"multipleOf": 0.5}, 0.3, 0.7, "is not a multiple of 0.5"),
        ({"exclusiveMaximum": 5}, 5, 9, "is not less than 5 (exclusiveMaximum)"),
        ({"maxLength": 2}, "abc", "abcd", "is longer than 2 characters"),
        ({"minItems": 2}, [], [1], "has fewer than 2 items"),
        ({"minProperties": 1}, {}, {}, "has fewer than 1 properties"),
        ({"maxProperties": 0}, {"a": 1}, {"b": 2}, "has more than 0 properties"),
        ({"contains": {"const": 1}}, [2], [3], 'has no item that matches "contains"'),
        ({"not": {"type": "string"}}, "a", "b", 'matches the schema under "not"'),
        (False, 1, 2, "is not allowed here (the schema is false)"),
        ({"oneOf": [{"type": "number"}, {"minimum": 0}]}, 1, 2, "matches more than one of the oneOf choices"),
        ({"anyOf": [{"minimum": 5}, {"maximum": 0}]}, 3, 4, "matches none of the anyOf choices"),
    ],
)  # fmt: skip
def test_shapes_of_the_other_keywords(schema: Any, bad: Any, worse: Any, reason: str) -> None:
    check = SchemaCheck(obj({"v": schema}))
    first, second = (
        check.check(line({"id": "a", "v": bad})),
        check.check(line({"id": "a", "v": worse})),
    )
    assert first == f"/v: {json.dumps(bad, separators=(',', ':'))} {reason}"
    assert second is not None and reason_shape(first) == reason_shape(second) == f"/v: … {reason}"


def test_top_reasons_count_and_keep_the_first_example() -> None:
    rejects = [
        ('/price: "12,50" is not of type "number"', "a.jsonl", 3, b'{"id":"1","price":"12,50"}'),
        ("/title: required property is missing", "a.jsonl", 4, b'{"id":"2"}'),
        ('/price: true is not of type "number" (and 1 more)', "a.jsonl", 9, b"{}"),
        ('/price: "9,99" is not of type "number"', "b.jsonl", 1, "{}"),
        ("/title: required property is missing", "b.jsonl", 2, None),
        ('/tags/0: 1 is not of type "string"', "b.jsonl", 5, b"{}"),
        ('/tags/7: 2 is not of type "string"', "b.jsonl", 6, b"{}"),
        ("invalid JSON at column 3: unexpected end", "b.jsonl", 8, b"{"),
    ]
    top = top_reasons(rejects, n=3)
    assert [(g.shape, g.count) for g in top] == [
        ('/price: … is not of type "number"', 3),
        ("/title: required property is missing", 2),
        ('/tags/*: … is not of type "string"', 2),  # a tie: the first seen first
    ]
    first = top[0]
    assert (first.reason, first.source, first.line, first.raw) == rejects[0]
    assert top[2].line == 5
    assert sum(g.count for g in top_reasons(rejects, n=100)) == len(rejects)


def test_the_counter_stays_bounded() -> None:
    counter = ReasonCounter(max_shapes=2)
    for i in range(10):
        counter.add(f'/f{i}: 1 is not of type "string"', "a", i + 1, b"{}")
    counter.add('/f0: 2 is not of type "string"', "a", 11, b"{}")
    assert counter.total == 11
    assert counter.other == 8
    assert [(g.shape, g.count) for g in counter.top()] == [
        ('/f0: … is not of type "string"', 2),
        ('/f1: … is not of type "string"', 1),
    ]
