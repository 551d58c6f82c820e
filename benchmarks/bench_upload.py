"""The upload ceiling (curl) and the naive baseline, against the emulator's sink mode.

    python -m benchmarks.bench_upload [--quick] [--dataset products|files|big]

- ``curl_ceiling``: the dataset's bytes cut into shard-sized pieces (64 MiB, bulkload's
  default shard, at line ends), one import call per piece for its upload URL (before
  the clock starts), then 8 ``curl -T`` processes at once, each PUTting its share of the
  pieces one after another on one connection. Wall time from the first start to the last
  exit; CPU of the curls (``wait4``) and, apart, of the sink.
- ``naive_baseline``: ``benchmarks/naive_loader.py`` as a subprocess (read a shard into
  memory, one import call, one PUT, one after the other, one httpx client).

Both check that the sink received every byte. The sink is ``python -m bulkload.emulator
--discard-bodies`` in its own process; its CPU share is reported so that a sink-bound
number shows as such.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from ._common import (
    API_KEY,
    DATA_DIR,
    NAMESPACE,
    EmulatorProcess,
    MiB,
    env_with_project,
    log,
    mb,
    new_upload_url,
    reap,
    run_measured,
    sink_state,
    start,
    warm,
)
from .datasets import Dataset, open_plain, standard

PIECE_BYTES = 64 * MiB  # bulkload's default --shard-size
CURL_PROCESSES = 8  # bulkload's default --concurrency
#: Time limits assume no less than this throughput (MB/s); far below anything measured.
SLOWEST_MB_S = 10.0


def time_limit(nbytes: int) -> float:
    return max(120.0, mb(nbytes) / SLOWEST_MB_S)


class SinkWatch:
    """What the sink received between ``__init__`` and ``received()``."""

    def __init__(self, client: httpx.Client, sink: EmulatorProcess) -> None:
        self.client, self.sink = client, sink
        self.first = len(sink_state(client, sink.base_url)["requests"])
        self.cpu = sink.cpu_seconds()

    def cpu_used(self) -> float:
        return self.sink.cpu_seconds() - self.cpu

    def received(self) -> tuple[int, int]:
        """(bytes, requests with a successful PUT) since this watch began."""
        requests = sink_state(self.client, self.sink.base_url)["requests"][self.first :]
        done = [r for r in requests if r["put_successes"]]
        return sum(r["size"] for r in done), len(done)


def split_pieces(files: list[Path], piece_bytes: int, out_dir: Path) -> list[Path]:
    """The files' bytes, in order, cut at line ends into pieces of at most
    ``piece_bytes`` (a longer line gets a piece of its own)."""
    pieces: list[Path] = []
    current: list[bytes] = []
    size = 0

    def flush() -> None:
        nonlocal current, size
        if current:
            piece = out_dir / f"piece-{len(pieces):05d}.jsonl"
            piece.write_bytes(b"".join(current))
            pieces.append(piece)
        current, size = [], 0

    for path in files:
        with open_plain(path) as f:  # decompressed: what bulkload uploads
            for line in f:
                if size + len(line) > piece_bytes:
                    flush()
                current.append(line)
                size += len(line)
    flush()
    return pieces


def curl_ceiling(
    sink: EmulatorProcess,
    dataset: Dataset,
    *,
    piece_bytes: int = PIECE_BYTES,
    processes: int = CURL_PROCESSES,
) -> dict[str, Any]:
    """PUT the dataset's bytes with ``processes`` parallel curls; see the module doc."""
    if shutil.which("curl") is None:
        raise RuntimeError("curl is not installed")
    work = Path(tempfile.mkdtemp(prefix="curl-", dir=DATA_DIR))
    try:
        pieces = split_pieces(dataset.files, piece_bytes, work)
        with sink.client() as client:
            watch = SinkWatch(client, sink)
            urls = [new_upload_url(client, sink.base_url) for _ in pieces]
            watch.cpu = sink.cpu_seconds()  # the clock starts after the import calls
            commands = []
            for group in range(processes):
                cmd = ["curl", "-sS", "--fail", "-H", "Content-Type: application/json"]
                if sink.ca_file is not None:
                    cmd += ["--cacert", str(sink.ca_file)]
                cmd += ["-w", "%{http_code}\\n", "--max-time", str(int(time_limit(dataset.bytes)))]
                for piece, url in list(zip(pieces, urls, strict=True))[group::processes]:
                    cmd += ["-T", str(piece), "-o", "/dev/null", url]
                if "-T" in cmd:
                    commands.append(cmd)
            with contextlib.ExitStack() as stack:
                outputs = [stack.enter_context(tempfile.TemporaryFile()) for _ in commands]
                started = time.perf_counter()
                procs = [
                    start(cmd, stdout=out, stderr=out)
                    for cmd, out in zip(commands, outputs, strict=True)
                ]
                codes, cpu_s = reap(procs, time.monotonic() + time_limit(dataset.bytes))
                wall = time.perf_counter() - started
                sink_cpu = watch.cpu_used()
                texts = []
                for out in outputs:
                    out.seek(0)
                    texts.append(out.read().decode(errors="replace"))
            received, uploads = watch.received()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    statuses = "".join(texts).split()
    if any(codes) or statuses != ["200"] * len(pieces):
        raise RuntimeError(f"curl failed: exit codes {codes}, output {''.join(texts)[:500]!r}")
    if (received, uploads) != (dataset.bytes, len(pieces)):
        raise RuntimeError(f"the sink got {received} bytes in {uploads} PUTs, not {dataset.bytes}")
    return {
        "mb_s": mb(dataset.bytes) / wall,
        "records_s": dataset.lines / wall,
        "wall_s": wall,
        "cpu_s_per_gb": cpu_s / (dataset.bytes / 1e9),
        "sink_cpu_s_per_gb": sink_cpu / (dataset.bytes / 1e9),
        "sink_cores": sink_cpu / wall,
        "pieces": len(pieces),
        "processes": len(commands),
    }


