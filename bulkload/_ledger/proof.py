"""What a run's journal proves: which of its input files are loaded.

A file is *loaded* when (1) every line of it is in a shard the journal holds, and (2) every
one of those shards is uploaded (the journal's ``uploaded`` event, written after the store
confirmed the PUT). A file split across shards with one failed shard is not loaded; a file
whose every line was rejected or blank is loaded once (1) holds (it has no shard to wait
for, and sending it again would send nothing).

(1) is known without counting lines: a run reads its inputs in order and journals its
shards in order (``Reader.read_sources`` hands them over one by one), so once a shard holds
lines of input ``k``, every input before ``k`` is wholly in journaled shards; the last
inputs are, once the run finished reading (its ``finish`` event).

:class:`Completion` applies this rule to events as they happen (the wiring records each
file the moment it is loaded); :func:`proven_from_manifest` applies it to a work dir's
manifest (the journal replayed), to repair the ledger after a crash between the journal's
``uploaded`` and the ledger's commit. Both are pure: no file is opened here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .file import LedgerError
from .identity import STDIN, FileIdentity, key_for

#: The manifest's name for records from a program (``load_records``): not a file.
RECORDS = "<records>"


@dataclass(frozen=True, slots=True)
class ProvenLoad:
    """A file loaded by a run: the shards that hold its records and their requestIds."""

    identity: FileIdentity
    shards: tuple[int, ...]
    request_ids: tuple[str, ...]
    records: int | None = None


@dataclass(frozen=True, slots=True)
class ProvenRun:
    """What a run's work dir proves, for :meth:`Ledger.repair`."""

    run_id: str
    namespace: str
    work_dir: str | None
    started_at: str | None
    #: The run read every input and settled every shard (its ``finish`` event).
    finished: bool
    files: tuple[ProvenLoad, ...]
    #: Inputs with an identity that are not (yet) loaded, as given.
    unproven: tuple[str, ...]


class Completion:
    """Tells, as a run's events arrive, which inputs have just become loaded.

    ``inputs`` are the run's inputs in reading order; shard sources name them by
    ``display`` (the path as given, as the manifest does). Feed it the journal's events
    (``shard`` when a shard is journaled, ``uploaded`` when its upload is, ``all_read`` at
    the end of reading) and call ``take()`` for the files loaded since the last call.
    Inputs without an identity (standard input) are never reported: the ledger cannot
    recognise them again, so it does not record them.
    """

    def __init__(self, inputs: Sequence[FileIdentity]) -> None:
        self._inputs = list(inputs)
        self._position: dict[str, int] = {}
        for i, identity in enumerate(self._inputs):
            if identity.display in self._position:
                raise ValueError(f"input {identity.display} is given twice")
            self._position[identity.display] = i
        self._shards_of: list[list[int]] = [[] for _ in self._inputs]
        #: Per input: its journaled shards that are not uploaded yet.
        self._waiting = [0] * len(self._inputs)
        self._files_of: dict[int, list[int]] = {}
        self._uploaded: dict[int, str] = {}
        #: Inputs before this position are wholly in journaled shards.
        self._read = 0
        self._done: set[int] = set()
        self._new: list[int] = []

    def shard(self, index: int, paths: Iterable[str]) -> None:
        """Shard ``index`` is journaled, holding lines of the inputs named ``paths``."""
        if index in self._files_of:
            return  # known already (a resume journals a shard again)
        # A source that is not an input (records from a program) loads no file.
        positions = sorted({self._position[p] for p in paths if p in self._position})
        self._files_of[index] = positions
        for p in positions:
            self._shards_of[p].append(index)
            if index not in self._uploaded:
                self._waiting[p] += 1
        if positions:
            # Inputs are read in order: lines of input k mean every earlier one is done.
            self._advance(positions[-1])

    def uploaded(self, index: int, request_id: str) -> None:
        """Shard ``index``'s upload is journaled (under ``request_id``)."""
        if index in self._uploaded:
            return
        self._uploaded[index] = request_id
        for p in self._files_of.get(index, ()):
            self._waiting[p] -= 1
            self._check(p)

    def all_read(self) -> None:
        """Reading ended and the last shard is journaled: every input is wholly in shards."""
        self._advance(len(self._inputs))

    def take(self) -> list[ProvenLoad]:
        """The inputs loaded since the last call, in input order."""
        new, self._new = sorted(self._new), []
        out = []
        for p in new:
            shards = tuple(sorted(self._shards_of[p]))
            out.append(
                ProvenLoad(
                    identity=self._inputs[p],
                    shards=shards,
                    request_ids=tuple(dict.fromkeys(self._uploaded[s] for s in shards)),
                )
            )
        return out

    def unloaded(self) -> list[FileIdentity]:
        """Inputs with an identity that are not loaded (yet)."""
        return [
            identity
            for p, identity in enumerate(self._inputs)
            if identity.identified and p not in self._done
        ]

    def _advance(self, upto: int) -> None:
        start, self._read = self._read, max(self._read, upto)
        for p in range(start, self._read):
            self._check(p)

    def _check(self, p: int) -> None:
        if (
            p < self._read
            and self._waiting[p] == 0
            and p not in self._done
            and self._inputs[p].identified
        ):
            self._done.add(p)
            self._new.append(p)


