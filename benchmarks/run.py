"""``make bench``: every benchmark in one run, one table, saved as JSON.

    python -m benchmarks.run [--quick] [--stage STAGE ...] [--dataset NAME ...]
                             [--repeat N] [--bulkload-args "--workers 2"] [--no-save]

``BENCH_QUICK=1`` is ``--quick``: 256 MiB instead of 1 GiB, one run per measurement, no
4 GiB run, no chart. Stages: ``ceilings`` (read, validate, upload with curl), ``naive``,
``bulkload``, ``decompress`` (every decoder on the compressed datasets), ``floor`` (the
unavoidable parts, each alone), ``https`` (bulkload and curl over TLS and plain HTTP),
``hash`` (MD5 against faster hashes), ``memory`` (1 GiB and 4 GiB at default settings),
``chart`` (the concurrency × shard size sweep), ``help``. ``benchmarks/README.md`` says
what each row means.

The emulator runs once, in its own process, as a sink (``--discard-bodies``). Every
measured process has a time limit; a stage that fails is shown in the table as an error
and the run goes on.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import functools
import os
import platform
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import bench_decompress, bench_floor, bench_hash
from ._common import (
    PROJECT_ROOT,
    RESULTS_DIR,
    EmulatorProcess,
    GiB,
    MiB,
    best_of,
    git_info,
    log,
    mb,
)
from ._report import evaluate, ok, render, save, upload_ceiling, validation_ceiling
from .bench_load import chart, help_time, run_bulkload, sweep
from .bench_upload import curl_ceiling, naive_baseline
from .datasets import Dataset, edges, extra, products, products_4gib, standard

STAGES = (
    "ceilings",
    "naive",
    "bulkload",
    "schema",
    "decompress",
    "floor",
    "https",
    "hash",
    "memory",
    "edges",
    "chart",
    "help",
)
#: The realistic product schema of issue 16 (15 properties, two nested objects, arrays).
SCHEMA_PATH = Path(__file__).with_name("product-schema.json")
DATASETS = ("products", "files", "big", "gz", "zst", "many")
#: Measured on request only (--dataset gz1): one big compressed file.
EXTRA_DATASETS = ("gz1", "zst1")
#: The HTTPS rows' dataset unless --dataset names others: one is enough to price TLS.
HTTPS_DATASETS = ("products",)


def attempt(results: dict[str, Any], key: str, fn: Callable[[], Any]) -> Any:
    """``results[key] = fn()``, or ``{"error": ...}`` when it raises; the value."""
    try:
        results[key] = fn()
    except Exception as exc:
        log(f"  {key} failed: {exc}")
        log(traceback.format_exc(limit=3))
        results[key] = {"error": f"{type(exc).__name__}: {exc}"}
    return results[key]


def repeated(repeat: int, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The fastest of ``repeat`` runs of ``fn`` (``_common.best_of``)."""
    return best_of([fn() for _ in range(repeat)])


