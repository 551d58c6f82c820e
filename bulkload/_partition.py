"""Beyond one machine: split the inputs between workers, and merge their manifests.

``partition_inputs`` gives worker ``I`` of ``N`` its share of the resolved inputs. Every
worker computes the same assignment from the same input list, with no coordination:
files are taken largest first (ties by path) and each goes to the lightest share so far
(ties to the lowest index). That keeps every share within one file size of every other
(when a file lands on the lightest share, that share ends at most one file size above the
lightest, and the others were already within one file size), and it is the classic LPT
schedule, within 4/3 of the best possible spread.

``merge_manifests`` checks that a set of manifests is one complete, non-overlapping run
(same namespace, base URL and id options; every partition once; no input in two
manifests) and combines them into one manifest that ``status`` and ``wait`` accept.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from ._durable import atomic_write
from ._errors import ConfigError, StateError
from ._inputs import Source, resolve_inputs
from ._journal import JOURNAL, MANIFEST, STATE_DIR, RunState, load_manifest
from ._model import RECORDS_SOURCE, STDIN
from ._version import __version__

#: Options that change which ids a shard's lines yield; ``wait --results`` re-derives the
#: ids from the source lines with them, so merged manifests must agree on them.
_ID_OPTIONS = ("id_field", "coerce_id")
#: Inputs that cannot overlap between manifests in a way merge could see.
_NOT_FILES = (STDIN, RECORDS_SOURCE)


def partition_inputs(
    inputs: Sequence[str | os.PathLike[str]],
    index: int,
    count: int,
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """The files (or object URLs) worker ``index`` (0-based) of ``count`` loads, given the
    INPUTs every worker is given (files, directories, globs, URLs): what ``load
    --partition I/N`` takes, for planning or for an engine of your own.

    Raises ConfigError for standard input or a file of unknown size (a pipe), which cannot
    be split the same way on every worker; SourceError as ``load`` does for bad INPUTs.
    """
    sources = resolve_inputs([os.fspath(i) for i in inputs], storage_options=storage_options)
    return [s.display for s in share_of(sources, index, count)]


def share_of(sources: Sequence[Source], index: int, count: int) -> list[Source]:
    """Worker ``index``'s share (0-based) of ``sources`` split ``count`` ways by size.

    The share keeps the order of ``sources``. Raises ConfigError for standard input or a
    source of unknown size (a pipe), which cannot be split deterministically.
    """
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"partition must satisfy 0 <= I < N, got {index}/{count}")
    return [sources[i] for i in _assign(sources, count)[index]]


def key_share(key: str, count: int) -> int:
    """The share (0-based, of ``count``) of a file with ledger key ``key``, for incremental
    loads: by a hash of the key alone, so a file stays with its worker from night to night
    however the list grows (the size-based split moves files when new ones arrive, and a
    file moved to a machine whose ledger does not know it would load twice)."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count


def _assign(sources: Sequence[Source], count: int) -> list[list[int]]:
    """Indexes into ``sources`` for each of ``count`` shares, each list in input order."""
    for s in sources:
        if s.size is None:
            what = "standard input (-)" if s.display == "-" else f"{s.display} (a pipe?)"
            raise ConfigError(
                f"cannot partition {what}: its size is unknown; --partition needs files "
                "that every worker can see"
            )
    order = sorted(range(len(sources)), key=lambda i: (-(sources[i].size or 0), sources[i].display))
    loads = [0] * count
    shares: list[list[int]] = [[] for _ in range(count)]
    for i in order:
        # min() returns the first of equal loads: the lowest share index breaks ties.
        lightest = min(range(count), key=loads.__getitem__)
        loads[lightest] += sources[i].size or 0
        shares[lightest].append(i)
    return [sorted(share) for share in shares]


def partition_record(sources: Sequence[Source], index: int, count: int) -> dict[str, Any]:
    """The ``partition`` entry of a worker's manifest: which share, of what."""
    return {
        "index": index,
        "count": count,
        "inputs": [{"path": s.display, "size": s.size} for s in sources],
    }


# -- merge ------------------------------------------------------------------------------------


