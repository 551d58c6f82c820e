"""Data-shaped helpers shared by the loader's tests (no fixtures here: see conftest.py)."""

from __future__ import annotations

import collections
import gzip
from pathlib import Path
from typing import Any

import orjson


def record(i: int, **extra: Any) -> bytes:
    """One valid product-like line (without its newline)."""
    return orjson.dumps({"id": f"p-{i:06d}", "title": f"thing {i}", "price": i * 1.25, **extra})


def write_lines(path: Path, lines: list[bytes], *, newline_at_end: bool = True) -> Path:
    data = b"\n".join(lines) + (b"\n" if newline_at_end and lines else b"")
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    elif path.suffix == ".zst":
        import zstandard

        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        path.write_bytes(data)
    return path


def stored_lines(emu: Any, namespace: str | None = None) -> list[bytes]:
    """Every line of every object the emulator stored (one per upload, last PUT wins)."""
    return [line for _, line in emu.stored_records(namespace)]


def assert_exactly_once(emu: Any, expected: list[bytes], namespace: str | None = None) -> None:
    """Every expected line arrived exactly once, and nothing else did."""
    got = collections.Counter(stored_lines(emu, namespace))
    want = collections.Counter(expected)
    missing = want - got
    extra = got - want
    assert not missing, f"{sum(missing.values())} lines never arrived, e.g. {next(iter(missing))!r}"
    assert not extra, (
        f"{sum(extra.values())} unexpected or duplicated lines, e.g. {next(iter(extra))!r}"
    )


def read_rejects(work_dir: Path) -> list[dict[str, Any]]:
    path = work_dir / "rejects.jsonl"
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def read_manifest(work_dir: Path) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((work_dir / "manifest.json").read_bytes())
    return doc
