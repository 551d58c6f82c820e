"""What ``--schema`` costs: JSON Schema validators on the benchmark's product records.

    python -m benchmarks.bench_schema [--size-mib 256] [--repeat 2] [--workers 2] [--quick]

Every row checks the same ~600-byte product records (``benchmarks/datasets.py``) against
``benchmarks/product-schema.json`` (15 properties, two nested objects, arrays, ``required``,
``enum``, ``pattern``, ``minimum``, ``format``, ``$ref`` to ``$defs``; every record passes),
and counts everything a loader would pay per line: turning the line into what the validator
takes (a dict: none of the three can read JSON text) and the check. MB/s is wall time,
CPU s/GB is user + system seconds per 10^9 bytes (children included), best of ``--repeat``.

In the same run, for the ratio: bulkload's own validation without a schema
(``validate_chunk``, one process), then with :class:`bulkload._validate.schema.SchemaCheck` after it,
in one process and in ``--workers`` processes over 8 MiB ranges.

The table is printed and saved, with the commit and the machine, to
``bench-results/schema-<UTC time>.json`` and ``bench-results/schema-latest.json``.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import multiprocessing
import os
import platform
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema_rs
import msgspec
import orjson
import psutil  # type: ignore[import-untyped]

from bulkload._validate import ValidateOptions, validate_chunk
from bulkload._validate.rules import _ID_DECODER
from bulkload._validate.schema import SchemaCheck
from bulkload._validate.serverjson import certify

from ._common import RESULTS_DIR, GiB, MiB, cpu, git_info, log
from .datasets import ensure_data

SCHEMA_PATH = Path(__file__).with_name("product-schema.json")
BLOCK = 8 * MiB
#: The slow validators get a sample: the reference jsonschema checks ~5 MB/s here.
SAMPLE_SLOW = 4 * MiB
SAMPLE_MEDIUM = 32 * MiB
#: Whole-block decoding holds a block's records at once; measured on a sample.
SAMPLE_BATCH = 64 * MiB


def blocks_of(path: Path, limit: int) -> list[bytes]:
    """About the first ``limit`` bytes of ``path`` as blocks of ~8 MiB of whole lines."""
    out: list[bytes] = []
    rest = b""
    with path.open("rb") as f:
        while (left := limit - sum(map(len, out))) > 0 and (block := f.read(min(BLOCK, left))):
            block = rest + block
            cut = block.rfind(b"\n") + 1  # 0: no whole line yet, read on
            if cut:
                out.append(block[:cut])
            rest = block[cut:]
    return out


def measure(
    name: str, blocks: list[bytes], fn: Callable[[bytes], int], repeat: int
) -> dict[str, Any]:
    """Best of ``repeat`` runs of ``fn`` over every block (``fn`` returns records checked)."""
    nbytes = sum(map(len, blocks))
    runs = []
    for _ in range(repeat):
        wall, start = time.perf_counter(), cpu()
        records = sum(fn(block) for block in blocks)
        wall, used = time.perf_counter() - wall, cpu() - start
        runs.append(
            {
                "mb_s": nbytes / wall / 1e6,
                "records_s": records / wall,
                "cpu_s_per_gb": used / (nbytes / 1e9),
                "bytes": nbytes,
                "records": records,
            }
        )
    best: dict[str, Any] = dict(min(runs, key=lambda r: r["cpu_s_per_gb"]))
    best["runs_cpu_s_per_gb"] = [round(r["cpu_s_per_gb"], 3) for r in runs]
    log(
        f"  {name:58} {best['mb_s']:7,.0f} MB/s {best['records_s']:11,.0f} rec/s "
        f"{best['cpu_s_per_gb']:6.2f} CPU s/GB"
    )
    return best


def lines(block: bytes) -> Iterator[bytes]:
    return iter(io.BytesIO(block))


def with_invalid(blocks: list[bytes], every: int) -> list[bytes]:
    """The blocks with every ``every``-th record's price turned into a string ("12,50"
    style), so that it fails the schema: the cost of explaining rejects."""
    out = []
    for block in blocks:
        rows = block.splitlines(keepends=True)
        for i in range(0, len(rows), every):
            rows[i] = (
                rows[i]
                .replace(b'"price":', b'"price":"', 1)
                .replace(b',"currency"', b'","currency"', 1)
            )
        out.append(b"".join(rows))
    return out


# --- the rows -----------------------------------------------------------------------------


def single_process_rows(path: Path, size: int, repeat: int) -> dict[str, Any]:
    schema = json.loads(SCHEMA_PATH.read_text())
    blocks = blocks_of(path, size)
    check = SchemaCheck(SCHEMA_PATH)
    rs = jsonschema_rs.validator_for(schema, validate_formats=True)
    rs_no_formats = jsonschema_rs.validator_for(schema)
    decode = msgspec.json.Decoder().decode
    opts = ValidateOptions()
    rows: dict[str, Any] = {}

    def row(key: str, name: str, fn: Callable[[bytes], int], sample: int | None = None) -> None:
        rows[key] = measure(name, blocks_of(path, sample) if sample else blocks, fn, repeat)

    def check_all(block: bytes) -> int:
        ends = ends_of(block)
        check.check_block(block, ends)
        return len(ends)

    log(f"{path.name}: first {sum(map(len, blocks)) / 1e6:,.0f} MB, best of {repeat}")
    row(
        "bulkload_validate",
        "bulkload validate_chunk, no schema (the baseline)",
        lambda b: len(validate_chunk(b, 1, opts).ends),
    )
    row(
        "id_decode",
        "bulkload's fast path: msgspec id-only decode per line",
        lambda b: count(map(_ID_DECODER.decode, lines(b))),
    )
    row("decode_msgspec", "decode only: msgspec per line", lambda b: count(map(decode, lines(b))))
    row(
        "decode_orjson",
        "decode only: orjson per line",
        lambda b: count(map(orjson.loads, lines(b))),
    )
    row(
        "rs_msgspec",
        "jsonschema-rs: msgspec per line + is_valid",
        lambda b: sum(map(rs.is_valid, map(decode, lines(b)))),
    )
    row(
        "rs_orjson",
        "jsonschema-rs: orjson per line + is_valid",
        lambda b: sum(map(rs.is_valid, map(orjson.loads, lines(b)))),
    )
    row(
        "rs_no_formats",
        "jsonschema-rs: same, format not checked",
        lambda b: sum(map(rs_no_formats.is_valid, map(decode, lines(b)))),
    )
    dicts = {id(b): list(map(decode, lines(b))) for b in blocks_of(path, SAMPLE_BATCH)}
    row(
        "rs_dicts",
        "jsonschema-rs: is_valid alone, on ready dicts",
        lambda b: sum(map(rs.is_valid, dicts[id(b)])),
        SAMPLE_BATCH,
    )
    dicts.clear()
    registry = jsonschema_rs.Registry([("urn:bulkload:record", schema)])
    rs_array = jsonschema_rs.validator_for(
        {"type": "array", "items": {"$ref": "urn:bulkload:record"}},
        registry=registry,
        validate_formats=True,
    )

    def one_call(block: bytes) -> int:
        records = decode_lines(block)
        return len(records) if rs_array.is_valid(records) else 0

    row(
        "rs_block_one_call",
        "jsonschema-rs: block decoded at once, one is_valid(list)",
        one_call,
        SAMPLE_BATCH,
    )
    row(
        "rs_block_each",
        "jsonschema-rs: block decoded at once, is_valid each",
        lambda b: sum(map(rs.is_valid, decode_lines(b))),
        SAMPLE_BATCH,
    )

    def check_valid(block: bytes) -> int:
        ends = ends_of(block)
        failed = check.check_block(block, ends)
        assert not failed, f"the schema rejects a benchmark record: {failed[0]}"
        return len(ends)

    row("check_block", "SchemaCheck.check_block (bulkload's, all valid)", check_valid)
    row(
        "check_per_line",
        "SchemaCheck.check per line",
        lambda b: sum(check.check(line) is None for line in lines(b)),
        SAMPLE_MEDIUM,
    )

    def validate_and_check(block: bytes) -> int:
        result = validate_chunk(block, 1, opts)
        check.check_block(result.data, result.ends)
        return len(result.ends)

    row(
        "validate_and_check",
        "bulkload validate_chunk + check_block (one process)",
        validate_and_check,
    )
    row(
        "fused",
        "fast path fused with the schema: check_lines + certify",
        lambda b: fused_fast_path(b, check),
    )
    rows["check_block_1pct_invalid"] = measure(
        "SchemaCheck.check_block, 1 % of records invalid",
        with_invalid(blocks_of(path, SAMPLE_MEDIUM), 100),
        check_all,
        repeat,
    )
    rows["check_block_all_invalid"] = measure(
        "SchemaCheck.check_block, every record invalid",
        with_invalid(blocks_of(path, SAMPLE_SLOW), 1),
        check_all,
        repeat,
    )
    rows.update(other_validators(path, schema, repeat))
    return rows


def other_validators(path: Path, schema: dict[str, Any], repeat: int) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    try:
        import fastjsonschema
    except ImportError:
        log("  fastjsonschema: not installed (pip install fastjsonschema), skipped")
        rows["fastjsonschema"] = {"error": "not installed"}
    else:
        # fastjsonschema knows drafts 4, 6 and 7; it resolves "#/$defs/..." as a plain
        # JSON pointer, so this schema compiles and every record passes.
        fast = fastjsonschema.compile(schema)

        def fast_block(b: bytes) -> int:
            n = 0
            for line in lines(b):
                fast(orjson.loads(line))
                n += 1
            return n

        rows["fastjsonschema"] = measure(
            f"fastjsonschema {fastjsonschema.VERSION}: orjson + validate",
            blocks_of(path, SAMPLE_MEDIUM),
            fast_block,
            repeat,
        )
    import jsonschema  # type: ignore[import-untyped]

    reference = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    rows["jsonschema"] = measure(
        "jsonschema (reference): orjson + is_valid",
        blocks_of(path, SAMPLE_SLOW),
        lambda b: sum(map(reference.is_valid, map(orjson.loads, lines(b)))),
        1,
    )
    return rows


def decode_lines(block: bytes) -> list[Any]:
    records: list[Any] = msgspec.json.Decoder().decode_lines(block)
    return records


def ends_of(block: bytes) -> list[int]:
    return list(itertools.accumulate(map(len, lines(block))))


def count(it: Iterator[Any]) -> int:
    return sum(1 for _ in it)


# --- worker processes ---------------------------------------------------------------------


def line_ranges(path: Path, size: int) -> list[tuple[int, int]]:
    """``size`` bytes of ``path`` cut into ~8 MiB ranges at line ends."""
    cuts = [0]
    with path.open("rb") as f:
        while cuts[-1] + BLOCK < size:
            f.seek(cuts[-1] + BLOCK)
            cuts.append(f.tell() + f.read(1 << 20).index(b"\n") + 1)
    cuts.append(cuts[-1] + blocks_of_tail(path, cuts[-1], size))
    return list(itertools.pairwise(cuts))


def blocks_of_tail(path: Path, start: int, size: int) -> int:
    with path.open("rb") as f:
        f.seek(start)
        data = f.read(max(size - start, 0))
    return data.rindex(b"\n") + 1 if b"\n" in data else 0


def fused_fast_path(data: bytes, check: SchemaCheck) -> int:
    """What ``validate_chunk``'s fast path would do with a schema, one decode per line for
    both rules (``check_lines`` in place of its id-only decode), then its server rules
    (``certify``). An emulation until it is wired: the rest of the fast path is the same."""
    failed = check.check_lines(data)
    ends = ends_of(data)
    if failed != [] or not certify(data, ends):
        raise AssertionError(f"the fast path would decline a benchmark block: {failed}")
    return len(ends)


def _work(path: str, a: int, b: int, check: SchemaCheck | None, fused: bool) -> int:
    """In a worker: read the range and validate it as bulkload does, with the schema
    after it (``check_block``), or fused (``check_lines``), or without."""
    with open(path, "rb") as f:
        f.seek(a)
        data = f.read(b - a)
    if check is not None and fused:
        return fused_fast_path(data, check)
    result = validate_chunk(data, 1, ValidateOptions())
    if check is not None and check.check_block(result.data, result.ends):
        raise AssertionError("a record failed the schema")
    return len(result.ends)


def workers_cpu(pool: ProcessPoolExecutor) -> float:
    """CPU seconds of the pool's live workers (not counted in ``cpu()`` until they are
    reaped, and the pool is kept for all runs)."""
    total = 0.0
    for pid in list(pool._processes):
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def pool_rows(path: Path, size: int, workers: int, repeat: int) -> dict[str, Any]:
    ranges = line_ranges(path, size)
    nbytes = ranges[-1][1]
    check = SchemaCheck(SCHEMA_PATH)
    rows: dict[str, Any] = {}
    # Forked from this one-thread process so that the workers' CPU time is counted here;
    # one pool for both rows, alternated, so that both see the same machine.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        list(
            pool.map(_work, *zip(*[(str(path), 0, 1, None, False)] * workers, strict=True))
        )  # warm
        variants = {
            "pool_validate": (None, False),
            "pool_validate_schema": (check, False),
            "pool_fused": (check, True),
        }
        runs: dict[str, list[dict[str, float]]] = {key: [] for key in variants}
        for _ in range(repeat):
            for key, (arg, fused) in variants.items():
                wall, start = time.perf_counter(), cpu() + workers_cpu(pool)
                records = sum(
                    pool.map(
                        _work,
                        *zip(*[(str(path), a, b, arg, fused) for a, b in ranges], strict=True),
                    )
                )
                wall = time.perf_counter() - wall
                used = cpu() + workers_cpu(pool) - start
                runs[key].append(
                    {
                        "mb_s": nbytes / wall / 1e6,
                        "records_s": records / wall,
                        "cpu_s_per_gb": used / (nbytes / 1e9),
                        "bytes": nbytes,
                        "records": records,
                    }
                )
    names = {
        "pool_validate": f"bulkload validate_chunk, {workers} processes, no schema",
        "pool_validate_schema": f"bulkload validate_chunk + check_block, {workers} processes",
        "pool_fused": f"fast path fused with the schema (check_lines), {workers} processes",
    }
    for key, name in names.items():
        best: dict[str, Any] = dict(max(runs[key], key=lambda r: r["mb_s"]))
        best["runs_mb_s"] = [round(r["mb_s"]) for r in runs[key]]
        rows[key] = best
        log(
            f"  {name:58} {best['mb_s']:7,.0f} MB/s {best['records_s']:11,.0f} rec/s "
            f"{best['cpu_s_per_gb']:6.2f} CPU s/GB"
        )
    return rows


# --- the table ----------------------------------------------------------------------------

ORDER = [
    ("bulkload_validate", "bulkload validate_chunk, no schema (baseline)"),
    ("id_decode", "  its msgspec id-only decode per line, alone"),
    ("decode_msgspec", "decode only: msgspec per line"),
    ("decode_orjson", "decode only: orjson per line"),
    ("rs_dicts", "jsonschema-rs is_valid alone, on ready dicts"),
    ("rs_msgspec", "jsonschema-rs: msgspec per line + is_valid"),
    ("rs_orjson", "jsonschema-rs: orjson per line + is_valid"),
    ("rs_no_formats", "jsonschema-rs: msgspec + is_valid, format off"),
    ("rs_block_each", "jsonschema-rs: block decoded at once, is_valid each"),
    ("rs_block_one_call", "jsonschema-rs: block decoded at once, one call"),
    ("fastjsonschema", "fastjsonschema: orjson per line + validate"),
    ("jsonschema", "jsonschema (reference): orjson per line + is_valid"),
    ("check_block", "SchemaCheck.check_block, all valid"),
    ("check_per_line", "SchemaCheck.check, per line"),
    ("check_block_1pct_invalid", "SchemaCheck.check_block, 1 % invalid"),
    ("check_block_all_invalid", "SchemaCheck.check_block, all invalid"),
    ("validate_and_check", "validate_chunk + check_block, 1 process"),
    ("fused", "fast path fused: check_lines + certify, 1 process"),
    ("pool_validate", "validate_chunk, N processes, no schema"),
    ("pool_validate_schema", "validate_chunk + check_block, N processes"),
    ("pool_fused", "fast path fused: check_lines + certify, N processes"),
]


def render(results: dict[str, Any]) -> str:
    rows = results["rows"]
    head = ("measurement", "MB/s", "records/s", "CPU s/GB", "sample MB")
    cells = []
    for key, name in ORDER:
        r = rows.get(key)
        if r is None:
            continue
        if "error" in r:
            cells.append((name, "-", "-", "-", r["error"]))
            continue
        cells.append(
            (
                name,
                f"{r['mb_s']:,.0f}",
                f"{r['records_s']:,.0f}",
                f"{r['cpu_s_per_gb']:.2f}",
                f"{r['bytes'] / 1e6:,.0f}",
            )
        )
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head))]

    def line(values: tuple[str, ...]) -> str:
        return "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    out = [
        f"--schema cost  {results['started_at']}  commit {(results.get('commit') or '?')[:10]}"
        + (" + uncommitted changes" if results.get("dirty") else ""),
        f"{results['cores']} cores, Python {results['python']}, jsonschema-rs "
        f"{results['versions']['jsonschema_rs']}; {results['input']}; best of {results['repeat']}",
        "",
        line(head),
        "  ".join("-" * w for w in widths),
        *map(line, cells),
        "",
        *results["verdict"],
    ]
    return "\n".join(out)


#: bulkload end to end on the 1 GiB products, 2 workers, no schema: CPU s/GB of its process
#: tree (README, Performance). The issue's target, the load with --schema at >= 0.6x the speed
#: without, leaves the schema at most E × (1/0.6 - 1) = 0.67 E on a machine that is
#: saturated either way. An estimate until make bench measures both runs.
E2E_CPU_S_PER_GB = 4.2
TARGET = 0.6


def verdict(rows: dict[str, Any]) -> list[str]:
    """The numbers that matter for the issue's target, in words."""
    out = []
    base, both = rows.get("bulkload_validate"), rows.get("validate_and_check")
    if base and both:
        added = both["cpu_s_per_gb"] - base["cpu_s_per_gb"]
        out += [
            f"one process: the schema check adds {added:.2f} CPU s/GB to validation's "
            f"{base['cpu_s_per_gb']:.2f} ({both['mb_s']:,.0f} against {base['mb_s']:,.0f} MB/s, "
            f"{both['mb_s'] / base['mb_s']:.2f}×)",
            f"end to end (estimate, CPU-bound): ~{E2E_CPU_S_PER_GB} CPU s/GB without a schema → "
            f"{E2E_CPU_S_PER_GB / (E2E_CPU_S_PER_GB + added):.2f}× the speed with it (target "
            f"≥ {TARGET}×: at most {E2E_CPU_S_PER_GB * (1 / TARGET - 1):.1f} CPU s/GB added)",
        ]
    fused = rows.get("fused")
    if base and fused:
        added = fused["cpu_s_per_gb"] - base["cpu_s_per_gb"]
        out.append(
            f"fused into the fast path: adds {added:.2f} CPU s/GB → end to end (estimate) "
            f"{E2E_CPU_S_PER_GB / (E2E_CPU_S_PER_GB + added):.2f}×"
        )
    pool, pool_s = rows.get("pool_validate"), rows.get("pool_validate_schema")
    pool_f = rows.get("pool_fused")
    if pool and pool_s and pool_f:
        out.append(
            f"worker processes: {pool_s['mb_s']:,.0f} MB/s with the schema after validation, "
            f"{pool_f['mb_s']:,.0f} fused, against {pool['mb_s']:,.0f} without "
            f"({pool_s['mb_s'] / pool['mb_s']:.2f}×, {pool_f['mb_s'] / pool['mb_s']:.2f}×): "
            "the validation ceiling with --schema"
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="MiB of products checked")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--quick", action="store_true", help="64 MiB, one run each")
    args = parser.parse_args(argv)
    size = (64 if args.quick else args.size_mib) * MiB
    repeat = 1 if args.quick else args.repeat
    # The 1 GiB products file of make bench (its first 256 MiB are the quick run's file).
    path = ensure_data(256 * MiB if args.quick else GiB)
    started = datetime.now(UTC)
    rows = single_process_rows(path, size, repeat)
    log(f"{args.workers} worker processes over 8 MiB ranges:")
    rows.update(pool_rows(path, size, args.workers, repeat))
    results = {
        "started_at": started.strftime("%Y-%m-%d %H:%M UTC"),
        **git_info(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions(),
        "input": f"{path.name}, first {size // MiB} MiB",
        "schema": str(SCHEMA_PATH.name),
        "repeat": repeat,
        "load_average": os.getloadavg()[0],
        "rows": rows,
    }
    results["verdict"] = verdict(rows)
    table = render(results)
    print(table)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    doc = json.dumps(results, indent=2) + "\n"
    saved = RESULTS_DIR / f"schema-{stamp}.json"
    saved.write_text(doc)
    (RESULTS_DIR / "schema-latest.json").write_text(doc)
    log(f"saved {saved}")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("jsonschema_rs", "fastjsonschema", "jsonschema", "msgspec", "orjson"):
        try:
            out[name] = version(name.replace("_", "-"))
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


if __name__ == "__main__":
    main()
