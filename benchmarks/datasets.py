"""The benchmark datasets, generated once and cached under ``bench-data/``.

    python -m benchmarks.datasets [--quick]     # generate (or find) them all; list them

- ``products``: one file of ~580-byte product records (``ensure_data``): 1 GiB, or
  256 MiB with ``--quick``. The text is drawn from a Zipf-weighted vocabulary of 2,000
  made-up words and 300 stock phrases, with random SKUs, image hashes and timestamps, so
  that it compresses as real catalogue exports do (gzip -6 4.4:1, zstd -3 5.3:1; the first
  generator's 28 words gave 6.1:1 and 5.8:1);
- ``files``: 2,000 files of ~64 KiB each, cut from the products file (whole lines, so
  every id stays unique), given to bulkload as their directory;
- ``big``: records of 20–100 KB each (a product with long text and reviews), 256 MiB,
  or 64 MiB with ``--quick``;
- ``gz``, ``zst``: the products file cut into 16 parts at line ends, each part
  compressed as ``part-NN.jsonl.gz`` (gzip level 6, what ``gzip`` and most exporters
  write) or ``part-NN.jsonl.zst`` (zstd level 3, the ``zstd`` default), a directory each:
  the same records as ``products``;
- ``many``: 20,000 files of 4–64 KiB (sizes drawn uniformly, whole lines) in nested
  directories (20 × 10 × 100), cut from the products file (5,000 files with ``--quick``);
- ``gz1``, ``zst1`` (on request: ``--dataset gz1``): the 16 parts back to back in one
  file, the same records as one big ``.jsonl.gz`` / ``.jsonl.zst`` (members and frames
  may be concatenated);
- ``products-4g``: 4 GiB for the memory row: the 1 GiB file four times, each copy's
  ids renamed (``prod-`` → ``pro1-`` ...: same length, so the bytes and lines match).

``Dataset.bytes`` and ``lines`` count the records' bytes as bulkload uploads them
(decompressed), ``stored_bytes`` what is on disk. A dataset is written to a temp name and
renamed when complete, so an interrupted generation is redone, never half-used.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import io
import itertools
import json
import lzma
import os
import random
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import zstandard

from ._common import DATA_DIR, GiB, MiB, log

#: Read and write block: whole lines are cut out of blocks this big.
BLOCK = 8 * MiB
SMALL_FILES = 2000
SMALL_FILE_BYTES = 64 * 1024
#: Drawn sizes; the records come out within a few % of them (20–95 KB).
BIG_RECORD_MIN, BIG_RECORD_MAX = 21_000, 100_000


#: The compressed datasets: the products file in this many parts (a typical export's
#: directory of part files), each compressed on its own.
PARTS = 16
#: gzip's default level, which ``gzip``, pigz and most exporters write.
GZIP_LEVEL = 6
#: zstd's default level (the ``zstd`` command line's).
ZSTD_LEVEL = 3
MANY_FILES, MANY_FILES_QUICK = 20_000, 5_000
MANY_MIN, MANY_MAX = 4 * 1024, 64 * 1024

#: Made-up words from these syllables: text that compresses like a real catalogue's (a
#: few thousand distinct words, Zipf-distributed), not like 28 words on repeat.
_SYLLABLES = (  # noqa: SIM905 -- one string reads better than 57 quoted syllables
    "ka lo mi ne ra su ti vo ba de fi gu ho ja ke li mo nu pa qui re sa to ul va we xi yo za "
    "an el in or us ar en ir on ur ax ex ix ox bra cre dri flo gla pre sto tri spa chi sho tho"
).split()
_COMMON = "the a and with for of in to is on this that your our from by".split()  # noqa: SIM905


def _made_up_words(rng: random.Random, n: int) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        word = "".join(rng.choices(_SYLLABLES, k=rng.choice((1, 2, 2, 3, 3, 4))))
        if word not in seen:
            seen.add(word)
            out.append(word)
    return out


_VOCAB_RNG = random.Random(1234)
#: 2,000 words under a Zipf law of exponent 1.2, 300 stock phrases (exponent 0.9), random
#: digits where exports have them: tuned on 40,000 records to gzip -6 4.4:1 and zstd -3
#: 5.3:1, inside the 4-6:1 that real JSONL exports show (5,000 words gave 3.2:1).
VOCABULARY = _COMMON + _made_up_words(_VOCAB_RNG, 2000)
_VOCAB_CUM = list(itertools.accumulate(1 / (r + 1) ** 1.2 for r in range(len(VOCABULARY))))


def _words(rng: random.Random, k: int) -> str:
    return " ".join(rng.choices(VOCABULARY, cum_weights=_VOCAB_CUM, k=k))


_PHRASES = [_words(_VOCAB_RNG, _VOCAB_RNG.randint(4, 10)).capitalize() for _ in range(300)]
_PHRASE_CUM = list(itertools.accumulate(1 / (r + 1) ** 0.9 for r in range(len(_PHRASES))))
_BRANDS = [
    word.title() + suffix
    for word, suffix in zip(
        _made_up_words(_VOCAB_RNG, 800),
        itertools.cycle(["", " Co", " Labs", "ware", " & Sons"]),
        strict=False,
    )
]
_CATEGORIES = [
    " > ".join(w.title() for w in _VOCAB_RNG.sample(VOCABULARY[16:400], 3)) for _ in range(300)
]
#: The big records' words, as before (they measure record size, not compression; their
#: sizes were measured with these).
WORDS = (  # noqa: SIM905 -- a sentence reads better than 28 quoted words
    "wireless charger cable cotton shirt organic coffee beans steel bottle kids toy lamp desk "
    "chair premium pack black white large small vintage leather bag phone case garden hose"
).split()


def product(rng: random.Random, i: int) -> dict[str, Any]:
    title = rng.choice(_BRANDS) + " " + _words(rng, rng.randint(3, 7)).title()
    if i % 5 == 0:
        title += " — édition spéciale ✓"  # some non-ASCII, as real catalogues have
    sentences = [
        rng.choices(_PHRASES, cum_weights=_PHRASE_CUM)[0] + " " + _words(rng, rng.randint(0, 3))
        for _ in range(rng.randint(2, 5))
    ]
    when = (
        f"202{rng.randrange(4, 7)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        f"T{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}Z"
    )
    return {
        "id": f"prod-{i:010d}",
        "sku": f"SKU{rng.randrange(10**9):09d}",
        "title": title,
        "description": ". ".join(sentences) + ".",
        "price": round(rng.uniform(1, 500), 2),
        "currency": rng.choice(("USD", "USD", "USD", "EUR", "GBP")),
        "category": rng.choice(_CATEGORIES),
        "tags": rng.choices(VOCABULARY, cum_weights=_VOCAB_CUM, k=rng.randint(1, 5)),
        "rating": round(rng.uniform(1, 5), 1),
        "reviews": rng.randrange(5000),
        "in_stock": rng.random() > 0.2,
        "seller": {"id": f"s{rng.randrange(10**6)}", "name": rng.choice(_BRANDS)},
        "images": [
            f"https://cdn.example.com/img/{rng.getrandbits(32):08x}.jpg"
            for _ in range(rng.randint(1, 3))
        ],
        "created_at": when,
    }


def ensure_data(size: int, directory: Path = DATA_DIR) -> Path:
    """The cached file of about ``size`` bytes of product records, generated on first use
    (seeded: the first N bytes of a larger file are the smaller file)."""
    path = directory / f"products-v2-{size // MiB}MiB.jsonl"
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
    bytes: int  # of records as uploaded: decompressed
    lines: int
    #: On disk: less than ``bytes`` when compressed.
    stored_bytes: int = 0
    #: ``gz``, ``zst`` ..., or None for plain JSONL.
    compression: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.description,
            "inputs": self.inputs,
            "files": len(self.files),
            "bytes": self.bytes,
            "stored_bytes": self.stored_bytes,
            "compression": self.compression,
            "lines": self.lines,
        }


def open_plain(path: Path) -> io.BufferedIOBase:
    """``path``'s records, decompressed by suffix with the standard decoders (the
    benchmark's own reading, independent of bulkload's)."""
    match path.suffix:
        case ".gz":
            return gzip.open(path, "rb")
        case ".bz2":
            return bz2.open(path, "rb")
        case ".xz":
            return lzma.open(path, "rb")
        case ".zst":
            reader = zstandard.ZstdDecompressor().stream_reader(
                path.open("rb"), read_across_frames=True, closefd=True
            )
            # Buffered: lines can be iterated, as from the other decoders' files.
            return io.BufferedReader(reader)
    return path.open("rb")


def plain_blocks(paths: list[Path], size: int = BLOCK) -> Iterator[bytes]:
    """Every file's records (decompressed), in blocks of up to ``size`` bytes."""
    for path in paths:
        with open_plain(path) as f:
            while block := f.read(size):
                yield block


