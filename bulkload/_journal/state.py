"""The durable record of a run: a private journal, and the shareable ``manifest.json``.

Two files, two jobs:

* ``state/journal.jsonl`` (mode 0600, in a 0700 dir) is the source of truth. Every step of a
  shard is appended and fsynced *before* the step it enables ("write down before you act"):
  the shard's identity (md5, size, source lines) before its import call is made, the
  requestId and upload URL before the PUT, the outcome after. Appending keeps the cost of a
  step constant however many shards a run has; a rewrite of a large manifest per step would
  not. It holds upload URLs (credentials), hence the mode; never the API key.
* ``manifest.json`` is a view of the journal for people and scripts: no URLs, written
  atomically (temp file, fsync, rename, fsync of the directory) at most about once a second
  while a run goes, and always at its end or interruption.

A rerun replays the journal: uploaded shards are skipped, a shard with a still-valid URL is
PUT again to it (same requestId), failed ones are retried.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson

from .._durable import atomic_write
from .._errors import StateError, option
from .._model import ImportTicket, ShardStatus, parse_time
from .._version import __version__
from . import events

MANIFEST = "manifest.json"
REJECTS = "rejects.jsonl"
DUPLICATES = "duplicates.jsonl"
SHARDS_DIR = "shards"
STATE_DIR = "state"
JOURNAL = "journal.jsonl"
LOCK = "lock"
#: The most of the loading thread's time that rewriting the manifest may take, unforced.
MANIFEST_SHARE = 0.05

#: What ``RunState.manifest`` writes: anything else in a bare manifest is kept as it was.
_MANIFEST_KEYS = frozenset(
    {
        "tool", "version", "namespace", "run_id", "base_url", "work_dir", "cwd", "inputs",
        "partition",
        "options", "started_at", "finished_at", "runs", "dry_run", "shards", "totals",
    }
)  # fmt: skip
_SHARD_KEYS = frozenset(
    {
        "index", "request_id", "status", "records", "bytes", "md5", "sources", "object_key",
        "attempts", "etag", "etag_verified", "etag_note", "error", "abandoned_request_ids",
        "failed_request_ids", "uploaded_at",
        "processing_status", "data_count", "error_summary", "results_file",
    }
)  # fmt: skip


def lock_work_dir(work_dir: Path) -> int | None:
    """Hold ``WORK_DIR/state/lock`` for a run: a second run in the same work dir (two
    workers given one ``--work-dir``, a task rerun while the first is still alive) would
    interleave two journals. The lock goes with the file descriptor, so a killed run
    leaves none behind. Returns the descriptor to pass to ``unlock_work_dir``."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, no check
        return None
    state = work_dir / STATE_DIR
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(state / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise StateError(
            f"{work_dir} is in use by another bulkload run{who}; let it finish, or give "
            f"this run its own {option('--work-dir', 'work_dir')}"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def unlock_work_dir(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class ShardEntry:
    """What the run knows about one shard. ``upload_url`` stays in the private journal."""

    index: int
    records: int
    bytes: int
    md5: str
    sources: list[dict[str, Any]]
    status: ShardStatus = ShardStatus.PENDING
    request_id: str | None = None
    object_key: str | None = None
    attempts: int = 0
    etag: str | None = None
    #: Whether the store's ETag proved it holds the shard's bytes (an MD5 equal to ours);
    #: None until uploaded (and in manifests written before bulkload recorded it).
    etag_verified: bool | None = None
    etag_note: str | None = None
    error: str | None = None
    #: The failure was an input that changed under the shard: only --restart helps.
    needs_restart: bool = False
    abandoned_request_ids: list[str] = field(default_factory=list)
    #: Requests that failed processing on the server, whose records were sent again under
    #: a new request (``load --resend-failed``).
    failed_request_ids: list[str] = field(default_factory=list)
    uploaded_at: str | None = None
    upload_url: str | None = field(default=None, repr=False)
    expires_at: str | None = None
    processing: dict[str, Any] | None = None
    #: Keys of a bare manifest that a run does not write (``partition``, ``original_index``
    #: and ``work_dir`` of a merged manifest), kept so that ``status``/``wait`` keep them.
    extra: dict[str, Any] | None = None

    def forget_request(self, into: list[str]) -> None:
        """The shard's request is done with (its URL expired, or it failed processing):
        keep its id in ``into``, and clear it so that the next upload asks for a new one."""
        if self.request_id and self.request_id not in into:
            into.append(self.request_id)
        self.request_id = self.upload_url = self.expires_at = self.object_key = None

    def ticket(self) -> ImportTicket | None:
        if self.request_id is None or self.upload_url is None:
            return None
        return ImportTicket(
            request_id=self.request_id,
            object_key=self.object_key or "",
            upload_url=self.upload_url,
            expires_at=parse_time(self.expires_at),
        )

    def public(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "index": self.index,
            "request_id": self.request_id,
            "status": self.status,
            "records": self.records,
            "bytes": self.bytes,
            "md5": self.md5,
            "sources": self.sources,
            "object_key": self.object_key,
            "attempts": self.attempts,
            "etag": self.etag,
            "etag_verified": self.etag_verified,
            **({"etag_note": self.etag_note} if self.etag_note else {}),
            "error": self.error,
            "abandoned_request_ids": self.abandoned_request_ids,
            **({"failed_request_ids": self.failed_request_ids} if self.failed_request_ids else {}),
            "uploaded_at": self.uploaded_at,
        }
        if self.extra is not None:
            doc.update(self.extra)
        if self.processing is not None:
            doc.update(self.processing)
        return doc


class RunState:
    """The journal and the manifest of one work dir. Methods are blocking: call them from a
    worker thread (``asyncio.to_thread``); one lock orders them."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.state_dir = work_dir / STATE_DIR
        self.journal_path = self.state_dir / JOURNAL
        self.manifest_path = work_dir / MANIFEST
        self.shards: dict[int, ShardEntry] = {}
        self.run: dict[str, Any] = {}
        self.totals: dict[str, int] = {}
        self.finished_at: str | None = None
        self.runs = 0
        #: Top-level keys of a bare manifest that a run does not write (``merged_from``).
        self.extra: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._journal: Any = None
        self._last_manifest = 0.0
        self._manifest_cost = 0.0  # seconds the last manifest took to build and write
        self._journal_optional = False
        self._work_lock: int | None = None  # held by status/wait on a work dir
        self.dirty = False

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, work_dir: Path) -> RunState:
        """Read what a previous run left (nothing, for a new work dir)."""
        state = cls(work_dir)
        if state.journal_path.exists():
            state._replay()
        return state

    @classmethod
    def open_follow(cls, path: Path) -> RunState:
        """For ``status``/``wait``: a work dir (its journal), or a bare manifest file."""
        manifest = path / MANIFEST if path.is_dir() else path
        state = cls(manifest.parent)
        state.manifest_path = manifest
        if manifest.name == MANIFEST and state.journal_path.exists():
            # A load still running here would not see what this follower journals (and
            # would overwrite the manifest without it): one process per work dir at a time.
            try:
                state._work_lock = lock_work_dir(state.work_dir)
            except StateError:
                raise StateError(
                    f"{state.work_dir} is in use by a running `bulkload load`; let it finish "
                    "first (or use `bulkload load ... --wait`, which waits when it is done)"
                ) from None
            state._replay()
            fd = os.open(state.journal_path, os.O_WRONLY | os.O_APPEND)
            state._journal = os.fdopen(fd, "ab")
            return state
        doc = load_manifest(manifest)
        state.run = {
            k: doc[k]
            for k in (
                "namespace",
                "run_id",
                "base_url",
                "cwd",
                "inputs",
                "options",
                "started_at",
                "partition",
            )
            if doc.get(k) is not None
        }
        state.runs = int(doc.get("runs") or 0)
        state.extra = {k: v for k, v in doc.items() if k not in _MANIFEST_KEYS}
        state.totals = {
            k: v
            for k, v in doc.get("totals", {}).items()
            if k in ("lines", "records", "rejected", "blank")
        }
        state.finished_at = doc.get("finished_at")
        for s in doc["shards"]:
            entry = ShardEntry(
                index=s["index"], records=s.get("records", 0), bytes=s.get("bytes", 0),
                md5=s.get("md5", ""), sources=s.get("sources", []),
                status=ShardStatus(s.get("status", "pending")), request_id=s.get("request_id"),
                object_key=s.get("object_key"), attempts=s.get("attempts", 0),
                etag=s.get("etag"), etag_verified=s.get("etag_verified"),
                etag_note=s.get("etag_note"), error=s.get("error"),
                abandoned_request_ids=s.get("abandoned_request_ids", []),
                failed_request_ids=s.get("failed_request_ids", []),
                uploaded_at=s.get("uploaded_at"),
            )  # fmt: skip
            proc = {
                k: s[k]
                for k in ("processing_status", "data_count", "error_summary", "results_file")
                if k in s
            }
            entry.processing = proc or None
            entry.extra = {k: v for k, v in s.items() if k not in _SHARD_KEYS} or None
            state.shards[entry.index] = entry
        state._journal_optional = True
        return state

    def _replay(self) -> None:
        with open(self.journal_path, "rb") as f:
            for raw in f:
                # None: the torn last line of a kill mid-append (never acted on), or a kind
                # of event this version does not know.
                event = events.decode(raw)
                if event is not None:
                    self._apply(event)

    def start(self, run: events.Run) -> None:
        """Begin a run: create the work dir, open the journal, record the run's identity."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)
        self._journal = os.fdopen(fd, "ab")
        self.record(run)

    def close(self) -> None:
        with self._lock:
            if self._journal is not None:
                self._journal.close()
                self._journal = None
            unlock_work_dir(self._work_lock)
            self._work_lock = None

    # -- events --------------------------------------------------------------------------

    def record(self, event: events.Event) -> None:
        """Append ``event`` durably, then apply it."""
        line = events.encode(event)
        with self._lock:
            if self._journal is None and self._journal_optional:
                self._apply(event)
                self.dirty = True
                return
            if self._journal is None:
                raise StateError(f"{self.journal_path}: the run's journal is not open")
            self._journal.write(line)
            self._journal.flush()
            os.fsync(self._journal.fileno())
            self._apply(event)
            self.dirty = True

    async def record_async(self, event: events.Event) -> None:
        """``record`` from the event loop, in a worker thread, seen through to the end even
        if the caller is cancelled meanwhile (the cancellation is raised after): a step
        that was being written down is written down, and a manifest flushed right after
        the cancellation includes it."""
        running = asyncio.get_running_loop().run_in_executor(None, self.record, event)
        try:
            await asyncio.shield(running)
        except asyncio.CancelledError:
            await running
            raise

    def _apply(self, e: events.Event) -> None:
        match e:
            case events.Run():
                self.run = {k: v for k, v in msgspec.structs.asdict(e).items() if v is not None}
                self.runs += 1
                self.finished_at = None
                return
            case events.Finish():
                self.finished_at = e.at
                self.totals = dict(e.totals)
                return
            case events.Shard():
                old = self.shards.get(e.index)
                if old is None or old.md5 != e.md5:
                    self.shards[e.index] = ShardEntry(
                        index=e.index, records=e.records, bytes=e.bytes, md5=e.md5,
                        sources=e.sources,
                    )  # fmt: skip
                return
        entry = self.shards.get(e.index)
        if entry is None:
            return  # a step of a shard that a --restart set aside
        match e:
            case events.Ticket():
                entry.request_id = e.request_id
                entry.object_key = e.object_key
                entry.upload_url = e.upload_url
                entry.expires_at = e.expires_at
            case events.Abandon():
                entry.forget_request(entry.abandoned_request_ids)
            case events.Uploaded():
                entry.status = ShardStatus.UPLOADED
                entry.etag = e.etag
                entry.etag_verified = e.etag_verified
                entry.etag_note = e.etag_note
                entry.attempts = e.attempts or entry.attempts
                entry.uploaded_at = e.at
                entry.error = None
                entry.upload_url = None  # spent: never PUT this shard again
            case events.Failed():
                entry.status = ShardStatus.FAILED
                entry.error = e.error
                entry.needs_restart = e.restart
                entry.attempts = e.attempts or entry.attempts
            case events.Retry():
                # A failed shard is being tried again by this run.
                entry.status = ShardStatus.PENDING
                entry.error = None
                entry.needs_restart = False
            case events.Resend():
                # Its request failed processing; the records go up again under a new one.
                entry.forget_request(entry.failed_request_ids)
                entry.status = ShardStatus.PENDING
                entry.etag = entry.etag_note = entry.etag_verified = entry.uploaded_at = None
                entry.processing = None
            case events.Processing():
                doc = msgspec.structs.asdict(e)
                del doc["index"]
                if doc["results_file"] is None:
                    del doc["results_file"]
                entry.processing = doc

    # -- the manifest --------------------------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        return self._document([self.shards[i].public() for i in sorted(self.shards)])

    def _document(self, shards: list[dict[str, Any]]) -> dict[str, Any]:
        uploaded = sum(1 for s in self.shards.values() if s.status == ShardStatus.UPLOADED)
        failed = sum(1 for s in self.shards.values() if s.status == ShardStatus.FAILED)
        totals = {
            "lines": 0, "records": 0, "rejected": 0, "blank": 0,
            **self.totals,
            "shards": len(self.shards), "uploaded": uploaded, "failed": failed,
        }  # fmt: skip
        return {
            "tool": "bulkload",
            "version": __version__,
            "namespace": self.run.get("namespace"),
            **({"run_id": self.run["run_id"]} if self.run.get("run_id") else {}),
            "base_url": self.run.get("base_url"),
            "work_dir": str(self.work_dir),
            **({"cwd": self.run["cwd"]} if self.run.get("cwd") else {}),
            "inputs": self.run.get("inputs", []),
            **({"partition": self.run["partition"]} if self.run.get("partition") else {}),
            "options": self.run.get("options", {}),
            "started_at": self.run.get("started_at"),
            "finished_at": self.finished_at,
            "runs": self.runs,
            "dry_run": bool(self.run.get("options", {}).get("dry_run", False)),
            **self.extra,
            "shards": shards,
            "totals": totals,
        }

    def write_manifest(self, *, force: bool = True, min_interval: float = 1.0) -> None:
        """Rewrite manifest.json atomically; unless ``force``, only when it changed and not
        more than once per ``min_interval`` seconds, nor more often than keeps the writing
        under ``MANIFEST_SHARE`` of the time.

        The manifest lists every input and every shard's source ranges: 6.5 MB for 20,000
        small files, ~70 ms to build and write, and it grows with the inputs. Rewritten every
        second, a load of a million files would spend its time on it; the journal, not the
        manifest, is what a resume trusts, so a manifest a few seconds old loses nothing."""
        with self._lock:
            started = time.monotonic()
            interval = max(min_interval, self._manifest_cost / MANIFEST_SHARE)
            stale = started - self._last_manifest >= interval
            if not force and not (self.dirty and stale):
                return
            self.dirty = False
            atomic_write(self.manifest_path, self._manifest_chunks())
            self._last_manifest = time.monotonic()
            self._manifest_cost = self._last_manifest - started

    def _manifest_chunks(self) -> Iterator[bytes]:
        """manifest.json, byte for byte as ``orjson.dumps(self.manifest(), OPT_INDENT_2)``
        writes it, in pieces: its two long lists (every input, every shard with its source
        ranges) an item at a time. Built whole, 20,000 small files made 7.4 MB of JSON and
        8 MB of dicts for every write; a million, hundreds of MB."""
        doc = self._document([])
        inputs, doc["inputs"] = doc["inputs"], []
        text = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
        shards = (self.shards[i].public() for i in sorted(self.shards))
        for key, items, per_dump in (("inputs", inputs, 1000), ("shards", shards, 1)):
            # Both are followed by other keys. A newline never occurs inside a JSON string,
            # so the placeholder is found only where the key is.
            head, text = text.split(b'\n  "%s": [],' % key.encode(), 1)
            yield head
            yield from _list_items(key, items, per_dump)
        yield text + b"\n"


def _list_items(key: str, items: Iterable[Any], per_dump: int) -> Iterator[bytes]:
    """A top-level ``"key": [...],`` member as OPT_INDENT_2 writes it, ``per_dump`` items
    at a time (an input is ~150 bytes: one orjson call each cost 3x the CPU of a thousand
    at once; a shard lists its sources, so one at a time)."""
    opened = False
    rest = iter(items)
    while group := list(itertools.islice(rest, per_dump)):
        # b'[\n  {...},\n  {...}\n]' -> b'\n    {...},\n    {...}': one level deeper.
        body = orjson.dumps(group, option=orjson.OPT_INDENT_2)[1:-2].replace(b"\n", b"\n  ")
        yield (b"," if opened else b'\n  "%s": [' % key.encode()) + body
        opened = True
    yield b"\n  ]," if opened else b'\n  "%s": [],' % key.encode()


def load_manifest(path: Path) -> dict[str, Any]:
    """Read a manifest (or the manifest of a work dir) for ``status`` and ``wait``."""
    if path.is_dir():
        path = path / MANIFEST
    try:
        doc = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise StateError(f"{path}: no manifest here; give a work dir of `bulkload load`") from None
    except orjson.JSONDecodeError as exc:
        raise StateError(f"{path}: not a valid manifest ({exc})") from None
    if not isinstance(doc, dict) or "shards" not in doc:
        raise StateError(f"{path}: not a bulkload manifest (no shards)")
    return doc


#: Where an incremental load keeps the work dir's earlier runs: ``runs/RUN_ID/``, each laid
#: out as a work dir (``status`` and ``wait`` accept it).
RUNS_DIR = "runs"
#: Where an incremental ``--dry-run`` validates the files it would load, so that it never
#: disturbs the work dir's own run.
DRY_RUN_DIR = "dry-run"


def peek_work_dir(work_dir: Path) -> dict[str, Any] | None:
    """What the run a work dir holds looks like (its manifest as the journal has it, newer
    than manifest.json after a kill), or None for an empty one. Reads only: safe while
    another process appends (a torn last line is not replayed)."""
    state = RunState(work_dir)
    if state.journal_path.exists():
        state._replay()
        return state.manifest() if state.run else None
    if state.manifest_path.exists():
        return load_manifest(state.manifest_path)
    return None


def archive_run(work_dir: Path, run_id: str) -> Path:
    """Move the run a work dir holds to ``work_dir/runs/RUN_ID/`` (its manifest, rejects,
    journal and the rest, in the same layout), leaving the work dir empty for the next run.

    The journal moves last: until it has moved, the work dir still says which run it
    holds, so a process killed midway finishes the move the next time (same run id).
    Call it with the work dir locked."""
    dest = work_dir / RUNS_DIR / run_id
    dest.mkdir(parents=True, exist_ok=True)
    (dest / STATE_DIR).mkdir(mode=0o700, exist_ok=True)
    for entry in sorted(work_dir.iterdir()):
        if entry.name not in (RUNS_DIR, DRY_RUN_DIR, STATE_DIR):
            _move(entry, dest / entry.name)
    state = work_dir / STATE_DIR
    if state.is_dir():
        for entry in sorted(state.iterdir()):
            if entry.name not in (LOCK, JOURNAL):
                _move(entry, dest / STATE_DIR / entry.name)
        if (state / JOURNAL).exists():
            _move(state / JOURNAL, dest / STATE_DIR / JOURNAL)
    return dest


def _move(src: Path, dest: Path) -> None:
    """Rename ``src`` to ``dest``; a name taken already (a move redone after a kill, with
    the file written again meanwhile) gets a numbered one rather than being overwritten."""
    target, n = dest, 1
    while target.exists():
        target = dest.with_name(f"{dest.name}.{n}")
        n += 1
    os.rename(src, target)
