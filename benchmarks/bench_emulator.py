"""How fast the emulator sinks PUT bodies, and how little memory it spends doing so.

    python -m benchmarks.bench_emulator

Starts ``python -m bulkload.emulator --port 0`` (storing bodies, not the sink mode) as a
separate process, so its memory is measured alone (``_common.EmulatorProcess``), then
PUTs one 1 GiB body and eight parallel 128 MiB bodies, each streamed from a temp file
with a Content-Length, as bulkload itself sends them. Reports the emulator's throughput
and its peak RSS increase over its idle baseline, sampled with psutil. ``run()`` returns
the numbers as a dict. Not part of ``make bench``: the upload ceiling there is measured
against the sink (``--discard-bodies``) with curl, in ``bench_upload``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from ._common import API_KEY, EmulatorProcess, GiB, MiB, RssSampler


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
    try:
        # Not a sink: this measures the emulator that stores and hashes every body.
        with EmulatorProcess(discard_bodies=False, data_dir=work / "emulator") as emu:
            assert emu.process is not None
            with RssSampler(emu.process.pid) as sampler:
                results = asyncio.run(_bench(emu.base_url, sampler, work))
            results["base_url"] = emu.base_url
            return results
    finally:
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
