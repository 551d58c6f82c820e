"""How fast the emulator sinks PUT bodies, and how little memory it spends doing so.

    python -m benchmarks.bench_emulator

Starts ``python -m bulkload.emulator --port 0`` as a separate process (so its memory is
measured alone), reads the base URL from its first line of stdout, then PUTs one 1 GiB
body and eight parallel 128 MiB bodies, each streamed from a temp file with a
Content-Length, as bulkload itself sends them. Reports the sink throughput and the
emulator's peak RSS increase over its idle baseline, sampled with psutil.
``run()`` returns the numbers as a dict for ``benchmarks/run.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]

MiB = 1024 * 1024
GiB = 1024 * MiB
#: RSS sampling period: fine enough to catch a buffer that lives for a few ms.
SAMPLE_EVERY_S = 0.005
API_KEY = "bench-key"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def make_body(path: Path, size: int) -> str:
    """Write ``size`` bytes of JSONL records to ``path``; their MD5."""
    line_template = b'{"id": "obj-%012d", "pad": "' + b"x" * 200 + b'"}\n'
    block = bytearray()
    n = 0
    while len(block) < MiB:
        block += line_template % n
        n += 1
    md5 = hashlib.md5(usedforsecurity=False)
    written = 0
    with path.open("wb") as f:
        while written < size:
            chunk = bytes(block[: size - written])
            f.write(chunk)
            md5.update(chunk)
            written += len(chunk)
    return md5.hexdigest()


class RssSampler:
    """Samples a process's RSS in a background thread; ``peak`` since the last reset."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def rss(self) -> int:
        value: int = self.process.memory_info().rss
        return value

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            try:
                self.peak = max(self.peak, self.rss())
            except psutil.NoSuchProcess:
                return

    def reset(self) -> int:
        self.peak = self.rss()
        return self.peak

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def _put_file(
    session: aiohttp.ClientSession, base_url: str, path: Path, expected_md5: str
) -> None:
    async with session.post(
        f"{base_url}/v1/data/bench/import", headers={"Authorization": f"Bearer {API_KEY}"}
    ) as resp:
        resp.raise_for_status()
        url = (await resp.json())["upload_url"]
    # A plain file object: aiohttp sends it with a Content-Length, reading it off-loop.
    with path.open("rb") as body:
        async with session.put(
            url, data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            resp.raise_for_status()
            etag = resp.headers["ETag"]
    if etag != f'"{expected_md5}"':
        raise AssertionError(f"ETag {etag} does not match the body's MD5 {expected_md5}")


async def _phase(
    base_url: str, sampler: RssSampler, path: Path, md5: str, size: int, parallel: int
) -> dict[str, float]:
    baseline = sampler.reset()
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        started = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for _ in range(parallel):
                tg.create_task(_put_file(session, base_url, path, md5))
        elapsed = time.perf_counter() - started
    total = size * parallel
    return {
        "bytes": total,
        "seconds": round(elapsed, 3),
        "mb_per_s": round(total / elapsed / 1e6, 1),
        "peak_rss_increase_mb": round((sampler.peak - baseline) / 1e6, 1),
    }


async def _bench(base_url: str, sampler: RssSampler, work: Path) -> dict[str, Any]:
    big, small = work / "body-1g.jsonl", work / "body-128m.jsonl"
    big_md5 = await asyncio.to_thread(make_body, big, GiB)
    small_md5 = await asyncio.to_thread(make_body, small, 128 * MiB)
    idle = sampler.rss()
    single = await _phase(base_url, sampler, big, big_md5, GiB, 1)
    parallel = await _phase(base_url, sampler, small, small_md5, 128 * MiB, 8)
    return {
        "emulator_idle_rss_mb": round(idle / 1e6, 1),
        "single_1gib": single,
        "parallel_8x128mib": parallel,
    }


def run() -> dict[str, Any]:
    """Run the benchmark; its results (throughput in MB/s = 10^6 bytes/s)."""
    work = Path(tempfile.mkdtemp(prefix="bench-emulator-"))
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bulkload.emulator",
            "--port",
            "0",
            "--api-key",
            API_KEY,
            "--data-dir",
            str(work / "emulator"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=PROJECT_ROOT,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().decode().strip()
        if not base_url.startswith("http://"):
            raise RuntimeError(f"the emulator did not print its URL (got {base_url!r})")
        with RssSampler(proc.pid) as sampler:
            results = asyncio.run(_bench(base_url, sampler, work))
        results["base_url"] = base_url
        return results
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    results = run()
    for name in ("single_1gib", "parallel_8x128mib"):
        phase = results[name]
        print(
            f"{name:>18}: {phase['mb_per_s']:8.1f} MB/s  "
            f"({phase['bytes'] / GiB:.2f} GiB in {phase['seconds']:.2f} s), "
            f"emulator peak RSS +{phase['peak_rss_increase_mb']:.1f} MB"
        )
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