def naive_baseline(sink: EmulatorProcess, dataset: Dataset) -> dict[str, Any]:
    """``benchmarks/naive_loader.py`` over the dataset; see the module doc."""
    env = {**env_with_project(), "SAFETYKIT_API_KEY": API_KEY}
    cmd = [sys.executable, "-m", "benchmarks.naive_loader", sink.base_url, NAMESPACE]
    warm(dataset.files)
    with httpx.Client(timeout=60) as client:
        watch = SinkWatch(client, sink)
        run = run_measured(cmd + dataset.inputs, timeout=time_limit(dataset.bytes), env=env)
        sink_cpu = watch.cpu_used()
        received, uploads = watch.received()
    if run.returncode != 0:
        raise RuntimeError(f"the naive loader failed ({run.returncode}): {run.stderr[-500:]}")
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    if summary["lines"] != dataset.lines or received != dataset.bytes:
        raise RuntimeError(f"the naive loader sent {summary}, the sink got {received} bytes")
    return {
        "mb_s": mb(dataset.bytes) / run.wall_s,
        "records_s": dataset.lines / run.wall_s,
        "wall_s": run.wall_s,
        "cpu_s_per_gb": run.cpu_s / (dataset.bytes / 1e9),
        "peak_rss_mb": mb(run.peak_rss),
        "sink_cpu_s_per_gb": sink_cpu / (dataset.bytes / 1e9),
        "sink_cores": sink_cpu / run.wall_s,
        "shards": uploads,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smaller datasets")
    parser.add_argument("--dataset", choices=["products", "files", "big"], default="products")
    args = parser.parse_args(argv)
    dataset = standard(args.quick)[args.dataset]
    with EmulatorProcess() as sink:
        log(f"{dataset.name}: curl ceiling ...")
        results = {"curl": curl_ceiling(sink, dataset)}
        log(f"{dataset.name}: naive baseline ...")
        results["naive"] = naive_baseline(sink, dataset)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
