"""The one table of ``make bench``: rows from the results, the targets, and saving.

The results are one JSON-able dict (see ``run.py``); everything here reads it and
touches nothing else, so a saved ``bench-results/*.json`` can be re-rendered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard

from ._common import RESULTS_DIR

#: The targets of issue 6.
E2E_VS_CEILING = 0.8
E2E_VS_NAIVE = 5.0
#: Issue 16: end to end with --schema against without, same run.
SCHEMA_VS_PLAIN = 0.6
RSS_LIMIT_MB = 150.0
#: The targets of issue 14: compressed parts end to end against the same records plain,
#: many small files against the one big file, bulkload's CPU against the work floor, and
#: its TLS overhead against curl's.
COMPRESSED_VS_PLAIN = 0.8
MANY_VS_BIG = 0.6
CPU_VS_FLOOR = 1.25
HTTPS_CPU_SLACK = 1.2
#: "The same for 1 and 4 GiB": within this fraction of the larger. Sampling jitter and
#: allocator noise stay well inside it; growth with the input does not.
RSS_SAME_WITHIN = 0.10
HELP_LIMIT_S = 0.3
COLUMNS = ("dataset", "measurement", "MB/s", "records/s", "CPU s/GB", "peak RSS MB", "notes")
NUMERIC = {2, 3, 4, 5}


def ok(value: Any) -> TypeGuard[dict[str, Any]]:
    """A measurement that worked (a failed one is ``{"error": ...}``)."""
    return isinstance(value, dict) and "error" not in value


def validation_ceiling(ceilings: dict[str, Any]) -> float | None:
    """The faster of the two validation ceilings (1 process, all cores), MB/s."""
    speeds = [ceilings[k]["mb_s"] for k in ("validate_1", "validate_all") if ok(ceilings.get(k))]
    return max(speeds) if speeds else None


def upload_ceiling(ceilings: dict[str, Any]) -> float | None:
    upload = ceilings.get("upload")
    return upload["mb_s"] if ok(upload) else None


@dataclass
class Row:
    dataset: str
    what: str
    mb_s: float | None = None
    records_s: float | None = None
    cpu_s_per_gb: float | None = None
    rss_mb: float | None = None
    note: str = ""

    @classmethod
    def of(cls, dataset: str, what: str, value: Any, note: str = "") -> Row:
        if not ok(value):
            return cls(dataset, what, note=f"error: {str(value.get('error'))[:90]}")
        return cls(
            dataset,
            what,
            value.get("mb_s"),
            value.get("records_s"),
            value.get("cpu_s_per_gb"),
            value.get("peak_rss_mb"),
            note,
        )


def _pss(run: dict[str, Any]) -> str:
    """The run's peak PSS in words, or '' (older results, no /proc PSS)."""
    pss = run.get("peak_pss_mb")
    return (
        f"PSS {pss:.0f} MB (shared pages counted once; RSS counts them in every process)"
        if pss
        else ""
    )


def _outside(run: dict[str, Any]) -> str:
    """The seconds a bulkload run spent outside its own clock (start-up, exit)."""
    elapsed = run.get("bulkload_elapsed_s")
    return "" if elapsed is None else f"; start+exit {run['wall_s'] - elapsed:.2f} s"