def ceilings(dataset: Dataset, sink: EmulatorProcess, repeat: int) -> dict[str, Any]:
    """Read, validate (bulkload's own validation code in 1 process, and on all cores over
    byte ranges, from ``bench_validate``) and upload (curl) ceilings of ``dataset``."""
    out: dict[str, Any] = {}
    workers = os.cpu_count() or 1

    def measure_all() -> dict[str, Any]:
        # Imported here: bench_validate calls bulkload's internals (_internals), which may
        # change under it; then only these rows fail.
        from . import bench_validate as bv
        from ._internals import ValidateOptions, resolve_inputs

        sources = resolve_inputs(dataset.inputs)
        stages: dict[str, tuple[str, Callable[[], int]]] = {
            "read": ("read, raw", lambda: bv.read_raw(dataset.files)),
            "read_lines": ("read, iter_chunks", lambda: bv.read_only(sources)),
            "validate_1": (
                "validate, 1 proc",
                lambda: bv.validate_here(sources, ValidateOptions()),
            ),
            # Plain files: bulkload's --workers method (byte ranges); compressed ones: one
            # file per task, decoded in the worker (the design proposed for them).
            "validate_all": (
                f"validate, {workers} procs",
                lambda: (
                    bv.validate_pool_ranges(sources, workers)
                    if dataset.compression is None
                    else bv.validate_pool_files(sources, workers)
                ),
            ),
        }
        found: dict[str, Any] = {}
        with contextlib.redirect_stdout(sys.stderr):  # its progress lines
            bv.read_raw(dataset.files)  # into the page cache: every stage reads memory
            for key, (label, fn) in stages.items():
                found[key] = repeated(repeat, functools.partial(bv.measure, label, fn))
        for key in ("validate_1", "validate_all"):
            found[key]["records_s"] = dataset.lines / (dataset.bytes / (found[key]["mb_s"] * 1e6))
        found["validate_all"]["workers"] = workers
        found["validate_all"]["method"] = "ranges" if dataset.compression is None else "files"
        found["read"]["compressed"] = dataset.compression is not None
        return found

    found = attempt(out, "validation", measure_all)
    del out["validation"]
    for key in ("read", "read_lines", "validate_1", "validate_all"):
        out[key] = found[key] if ok(found) else found
    attempt(out, "upload", lambda: repeated(repeat, lambda: curl_ceiling(sink, dataset)))
    return out


