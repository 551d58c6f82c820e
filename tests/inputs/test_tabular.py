"""Parquet and CSV inputs: every row one JSON object, types mapped as documented, bad rows
rejected with their row numbers — checked on what the emulator stored."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import gzip
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import API_KEY
from helpers import read_manifest, read_rejects

import bulkload
from bulkload import cli
from bulkload.emulator import EmulatorThread


def stored_docs(emu: EmulatorThread, namespace: str = "products") -> list[dict[str, Any]]:
    return [orjson.loads(line) for _, line in emu.stored_records(namespace)]


def load(emu: EmulatorThread, tmp: Path, *inputs: Path, **options: Any) -> bulkload.LoadResult:
    return bulkload.load(
        "products", [str(i) for i in inputs], api_key=API_KEY, base_url=emu.base_url,
        work_dir=tmp / "work", **options,
    )  # fmt: skip


# -- Parquet -----------------------------------------------------------------------------


def test_parquet_round_trip_of_every_mapped_type(
    emulator_thread: EmulatorThread, tmp_path: Path
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    paris = dt.timezone(dt.timedelta(hours=1))
    columns = {
        "id": (pa.array(["r1", "r2", "r3"]), ["r1", "r2", "r3"]),
        "i64": (pa.array([2**63 - 1, -(2**63), None], pa.int64()), [2**63 - 1, -(2**63), None]),
        "u64": (pa.array([2**64 - 1, 0, 7], pa.uint64()), [2**64 - 1, 0, 7]),
        "i8": (pa.array([-128, 127, None], pa.int8()), [-128, 127, None]),
        "f64": (pa.array([1.5, float("nan"), float("-inf")]), [1.5, None, None]),
        "f32": (pa.array([0.25, None, float("inf")], pa.float32()), [0.25, None, None]),
        "f16": (pa.array([1.5, None, -2.0], pa.float16()), [1.5, None, -2.0]),
        "flag": (pa.array([True, False, None]), [True, False, None]),
        "text": (pa.array(['ü\n"x"', "", None]), ['ü\n"x"', "", None]),
        "dec": (
            pa.array(
                [decimal.Decimal("12345678901234567890.1200"), decimal.Decimal("-0.0001"), None],
                pa.decimal128(24, 4),
            ),
            ["12345678901234567890.1200", "-0.0001", None],
        ),
        "blob": (pa.array([b"\x00\xff\x10", b"", None]), ["AP8Q", "", None]),
        "day": (
            pa.array([dt.date(2024, 2, 29), dt.date(1, 1, 1), None]),
            ["2024-02-29", "0001-01-01", None],
        ),
        "ts_naive_ns": (
            pa.array([1_700_000_000_123_456_789, 0, None], pa.timestamp("ns")),
            ["2023-11-14T22:13:20.123456789Z", "1970-01-01T00:00:00.000000000Z", None],
        ),
        "ts_utc_ms": (
            pa.array([1_700_000_000_123, None, 0], pa.timestamp("ms", tz="UTC")),
            ["2023-11-14T22:13:20.123Z", None, "1970-01-01T00:00:00.000Z"],
        ),
        "ts_paris_us": (
            pa.array(
                [dt.datetime(2024, 1, 15, 12, 30, 0, 250000, tzinfo=paris), None, None],
                pa.timestamp("us", tz="Europe/Paris"),
            ),
            ["2024-01-15T12:30:00.250000+01:00", None, None],
        ),
        "ts_offset_s": (
            pa.array([0, None, None], pa.timestamp("us", tz="-05:30")),
            ["1969-12-31T18:30:00.000000-05:30", None, None],
        ),
        "tod": (
            pa.array([dt.time(23, 59, 59, 999999), dt.time(0, 0), None], pa.time64("us")),
            ["23:59:59.999999", "00:00:00.000000", None],
        ),
        "dur": (pa.array([90_500, -1, None], pa.duration("ms")), ["PT90.5S", "-PT0.001S", None]),
        "ints": (pa.array([[1, 2**62], [], None]), [[1, 2**62], [], None]),
        "days": (
            pa.array([[dt.date(2020, 1, 1), None], None, []]),
            [["2020-01-01", None], None, []],
        ),
        "obj": (
            pa.array(
                [
                    {"n": 1, "b": b"hi", "when": dt.date(2000, 1, 2)},
                    None,
                    {"n": None, "b": None, "when": None},
                ]
            ),
            [
                {"n": 1, "b": "aGk=", "when": "2000-01-02"},
                None,
                {"n": None, "b": None, "when": None},
            ],
        ),
        "tags": (
            pa.array([[("k", 1)], None, [("a", 2), ("b", 3)]], pa.map_(pa.string(), pa.int64())),
            [{"k": 1}, None, {"a": 2, "b": 3}],
        ),
        "by_int": (
            pa.array([[(1, "x")], [], None], pa.map_(pa.int32(), pa.string())),
            [{"1": "x"}, {}, None],
        ),
        "cat": (pa.array(["x", "y", "x"]).dictionary_encode(), ["x", "y", "x"]),
        "nothing": (pa.nulls(3), [None, None, None]),
    }
    table = pa.table({name: arr for name, (arr, _) in columns.items()})
    src = tmp_path / "types.parquet"
    pq.write_table(table, src, row_group_size=2)  # two row groups: batches cross them
    result = load(emulator_thread, tmp_path, src)
    assert result.exit_code == 0, read_rejects(tmp_path / "work")
    expected = [{name: want[i] for name, (_, want) in columns.items()} for i in range(3)]
    got = sorted(stored_docs(emulator_thread), key=lambda d: d["id"])
    assert got == expected
    # Key order follows the columns; 64-bit integers keep every digit on the wire.
    line = next(line for _, line in emulator_thread.stored_records("products") if b'"r1"' in line)
    assert list(orjson.loads(line)) == list(columns)
    assert b'"u64":18446744073709551615' in line and b'"i64":9223372036854775807' in line
    assert read_manifest(tmp_path / "work")["inputs"][0]["format"] == "parquet"


def test_parquet_bad_rows_are_rejected_with_their_row_numbers(
    emulator_thread: EmulatorThread, tmp_path: Path
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    n = 5000
    ids = [f"p{i}" for i in range(n)]
    ids[0] = None  # row 1
    ids[2999] = ""  # row 3000
    ids[n - 1] = None  # row 5000, in the last row group
    table = pa.table(
        {"id": pa.array(ids), "n": pa.array(range(n)), "pad": pa.array(["x" * 40] * n)}
    )
    src = tmp_path / "rows.parquet"
    pq.write_table(table, src, row_group_size=700)
    result = load(emulator_thread, tmp_path, src, block_size=64 << 10, shard_max_records=1000)
    assert (result.lines, result.records, result.rejected, result.exit_code) == (n, n - 3, 3, 3)
    rejects = read_rejects(tmp_path / "work")
    assert [(r["source"], r["line"]) for r in rejects] == [
        (str(src), 1), (str(src), 3000), (str(src), 5000)
    ]  # fmt: skip
    assert json.loads(rejects[0]["raw"]) == {"id": None, "n": 0, "pad": "x" * 40}
    assert "id" in rejects[0]["error"]
    assert len(stored_docs(emulator_thread)) == n - 3
    # The shards' source ranges are row numbers, as wait --results reports them.
    ranges = [r for s in read_manifest(tmp_path / "work")["shards"] for r in s["sources"]]
    assert ranges[0]["first_line"] == 2 and ranges[-1]["last_line"] == 4999


def test_parquet_id_field_and_coerce_id_and_results_join(
    emulator_thread: EmulatorThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    src = tmp_path / "skus.parquet"
    pq.write_table(pa.table({"sku": pa.array([10, 2**63 - 1, 12]), "name": ["a", "b", "c"]}), src)
    monkeypatch.setenv("SAFETYKIT_API_KEY", API_KEY)
    argv = ["load", "products", str(src), "--work-dir", str(tmp_path / "w"), "--quiet",
            "--base-url", emulator_thread.base_url, "--id-field", "sku", "--coerce-id"]  # fmt: skip
    assert cli.main(argv) == 0
    docs = sorted(stored_docs(emulator_thread), key=lambda d: d["name"])
    assert [d["id"] for d in docs] == ["10", str(2**63 - 1), "12"]
    assert docs[0]["sku"] == 10
    capsys.readouterr()
    assert cli.main(["wait", str(tmp_path / "w"), "--results", str(tmp_path / "r"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mismatches"] == []
    joined = [orjson.loads(x) for x in (tmp_path / "r" / "results.jsonl").read_bytes().splitlines()]
    assert sorted((j["id"], j["line"]) for j in joined) == [
        ("10", 1), ("12", 3), (str(2**63 - 1), 2)
    ]  # fmt: skip


def test_parquet_map_with_a_repeated_key_rejects_its_row(
    emulator_thread: EmulatorThread, tmp_path: Path
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    maps = pa.array([[("k", 1)], [("k", 1), ("k", 2)], None], pa.map_(pa.string(), pa.int64()))
    src = tmp_path / "maps.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "m": maps}), src)
    result = load(emulator_thread, tmp_path, src)
    assert (result.records, result.rejected) == (2, 1)
    assert sorted(stored_docs(emulator_thread), key=lambda d: d["id"]) == [
        {"id": "a", "m": {"k": 1}}, {"id": "c", "m": None}
    ]  # fmt: skip
    [reject] = read_rejects(tmp_path / "work")
    assert (reject["line"], reject["error"]) == (2, "a map repeats the key 'k'")
    assert json.loads(reject["raw"]) == {"id": "b", "m": [["k", 1], ["k", 2]]}


def test_a_file_that_is_not_parquet_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    src = tmp_path / "fake.parquet"
    src.write_bytes(b'{"id": "a"}\n')
    with pytest.raises(bulkload.SourceError, match="not a readable Parquet file"):
        bulkload.load("products", [str(src)], dry_run=True, work_dir=tmp_path / "w")
    (tmp_path / "x.parquet.gz").write_bytes(gzip.compress(b"PAR1"))
    with pytest.raises(bulkload.SourceError, match="compressed inside"):
        bulkload.load("products", [str(tmp_path / "x.parquet.gz")], dry_run=True)


# -- CSV ------------------------------------------------------------------------------------

CSV = (
    "\ufeffid,name,note,price\r\n"  # BOM and CRLF, as Excel writes them
    '1,"Smith, Anne","two\nlines",00123\r\n'  # row 1: quoted comma and newline; zeros kept
    "\r\n"  # row 2: blank
    "2,only two\r\n"  # row 3: too few fields
    '3,"bad"quote,x,1\r\n'  # row 4: broken quoting
    '4,ü "ok",,1e400\r\n'  # row 5: unicode, empty field, a number JSON could not hold
    '5,"say ""hi""",x,-0\r\n'  # row 6: doubled quotes
    "6,a,b,c,d\r\n"  # row 7: too many fields
)


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_csv_round_trip_and_bad_rows(
    emulator_thread: EmulatorThread, tmp_path: Path, suffix: str
) -> None:
    src = tmp_path / f"people{suffix}"
    data = CSV.encode()
    src.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    result = load(emulator_thread, tmp_path, src)
    assert (result.lines, result.records, result.rejected, result.blank) == (7, 3, 3, 1)
    assert sorted(stored_docs(emulator_thread), key=lambda d: d["id"]) == [
        {"id": "1", "name": "Smith, Anne", "note": "two\nlines", "price": "00123"},
        {"id": "4", "name": 'ü "ok"', "note": "", "price": "1e400"},
        {"id": "5", "name": 'say "hi"', "note": "x", "price": "-0"},
    ]
    rejects = read_rejects(tmp_path / "work")
    assert [(r["source"], r["line"], r["raw"]) for r in rejects] == [
        (str(src), 3, "2,only two"),
        (str(src), 4, '3,"bad"quote,x,1'),
        (str(src), 7, "6,a,b,c,d"),
    ]
    assert rejects[0]["error"] == "the row has 2 fields, the header has 4"
    assert "not valid CSV" in rejects[1]["error"]