def manifest_inputs(doc: Mapping[str, Any]) -> list[FileIdentity] | None:
    """The identities of a manifest's ``inputs`` as the run saw them (``key``, ``etag`` and
    ``content_md5`` where the run recorded them); None when a relative path cannot be
    keyed (a manifest without ``cwd``)."""
    cwd = doc.get("cwd")
    out = []
    for entry in doc.get("inputs", []):
        path = str(entry["path"])
        if path == RECORDS:
            continue
        if path == STDIN:
            out.append(FileIdentity.unidentified(STDIN))
            continue
        key = entry.get("key")
        if key is None:
            if not cwd and not path.startswith("/") and "://" not in path:
                return None
            key = key_for(path, cwd=cwd)
        out.append(
            FileIdentity(
                key=str(key),
                display=path,
                size=entry.get("size"),
                mtime_ns=entry.get("mtime_ns"),
                etag=entry.get("etag"),
                content_md5=entry.get("content_md5"),
            )
        )
    return out


def proven_from_manifest(doc: Mapping[str, Any]) -> ProvenRun:
    """What a work dir's manifest (``RunState.open(work_dir).manifest()``: the journal
    replayed, so newer than ``manifest.json`` after a kill) proves about its inputs.

    Its ``run_id`` is the manifest's, or for a manifest written before runs had ids, one
    derived from its namespace, work dir and inputs (stable across its resumes, which must
    keep the inputs): adopting it twice is recording it once.
    """
    if "merged_from" in doc:
        raise LedgerError(
            "a merged manifest cannot prove loads (its shards are renumbered); repair from "
            "each worker's work dir"
        )
    namespace = str(doc["namespace"])
    finished = doc.get("finished_at") is not None
    inputs = manifest_inputs(doc)
    run = ProvenRun(
        run_id=str(doc.get("run_id") or adopted_run_id(doc)),
        namespace=namespace,
        work_dir=doc.get("work_dir"),
        started_at=doc.get("started_at"),
        finished=finished,
        files=(),
        unproven=(),
    )
    if inputs is None:
        shown = tuple(str(i["path"]) for i in doc.get("inputs", []))
        return replace(run, unproven=shown)
    tracker = Completion(inputs)
    if not doc.get("dry_run"):
        for shard in sorted(doc.get("shards", []), key=lambda s: int(s["index"])):
            index = int(shard["index"])
            tracker.shard(index, (str(src["path"]) for src in shard.get("sources", [])))
            if shard.get("status") == "uploaded" and shard.get("request_id"):
                tracker.uploaded(index, str(shard["request_id"]))
        if finished:
            tracker.all_read()
    files = tuple(tracker.take())
    return replace(run, files=files, unproven=tuple(i.display for i in tracker.unloaded()))


def adopted_run_id(doc: Mapping[str, Any]) -> str:
    """A run id for a manifest that has none: the same for every resume of that run."""
    basis = repr(
        (
            doc.get("namespace"),
            doc.get("work_dir"),
            [(i.get("path"), i.get("size"), i.get("mtime_ns")) for i in doc.get("inputs", [])],
        )
    )
    return "adopted-" + hashlib.sha256(basis.encode()).hexdigest()[:16]