def count_lines(paths: list[Path]) -> int:
    return sum(block.count(b"\n") for block in plain_blocks(paths))


def _dataset(
    name: str, description: str, inputs: list[str], files: list[Path], **known: Any
) -> Dataset:
    stored = sum(p.stat().st_size for p in files)
    return Dataset(
        name=name,
        description=description,
        inputs=inputs,
        files=files,
        bytes=known.get("bytes", stored),
        lines=known["lines"] if "lines" in known else count_lines(files),
        stored_bytes=stored,
        compression=known.get("compression"),
    )


def products(size: int) -> Dataset:
    path = ensure_data(size, DATA_DIR)
    label = f"{size // GiB} GiB" if size >= GiB else f"{size // MiB} MiB"
    return _dataset(
        f"products-{label.replace(' ', '')}",
        f"{label} of ~580-byte product records, one file",
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
    directory = DATA_DIR / f"files-v2-{SMALL_FILES}x{SMALL_FILE_BYTES // 1024}KiB"
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
    path = DATA_DIR / "products-v2-4096MiB.jsonl"
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
        "4 GiB of ~580-byte product records, one file",
        [str(path)],
        [path],
    )


def _line_cuts(path: Path, parts: int) -> list[tuple[int, int]]:
    """``parts`` byte ranges of ``path`` of about equal size, cut just after newlines."""
    size = path.stat().st_size
    cuts = [0]
    with path.open("rb") as f:
        for k in range(1, parts):
            f.seek(max(cuts[-1], k * size // parts))
            f.readline()  # to the end of the line that holds the target offset
            cuts.append(min(f.tell(), size))
    cuts.append(size)
    return list(itertools.pairwise(cuts))


def _compress_part(source: str, start: int, end: int, codec: str, out: str) -> None:
    """Compress bytes ``start..end`` of ``source`` into ``out`` (in a pool process)."""
    with open(source, "rb") as f, open(out, "wb") as raw:
        f.seek(start)
        if codec == "gz":
            # mtime=0: the same bytes on every generation.
            sink: io.BufferedIOBase | zstandard.ZstdCompressionWriter = gzip.GzipFile(
                fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL, mtime=0
            )
        else:
            sink = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).stream_writer(
                raw, closefd=False
            )
        with sink:
            left = end - start
            while left > 0:
                block = f.read(min(BLOCK, left))
                if not block:
                    break
                sink.write(block)
                left -= len(block)


def compressed_parts(source: Dataset, codec: str, parts: int = PARTS) -> Dataset:
    """``source`` (one plain file) cut into ``parts`` files at line ends, each compressed
    with ``codec`` (``gz`` or ``zst``); a directory, with its byte and line counts kept
    in ``.counts.json`` (counting them means decompressing everything)."""
    (path,) = source.files
    directory = DATA_DIR / f"{path.stem}.{codec}-{parts}"
    # Hidden: bulkload skips it when it reads the directory.
    meta = directory / ".counts.json"
    if not meta.exists():
        log(f"datasets: generating {directory.name} (once) ...")
        tmp = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        ranges = _line_cuts(path, parts)
        # The machine's cores: gzip -6 compresses ~30 MB/s per core.
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            done = [
                pool.submit(
                    _compress_part, str(path), a, b, codec, str(tmp / f"part-{k:02d}.jsonl.{codec}")
                )
                for k, (a, b) in enumerate(ranges)
            ]
            for future in done:
                future.result()
        counts = {"bytes": source.bytes, "lines": source.lines}
        (tmp / ".counts.json").write_text(json.dumps(counts))
        os.replace(tmp, directory)
    known = json.loads(meta.read_text())
    files = sorted(directory.glob(f"*.jsonl.{codec}"))
    stored = sum(p.stat().st_size for p in files)
    return _dataset(
        f"{codec}-{parts}",
        f"the {source.name} records in {parts} .jsonl.{codec} files "
        f"({known['bytes'] / stored:.1f}:1), a directory",
        [str(directory)],
        files,
        compression=codec,
        **known,
    )


def one_compressed(parts: Dataset) -> Dataset:
    """The compressed parts back to back in one file (gzip members and zstd frames may be
    concatenated): the same records as one big ``.jsonl.gz`` or ``.jsonl.zst``, which no
    decoder can split over cores."""
    codec = parts.compression
    assert codec is not None
    path = DATA_DIR / f"{Path(parts.inputs[0]).stem}.one.jsonl.{codec}"

    def write(out: Any) -> None:
        for part in parts.files:
            with part.open("rb") as f:
                shutil.copyfileobj(f, out, BLOCK)

    _write_once(path, write)
    return _dataset(
        f"{codec}-1",
        f"the {parts.name} parts as one .jsonl.{codec} file",
        [str(path)],
        [path],
        compression=codec,
        bytes=parts.bytes,
        lines=parts.lines,
    )


def many_files(source: Path, count: int) -> Dataset:
    """``count`` files of 4–64 KiB (uniform), cut from ``source`` at line ends, in
    nested directories ``dNN/sN/`` of 100 files each."""
    directory = DATA_DIR / f"{source.stem}.many-{count}"
    if not directory.is_dir():
        log(f"datasets: generating {directory.name} (once) ...")
        tmp = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        rng = random.Random(20_000)
        with source.open("rb") as f:
            for i in range(count):
                target = rng.randint(MANY_MIN, MANY_MAX)
                part = f.read(target)
                part += f.readline()  # whole lines: to the end of the line it cut
                if not part.endswith(b"\n"):
                    raise RuntimeError(f"{source} is too small for {count} files")
                where = tmp / f"d{i // 1000:02d}" / f"s{i // 100 % 10}"
                where.mkdir(parents=True, exist_ok=True)
                (where / f"part-{i:05d}.jsonl").write_bytes(part)
        os.replace(tmp, directory)
    files = sorted(directory.rglob("*.jsonl"))
    return _dataset(
        f"many-{count}",
        f"{count:,} files of 4–64 KiB in nested directories",
        [str(directory)],
        files,
    )


def standard(quick: bool) -> dict[str, Dataset]:
    """The datasets of a benchmark run, by short name (generating what is missing)."""
    log("datasets: generating or checking (cached under bench-data/) ...")
    main = products(256 * MiB if quick else GiB)
    return {
        "products": main,
        "files": small_files(main.files[0]),
        "big": big_records(64 * MiB if quick else 256 * MiB),
        "gz": compressed_parts(main, "gz"),
        "zst": compressed_parts(main, "zst"),
        "many": many_files(main.files[0], MANY_FILES_QUICK if quick else MANY_FILES),
    }


def extra(quick: bool) -> dict[str, Dataset]:
    """Datasets measured on request only (``--dataset gz1``): one big compressed file."""
    sets = standard(quick)
    return {"gz1": one_compressed(sets["gz"]), "zst1": one_compressed(sets["zst"])}


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