class Bench:
    """One ``make bench`` run: the sink, the datasets, and the results dict it fills."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.quick: bool = args.quick
        self.stages: list[str] = args.stage or [
            s for s in STAGES if not (self.quick and s in ("memory", "chart"))
        ]
        self.names: list[str] = args.dataset or list(DATASETS)
        self.https_names = [n for n in self.names if args.dataset or n in HTTPS_DATASETS]
        self.extra = shlex.split(args.bulkload_args)
        self.repeat: int = args.repeat or (1 if self.quick else 2)
        self.git = git_info()
        self.results: dict[str, Any] = {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **self.git,
            "cores": os.cpu_count(),
            # Other work on the machine skews every number; 1-minute load at the start.
            "load_average": os.getloadavg()[0],
            "python": platform.python_version(),
            "platform": platform.platform(),
            "quick": self.quick,
            "stages": self.stages,
            "repeat": self.repeat,
            "bulkload_args": self.extra,
            "sink": "python -m bulkload.emulator --discard-bodies, in its own process",
            "datasets": {},
        }

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        sets = standard(self.quick)
        if any(name in EXTRA_DATASETS for name in self.names):
            sets.update(extra(self.quick))
        with EmulatorProcess() as sink:
            self.results["sink_idle_rss_mb"] = mb(sink.rss())
            for name in self.names:
                self.dataset(sink, sets[name])
            if "https" in self.stages and self.https_names:
                log("== HTTPS: the sink serving TLS (private CA) ...")
                with EmulatorProcess(tls=True) as tls_sink:
                    for name in self.https_names:
                        self.https(sink, tls_sink, sets[name])
            if "memory" in self.stages:
                self.memory(sink, sets["products"] if not self.quick else products(GiB))
            elif "edges" in self.stages:
                self.memory_edges(sink)
            if "chart" in self.stages:
                self.chart(sink, sets["products"])
        if "hash" in self.stages:
            log("== hashes: MD5 against faster ones ...")
            attempt(self.results, "hash", lambda: self.hashes(sets["products"]))
        if "help" in self.stages:
            log("== bulkload --help ...")
            attempt(self.results, "help", help_time)
        self.results["duration_s"] = time.monotonic() - started
        self.results["targets"] = evaluate(self.results)
        self.results["table"] = render(self.results)
        return self.results

    def dataset(self, sink: EmulatorProcess, ds: Dataset) -> None:
        log(f"== {ds.name}: {ds.description} ({mb(ds.bytes):,.0f} MB, {ds.lines:,} lines)")
        result: dict[str, Any] = ds.as_json()
        self.results["datasets"][ds.name] = result
        if "ceilings" in self.stages:
            log("  ceilings ...")
            result["ceilings"] = ceilings(ds, sink, self.repeat)
        if "naive" in self.stages:
            log("  naive loader ...")
            attempt(
                result, "naive", lambda: repeated(self.repeat, lambda: naive_baseline(sink, ds))
            )
        if "bulkload" in self.stages:
            log("  bulkload end to end ...")
            attempt(
                result,
                "bulkload",
                lambda: repeated(self.repeat, lambda: run_bulkload(sink, ds, self.extra)),
            )
            log("  bulkload --dry-run ...")
            dry = [*self.extra, "--dry-run"]
            attempt(
                result,
                "bulkload_dry",
                lambda: repeated(self.repeat, lambda: run_bulkload(sink, ds, dry)),
            )

        if "schema" in self.stages and ds.name.startswith("products"):
            log("  bulkload end to end --schema ...")
            checked = [*self.extra, "--schema", str(SCHEMA_PATH)]
            attempt(
                result,
                "bulkload_schema",
                lambda: repeated(self.repeat, lambda: run_bulkload(sink, ds, checked)),
            )
        if "decompress" in self.stages and ds.compression is not None:
            log("  decompress ...")
            attempt(result, "decompress", lambda: bench_decompress.measure(ds, self.repeat))
        if "floor" in self.stages:
            log("  the work floor ...")
            attempt(result, "floor", lambda: self.floor(sink, ds, result))

    def floor(self, sink: EmulatorProcess, ds: Dataset, result: dict[str, Any]) -> dict[str, Any]:
        """The unavoidable parts alone (``bench_floor``), the send priced by curl over HTTP
        (this run's upload ceiling when it was measured, else measured here)."""
        runs = [bench_floor.local_parts(ds) for _ in range(self.repeat)]
        parts = min(runs, key=lambda r: sum(r[p] for p in bench_floor.PARTS))
        upload = result.get("ceilings", {}).get("upload")
        if not ok(upload):
            upload = repeated(self.repeat, lambda: curl_ceiling(sink, ds))
        parts["send_http"] = upload["cpu_s_per_gb"]
        parts["floor"] = bench_floor.floor_of(parts, parts["send_http"])
        return parts

    def https(self, sink: EmulatorProcess, tls: EmulatorProcess, ds: Dataset) -> None:
        """bulkload and curl over HTTPS and over plain HTTP, same bytes, same run."""
        log(f"  {ds.name}: curl and bulkload over HTTPS and HTTP ...")
        result = self.results["datasets"].setdefault(ds.name, ds.as_json())
        out: dict[str, Any] = {}
        result["https"] = out
        measured = result.get("ceilings", {}).get("upload")
        if ok(measured):
            out["curl_http"] = measured
        else:
            attempt(out, "curl_http", lambda: repeated(self.repeat, lambda: curl_ceiling(sink, ds)))
        attempt(out, "curl_https", lambda: repeated(self.repeat, lambda: curl_ceiling(tls, ds)))
        measured = result.get("bulkload")
        if ok(measured):
            out["bulkload_http"] = measured
        else:
            attempt(
                out,
                "bulkload_http",
                lambda: repeated(self.repeat, lambda: run_bulkload(sink, ds, self.extra)),
            )
        attempt(
            out,
            "bulkload_https",
            lambda: repeated(self.repeat, lambda: run_bulkload(tls, ds, self.extra)),
        )
        floor = result.get("floor")
        if ok(floor) and ok(out["curl_https"]):
            floor["send_https"] = out["curl_https"]["cpu_s_per_gb"]

    def hashes(self, products_ds: Dataset) -> dict[str, Any]:
        size = min(products_ds.bytes, 256 * MiB)
        return bench_hash.run(products_ds.files[0], size, 4, os.cpu_count() or 1)

    def memory(self, sink: EmulatorProcess, one_gib: Dataset) -> None:
        """Peak RSS at default settings for 1 GiB and 4 GiB of the same kind of records."""
        memory: dict[str, Any] = {}
        self.results["memory"] = memory
        done = self.results["datasets"].get(one_gib.name, {}).get("bulkload")
        if ok(done) and not self.extra:
            memory["1GiB"] = done  # the end-to-end run above was this one
        else:
            log(f"== memory: {one_gib.name} at default settings ...")
            attempt(memory, "1GiB", lambda: run_bulkload(sink, one_gib))
        log("== memory: products-4GiB at default settings ...")
        attempt(memory, "4GiB", lambda: run_bulkload(sink, products_4gib(one_gib.files[0])))
        self.memory_edges(sink)

    def memory_edges(self, sink: EmulatorProcess) -> None:
        """Peak RSS on the input side's edge cases: a file of bad lines, the duplicate
        check over many ids, one line far longer than a shard (default settings)."""
        memory = self.results.setdefault("memory", {})
        for name, (ds, args, code) in edges().items():
            log(f"== memory: {name} ({mb(ds.bytes):,.0f} MB) ...")
            records = 0 if code in (1, 3) else None

            def run(ds: Dataset = ds, args: list[str] = args, records: int | None = records,
                    code: int = code) -> dict[str, Any]:  # fmt: skip
                return run_bulkload(sink, ds, args, exit_code=code, records=records)

            attempt(memory, name, run)

    def chart(self, sink: EmulatorProcess, ds: Dataset) -> None:
        log(f"== chart: {ds.name}, --concurrency × --shard-size ...")
        points = sweep(sink, ds, args=self.extra, repeat=self.repeat)
        self.results["sweep"] = points
        ref = self.results["datasets"].get(ds.name, {})
        lines = {
            "validate ceiling": validation_ceiling(ref.get("ceilings", {})),
            "upload ceiling (curl)": upload_ceiling(ref.get("ceilings", {})),
            "naive loader": ref["naive"]["mb_s"] if ok(ref.get("naive")) else None,
        }
        commit = (self.git["commit"] or "?")[:10] + ("+dirty" if self.git["dirty"] else "")
        title = (
            f"bulkload on {ds.name} ({mb(ds.bytes):,.0f} MB) into the sink, best of "
            f"{self.repeat}; {os.cpu_count()} cores, {commit}"
        )
        path = RESULTS_DIR / "throughput.png"
        attempt(self.results, "chart", lambda: str(chart(points, path, title, lines)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
        help="256 MiB instead of 1 GiB, one run each; no 4 GiB run, no chart (BENCH_QUICK=1)",
    )
    parser.add_argument(
        "--stage", action="append", choices=STAGES, help="only this stage (repeatable)"
    )
    parser.add_argument(
        "--dataset",
        action="append",
        choices=DATASETS + EXTRA_DATASETS,
        help="only this dataset (repeatable)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs per measurement, the fastest kept (default 2; 1 with --quick); "
        "the 4 GiB memory run runs once",
    )
    parser.add_argument(
        "--bulkload-args",
        default="",
        help="more options for every bulkload run, e.g. '--workers 2'",
    )
    parser.add_argument("--no-save", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    # bulkload as installed, not as checked out: pip compiles a package's modules when it
    # installs it, but this checkout is an editable install, and where
    # PYTHONDONTWRITEBYTECODE is set (as on the machines this was measured on) every run
    # would compile bulkload's modules again: ~0.07 s of start-up users do not pay.
    compileall.compile_dir(PROJECT_ROOT / "bulkload", quiet=1)
    results = Bench(args).run()
    print(results["table"])
    if not args.no_save:
        path = save(results)
        print(f"\nsaved {path} (and latest.json)")
    if isinstance(results.get("chart"), str):
        print(f"chart {results['chart']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
