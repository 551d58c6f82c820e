"""``make demo``: the whole job against the built-in emulator, no key or account needed.

Generates a small, realistic dataset (product records in a plain and a gzipped file, with a
few deliberately bad lines), starts the emulator in a background thread, and runs the real
command line against it: ``bulkload load``, then ``bulkload wait`` for the results.
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
import sys
from pathlib import Path

import orjson

from .cli import main as cli_main
from .emulator import EmulatorThread

DATA = Path("demo-data")
WORK = Path("demo-work")
NIGHTLY = Path("demo-nightly")
KEY = "demo-key"
_WORDS = [
    "ergonomic",
    "steel",
    "wooden",
    "cotton",
    "smart",
    "compact",
    "deluxe",
    "vintage",
    "wireless",
    "organic",
]
_THINGS = [
    "chair",
    "lamp",
    "kettle",
    "backpack",
    "headphones",
    "mug",
    "desk",
    "jacket",
    "sneaker",
    "blender",
]


def product(i: int, rng: random.Random) -> dict[str, object]:
    return {
        "id": f"sku-{i:06d}",
        "title": f"{rng.choice(_WORDS).title()} {rng.choice(_THINGS)}",
        "description": " ".join(rng.choices(_WORDS + _THINGS, k=rng.randint(8, 30))),
        "price": {"amount": round(rng.uniform(2, 900), 2), "currency": "USD"},
        "seller": {
            "id": f"seller-{rng.randint(1, 300)}",
            "country": rng.choice(["US", "DE", "FR", "JP", "BR"]),
        },
        "tags": rng.sample(_WORDS, 3),
        "in_stock": rng.random() < 0.8,
    }


def generate() -> list[Path]:
    """Two files, 3,000 records, and three lines that must be rejected (with line numbers)."""
    DATA.mkdir(exist_ok=True)
    rng = random.Random(7)
    plain = [orjson.dumps(product(i, rng)) for i in range(1500)]
    plain.insert(100, b'{"id": 101, "title": "an id that is a number"}')
    plain.insert(700, b"")
    plain.insert(900, b'{"title": "no id at all"}')
    (DATA / "products-1.jsonl").write_bytes(b"\n".join(plain) + b"\n")
    zipped = [orjson.dumps(product(i, rng)) for i in range(1500, 3000)]
    zipped.insert(42, b'{"id": "sku-broken", "title": "truncated')
    with gzip.open(DATA / "products-2.jsonl.gz", "wb") as f:
        f.write(b"\n".join(zipped) + b"\n")
    return [DATA / "products-1.jsonl", DATA / "products-2.jsonl.gz"]


def main() -> int:
    inputs = generate()
    shutil.rmtree(WORK, ignore_errors=True)
    with EmulatorThread(api_key=KEY, ingest_delay=1.0) as emu:
        print(f"== the emulator (SafetyKit + S3 stand-in) is at {emu.base_url}\n", flush=True)
        os.environ["SAFETYKIT_API_KEY"] = KEY
        common = ["--base-url", emu.base_url]
        argv = ["load", "products", *map(str, inputs), "--work-dir", str(WORK),
                "--shard-records", "500", *common]  # fmt: skip
        print(f"== bulkload {' '.join(argv)}", flush=True)
        code = cli_main(argv)
        print(f"(exit code {code}: 3 means every record went up and some lines were rejected)\n")
        rejects = (WORK / "rejects.jsonl").read_bytes().splitlines()
        print(f"== {len(rejects)} rejected lines, each with its file and line number:")
        for raw in rejects:
            r = orjson.loads(raw)
            print(f"   {r['source']}:{r['line']}: {r['error']}")
        print(flush=True)
        # On purpose: the server will refuse one record, to show how a failed request is
        # reported (with the source file and line of the record it names) and sent again.
        failing = "sku-002600"
        emu.set_faults(fail_ids={failing})
        print(
            f"== INJECTED FAILURE: the emulator now fails processing of any request that "
            f"holds {failing}, as SafetyKit fails a request it cannot process\n",
            flush=True,
        )
        results = WORK / "results"
        argv = ["wait", str(WORK), "--results", str(results), "--timeout", "120", *common]
        print(f"== bulkload {' '.join(argv)}", flush=True)
        code = cli_main(argv)
        print(f"(exit code {code}: 4 means some requests failed processing; see above why)\n")
        joined = (results / "results.jsonl").read_bytes().splitlines()
        print(f"== {len(joined)} results joined back to their source lines, e.g.:")
        for raw in joined[:: max(1, len(joined) // 3)][:3]:
            r = orjson.loads(raw)
            labels = [x.get("label") for x in r["output"].get("labels", [])]
            print(f"   {r['id']}: labels {labels} <- {r['source']}:{r['line']}")
        emu.set_faults(fail_ids=set())
        print(
            "\n== the injected failure is switched off; the summary above said how to send "
            "the failed request's records again:",
            flush=True,
        )
        argv = ["load", "products", *map(str, inputs), "--work-dir", str(WORK),
                "--shard-records", "500", "--resend-failed", *common]  # fmt: skip
        print(f"== bulkload {' '.join(argv)}", flush=True)
        cli_main(argv)
        argv = ["wait", str(WORK), "--results", str(results), "--timeout", "120", *common]
        print(f"\n== bulkload {' '.join(argv)}", flush=True)
        final = cli_main(argv)
        print(f"(exit code {final}: every request succeeded)")
        print(f"\nEverything is in {WORK}/: manifest.json, rejects.jsonl, results/.\n")
        nightly = nights(common)
    # The demo succeeded when the failure was reported (4) and then repaired (0), and the
    # second night loaded only the new file.
    return 0 if (code, final, nightly) == (4, 0, 0) else 1


def nights(common: list[str]) -> int:
    """A scheduled load: the same command two nights running over a growing export; the
    second night loads only the new file (the ledger remembers the others)."""
    exports = DATA / "nightly"
    shutil.rmtree(exports, ignore_errors=True)
    shutil.rmtree(NIGHTLY, ignore_errors=True)
    ledger = NIGHTLY.with_suffix(".ledger.sqlite")
    for leftover in (ledger, Path(f"{ledger}-wal"), Path(f"{ledger}-shm")):
        leftover.unlink(missing_ok=True)  # the demo starts on night 1 every time
    exports.mkdir(parents=True)
    rng = random.Random(11)

    def export(name: str, first: int) -> None:
        lines = [orjson.dumps(product(i, rng)) for i in range(first, first + 400)]
        (exports / name).write_bytes(b"\n".join(lines) + b"\n")

    export("2026-11-27.jsonl", 10_000)
    export("2026-11-28.jsonl", 10_400)
    argv = ["load", "products", str(exports), "--incremental", "--work-dir", str(NIGHTLY),
            "--ledger", str(ledger), "--quiet", *common]  # fmt: skip
    print("== SCHEDULED LOADS: the same command every night over a growing export", flush=True)
    print(f"== night 1: bulkload {' '.join(argv)}", flush=True)
    first = cli_main(argv)
    export("2026-11-29.jsonl", 10_800)
    print(f"\n== night 2, one new file in {exports}: the same command", flush=True)
    second = cli_main(argv)
    print("(the ledger skipped the two files loaded last night: only the new one went up)")
    return max(first, second)


if __name__ == "__main__":
    sys.exit(main())
