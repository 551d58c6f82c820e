"""`--schema` in a load: a record that does not satisfy the schema is a reject like any other
(file, line, the pointer and the words), the rest goes up exactly once, the counts add up,
and worker processes judge exactly as the loader itself does."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from conftest import API_KEY
from helpers import assert_exactly_once, read_manifest, read_rejects, write_lines

import bulkload
from bulkload import cli
from bulkload.emulator import EmulatorThread


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFETYKIT_API_KEY", API_KEY)


SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["id", "title", "price"],
    "properties": {
        "id": {"type": "string"},
        "title": {"type": "string", "minLength": 1},
        "price": {"type": "number", "minimum": 0},
        "currency": {"enum": ["USD", "EUR"]},
        "seller": {"$ref": "#/$defs/seller"},
    },
    "$defs": {"seller": {"type": "object", "required": ["name"]}},
}


def product(i: int, **fields: object) -> bytes:
    doc = {"id": f"p-{i:05d}", "title": f"thing {i}", "price": i * 0.5, "currency": "USD"}
    return orjson.dumps({**doc, **fields})


def lines_with_bad_ones(n: int = 3000) -> tuple[list[bytes], dict[int, str]]:
    """n products; some break the schema (line number -> the expected start of the error)."""
    lines = [product(i) for i in range(n)]
    bad = {
        10: ('{"id":"p-00009x","title":"t","price":"12,50"}', '/price: "12,50" is not of type "number"'),
        500: ('{"id":"p-00499x","price":1}', "/title: required property is missing"),
        1800: ('{"id":"p-01799x","title":"t","price":-1}', "/price: -1 is less than the minimum 0"),
        2500: ('{"id":"p-02499x","title":"t","price":1,"currency":"EURO"}', '/currency: "EURO" is not one of'),
        2999: ('{"id":"p-02998x","title":"t","price":1,"seller":{}}', "/seller/name: required property"),
    }  # fmt: skip
    for line_no, (raw, _) in bad.items():
        lines[line_no - 1] = raw.encode()
    lines.insert(1500, b"")  # a blank line: counted, not a reject
    shifted = {(k if k <= 1500 else k + 1): v[1] for k, v in bad.items()}
    return lines, shifted


@pytest.mark.parametrize("workers", ["0", "2"])
def test_records_that_break_the_schema_are_rejects_with_pointer_and_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], workers: str
) -> None:
    lines, bad = lines_with_bad_ones()
    src = write_lines(tmp_path / "in.jsonl", lines)
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    work = tmp_path / "w"
    with EmulatorThread(api_key=API_KEY) as emu:
        argv = ["load", "products", str(src), "--schema", str(schema), "--work-dir", str(work),
                "--base-url", emu.base_url, "--workers", workers, "--shard-records", "700",
                "--quiet", "--json"]  # fmt: skip
        code = cli.main(argv)
        result = json.loads(capsys.readouterr().out)
        assert code == 3
        good = [line for i, line in enumerate(lines, 1) if line and i not in bad]
        assert_exactly_once(emu, good)
    rejects = read_rejects(work)
    assert {r["line"]: r["error"] for r in rejects}.keys() == bad.keys()
    for r in rejects:
        assert r["error"].startswith(bad[r["line"]]), r
        assert r["source"] == str(src) and r["raw"] == lines[r["line"] - 1].decode()
    totals = read_manifest(work)["totals"]
    assert totals["records"] + totals["rejected"] + totals["blank"] == totals["lines"] == 3001
    assert (totals["rejected"], totals["blank"]) == (5, 1)
    shapes = {r["shape"]: r["count"] for r in result["reasons"]}
    assert shapes['/price: … is not of type "number"'] == 1
    assert sum(shapes.values()) == 5


def test_workers_and_no_workers_reject_the_same_lines_alike(tmp_path: Path) -> None:
    lines, _ = lines_with_bad_ones(6000)
    src = write_lines(tmp_path / "in.jsonl", lines)
    seen = []
    for workers in (0, 2):
        work = tmp_path / f"w{workers}"
        result = bulkload.load("products", [str(src)], dry_run=True, work_dir=work,
                               schema=SCHEMA, workers=workers, block_size=64 * 1024)  # fmt: skip
        assert result.rejected == 5
        seen.append((read_rejects(work), [s["md5"] for s in read_manifest(work)["shards"]]))
    assert seen[0] == seen[1], "the same rejects, the same shards"


def test_the_schema_sees_the_record_as_uploaded(tmp_path: Path) -> None:
    """With --id-field the uploaded record gets its id: the schema requires it, and passes."""
    src = write_lines(tmp_path / "in.jsonl", [b'{"sku":"a1","title":"t","price":1}',
                                              b'{"sku":"a2","title":"t"}'])  # fmt: skip
    result = bulkload.load("products", [str(src)], dry_run=True, work_dir=tmp_path / "w",
                           schema=SCHEMA, id_field="sku")  # fmt: skip
    assert (result.records, result.rejected) == (1, 1)
    (reject,) = read_rejects(tmp_path / "w")
    assert reject["line"] == 2 and reject["error"] == "/price: required property is missing"


def test_a_bad_schema_is_a_usage_error_before_any_input_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "schema.json"
    bad.write_text('{"type": "object", "properties": {"seller": {"$ref": "#/$defs/nobody"}}}')
    argv = ["load", "products", str(tmp_path / "missing.jsonl"), "--schema", str(bad),
            "--dry-run", "--work-dir", str(tmp_path / "w")]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"--schema {bad}" in err and "#/$defs/nobody" in err
    assert "missing.jsonl" not in err, "nothing read: the schema is checked first"
    assert not (tmp_path / "w").exists()
    with pytest.raises(bulkload.ConfigError, match="no such file"):
        bulkload.Loader("products", dry_run=True, schema=str(tmp_path / "nope.json"))


def test_a_resume_with_another_schema_is_refused(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "in.jsonl", [product(i) for i in range(10)])
    bulkload.load("products", [str(src)], dry_run=True, work_dir=tmp_path / "w", schema=SCHEMA)
    stricter = {**SCHEMA, "required": [*SCHEMA["required"], "seller"]}
    with pytest.raises(bulkload.StateError, match="schema was 'sha256:"):
        bulkload.load("products", [str(src)], dry_run=True, work_dir=tmp_path / "w",
                      schema=stricter)  # fmt: skip


def test_a_file_the_schema_refuses_whole_is_not_called_the_wrong_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every line a record, every record refused by the schema: the note blames the
    schema choice, not the file's format."""
    src = write_lines(
        tmp_path / "a.jsonl", [orjson.dumps({"id": str(i), "x": i}) for i in range(5)]
    )
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "additionalProperties": False,
                                  "properties": {"id": {"type": "string"}}}))  # fmt: skip
    argv = ["load", "ns", str(src), "--dry-run", "--schema", str(schema), "--work-dir",
            str(tmp_path / "w"), "--quiet"]  # fmt: skip
    assert cli.main(argv) == 3
    out = capsys.readouterr().out
    assert "all 5 lines were rejected by the schema (line 1: /x:" in out
    assert "is --schema the schema of this data?" in out
    assert "looks like" not in out