def test_csv_id_field_and_invalid_utf8(emulator_thread: EmulatorThread, tmp_path: Path) -> None:
    src = tmp_path / "skus.csv"
    src.write_bytes(b"sku,name\nA-1,ok\nA-2,caf\xe9\n,no id\n")
    result = load(emulator_thread, tmp_path, src, id_field="sku")
    assert (result.records, result.rejected) == (1, 2)
    assert stored_docs(emulator_thread) == [{"sku": "A-1", "name": "ok", "id": "A-1"}]
    rejects = read_rejects(tmp_path / "work")
    assert [r["line"] for r in rejects] == [2, 3]
    assert rejects[0]["error"] == "invalid UTF-8" and rejects[0]["raw"] is None
    assert base64.b64decode(rejects[0]["raw_base64"]) == b"A-2,caf\xe9"


def test_csv_header_problems_stop_the_run(tmp_path: Path) -> None:
    for header, why in [(b"id,name,id\n", "appears twice"), (b"id,,x\n", "empty column name")]:
        src = tmp_path / "h.csv"
        src.write_bytes(header + b"1,2,3\n")
        with pytest.raises(bulkload.SourceError, match=why):
            bulkload.load("products", [str(src)], dry_run=True, work_dir=tmp_path / "w")
    (tmp_path / "zip.csv").write_bytes(gzip.compress(b"id\n1\n"))
    with pytest.raises(bulkload.SourceError, match="gzip-compressed"):
        bulkload.load(
            "products", [str(tmp_path / "zip.csv")], dry_run=True, work_dir=tmp_path / "w"
        )
