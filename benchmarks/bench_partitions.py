"""One dataset through 1 and 2 local worker processes (`bulkload load --partition I/N`).

    python -m benchmarks.bench_partitions [--mib 256] [--files 8] [--repeat 1]

The dataset is bench-data/products-256MiB.jsonl (from `make bench`) cut into ``--files``
line-aligned files, or, without it, ~``--mib`` MiB of generated product records. The
emulator runs in a process of its own as a sink (``--discard-bodies``), so that what is
measured is the loaders. Prints wall time, throughput (MB = 10^6 bytes of input per
second of wall time), and peak RSS per worker (each worker's process tree, sampled every
10 ms); the merge of the workers' manifests is timed too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import psutil  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "bench-data" / "products-256MiB.jsonl"
API_KEY = "bench-key"
MiB = 1 << 20


def make_dataset(out: Path, mib: int, files: int, source: Path = SOURCE) -> int:
    """``files`` JSONL files in ``out``; their total size in bytes."""
    out.mkdir(parents=True, exist_ok=True)
    if source.exists():
        size = source.stat().st_size
        per = size // files + 1
        with open(source, "rb") as src:
            for f in range(files):
                with open(out / f"part-{f:02d}.jsonl", "wb") as dst:
                    chunk = src.read(per)
                    dst.write(
                        chunk + (src.readline() if chunk and not chunk.endswith(b"\n") else b"")
                    )
    else:
        target = mib * MiB // files
        n = 0
        for f in range(files):
            with open(out / f"part-{f:02d}.jsonl", "wb") as dst:
                written = 0
                while written < target:
                    doc = {"id": f"p-{n:09d}", "title": f"product {n}", "price": n * 0.01,
                           "description": "lorem ipsum dolor sit amet " * 16, "tags": ["a", "b"]}  # fmt: skip
                    line = orjson.dumps(doc) + b"\n"
                    dst.write(line)
                    written += len(line)
                    n += 1
    return sum(p.stat().st_size for p in out.iterdir())


class Peak:
    """Peak RSS of a process and its children, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                pass
            self._stop.wait(0.01)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def start_emulator() -> tuple[subprocess.Popen[bytes], str]:
    cmd = [sys.executable, "-m", "bulkload", "emulator", "--port", "0", "--api-key", API_KEY,
           "--discard-bodies"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    url = proc.stdout.readline().decode().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise SystemExit(f"the emulator did not start (said {url!r})")
    return proc, url


def run_workers(
    data: Path, work: Path, base_url: str, workers: int, namespace: str
) -> dict[str, Any]:
    env = {**os.environ, "SAFETYKIT_API_KEY": API_KEY, "PYTHONPATH": str(ROOT)}
    procs = []
    started = time.perf_counter()
    for i in range(workers):
        part = ["--partition", f"{i}/{workers}"] if workers > 1 else []
        target = ["--base-url", base_url] if base_url else ["--dry-run"]
        cmd = [sys.executable, "-m", "bulkload", "load", namespace, str(data), "--quiet", "--json",
               "--work-dir", str(work / f"w{i}"), *target, *part]  # fmt: skip
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append((proc, Peak(proc.pid)))
    results = []
    for proc, peak in procs:
        out, err = proc.communicate()
        rss = peak.stop()
        if proc.returncode not in (0, 3):
            raise SystemExit(f"a worker failed ({proc.returncode}): {err.decode()[-2000:]}")
        results.append({**orjson.loads(out), "peak_rss": rss})
    wall = time.perf_counter() - started
    merge_s = None
    if workers > 1:
        t = time.perf_counter()
        dirs = [str(work / f"w{i}") for i in range(workers)]
        subprocess.run(
            [sys.executable, "-m", "bulkload", "merge", *dirs, "-o", str(work / "merged.json"),
             "--json"], env=env, check=True, capture_output=True,
        )  # fmt: skip
        merge_s = time.perf_counter() - t
    return {
        "workers": workers,
        "wall_s": wall,
        "bytes": sum(r["bytes_read"] for r in results),
        "records": sum(r["records"] for r in results),
        "shards": sum(r["shards"] for r in results),
        "peak_rss": [r["peak_rss"] for r in results],
        "merge_s": merge_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="generated size when no bench-data")
    parser.add_argument("--files", type=int, default=8, help="files the dataset is cut into")
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration (best kept)")
    parser.add_argument(
        "--dry-run", action="store_true", help="no emulator: read, validate and shard only"
    )
    parser.add_argument(
        "--source", type=Path, default=SOURCE, help=f"JSONL file to cut (default {SOURCE})"
    )
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-partitions-"))
    emulator = None
    try:
        data = tmp / "data"
        total = make_dataset(data, args.mib, args.files, args.source)
        base_url = None
        if not args.dry_run:
            emulator, base_url = start_emulator()
        mode = "dry run (read + validate + shard only)" if args.dry_run else "upload to a sink"
        print(f"dataset: {args.files} files, {total / 1e6:.0f} MB; {os.cpu_count()} cores; {mode}")
        print(f"{'workers':>7} {'wall s':>8} {'MB/s':>8} {'records':>10} {'shards':>6} "
              f"{'peak RSS per worker (MB)':>26} {'merge s':>8}")  # fmt: skip
        for workers in (1, 2):
            best = None
            for r in range(args.repeat):
                work = tmp / f"work-{workers}-{r}"
                got = run_workers(data, work, base_url, workers, f"bench{workers}x{r}")
                shutil.rmtree(work)
                if best is None or got["wall_s"] < best["wall_s"]:
                    best = got
            assert best is not None
            rss = ", ".join(f"{b / 1e6:.0f}" for b in best["peak_rss"])
            merge = f"{best['merge_s']:.2f}" if best["merge_s"] is not None else "-"
            print(f"{workers:>7} {best['wall_s']:>8.2f} {best['bytes'] / 1e6 / best['wall_s']:>8.0f} "
                  f"{best['records']:>10,} {best['shards']:>6} {rss:>26} {merge:>8}")  # fmt: skip
    finally:
        if emulator is not None:
            emulator.terminate()
            emulator.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