def _read(path: Path) -> tuple[Path, dict[str, Any]]:
    """A manifest and where it was found. For a work dir, the journal is replayed: it is
    newer than manifest.json when a worker was killed between two manifest writes."""
    if path.is_dir() and (path / STATE_DIR / JOURNAL).exists():
        state = RunState.open(path)
        if state.run:
            return path / MANIFEST, state.manifest()
    where = path / MANIFEST if path.is_dir() else path
    return where, load_manifest(path)


def merge_manifests(paths: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """One manifest for the runs of ``paths`` (work dirs or manifest files).

    Shards are renumbered in partition order (or the order given); each keeps its
    ``partition``, ``original_index`` and ``work_dir``. Raises StateError naming every
    problem: different namespaces, base URLs, id options or partition counts, a
    partition given twice or missing, an input in two manifests, a merged manifest.
    """
    if not paths:
        raise StateError("merge needs at least one manifest or work dir")
    docs = [_read(Path(p)) for p in paths]
    problems: list[str] = []

    def same(key: str, value: Any = None) -> None:
        values = {
            str(where): (doc.get(key) if value is None else value(doc)) for where, doc in docs
        }
        if len({orjson.dumps(v) for v in values.values()}) > 1:
            listed = ", ".join(f"{v!r} in {w}" for w, v in values.items())
            problems.append(f"the manifests differ in {key}: {listed}")

    merged = [str(where) for where, doc in docs if "merged_from" in doc]
    if merged:
        raise StateError(
            f"cannot merge: {', '.join(merged)} already merged; merge the workers' own manifests"
        )
    same("namespace")
    same("base_url")
    for key in _ID_OPTIONS:
        same(key, lambda d, k=key: d.get("options", {}).get(k, False if k == "coerce_id" else "id"))
    partitioned = [doc.get("partition") is not None for _, doc in docs]
    if any(partitioned) and not all(partitioned):
        plain = [str(w) for (w, d), p in zip(docs, partitioned, strict=True) if not p]
        problems.append(
            "some manifests come from --partition runs and some do not: " + ", ".join(plain)
        )
    elif all(partitioned):
        _check_partitions(docs, problems)
    seen: dict[str, Path] = {}
    for where, doc in docs:
        for entry in doc.get("inputs", []):
            path = entry["path"]
            if path in _NOT_FILES:
                continue
            if path in seen:
                problems.append(
                    f"input {path} is in both {seen[path]} and {where}: it was loaded twice"
                )
            else:
                seen[path] = where
    if problems:
        raise StateError("cannot merge: " + "; ".join(problems))
    if all(partitioned):
        docs.sort(key=lambda wd: int(wd[1]["partition"]["index"]))
    return _combine(docs, partitioned=all(partitioned))


def _check_partitions(docs: list[tuple[Path, dict[str, Any]]], problems: list[str]) -> None:
    counts = {int(d["partition"]["count"]) for _, d in docs}
    if len(counts) > 1:
        listed = ", ".join(
            f"{w}: {d['partition']['index']}/{d['partition']['count']}" for w, d in docs
        )
        problems.append(f"the manifests are partitions of different counts ({listed})")
        return
    count = counts.pop()
    by_index: dict[int, list[Path]] = {}
    for where, doc in docs:
        by_index.setdefault(int(doc["partition"]["index"]), []).append(where)
    for index, wheres in sorted(by_index.items()):
        if len(wheres) > 1:
            problems.append(
                f"partition {index}/{count} is given {len(wheres)} times: "
                + ", ".join(str(w) for w in wheres)
            )
    missing = [i for i in range(count) if i not in by_index]
    if missing:
        listed = ", ".join(f"{i}/{count}" for i in missing)
        problems.append(
            f"partition(s) {listed} missing: load them with --partition (or give their work dirs)"
        )
    lists = {orjson.dumps(d["partition"]["inputs"]) for _, d in docs}
    if len(lists) > 1:
        problems.append(
            "the workers split different input lists (paths or sizes differ), so their "
            "shares may overlap or leave files out: give every worker the same INPUTs"
        )
        return
    inputs = docs[0][1]["partition"]["inputs"]
    if docs[0][1]["partition"].get("assignment") == "key":
        for where, doc in docs:
            index = int(doc["partition"]["index"])
            stray = [
                str(i["path"])
                for i in doc.get("inputs", [])
                if i.get("key") and key_share(str(i["key"]), count) != index
            ]
            if stray:
                problems.append(
                    f"{where} loaded {len(stray)} input(s) of another worker's share "
                    f"({stray[0]} …); was it run by another version of bulkload?"
                )
        return
    if not inputs:
        return  # records (e.g. a dask bag): nothing to recompute
    sources = [Source(i["path"], None, None, i["size"], None) for i in inputs]
    shares = _assign(sources, count)
    for where, doc in docs:
        want = [inputs[i]["path"] for i in shares[int(doc["partition"]["index"])]]
        got = [i["path"] for i in doc.get("inputs", [])]
        if got != want:
            problems.append(
                f"{where} loaded {len(got)} input(s) that are not its share of the list "
                f"({len(want)} input(s)); was it run by another version of bulkload?"
            )


def _combine(docs: list[tuple[Path, dict[str, Any]]], *, partitioned: bool) -> dict[str, Any]:
    first = docs[0][1]
    shards: list[dict[str, Any]] = []
    merged_from: list[dict[str, Any]] = []
    inputs: list[dict[str, Any]] = []
    totals = {"lines": 0, "records": 0, "rejected": 0, "blank": 0}
    for where, doc in docs:
        part = doc.get("partition")
        index = int(part["index"]) if part else None
        work_dir = doc.get("work_dir") or str(where.parent)
        for shard in sorted(doc.get("shards", []), key=lambda s: int(s["index"])):
            shards.append(
                {
                    **shard,
                    "index": len(shards),
                    "partition": index,
                    "original_index": shard["index"],
                    "work_dir": work_dir,
                }
            )
        inputs.extend(doc.get("inputs", []))
        for key in totals:
            totals[key] += int(doc.get("totals", {}).get(key, 0))
        merged_from.append(
            {
                "manifest": str(where),
                "work_dir": work_dir,
                "partition": index,
                "shards": len(doc.get("shards", [])),
                "finished_at": doc.get("finished_at"),
                "totals": doc.get("totals", {}),
            }
        )
    finished = [doc.get("finished_at") for _, doc in docs]
    started = [s for _, doc in docs if (s := doc.get("started_at"))]
    options = dict(first.get("options", {}))
    options["partition"] = None
    # Reconciliation rejects records longer than this, as the loads did: take the largest.
    sizes = [int(d.get("options", {}).get("shard_max_bytes", 0)) for _, d in docs]
    if any(sizes):
        options["shard_max_bytes"] = max(sizes)
    out: dict[str, Any] = {
        "tool": "bulkload",
        "version": __version__,
        "namespace": first.get("namespace"),
        "base_url": first.get("base_url"),
        "work_dir": None,
        "inputs": inputs,
    }
    if partitioned:
        out["partition"] = {
            "index": None,
            "count": first["partition"]["count"],
            "inputs": first["partition"]["inputs"],
        }
    uploaded = sum(1 for s in shards if s.get("status") == "uploaded")
    failed = sum(1 for s in shards if s.get("status") == "failed")
    out.update(
        {
            "options": options,
            "started_at": min(started) if started else None,
            "finished_at": None if None in finished else max(str(f) for f in finished),
            "runs": sum(int(d.get("runs", 0)) for _, d in docs),
            "dry_run": any(bool(d.get("dry_run")) for _, d in docs),
            "merged_from": merged_from,
            "shards": shards,
            "totals": {**totals, "shards": len(shards), "uploaded": uploaded, "failed": failed},
        }
    )
    return out


def write_merged(doc: dict[str, Any], output: str | os.PathLike[str]) -> Path:
    """Write a merged manifest to ``output`` (a file, or a directory for its manifest.json)
    atomically; refuse to overwrite a work dir's own manifest."""
    path = Path(output)
    if path.is_dir():
        path = path / MANIFEST
    if path.name == MANIFEST and (path.parent / STATE_DIR / JOURNAL).exists():
        raise StateError(
            f"{path} is the manifest of a work dir; write the merged manifest elsewhere "
            "(e.g. --output merged.json)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {**doc, "work_dir": str(path.parent)}
    atomic_write(path, orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    return path
