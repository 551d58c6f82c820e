"""The emulator's state: requests, counters, change notification, persistence.

One :class:`Core` lives as long as its :class:`~bulkload.emulator.Emulator`, across
stop/start, and is only touched from the event loop that serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from ._faults import FaultInjector, Faults
from ._records import (
    Outcome,
    PutAttempt,
    RequestInfo,
    RequestRecord,
    Signer,
    iso_ms,
    load_state,
    new_request_id,
    save_state,
    validate_object,
)
from ._sigv4 import S3Credentials, presign_put

__all__ = ["Core", "Settings"]

STATE_FILE = "state.json"
#: The endpoints that ``counters()`` reports, always present even when never called.
ENDPOINTS = ("import", "put", "status", "results_url", "results")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    api_key: str
    data_dir: Path
    persistent: bool
    url_ttl: float
    results_ttl: float
    team_id: str
    #: What the fake bucket's pre-signer holds; PUTs are verified against the same.
    credentials: S3Credentials
    bucket: str
    #: Upload URLs sign ``content-type;host`` (the PUT must send the signed type), else
    #: only ``host``.
    sign_content_type: bool = True
    #: How stored PUTs are answered: ``"md5"`` (ETag = MD5, SSE-S3), ``"sse-kms"``,
    #: ``"sse-kms-dsse"``, ``"sse-c"`` or ``"opaque"`` (an ETag that is not the MD5).
    etag_mode: str = "md5"
    #: Sink mode for benchmarks: accepted PUT bodies are counted, not stored (see
    #: ``Emulator``).
    discard_bodies: bool = False


class Core:
    """Requests and inspection data of one emulator."""

    def __init__(self, settings: Settings, faults: Faults, seed: int, ingest_delay: float) -> None:
        self.settings = settings
        self.injector = FaultInjector(faults, seed)
        self.ingest_delay = ingest_delay
        #: Added to the wall clock wherever the emulator reads it (issuing and checking
        #: URLs), so a test can move time forward instead of waiting for it.
        self.clock_skew_s = 0.0
        self.base_url = ""
        self.signer = Signer(secrets.token_bytes(32))
        self.requests: dict[str, RequestRecord] = {}
        self.by_key: dict[str, RequestRecord] = {}
        self.counters: dict[str, dict[str, int]] = {e: defaultdict(int) for e in ENDPOINTS}
        self.put_log: list[PutAttempt] = []
        self.call_times: dict[str, list[float]] = {e: [] for e in ENDPOINTS}
        self.puts_in_flight = 0
        self.max_puts_in_flight = 0
        self.chunked_puts = 0
        self.listeners: list[Callable[[], None]] = []
        self._changed = asyncio.Event()
        self._validation_locks: dict[str, asyncio.Lock] = {}
        self._save_lock = asyncio.Lock()
        self._dirty = 0  # bumped by every persisted change
        self._saved = 0  # the last _dirty value written to disk
        self._loaded = False

    # --- paths --------------------------------------------------------------------------

    @property
    def objects_dir(self) -> Path:
        return self.settings.data_dir / "objects"

    @property
    def tmp_dir(self) -> Path:
        return self.settings.data_dir / "tmp"

    @property
    def results_dir(self) -> Path:
        return self.settings.data_dir / "results"

    def object_path(self, key: str) -> Path:
        return self.objects_dir / key

    def results_path(self, request_id: str) -> Path:
        return self.results_dir / f"{request_id}.jsonl"

    def unclaimed_path(self, key: str) -> Path:
        """Where an object no request owns is kept (a URL pre-signed by someone else for
        any key): named by a hash, since such a key may hold ``..`` or anything else."""
        return self.objects_dir / "_unclaimed" / hashlib.sha256(key.encode()).hexdigest()

    def now(self) -> float:
        """The emulator's wall clock: ``time.time()`` moved by ``clock_skew_s``."""
        return time.time() + self.clock_skew_s

    # --- change notification and counters ----------------------------------------------

    def changed(self) -> None:
        """Wake every ``wait_for``; callable from any code path, even a cancelled one."""
        event, self._changed = self._changed, asyncio.Event()
        event.set()
        for listener in self.listeners:
            listener()

    # The timeout is part of the documented test API (``emu.wait_for(pred, timeout=5)``).
    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"emulator condition not met within {timeout} s; counters: {self.counters_copy()}"
            ) from None

    def arrived(self, endpoint: str) -> None:
        """Note the arrival of a call, before any injected delay (``time.monotonic()``)."""
        self.call_times[endpoint].append(time.monotonic())

    def count(self, endpoint: str, outcome: str) -> None:
        self.counters[endpoint][outcome] += 1
        self.changed()

    def counters_copy(self) -> dict[str, dict[str, int]]:
        return {endpoint: dict(by_outcome) for endpoint, by_outcome in self.counters.items()}

    # --- persistence --------------------------------------------------------------------

    async def load(self) -> None:
        """Prepare the data dir and, once, read back the requests of a previous run."""
        await asyncio.to_thread(self._make_dirs)
        if self._loaded or not self.settings.persistent:
            self._loaded = True
            return
        self._loaded = True
        data = await asyncio.to_thread(load_state, self.settings.data_dir / STATE_FILE)
        if data is None:
            await self.persist()  # so that the secret survives even an empty run
            return
        self.signer = Signer(bytes.fromhex(data["secret"]))
        now_wall, now_loop = time.time(), asyncio.get_running_loop().time()
        for item in data["requests"]:
            rec = RequestRecord.from_json(item, now_wall=now_wall, now_loop=now_loop)
            self.requests[rec.request_id] = rec
            self.by_key[rec.object_key] = rec

    def _make_dirs(self) -> None:
        for d in (self.objects_dir, self.tmp_dir, self.results_dir):
            d.mkdir(parents=True, exist_ok=True)

    async def persist(self) -> None:
        """Write the state file when the emulator has a data dir of its own.

        Writers coalesce: a change made while a write is running is covered by the next
        write, so a burst of N changes costs far fewer than N writes.
        """
        if not self.settings.persistent:
            return
        self._dirty += 1
        wanted = self._dirty
        async with self._save_lock:
            if self._saved >= wanted:
                return
            upto = self._dirty
            payload = orjson.dumps(
                {
                    "version": 1,
                    "secret": self.signer.secret.hex(),
                    "requests": [rec.to_json() for rec in self.requests.values()],
                }
            )
            await asyncio.to_thread(save_state, self.settings.data_dir / STATE_FILE, payload)
            self._saved = upto

    # --- requests -----------------------------------------------------------------------

    def create_request(self, namespace: str, *, register: bool = True) -> tuple[RequestRecord, str]:
        """A new request and its upload URL. Unregistered (``register=False``), it is only
        the look of one, for a malformed answer that must create nothing."""
        now = self.now()
        request_id = new_request_id(now)
        key = f"{self.settings.team_id}/data-api-request-input/{namespace}/{request_id}.jsonl"
        expired = register and self.injector.fire("expired_url")
        ttl = max(1, int(self.settings.url_ttl))
        # An already-expired URL is dated so that date + ttl lies a minute in the past.
        issued = now - ttl - 60 if expired else now
        rec = RequestRecord(
            request_id=request_id,
            namespace=namespace,
            object_key=key,
            created_at=now,
            url_expires_at=int(issued) + ttl,
            expired_url=expired,
        )
        url = self.presign(key, issued=issued, ttl=ttl)
        if register:
            self.requests[request_id] = rec
            self.by_key[key] = rec
            self.changed()
        return rec, url

    def import_body(self, rec: RequestRecord, url: str) -> dict[str, Any]:
        """The import (upload-url) answer for a new request."""
        return {
            "status": "pending_upload",
            "requestId": rec.request_id,
            "objectKey": rec.object_key,
            "upload_url": url,
            "expires_at": iso_ms(rec.url_expires_at),
        }

    def presign(self, key: str, *, issued: float, ttl: int) -> str:
        """A SigV4 pre-signed PUT URL of ``key`` in the fake bucket (path-style)."""
        settings = self.settings
        return presign_put(
            settings.credentials,
            base_url=self.base_url,
            path=f"/{settings.bucket}/{quote(key, safe='/~')}",
            now=issued,
            expires=ttl,
            content_type="application/json" if settings.sign_content_type else None,
        )

    def info(self, rec: RequestRecord) -> RequestInfo:
        stored = rec.arrived_at is not None and rec.discarded_lines is None
        return RequestInfo(
            request_id=rec.request_id,
            namespace=rec.namespace,
            status=rec.status,
            put_attempts=rec.put_attempts,
            put_successes=rec.put_successes,
            object_path=self.object_path(rec.object_key) if stored else None,
            size=rec.size,
            md5=rec.md5,
            created_at=rec.created_at,
            expired_url=rec.expired_url,
            etag=rec.etag,
        )

    def object_arrived(
        self,
        rec: RequestRecord,
        size: int,
        md5: str | None,
        *,
        etag: str,
        discarded_lines: int | None = None,
    ) -> None:
        """Note an object stored under ``rec``'s key, answered with ``etag``; in sink mode
        ``md5`` is None and ``discarded_lines`` holds the line count of the body that was
        thrown away."""
        loop = asyncio.get_running_loop()
        rec.put_successes += 1
        rec.size = size
        rec.md5 = md5
        rec.etag = etag
        rec.discarded_lines = discarded_lines
        rec.arrived_at = time.time()
        rec.arrived_loop = loop.time()
        rec.generation += 1
        rec.outcome = None  # S3 overwrote the object: it gets processed afresh
        self.changed()

    async def resolve(self, rec: RequestRecord) -> RequestRecord:
        """Advance a request as a status call would, validating its object when due."""
        if rec.arrived_at is None or rec.outcome is not None:
            return rec
        assert rec.arrived_loop is not None
        if asyncio.get_running_loop().time() - rec.arrived_loop < self.ingest_delay:
            return rec
        if rec.discarded_lines is not None:
            # Sink mode: nothing was kept to validate; every line counts as a result.
            rec.outcome = Outcome(ok=True, count=rec.discarded_lines, error_summary=None)
            self.changed()
            return rec
        lock = self._validation_locks.setdefault(rec.request_id, asyncio.Lock())
        async with lock:
            if rec.status != "ingesting":
                return rec  # another status call validated it while we queued
            generation = rec.generation
            final = self.results_path(rec.request_id)
            tmp = self.tmp_dir / f"{rec.request_id}.{generation}.results"
            outcome = await asyncio.to_thread(
                validate_object,
                self.object_path(rec.object_key),
                tmp,
                rec.namespace,
                frozenset(self.injector.faults.fail_ids),
            )
            if rec.generation != generation:
                # A new object landed meanwhile; its own validation will follow.
                await asyncio.to_thread(_unlink, tmp)
                return rec
            if outcome.ok:
                await asyncio.to_thread(os.replace, tmp, final)
            rec.outcome = outcome
            self.changed()
        return rec

    def data_fields(self, rec: RequestRecord) -> dict[str, Any]:
        """``data_url``/``data_count``/``data_expires_at``: null until succeeded."""
        outcome = rec.outcome
        if outcome is None or not outcome.ok:
            return {"data_url": None, "data_count": None, "data_expires_at": None}
        now = self.now()
        if self.injector.fire("expired_data_url"):
            expires = int(now) - 60
        else:
            expires = int(now + self.settings.results_ttl)
        sig = self.signer.results(rec.request_id, str(expires))
        query = urlencode({"expires": str(expires), "sig": sig})
        return {
            "data_url": f"{self.base_url}/results/{rec.request_id}.jsonl?{query}",
            "data_count": outcome.count,
            "data_expires_at": iso_ms(expires),
        }

    def status_body(self, rec: RequestRecord, *, with_inline_data: bool) -> dict[str, Any]:
        outcome: Outcome | None = rec.outcome
        body: dict[str, Any] = {
            # The docs spell it requestId, the SDK's response models request_id: send both.
            "requestId": rec.request_id,
            "request_id": rec.request_id,
            "namespace": rec.namespace,
            "status": rec.status,
            "error_summary": None if outcome is None else outcome.error_summary,
        }
        if with_inline_data:
            # Imports never inline their output, but the SDK's model requires the field.
            body["data"] = []
        body.update(self.data_fields(rec))
        return body

    # --- inspection ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "requests": [self.info(rec).as_json() for rec in self.requests.values()],
            "counters": self.counters_copy(),
            "puts_in_flight": self.puts_in_flight,
            "max_puts_in_flight": self.max_puts_in_flight,
            "chunked_puts": self.chunked_puts,
            "put_log": [attempt.as_json() for attempt in self.put_log],
            "faults": self.injector.faults.as_dict(),
            "ingest_delay": self.ingest_delay,
            "discard_bodies": self.settings.discard_bodies,
            "etag_mode": self.settings.etag_mode,
            "clock_skew_s": self.clock_skew_s,
        }

    def stored_objects(self, namespace: str | None) -> list[tuple[str, Path]]:
        return [
            (rec.request_id, self.object_path(rec.object_key))
            for rec in self.requests.values()
            if rec.arrived_at is not None
            and rec.discarded_lines is None
            and namespace in (None, rec.namespace)
        ]


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