def dataset_rows(name: str, result: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    ceilings = result.get("ceilings", {})
    if "read" in ceilings:
        lines = ceilings.get("read_lines")
        note = f"bulkload's line reader (iter_chunks): {lines['mb_s']:,.0f}" if ok(lines) else ""
        if ok(ceilings["read"]) and ceilings["read"].get("compressed"):
            note = "compressed bytes; " + note + " decompressed (open_stream, one process)"
        rows.append(Row.of(name, "ceiling: read the bytes (page cache)", ceilings["read"], note))
    if "validate_1" in ceilings:
        rows.append(Row.of(name, "ceiling: validate, 1 process", ceilings["validate_1"]))
        every = ceilings["validate_all"]
        workers = every.get("workers", "all")
        how = (
            "one file per task, decoded in the worker (open_stream)"
            if every.get("method") == "files"
            else "byte ranges to a process pool"
        )
        rows.append(Row.of(name, f"ceiling: validate, {workers} processes", every, how))
    if "upload" in ceilings:
        up = ceilings["upload"]
        note = ""
        if ok(up):
            note = (
                f"{up['pieces']} PUTs by {up['processes']} curls; sink "
                f"{up['sink_cores']:.2f} cores, {up['sink_cpu_s_per_gb']:.2f} CPU s/GB"
            )
        rows.append(Row.of(name, "ceiling: upload, 8 parallel curl -T", up, note))
    if "naive" in result:
        naive = result["naive"]
        note = f"{naive['shards']} shards" if ok(naive) else ""
        rows.append(Row.of(name, "naive loader (httpx, one at a time)", naive, note))
    if "bulkload" in result:
        e2e = result["bulkload"]
        note = ""
        if ok(e2e):
            note = f"{e2e['uploads']} shards; sink {e2e['sink_cores']:.2f} cores" + _outside(e2e)
            note += f"; peak PSS {e2e['peak_pss_mb']:.0f} MB" if e2e.get("peak_pss_mb") else ""
        rows.append(Row.of(name, "bulkload end to end", e2e, note))
    if "bulkload_dry" in result:
        dry = result["bulkload_dry"]
        note = f"{dry['shards']} shards written, not sent" + _outside(dry) if ok(dry) else ""
        rows.append(Row.of(name, "bulkload --dry-run (no network)", dry, note))
    if "bulkload_schema" in result:
        checked = result["bulkload_schema"]
        note = (
            "benchmarks/product-schema.json on every record" + _outside(checked)
            if ok(checked)
            else ""
        )
        rows.append(Row.of(name, "bulkload end to end --schema", checked, note))
    decompress = result.get("decompress")
    if isinstance(decompress, dict) and not ok(decompress):
        rows.append(Row.of(name, "decompress", decompress))
    elif decompress:
        for label, r in decompress.items():
            note = f"{r['input_mb_s']:,.0f} MB/s of compressed input; MB/s and CPU of output"
            rows.append(Row.of(name, f"decompress: {label}", r, note))
    rows += _floor_rows(name, result)
    rows += _https_rows(name, result.get("https"))
    return rows


def _floor_rows(name: str, result: dict[str, Any]) -> list[Row]:
    floor = result.get("floor")
    if floor is None:
        return []
    if not ok(floor):
        return [Row.of(name, "work floor", floor)]
    parts = [
        ("decompress (open_stream)", floor["decompress"]),
        ("read + validate (validate_chunk)", floor["read_validate"]),
        ("MD5", floor["md5"]),
        ("send: 8 curl -T, HTTP", floor["send_http"]),
    ]
    if floor.get("send_https") is not None:
        parts.append(("send: 8 curl -T, HTTPS (not in the floor)", floor["send_https"]))
    rows = [
        Row(name, f"floor part: {label}", cpu_s_per_gb=value)
        for label, value in parts
        if value or "decompress" not in label
    ]
    e2e = result.get("bulkload")
    note = "the parts above, each alone, one process"
    if ok(e2e) and floor["floor"]:
        note = (
            f"bulkload {e2e['cpu_s_per_gb']:.2f} = {e2e['cpu_s_per_gb'] / floor['floor']:.2f}× it"
        )
    rows.append(Row(name, "work floor: their sum", cpu_s_per_gb=floor["floor"], note=note))
    return rows


def _tls_cost(https: dict[str, Any], who: str) -> float | None:
    plain, tls = https.get(f"{who}_http"), https.get(f"{who}_https")
    if ok(plain) and ok(tls):
        cost: float = tls["cpu_s_per_gb"] - plain["cpu_s_per_gb"]
        return cost
    return None


def _https_rows(name: str, https: dict[str, Any] | None) -> list[Row]:
    if not https:
        return []
    rows = []
    labels = {
        "curl_http": "HTTP: 8 curl -T",
        "curl_https": "HTTPS: 8 curl -T --cacert",
        "bulkload_http": "HTTP: bulkload",
        "bulkload_https": "HTTPS: bulkload --ca-bundle",
    }
    for key, label in labels.items():
        if key not in https:
            continue
        value = https[key]
        note = ""
        if ok(value):
            note = (
                f"sink {value['sink_cores']:.2f} cores, {value['sink_cpu_s_per_gb']:.2f} CPU s/GB"
            )
        cost = _tls_cost(https, key.split("_")[0])
        if key.endswith("https") and cost is not None:
            note = f"TLS costs {cost:+.2f} CPU s/GB; " + note
        rows.append(Row.of(name, label, value, note))
    return rows


def all_rows(results: dict[str, Any]) -> list[Row]:
    rows = [row for name, r in results["datasets"].items() for row in dataset_rows(name, r)]
    for size, run in results.get("memory", {}).items():
        note = ""
        if ok(run) and run.get("rss_timeline_mb"):
            timeline = run["rss_timeline_mb"]
            half = timeline[len(timeline) // 2][1]
            note = f"RSS at half time {half:.0f}, at the end {timeline[-1][1]:.0f}"
        what = f"bulkload, {size} input, defaults" if size in ("1GiB", "4GiB") else size
        rows.append(Row.of("memory", what, run, note))
    hashes = results.get("hash")
    if isinstance(hashes, dict) and not ok(hashes):
        rows.append(Row.of("hash", "hashes", hashes))
    elif hashes:
        for name, r in hashes.items():
            rows.append(Row.of("hash", f"{name}, 1 stream", r["one"], "4 MiB slices, in memory"))
            rows.append(Row.of("hash", f"{name}, {r['n_streams']} streams", r["streams"]))
    sweep = [p for p in results.get("sweep", []) if ok(p)]
    if sweep:
        best = max(sweep, key=lambda p: p["mb_s"])
        worst = min(sweep, key=lambda p: p["mb_s"])
        what = f"sweep best: -c {best['concurrency']} --shard-size {best['shard_size'] >> 20}MiB"
        note = (
            f"worst {worst['mb_s']:,.0f} (-c {worst['concurrency']}, "
            f"{worst['shard_size'] >> 20}MiB); {results.get('chart', '')}"
        )
        rows.append(Row.of("chart", what, best, note))
    return rows


def _target(name: str, passed: bool | None, value: str, note: str = "") -> dict[str, Any]:
    verdict = "n/a" if passed is None else "PASS" if passed else "FAIL"
    return {"target": name, "passed": passed, "verdict": verdict, "value": value, "note": note}


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the issue that this run measured, PASS/FAIL."""
    targets: list[dict[str, Any]] = []
    for name, result in results["datasets"].items():
        e2e = result.get("bulkload")
        if not ok(e2e):
            continue
        ceilings = result.get("ceilings", {})
        limit_v, limit_u = validation_ceiling(ceilings), upload_ceiling(ceilings)
        if limit_v is not None and limit_u is not None:
            bound = min(limit_v, limit_u)
            ratio = e2e["mb_s"] / bound
            which = "validation" if limit_v <= limit_u else "upload"
            targets.append(
                _target(
                    f"{name}: end to end ≥ {E2E_VS_CEILING}× min ceiling",
                    ratio >= E2E_VS_CEILING,
                    f"{ratio:.2f}×",
                    f"of {bound:,.0f} MB/s, the {which} ceiling",
                )
            )
        naive = result.get("naive")
        if ok(naive):
            ratio = e2e["mb_s"] / naive["mb_s"]
            targets.append(
                _target(
                    f"{name}: end to end ≥ {E2E_VS_NAIVE:g}× naive",
                    ratio >= E2E_VS_NAIVE,
                    f"{ratio:.2f}×",
                    f"naive: {naive['mb_s']:,.0f} MB/s",
                )
            )
    targets += _issue14_targets(results)
    targets += _schema_targets(results)
    memory = results.get("memory")
    if memory is not None:
        name = f"peak RSS ≤ {RSS_LIMIT_MB:.0f} MB, 1 GiB ≈ 4 GiB (defaults)"
        one, four = memory.get("1GiB"), memory.get("4GiB")
        if ok(one) and ok(four):
            a, b = one["peak_rss_mb"], four["peak_rss_mb"]
            same = abs(a - b) <= RSS_SAME_WITHIN * max(a, b)
            note = "" if same else f"differ by more than {RSS_SAME_WITHIN:.0%}"
            passed = max(a, b) <= RSS_LIMIT_MB and same
            targets.append(_target(name, passed, f"{a:.0f} MB / {b:.0f} MB", note))
        else:
            targets.append(_target(name, None, "-", "a run failed"))
        edge = {k: v for k, v in memory.items() if k not in ("1GiB", "4GiB")}
        if edge:
            worst = max((v["peak_rss_mb"] for v in edge.values() if ok(v)), default=None)
            passed = (
                None if worst is None or not all(map(ok, edge.values())) else worst <= RSS_LIMIT_MB
            )
            targets.append(
                _target(
                    f"peak RSS ≤ {RSS_LIMIT_MB:.0f} MB on the input edge cases",
                    passed,
                    "-" if worst is None else f"{worst:.0f} MB at most",
                    ", ".join(edge),
                )
            )
    help_ = results.get("help")
    if ok(help_):
        for name, seconds in help_.items():
            targets.append(
                _target(
                    f"{name} < {HELP_LIMIT_S} s",
                    seconds < HELP_LIMIT_S,
                    f"{seconds:.3f} s",
                    "best of 5",
                )
            )
    elif help_ is not None:
        targets.append(_target("bulkload --help", None, "-", str(help_["error"])))
    return targets


def _schema_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 16: checking every record against a realistic schema keeps ≥ 0.6× the speed."""
    out = []
    for name, result in results["datasets"].items():
        plain, checked = result.get("bulkload"), result.get("bulkload_schema")
        if checked is None:
            continue
        if not (ok(plain) and ok(checked)):
            out.append(_target(f"{name}: --schema ≥ {SCHEMA_VS_PLAIN}× without", None, "-",
                               "a run failed"))  # fmt: skip
            continue
        ratio = checked["mb_s"] / plain["mb_s"]
        out.append(
            _target(
                f"{name}: --schema ≥ {SCHEMA_VS_PLAIN}× without",
                ratio >= SCHEMA_VS_PLAIN,
                f"{ratio:.2f}×",
                f"{checked['mb_s']:,.0f} against {plain['mb_s']:,.0f} MB/s, same run",
            )
        )
    return out


def _named(results: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    """The end-to-end run of the dataset whose name starts with ``prefix``, if it worked."""
    for name, result in results["datasets"].items():
        if name.startswith(prefix) and ok(result.get("bulkload")):
            run: dict[str, Any] = result["bulkload"]
            return run
    return None


def _issue14_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    targets = []
    plain = _named(results, "products-")
    for prefix, what, factor in (
        ("gz-", ".jsonl.gz parts", COMPRESSED_VS_PLAIN),
        ("zst-", ".jsonl.zst parts", COMPRESSED_VS_PLAIN),
        ("many-", "many small files", MANY_VS_BIG),
    ):
        run = _named(results, prefix)
        if plain is None or run is None:
            continue
        ratio = run["mb_s"] / plain["mb_s"]
        targets.append(
            _target(
                f"{what} end to end ≥ {factor}× the plain big file",
                ratio >= factor,
                f"{ratio:.2f}×",
                f"{run['mb_s']:,.0f} against {plain['mb_s']:,.0f} MB/s",
            )
        )
    for name, result in results["datasets"].items():
        e2e, floor = result.get("bulkload"), result.get("floor")
        if ok(e2e) and ok(floor) and floor.get("floor"):
            ratio = e2e["cpu_s_per_gb"] / floor["floor"]
            targets.append(
                _target(
                    f"{name}: CPU s/GB ≤ {CPU_VS_FLOOR}× the work floor",
                    ratio <= CPU_VS_FLOOR,
                    f"{ratio:.2f}×",
                    f"{e2e['cpu_s_per_gb']:.2f} against {floor['floor']:.2f}",
                )
            )
        if ok(e2e):
            targets.append(
                _target(
                    f"{name}: peak RSS ≤ {RSS_LIMIT_MB:.0f} MB",
                    e2e["peak_rss_mb"] <= RSS_LIMIT_MB,
                    f"{e2e['peak_rss_mb']:.0f} MB",
                    _pss(e2e),
                )
            )
        https = result.get("https") or {}
        curl_cost = _tls_cost(https, "curl")
        if curl_cost is not None and ok(https.get("bulkload_https")):
            plain_cpu = https["bulkload_http"]["cpu_s_per_gb"]
            bound = HTTPS_CPU_SLACK * (plain_cpu + curl_cost)
            tls_cpu = https["bulkload_https"]["cpu_s_per_gb"]
            targets.append(
                _target(
                    f"{name}: HTTPS CPU ≤ {HTTPS_CPU_SLACK}× (HTTP CPU + curl's TLS cost)",
                    tls_cpu <= bound,
                    f"{tls_cpu:.2f} CPU s/GB",
                    f"bound {bound:.2f} = {HTTPS_CPU_SLACK} × ({plain_cpu:.2f} + {curl_cost:.2f})",
                )
            )
    return targets


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render(results: dict[str, Any]) -> str:
    """The table: a header, one row per measurement, one per target."""
    cells = [
        [
            r.dataset,
            r.what,
            _fmt(r.mb_s),
            _fmt(r.records_s),
            _fmt(r.cpu_s_per_gb, 2),
            _fmt(r.rss_mb),
            r.note,
        ]
        for r in all_rows(results)
    ]
    for t in results["targets"]:
        note = f"  ({t['note']})" if t["note"] else ""
        cells.append(["target", t["target"], "", "", "", "", f"{t['verdict']}  {t['value']}{note}"])
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(COLUMNS)]

    def line(values: list[str] | tuple[str, ...]) -> str:
        padded = [
            v.rjust(w) if i in NUMERIC else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    commit = (results.get("commit") or "unknown")[:10]
    if results.get("dirty"):
        commit += " + uncommitted changes in bulkload/"
    kind = "QUICK (256 MiB)" if results["quick"] else "full"
    lines = [
        f"bulkload benchmarks  {results['started_at']}  commit {commit}",
        f"{results['cores']} cores, Python {results['python']}; {kind} run in "
        f"{results['duration_s']:.0f} s, best of {results['repeat']}; MB = 10^6 bytes; "
        "sink: emulator --discard-bodies in its own process",
    ]
    load = results.get("load_average")
    if load is not None and load > 0.5 * results["cores"]:
        lines.append(f"note: load average {load:.1f} at the start: other work may skew these")
    if results.get("bulkload_args"):
        lines.append(f"bulkload options: {' '.join(results['bulkload_args'])}")
    lines += ["", line(COLUMNS), "  ".join("-" * w for w in widths)]
    previous = None
    for row in cells:
        if previous is not None and row[0] != previous:
            lines.append("")
        lines.append(line(row))
        previous = row[0]
    return "\n".join(lines)


def save(results: dict[str, Any]) -> Path:
    """``bench-results/bench-<UTC time>.json`` and a copy as ``latest.json``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    doc = json.dumps(results, indent=2, default=str) + "\n"
    path = RESULTS_DIR / f"bench-{stamp}.json"
    path.write_text(doc)
    (RESULTS_DIR / "latest.json").write_text(doc)
    return path
