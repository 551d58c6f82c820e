"""Two versions of bulkload on the same input, alternating, in one session: the way every
"before → after" in the README was measured (a shared machine drifts by 10-15 % over
minutes, so only runs interleaved with each other compare).

    python -m benchmarks.ab BASE [--dataset gz] [--runs 3] [--quick] [-- ARGS]

BASE is any commit (``HEAD~1``, ``main``, a hash); it is checked out into a temporary git
worktree, and both it and this work tree are compiled first (as ``pip install`` would).
Each round runs ``bulkload load bench INPUT --quiet --json --work-dir TMP ARGS`` of A
(BASE), then B (this tree), against one ``--discard-bodies`` sink; it prints each run and
the medians: wall seconds and CPU seconds of the whole process tree (workers and the fork
server included).
"""

from __future__ import annotations

import argparse
import compileall
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from ._common import (
    API_KEY,
    NAMESPACE,
    PROJECT_ROOT,
    EmulatorProcess,
    env_with_project,
    run_measured,
    warm,
)
from .bench_upload import time_limit
from .datasets import Dataset, standard

#: The datasets ``--dataset`` can name: those of ``make bench``.
DATASETS = ("products", "files", "big", "gz", "zst", "many")


def run_once(
    tree: Path, sink: EmulatorProcess, dataset: Dataset, args: list[str]
) -> tuple[float, float]:
    """One load of ``dataset`` by the bulkload in ``tree``: (wall s, CPU s)."""
    work = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    cmd = [sys.executable, "-m", "bulkload", "load", NAMESPACE, *dataset.inputs]
    cmd += ["--base-url", sink.base_url, "--quiet", "--json", "--work-dir", str(work / "w")]
    env = {**env_with_project(), "SAFETYKIT_API_KEY": API_KEY, "PYTHONPATH": str(tree)}
    warm(dataset.files)
    try:
        run = run_measured([*cmd, *args], timeout=time_limit(dataset.bytes), env=env, cwd=tree)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if run.returncode != 0:
        raise RuntimeError(f"{tree}: bulkload exited {run.returncode}: {run.stderr[-500:]}")
    return run.wall_s, run.cpu_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the commit to compare this work tree with (A)")
    parser.add_argument("--dataset", action="append", choices=DATASETS)
    parser.add_argument("--runs", type=int, default=3, help="rounds of A then B (default 3)")
    parser.add_argument("--quick", action="store_true", help="the 256 MiB datasets")
    parser.add_argument("args", nargs="*", help="more options for both (after --)")
    opts = parser.parse_args(argv)
    datasets = standard(opts.quick)
    base = Path(tempfile.mkdtemp(prefix="bench-ab-base-"))
    subprocess.run(
        ["git", "worktree", "add", "--detach", "-q", str(base), opts.base],
        cwd=PROJECT_ROOT,
        check=True,
    )
    try:
        trees = {"A": base, "B": PROJECT_ROOT}
        for tree in trees.values():
            compileall.compile_dir(tree / "bulkload", quiet=1)
        with EmulatorProcess() as sink:
            for name in opts.dataset or ["products"]:
                dataset = datasets[name]
                seen: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
                for _ in range(opts.runs):
                    for label, tree in trees.items():
                        wall, cpu = run_once(tree, sink, dataset, opts.args)
                        seen[label].append((wall, cpu))
                        print(
                            f"{name:10s} {label}  wall {wall:6.2f} s  CPU {cpu:6.2f} s", flush=True
                        )
                for label, runs in seen.items():
                    wall = statistics.median(w for w, _ in runs)
                    cpu = statistics.median(c for _, c in runs)
                    mb_s = dataset.bytes / 1e6 / wall
                    print(
                        f"{name:10s} {label}  median wall {wall:.2f} s ({mb_s:,.0f} MB/s), "
                        f"CPU {cpu:.2f} s ({cpu / (dataset.bytes / 1e9):.2f} CPU s/GB)"
                    )
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(base)], cwd=PROJECT_ROOT, check=False
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
