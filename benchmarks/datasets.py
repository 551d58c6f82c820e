"""The benchmark datasets, generated once and cached under ``bench-data/``.

    python -m benchmarks.datasets [--quick]     # generate (or find) them all; list them

- ``products``: one file of ~600-byte product records (``ensure_data``): 1 GiB, or
  256 MiB with ``--quick``;
- ``files``: 2,000 files of ~64 KiB each, cut from the products file (whole lines, so
  every id stays unique), given to bulkload as their directory;
- ``big``: records of 20–100 KB each (a product with long text and reviews), 256 MiB,
  or 64 MiB with ``--quick``;
- ``products-4g``: 4 GiB for the memory row: the 1 GiB file four times, each copy's
  ids renamed (``prod-`` → ``pro1-`` ...: same length, so the bytes and lines match).

A dataset is written to a temp name and renamed when complete, so an interrupted
generation is redone, never half-used.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ._common import DATA_DIR, GiB, MiB, log

#: Read and write block: whole lines are cut out of blocks this big.
BLOCK = 8 * MiB
SMALL_FILES = 2000
SMALL_FILE_BYTES = 64 * 1024
#: Drawn sizes; the records come out within a few % of them (20–95 KB).
BIG_RECORD_MIN, BIG_RECORD_MAX = 21_000, 100_000


WORDS = (  # noqa: SIM905 -- a sentence reads better than 28 quoted words
    "wireless charger cable cotton shirt organic coffee beans steel bottle kids toy lamp desk "
    "chair premium pack black white large small vintage leather bag phone case garden hose"
).split()


def product(rng: random.Random, i: int) -> dict[str, Any]:
    title = " ".join(rng.choices(WORDS, k=6)).title()
    if i % 5 == 0:
        title += " — édition spéciale ✓"  # some non-ASCII, as real catalogues have
    return {
        "id": f"prod-{i:010d}",
        "sku": f"SKU{rng.randrange(10**9):09d}",
        "title": title,
        "description": " ".join(rng.choices(WORDS, k=38)),
        "price": round(rng.uniform(1, 500), 2),
        "currency": "USD",
        "tags": rng.choices(WORDS, k=4),
        "in_stock": rng.random() > 0.2,
        "seller": {"id": f"s{rng.randrange(10**6)}", "name": "Shop " + rng.choice(WORDS)},
        "images": [f"https://cdn.example.com/img/{i}/{k}.jpg" for k in range(2)],
        "created_at": "2026-05-01T12:00:00Z",
    }


def ensure_data(size: int, directory: Path = DATA_DIR) -> Path:
    """The cached file of about ``size`` bytes of product records, generated on first use
    (seeded: the first N bytes of a larger file are the smaller file)."""
    path = directory / f"products-{size // MiB}MiB.jsonl"
    if path.exists():
        return path
    log(f"datasets: generating {path.name} (once) ...")
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(42)
    tmp = path.with_suffix(".tmp")
    written = i = 0
    with open(tmp, "wb") as f:
        while written < size:
            batch = b"".join(orjson.dumps(product(rng, i + k)) + b"\n" for k in range(1000))
            f.write(batch)
            written += len(batch)
            i += 1000
    os.replace(tmp, path)
    return path


@dataclass(frozen=True, slots=True)
class Dataset:
    """A generated dataset: what bulkload is given (``inputs``) and what it holds."""

    name: str
    description: str
    inputs: list[str]  # as given on bulkload's command line
    files: list[Path]  # every file, in the order bulkload reads them
    bytes: int
    lines: int

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.description,
            "inputs": self.inputs,
            "files": len(self.files),
            "bytes": self.bytes,
            "lines": self.lines,
        }


def count_lines(paths: list[Path]) -> int:
    n = 0
    for path in paths:
        with path.open("rb") as f:
            while block := f.read(BLOCK):
                n += block.count(b"\n")
    return n


def _dataset(name: str, description: str, inputs: list[str], files: list[Path]) -> Dataset:
    return Dataset(
        name=name,
        description=description,
        inputs=inputs,
        files=files,
        bytes=sum(p.stat().st_size for p in files),
        lines=count_lines(files),
    )


def products(size: int) -> Dataset:
    path = ensure_data(size, DATA_DIR)
    label = f"{size // GiB} GiB" if size >= GiB else f"{size // MiB} MiB"
    return _dataset(
        f"products-{label.replace(' ', '')}",
        f"{label} of ~600-byte product records, one file",
        [str(path)],
        [path],
    )


def _lines_of(path: Path) -> list[bytes]:
    """The whole lines of the first ``SMALL_FILES × SMALL_FILE_BYTES`` bytes of ``path``."""
    with path.open("rb") as f:
        head = f.read(SMALL_FILES * SMALL_FILE_BYTES + MiB)
    return head.splitlines(keepends=True)[:-1]


def small_files(source: Path) -> Dataset:
    """2,000 files of ~64 KiB, cut from ``source`` (a products file) line by line."""
    directory = DATA_DIR / f"files-{SMALL_FILES}x{SMALL_FILE_BYTES // 1024}KiB"
    if not directory.is_dir():
        tmp = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        lines = iter(_lines_of(source))
        for i in range(SMALL_FILES):
            part: list[bytes] = []
            size = 0
            while size < SMALL_FILE_BYTES:
                line = next(lines)
                part.append(line)
                size += len(line)
            (tmp / f"part-{i:05d}.jsonl").write_bytes(b"".join(part))
        os.replace(tmp, directory)
    files = sorted(directory.glob("*.jsonl"))
    return _dataset(
        "files-2000",
        f"{SMALL_FILES:,} files of ~{SMALL_FILE_BYTES // 1024} KiB product records, a directory",
        [str(directory)],
        files,
    )


def big_record(rng: random.Random, i: int) -> bytes:
    """One record of 20–100 KB: a product page with its long text and reviews."""
    target = rng.randrange(BIG_RECORD_MIN, BIG_RECORD_MAX)
    # ~6.4 bytes per word with its space; two thirds of the words in the body, a third
    # in the reviews: measured within a few % of the target size.
    words = target // 10
    reviews = [
        {
            "author": f"user{rng.randrange(10**6)}",
            "stars": rng.randrange(1, 6),
            "text": " ".join(rng.choices(WORDS, k=words // 20)) + " — très bien ✓",
        }
        for _ in range(10)
    ]
    return orjson.dumps(
        {
            "id": f"page-{i:010d}",
            "title": " ".join(rng.choices(WORDS, k=8)).title(),
            "body_html": "<p>" + " ".join(rng.choices(WORDS, k=words)) + "</p>",
            "reviews": reviews,
            "price": round(rng.uniform(1, 500), 2),
            "created_at": "2026-05-01T12:00:00Z",
        }
    )


def big_records(size: int) -> Dataset:
    path = DATA_DIR / f"big-records-{size // MiB}MiB.jsonl"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        rng = random.Random(7)
        tmp = path.with_suffix(".tmp")
        written = i = 0
        with tmp.open("wb") as f:
            while written < size:
                line = big_record(rng, i) + b"\n"
                f.write(line)
                written += len(line)
                i += 1
        os.replace(tmp, path)
    return _dataset(
        f"big-{size // MiB}MiB",
        f"{size // MiB} MiB of 20–100 KB records, one file",
        [str(path)],
        [path],
    )


def products_4gib(source: Path) -> Dataset:
    """4 GiB: ``source`` (the 1 GiB file) and three copies of it with renamed ids."""
    path = DATA_DIR / "products-4096MiB.jsonl"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as out:
            for copy in range(4):
                new = b'{"id":"pro%d-' % copy if copy else b'{"id":"prod-'
                with source.open("rb") as f:
                    rest = b""
                    while block := f.read(BLOCK):
                        block = rest + block
                        cut = block.rfind(b"\n") + 1
                        block, rest = block[:cut], block[cut:]
                        out.write(block.replace(b'{"id":"prod-', new) if copy else block)
                    out.write(rest)
        os.replace(tmp, path)
    return _dataset(
        "products-4GiB",
        "4 GiB of ~600-byte product records, one file",
        [str(path)],
        [path],
    )


def standard(quick: bool) -> dict[str, Dataset]:
    """The datasets of a benchmark run, by short name (generating what is missing)."""
    log("datasets: generating or checking (cached under bench-data/) ...")
    main = products(256 * MiB if quick else GiB)
    return {
        "products": main,
        "files": small_files(main.files[0]),
        "big": big_records(64 * MiB if quick else 256 * MiB),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smaller datasets")
    args = parser.parse_args(argv)
    sets = standard(args.quick)
    if not args.quick:
        sets["products-4g"] = products_4gib(sets["products"].files[0])
    for key, ds in sets.items():
        print(f"{key:12} {ds.name:14} {ds.bytes / 1e6:9,.0f} MB {ds.lines:>10,} lines  {ds.inputs}")


if __name__ == "__main__":
    main()


# -- the input side's edge cases, for the memory stage -------------------------------------------

EDGE_REJECTS = 1_000_000
EDGE_IDS = 2_000_000
EDGE_LINE_BYTES = 200 * 1000 * 1000


def _write_once(path: Path, write: Any) -> None:
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            write(f)
        os.replace(tmp, path)


def rejected_lines() -> Dataset:
    """1,000,000 short lines that are all rejected (a number id): a wrong-format file."""
    path = DATA_DIR / "rejects-1M.jsonl"
    _write_once(path, lambda f: f.write(b'{"id":1}\n' * EDGE_REJECTS))
    return _dataset("rejects-1M", "1M short lines, every one rejected", [str(path)], [path])


def many_ids() -> Dataset:
    """2,000,000 small records for --check-duplicates; every 1,000th id appears twice."""
    path = DATA_DIR / "ids-2M.jsonl"

    def write(f: Any) -> None:
        for start in range(0, EDGE_IDS, 100_000):
            f.write(b"".join(b'{"id":"id-%010d","v":1}\n' % (i - (i % 1000 == 999))
                             for i in range(start, start + 100_000)))  # fmt: skip

    _write_once(path, write)
    return _dataset("ids-2M", "2M small records, --check-duplicates", [str(path)], [path])


def one_long_line(size: int = EDGE_LINE_BYTES) -> Dataset:
    """One line of ``size`` bytes: longer than a shard, and than the reader's blocks."""
    name = f"one-line-{size // 1000**2}MB"
    path = DATA_DIR / f"{name}.jsonl"

    def write(f: Any) -> None:
        f.write(b'{"id":"big","blob":"')
        chunk = b"x" * (1 << 20)
        left = size - 23
        while left > 0:
            f.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)
        f.write(b'"}\n')

    _write_once(path, write)
    return _dataset(name, f"one {size // 1000**2} MB line", [str(path)], [path])


def edges() -> dict[str, tuple[Dataset, list[str], int]]:
    """The edge datasets, each with the options it runs with and its expected exit code."""
    return {
        "1M rejected lines": (rejected_lines(), [], 3),
        "--check-duplicates over 2M ids": (many_ids(), ["--check-duplicates"], 0),
        # Past the stop limit (2 x the 64 MiB shard): the run stops with a message (exit 1).
        "one 200 MB line": (one_long_line(), [], 1),
        # Longer than a shard, under the limit: saved to WORK_DIR/long-lines/, rejected.
        "one 100 MB line": (one_long_line(100 * 1000**2), [], 3),
    }
