"""A block's rejects are held in a bounded number of objects, and written as before."""

from __future__ import annotations

import base64
import pickle
import tracemalloc
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkload._rejects import ASIDE, Reject, Rejects, reject_json
from bulkload._validate import DuplicateFinder, ValidateOptions, validate_chunk
from bulkload._validate.duplicates import PARTITIONS


def test_a_block_of_100000_rejects_is_a_few_objects() -> None:
    """orjson 3.13 gives each dumps() result a ~4 KB allocation: one object per reject
    held until the block is written took 2.8 GB for a million short bad lines."""
    data = b'{"id":1}\n' * 100_000
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        result = validate_chunk(data, 1, ValidateOptions())
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert len(result.rejects) == 100_000
    grown = [s for s in after.compare_to(before, "filename") if s.count_diff > 0]
    allocations = sum(s.count_diff for s in grown)
    held = sum(s.size_diff for s in grown)
    assert allocations < 200, allocations  # per reject, it would be 100,000s
    assert held < 4 * len(data), held  # raw lines, line numbers, offsets: ~3x the input
    # What a worker sends back pickles as those few buffers, not one object per line.
    assert len(pickle.dumps(result.rejects)) < 4 * len(data)


def test_rejects_jsonl_is_the_contract_format() -> None:
    rejects = Rejects()
    rejects.add(3, "missing id", b'{"x":1}')
    rejects.add(5, "invalid UTF-8 at column 2", b"{\xff")
    rejects.add(9, "missing id", b'{"x":"\\u2028\xe2\x80\xa8"}\r')
    rejects.add(
        12, "line is 99 bytes", b'"raw":null,"raw_file":"w/long-lines/x","raw_bytes":99', ASIDE
    )
    lines = b"".join(rejects.jsonl("data/a b.jsonl")).splitlines()
    docs = [orjson.loads(line) for line in lines]
    assert docs[0] == {
        "source": "data/a b.jsonl",
        "line": 3,
        "error": "missing id",
        "raw": '{"x":1}',
    }
    assert docs[1]["raw"] is None
    assert base64.b64decode(docs[1]["raw_base64"]) == b"{\xff"
    assert docs[2]["raw"] == '{"x":"\\u2028\u2028"}\r'
    assert docs[3] == {
        "source": "data/a b.jsonl",
        "line": 12,
        "error": "line is 99 bytes",
        "raw": None,
        "raw_file": "w/long-lines/x",
        "raw_bytes": 99,
    }
    assert reject_json("s", Reject(3, "missing id", b'{"x":1}')) == (
        b'{"source":"s","line":3,"error":"missing id","raw":"{\\"x\\":1}"}\n'
    )


ENTRIES = st.lists(
    st.tuples(st.integers(1, 10**6), st.sampled_from(["a", "b", "é c"]), st.binary(max_size=20)),
    max_size=30,
).map(lambda xs: sorted(xs, key=lambda x: x[0]))


@settings(max_examples=60, deadline=None, database=None)
@given(a=ENTRIES, b=ENTRIES, by=st.integers(0, 10**9))
def test_shift_merge_and_pickle(
    a: list[tuple[int, str, bytes]], b: list[tuple[int, str, bytes]], by: int
) -> None:
    ra, rb = Rejects(), Rejects()
    for line, error, raw in a:
        ra.add(line, error, raw)
    for line, error, raw in b:
        rb.add(line, error, raw)
    assert pickle.loads(pickle.dumps(ra)) == ra
    merged = ra.merged(rb)
    assert [r.line for r in merged] == sorted(r.line for r in [*ra, *rb])
    assert sorted((r.line, r.error, r.raw) for r in merged) == sorted([*a, *b])
    ra.shift(by)
    assert [r.line for r in ra] == [line + by for line, _, _ in a]
    assert b"".join(ra.jsonl("x")) == b"".join(
        reject_json("x", Reject(line + by, error, raw)) for line, error, raw in a
    )


def test_duplicate_check_buffers_bytes_not_objects(tmp_path: Path) -> None:
    """--check-duplicates over 2M ids took +550 MB: one orjson result held per id."""
    finder = DuplicateFinder(tmp_path / "dups")
    ids = [f"id-{i}" for i in range(200_000)]
    lines = range(1, len(ids) + 1)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        finder.add("a.jsonl", ids, lines)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = [s for s in after.compare_to(before, "filename") if s.count_diff > 0]
    assert sum(s.count_diff for s in grown) < 2 * PARTITIONS  # a buffer each, not an entry
    assert sum(s.size_diff for s in grown) < 16 << 20
    finder.add("a.jsonl", ["id-7"], [200_001])
    assert finder.finish(tmp_path / "duplicates.jsonl") == (1, 1)
