"""Where bulkload's CPU goes on one dataset: its CPU s/GB split by library, from ``perf``.

    python -m benchmarks.profile --dataset many [--quick] [--workers 0] [--py-spy FILE]

Runs ``bulkload load`` on the dataset against the sink (``--discard-bodies``, its own
process, not profiled) under ``perf record`` (every process of bulkload's tree, sampled on
CPU only, so waits cost nothing), then prints each shared object's share of the CPU and
its CPU s/GB: the interpreter (``libpython``: Python code, per-file bookkeeping), OpenSSL
(``libcrypto``: MD5), the kernel (system calls, page copies, pipes), msgspec (``_core``),
simdjson, zlib or zstandard, libc (memchr, memmove, malloc). With ``--py-spy FILE``, the
same run is also sampled by py-spy (``--format raw --threads --subprocesses``) into FILE,
for the Python functions behind the interpreter's share (``py-spy`` must be installed:
``pip install py-spy``; it counts waiting threads too, so read its shares with care).

Needs ``perf`` (``apt-get install linux-perf``) and ``kernel.perf_event_paranoid`` ≤ 2.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ._common import API_KEY, NAMESPACE, EmulatorProcess, env_with_project, warm
from .datasets import standard

#: What each shared object is, for the table.
LIBRARIES = {
    "libpython": "Python interpreter (bulkload's Python code)",
    "libcrypto": "OpenSSL (MD5; TLS)",
    "[kernel.kallsyms]": "kernel (system calls, page copies, pipes)",
    "_core.cpython": "msgspec (validation)",
    "csimdjson": "simdjson (the server's line rules)",
    "libc.so": "libc (memchr, memmove, malloc)",
    "libz.so": "zlib (standard library gzip)",
    "backend_c.cpython": "zstandard",
    "isal": "ISA-L",
    "_pickle": "pickle (to and from worker processes)",
    "orjson": "orjson",
}
#: Samples per second and CPU: enough for a few thousand samples in a 5 s run.
FREQUENCY = 499


def describe(dso: str) -> str:
    return next((what for key, what in LIBRARIES.items() if key in dso), dso)


def split_by_library(report: str, gb: float) -> list[tuple[float, float, str]]:
    """(share %, CPU s/GB, what) per shared object from ``perf report --sort dso``."""
    found = re.search(r"# Event count \(approx\.\): (\d+)", report)
    if found is None:
        raise RuntimeError("perf recorded nothing")
    cpu_s = int(found.group(1)) / 1e9  # cpu-clock counts nanoseconds
    rows = []
    for m in re.finditer(r"^\s+([\d.]+)%\s+(\S+)", report, re.MULTILINE):
        share = float(m.group(1))
        rows.append((share, cpu_s / gb * share / 100, describe(m.group(2))))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="products", help="a name of standard()'s")
    parser.add_argument("--quick", action="store_true", help="the smaller datasets")
    parser.add_argument("--workers", default="0", help="bulkload --workers (default 0)")
    parser.add_argument("--py-spy", type=Path, help="also sample with py-spy into this file")
    args = parser.parse_args(argv)
    if shutil.which("perf") is None:
        print("perf is not installed (apt-get install linux-perf)", file=sys.stderr)
        return 1
    dataset = standard(args.quick)[args.dataset]
    env = {**env_with_project(), "SAFETYKIT_API_KEY": API_KEY}
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp, EmulatorProcess() as sink:
        bulkload = [sys.executable, "-m", "bulkload", "load", NAMESPACE, *dataset.inputs]
        bulkload += ["--base-url", sink.base_url, "--quiet", "--json", "--workers", args.workers]
        data = Path(tmp) / "perf.data"
        runs = [(["perf", "record", "-q", "-F", str(FREQUENCY), "-o", str(data)], "w1")]
        if args.py_spy is not None:
            spy = ["py-spy", "record", "--format", "raw", "--threads", "--subprocesses"]
            runs.append(([*spy, "--nonblocking", "-o", str(args.py_spy)], "w2"))
        for prefix, work in runs:
            warm(dataset.files)
            cmd = [*prefix, "--", *bulkload, "--work-dir", str(Path(tmp) / work)]
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, timeout=900)
        report = subprocess.run(
            ["perf", "report", "-i", str(data), "--stdio", "--sort", "dso"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    rows = split_by_library(report, dataset.bytes / 1e9)
    total = sum(r[1] for r in rows)
    print(f"{dataset.name}, bulkload --workers {args.workers}: {total:.2f} CPU s/GB")
    for share, per_gb, what in rows:
        if share >= 0.5:
            print(f"  {share:5.1f} %  {per_gb:5.2f} CPU s/GB  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
