"""bulkload itself, through its command line, against the emulator's sink mode.

    python -m benchmarks.bench_load [--quick] [--dataset products|files|big] [-- ARGS]

- ``run_bulkload``: ``python -m bulkload load bench INPUT... --quiet --json --work-dir
  TMP`` as a subprocess: wall time (start-up included), records/s, CPU seconds per GB
  (its worker processes included, via ``wait4``), the peak RSS of its process tree
  (psutil, every 5 ms), and a check that the sink received every byte; with
  ``--dry-run`` among the arguments, the same without the network (read, validate, write
  shards), which tells the input side's cost from the upload side's;
- ``sweep`` and ``chart``: throughput against ``--concurrency`` and ``--shard-size``;
- ``help_time``: best of 5 runs of ``python -m bulkload --help`` and of the console script.

Only the CLI is used, never ``bulkload._*``, so this keeps measuring while the internals
change.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._common import (
    API_KEY,
    NAMESPACE,
    EmulatorProcess,
    MiB,
    best_of,
    env_with_project,
    log,
    mb,
    run_measured,
    warm,
)
from .bench_upload import SinkWatch, time_limit
from .datasets import Dataset, standard

CONCURRENCY = (1, 2, 4, 8, 16)
SHARD_SIZES = (16 * MiB, 64 * MiB, 256 * MiB)
#: For the sweep: a record limit no shard reaches, so ``--shard-size`` alone decides
#: (the default 100,000 records would cap ~600-byte records at ~57 MiB shards).
SWEEP_SHARD_RECORDS = 100_000_000
HELP_RUNS = 5
#: bulkload's defaults (``--concurrency``, ``--shard-size``), marked on the chart.
DEFAULTS = (8, 64 * MiB)


def run_bulkload(
    sink: EmulatorProcess,
    dataset: Dataset,
    args: Sequence[str] = (),
    *,
    exit_code: int = 0,
    records: int | None = None,
) -> dict[str, Any]:
    """One ``bulkload load`` of ``dataset`` into ``sink``; see the module doc. It must exit
    with ``exit_code`` having loaded ``records`` (default: every line)."""
    work = Path(tempfile.mkdtemp(prefix="bench-bulkload-"))
    cmd = [sys.executable, "-m", "bulkload", "load", NAMESPACE, *dataset.inputs]
    cmd += ["--base-url", sink.base_url, "--quiet", "--json", "--work-dir", str(work / "w")]
    if sink.ca_file is not None:
        cmd += ["--ca-bundle", str(sink.ca_file)]
    cmd += list(args)
    env = {**env_with_project(), "SAFETYKIT_API_KEY": API_KEY}
    warm(dataset.files)
    try:
        with sink.client() as client:
            watch = SinkWatch(client, sink)
            run = run_measured(cmd, timeout=time_limit(dataset.bytes), env=env)
            sink_cpu = watch.cpu_used()
            received, uploads = watch.received()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    try:
        summary = json.loads(run.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        summary = {}
    records = dataset.lines if records is None else records
    stopped = exit_code == 1  # a fatal error by design: no summary to check
    if run.returncode != exit_code or (not stopped and summary.get("records") != records):
        raise RuntimeError(
            f"bulkload exited {run.returncode} with {summary or run.stdout[-300:]!r}; "
            f"stderr: {run.stderr[-500:]}"
        )
    expected = 0 if "--dry-run" in args or not records or stopped else dataset.bytes
    if received != expected:
        raise RuntimeError(f"the sink got {received} bytes, not {expected}")
    return {
        "mb_s": mb(dataset.bytes) / run.wall_s,
        "records_s": dataset.lines / run.wall_s,
        "rejected": summary.get("rejected"),
        "wall_s": run.wall_s,
        "bulkload_elapsed_s": summary.get("elapsed"),
        "cpu_s_per_gb": run.cpu_s / (dataset.bytes / 1e9),
        "peak_rss_mb": mb(run.peak_rss),
        "peak_pss_mb": mb(run.peak_pss),
        # RSS every ~0.5 s: a line that climbs is growth with the input, a lone high
        # point a transient buffer.
        "rss_timeline_mb": [[round(t, 1), round(mb(rss), 1)] for t, rss in run.rss_timeline],
        "sink_cpu_s_per_gb": sink_cpu / (dataset.bytes / 1e9),
        "sink_cores": sink_cpu / run.wall_s,
        "shards": summary.get("shards"),
        "uploads": uploads,
        "args": list(args),
    }


def sweep(
    sink: EmulatorProcess,
    dataset: Dataset,
    concurrency: Sequence[int] = CONCURRENCY,
    shard_sizes: Sequence[int] = SHARD_SIZES,
    args: Sequence[str] = (),
    repeat: int = 1,
) -> list[dict[str, Any]]:
    """bulkload's throughput at every ``--concurrency`` × ``--shard-size``: ``repeat``
    passes over all the points (so that a slow spell of the machine hits every point
    alike), the fastest run of each point kept."""
    grid = [(size, n) for size in shard_sizes for n in concurrency]
    runs: dict[tuple[int, int], list[dict[str, Any]]] = {point: [] for point in grid}
    for turn in range(repeat):
        for size, n in grid:
            log(f"  sweep {turn + 1}/{repeat}: --concurrency {n} --shard-size {size // MiB}MiB")
            point_args = [*args, "--concurrency", str(n), "--shard-size", f"{size // MiB}MiB"]
            point_args += ["--shard-records", str(SWEEP_SHARD_RECORDS)]
            try:
                runs[size, n].append(run_bulkload(sink, dataset, point_args))
            except Exception as exc:  # one failed point should not lose the others
                log(f"    failed: {exc}")
    points = []
    for size, n in grid:
        done = runs[size, n]
        result = best_of(done) if done else {"error": "every run failed"}
        points.append({"concurrency": n, "shard_size": size, **result})
    return points


def chart(
    points: list[dict[str, Any]], path: Path, title: str, lines: dict[str, float | None]
) -> Path:
    """A PNG of MB/s against concurrency, one line per shard size, plus the reference
    ``lines`` (ceilings, baseline) as horizontal rules."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for size in sorted({p["shard_size"] for p in points}):
        series = [p for p in points if p["shard_size"] == size and "mb_s" in p]
        ax.plot(
            [p["concurrency"] for p in series],
            [p["mb_s"] for p in series],
            marker="o",
            label=f"--shard-size {size // MiB}MiB",
        )
        for p in series:
            if (p["concurrency"], p["shard_size"]) == DEFAULTS:
                ax.plot(
                    [p["concurrency"]], [p["mb_s"]], marker="o", markersize=14,
                    markerfacecolor="none", color="black", linestyle="none",
                )  # fmt: skip
                ax.annotate(
                    "default",
                    (p["concurrency"], p["mb_s"]),
                    fontsize=8,
                    xytext=(0, 12),
                    textcoords="offset points",
                    ha="center",
                )
    styles = iter(["--", ":", "-."])
    for label, value in lines.items():
        if value:
            ax.axhline(value, linestyle=next(styles, "--"), color="grey", linewidth=1)
            ax.annotate(
                f"{label} {value:,.0f}",
                (0.01, value),
                xycoords=("axes fraction", "data"),
                fontsize=8,
                va="bottom",
                color="dimgrey",
            )
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({p["concurrency"] for p in points}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("--concurrency")
    ax.set_ylabel("MB/s (10^6 bytes/s, wall time)")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def help_time(runs: int = HELP_RUNS) -> dict[str, float]:
    """Best wall time of ``runs`` runs of ``bulkload --help``, both ways of calling it."""
    script = Path(sys.executable).with_name("bulkload")
    commands = {"python -m bulkload --help": [sys.executable, "-m", "bulkload", "--help"]}
    if script.exists():
        commands["bulkload --help"] = [str(script), "--help"]
    best: dict[str, float] = {}
    for name, cmd in commands.items():
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, timeout=60, env=env_with_project())
            times.append(time.perf_counter() - started)
        best[name] = min(times)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smaller datasets")
    parser.add_argument("--dataset", choices=["products", "files", "big"], default="products")
    parser.add_argument("args", nargs="*", help="more bulkload options (after --)")
    args = parser.parse_args(argv)
    dataset = standard(args.quick)[args.dataset]
    with EmulatorProcess() as sink:
        log(f"{dataset.name}: bulkload {' '.join(args.args)} ...")
        result = run_bulkload(sink, dataset, args.args)
    print(json.dumps({"bulkload": result, "help": help_time()}, indent=2))


if __name__ == "__main__":
    main()
