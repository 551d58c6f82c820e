"""Follow every request of a run to its end: ``status``, ``wait``, results and reconciliation.

``wait`` polls each requestId with its own backoff (about 1 s growing to a minute, with
jitter) under a global rate cap, records each request's processing status in the manifest
as it changes, downloads the results of each request as soon as it succeeds, and at the end
joins every result back to the source file and line of its record.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os
import aiohttp
import orjson

from ._api import ApiClient, RequestStatus
from ._config import DEFAULT_BASE_URL
from ._errors import ApiError, BulkloadError, ConfigError, StateError
from ._http import TRANSIENT_ERRORS, Secret, describe_exception, make_session, redact_url
from ._manifest import RunState
from ._remote import is_url, reopen
from ._retry import RetryPolicy
from ._sources import Source, format_of, iter_chunks
from ._throttle import api_rate
from ._validate import ValidateOptions, validate_chunk

#: First poll delay and its cap: processing takes seconds to hours; polling a finished-in-
#: an-hour request every second would waste 3,600 calls, every minute only a minute.
POLL_START = 1.0
POLL_CAP = 60.0
POLL_GROWTH = 1.5


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One request moved to a new processing status."""

    shard: int
    request_id: str
    status: str
    previous: str | None
    error_summary: str | None = None
    data_count: int | None = None
    results_file: Path | None = None


@dataclass(slots=True)
class WaitResult:
    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    unfinished: int = 0
    not_uploaded: int = 0
    objects: int = 0
    timed_out: bool = False
    results_dir: Path | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        if self.timed_out or self.unfinished:
            return 1
        if self.failed or self.not_uploaded:
            return 4
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "unfinished": self.unfinished,
            "not_uploaded": self.not_uploaded,
            "objects": self.objects,
            "timed_out": self.timed_out,
            "results_dir": str(self.results_dir) if self.results_dir else None,
            "failures": self.failures,
            "mismatches": self.mismatches,
            "statuses": self.statuses,
            "exit_code": self.exit_code,
        }


class Follower:
    """Follows the requests of one manifest (or work dir).

    ::

        async with Follower("runs/products", api_key=key) as f:
            result = await f.wait(results_dir="runs/products/results")

    On cancellation: polling stops; what was learnt is already in the manifest.
    """

    def __init__(
        self,
        manifest_or_dir: str | os.PathLike[str],
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        max_rps: float | None = None,
        concurrency: int = 16,
        timeout: float = 60.0,
        max_retries: int = 6,
        ca_bundle: Path | None = None,
        poll_start: float = POLL_START,
        poll_cap: float = POLL_CAP,
    ) -> None:
        self.state = RunState.open_follow(Path(manifest_or_dir))
        self.namespace = str(self.state.run.get("namespace") or "")
        if not self.namespace:
            raise StateError(f"{manifest_or_dir}: the manifest names no namespace")
        self.base_url = (
            base_url
            or self.state.run.get("base_url")
            or os.environ.get("SAFETYKIT_BASE_URL")
            or DEFAULT_BASE_URL
        ).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("SAFETYKIT_API_KEY")
        self._api_key = Secret(key or "")
        if not self._api_key:
            raise ConfigError("no API key: set SAFETYKIT_API_KEY or use --api-key-file")
        if concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
        self._max_rps = max_rps
        self._concurrency = concurrency
        self._timeout = timeout
        self._policy = RetryPolicy(max_retries=max_retries)
        self._ca_bundle = ca_bundle
        self._poll_start = poll_start
        self._poll_cap = poll_cap
        self._session: aiohttp.ClientSession | None = None
        self._api: ApiClient | None = None

    def __repr__(self) -> str:
        return f"Follower(manifest={str(self.state.manifest_path)!r}, base_url={self.base_url!r})"

    async def __aenter__(self) -> Follower:
        self._session = make_session(timeout=self._timeout, ca_bundle=self._ca_bundle)
        rate = api_rate(self._max_rps)
        self._api = ApiClient(
            self._session, self.base_url, self._api_key.reveal(), policy=self._policy, rate=rate
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        session, self._session = self._session, None
        if session is not None:
            await asyncio.shield(session.close())
        await asyncio.to_thread(self.state.close)

    # -- status ----------------------------------------------------------------------------

    async def status(self) -> WaitResult:
        """One status call per request (bounded concurrency); records them in the manifest."""
        api = self._require_api()
        result = WaitResult()
        shards = [s for s in self.state.shards.values() if s.request_id]
        result.not_uploaded = sum(
            1 for s in self.state.shards.values() if not s.request_id or s.status != "uploaded"
        )
        queue: asyncio.Queue[int] = asyncio.Queue()
        for s in shards:
            queue.put_nowait(s.index)

        async def worker() -> None:
            while not queue.empty():
                index = queue.get_nowait()
                entry = self.state.shards[index]
                assert entry.request_id is not None
                st = await api.get_status(self.namespace, entry.request_id)
                await self._note(index, st, None)

        async with asyncio.TaskGroup() as tg:
            for _ in range(min(self._concurrency, max(1, len(shards)))):
                tg.create_task(worker())
        await asyncio.to_thread(self.state.write_manifest, force=True)
        self._tally(result)
        return result

    # -- wait ----------------------------------------------------------------------------------

    async def wait(
        self,
        *,
        results_dir: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        on_change: Callable[[StatusChange], None] | None = None,
    ) -> WaitResult:
        """Poll until every request is terminal (or ``timeout`` seconds pass).

        With ``results_dir``, each succeeded request's results go to
        ``results_dir/<requestId>.jsonl`` as soon as it succeeds (verified and skipped on a
        rerun), and ``results_dir/results.jsonl`` joins every result to its source line.
        """
        api = self._require_api()
        out = Path(results_dir) if results_dir is not None else None
        result = WaitResult(results_dir=out)
        now = time.monotonic()
        # (due, shard index, current delay): every request not known to be finished.
        pending = [
            (now, index, self._poll_start)
            for index in await asyncio.to_thread(self._unfinished, out)
        ]
        deadline = None if timeout is None else now + timeout
        rng = random.Random()

        async def worker() -> None:
            while pending:
                due, index, delay = heapq.heappop(pending)
                if deadline is not None and due > deadline:
                    heapq.heappush(pending, (due, index, delay))
                    return
                wait_for = due - time.monotonic()
                if wait_for > 0:
                    await asyncio.sleep(wait_for)
                entry = self.state.shards[index]
                assert entry.request_id is not None
                st = await api.get_status(self.namespace, entry.request_id)
                results_file = None
                if st.status == "succeeded" and out is not None:
                    results_file = await self._download(index, st, out)
                change = await self._note(index, st, results_file)
                if change is not None and on_change is not None:
                    on_change(change)
                if not st.terminal:
                    nxt = min(self._poll_cap, delay * POLL_GROWTH)
                    jitter = rng.uniform(0.8, 1.2)
                    heapq.heappush(pending, (time.monotonic() + delay * jitter, index, nxt))

        try:
            async with asyncio.timeout(timeout):
                async with asyncio.TaskGroup() as tg:
                    for _ in range(min(self._concurrency, max(1, len(pending)))):
                        tg.create_task(worker())
        except TimeoutError:
            result.timed_out = True
        finally:
            await asyncio.to_thread(self.state.write_manifest, force=True)
        result.timed_out = result.timed_out or bool(pending)
        self._tally(result)
        if out is not None and not result.timed_out:
            result.mismatches = await asyncio.to_thread(self._reconcile, out)
        return result

    async def watch(
        self, *, results_dir: str | os.PathLike[str] | None = None, timeout: float | None = None
    ) -> AsyncIterator[StatusChange]:
        """Each status change as it happens, until every request is terminal."""
        queue: asyncio.Queue[StatusChange | None] = asyncio.Queue()

        async def run() -> None:
            try:
                await self.wait(
                    results_dir=results_dir, timeout=timeout, on_change=queue.put_nowait
                )
            finally:
                queue.put_nowait(None)

        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(run())
            try:
                while (change := await queue.get()) is not None:
                    yield change
            finally:
                if not task.done():
                    task.cancel()

    # -- internals ------------------------------------------------------------------------------

    def _require_api(self) -> ApiClient:
        if self._api is None:
            raise BulkloadError("use the Follower as `async with Follower(...) as f:`")
        return self._api

    async def _note(
        self, index: int, st: RequestStatus, results_file: Path | None
    ) -> StatusChange | None:
        entry = self.state.shards[index]
        before = entry.processing or {}
        doc: dict[str, Any] = {
            "processing_status": st.status,
            "data_count": st.data_count,
            "error_summary": st.error_summary,
        }
        if results_file is not None:
            doc["results_file"] = str(results_file)
        elif before.get("results_file"):
            doc["results_file"] = before["results_file"]
        if all(before.get(k) == v for k, v in doc.items()):
            return None
        await asyncio.to_thread(self.state.record, {"t": "processing", "index": index, **doc})
        await asyncio.to_thread(self.state.write_manifest, force=False)
        return StatusChange(
            shard=index,
            request_id=entry.request_id or "",
            status=st.status,
            previous=before.get("processing_status"),
            error_summary=st.error_summary,
            data_count=st.data_count,
            results_file=results_file,
        )

    def _unfinished(self, out: Path | None) -> list[int]:
        """Requests still to poll: not terminal, or succeeded without complete results."""
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        todo = []
        for entry in self.state.shards.values():
            if entry.status != "uploaded" or not entry.request_id:
                continue
            done = (entry.processing or {}).get("processing_status") in ("succeeded", "failed")
            if not done or (out is not None and not self._has_results(entry.index, out)):
                todo.append(entry.index)
        return sorted(todo)

    def _has_results(self, index: int, out: Path) -> bool:
        entry = self.state.shards[index]
        proc = entry.processing or {}
        if proc.get("processing_status") == "failed":
            return True
        return _complete(out / f"{entry.request_id}.jsonl", proc.get("data_count"))

    async def _download(self, index: int, st: RequestStatus, out: Path) -> Path:
        """Stream the results file of one request; a fresh URL when the old one expired."""
        api = self._require_api()
        entry = self.state.shards[index]
        path = out / f"{entry.request_id}.jsonl"
        if await asyncio.to_thread(_complete, path, st.data_count):
            return path  # downloaded by an earlier run, and complete
        assert self._session is not None
        assert entry.request_id is not None
        url = st.data_url
        last = ""
        for attempt in range(self._policy.max_retries + 1):
            if url is None or attempt > 0:
                fresh = await api.get_results_url(self.namespace, entry.request_id)
                url = fresh.data_url
                if url is None:
                    raise ApiError(
                        f"request {entry.request_id} (shard {index}) succeeded but has no "
                        "results URL; try `bulkload wait` again later"
                    )
            tmp = path.with_suffix(".jsonl.part")
            try:
                async with self._session.get(url) as resp:
                    if resp.status == 200:
                        async with aiofiles.open(tmp, "wb") as f:
                            async for block in resp.content.iter_chunked(1 << 20):
                                await f.write(block)
                        await aiofiles.os.replace(tmp, path)
                        return path
                    last = f"HTTP {resp.status}"
            except TRANSIENT_ERRORS as exc:
                last = describe_exception(exc)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            await asyncio.sleep(self._policy.delay(attempt, None))
        raise ApiError(
            f"request {entry.request_id} (shard {index}): cannot download its results from "
            f"{redact_url(url or '')} (last: {last}); run `bulkload wait` again to retry"
        )

    def _tally(self, result: WaitResult) -> None:
        statuses: dict[str, int] = {}
        for entry in self.state.shards.values():
            if entry.status != "uploaded" or not entry.request_id:
                continue
            result.requests += 1
            proc = entry.processing or {}
            status = str(proc.get("processing_status") or "unknown")
            statuses[status] = statuses.get(status, 0) + 1
            if status == "succeeded":
                result.succeeded += 1
                result.objects += int(proc.get("data_count") or 0)
            elif status == "failed":
                result.failed += 1
                result.failures.append(
                    {
                        "shard": entry.index,
                        "request_id": entry.request_id,
                        "error_summary": proc.get("error_summary"),
                        "sources": entry.sources,
                        # In a merged manifest: which worker's run, and its own shard number.
                        **{
                            k: v
                            for k, v in (entry.extra or {}).items()
                            if k in ("partition", "original_index", "work_dir")
                        },
                    }
                )
            else:
                result.unfinished += 1
        result.not_uploaded = sum(
            1 for e in self.state.shards.values() if e.status != "uploaded" or not e.request_id
        )
        result.statuses = statuses

    def _reconcile(self, out: Path) -> list[str]:
        """Join results to source lines; report ids missing from, or extra in, the results.

        Sources are re-read once, front to back: shards are in source order, so one cursor
        per input serves every shard and memory holds one shard's ids at a time.
        """
        options = self.state.run.get("options", {})
        vopts = ValidateOptions(
            id_field=options.get("id_field", "id"),
            coerce_id=bool(options.get("coerce_id", False)),
            max_record_bytes=int(options.get("shard_max_bytes", 64 << 20)),
            collect_ids=True,
        )
        inputs = {i["path"]: i for i in self.state.run.get("inputs", [])}
        cursor = _SourceCursor(inputs, vopts)
        mismatches: list[str] = []
        joined_tmp = out / "results.jsonl.part"
        with open(joined_tmp, "wb") as joined:
            for index in sorted(self.state.shards):
                entry = self.state.shards[index]
                proc = entry.processing or {}
                if entry.status != "uploaded" or proc.get("processing_status") != "succeeded":
                    continue
                expected: dict[str, tuple[str, int]] = {}
                readable = True
                for rng in entry.sources:
                    got = cursor.take(rng["path"], rng["first_line"], rng["last_line"])
                    if got is None:
                        readable = False
                        continue
                    for rid, line in got:
                        expected[rid] = (rng["path"], line)
                path = out / f"{entry.request_id}.jsonl"
                count = proc.get("data_count")
                seen = 0
                with open(path, "rb") as f:
                    for raw in f:
                        if not raw.strip():
                            continue
                        seen += 1
                        doc = orjson.loads(raw)
                        origin = expected.pop(str(doc.get("id")), None)
                        if origin is None and readable:
                            mismatches.append(
                                f"shard {index} ({entry.request_id}): result for id "
                                f"{doc.get('id')!r} that the shard did not send"
                            )
                        doc["source"] = origin[0] if origin else None
                        doc["line"] = origin[1] if origin else None
                        doc["request_id"] = entry.request_id
                        joined.write(orjson.dumps(doc) + b"\n")
                if count is not None and seen != count:
                    mismatches.append(
                        f"shard {index} ({entry.request_id}): data_count is {count} but the "
                        f"results file has {seen} lines"
                    )
                if count is not None and count != entry.records:
                    mismatches.append(
                        f"shard {index} ({entry.request_id}): {entry.records} records sent, "
                        f"{count} results"
                    )
                if readable:
                    for rid, (src, line) in list(expected.items())[:100]:
                        mismatches.append(
                            f"shard {index} ({entry.request_id}): no result for id {rid!r} "
                            f"from {src} line {line}"
                        )
        os.replace(joined_tmp, out / "results.jsonl")
        return mismatches


class _SourceCursor:
    """Reads inputs front to back, handing out the ids of records in given line ranges."""

    def __init__(self, inputs: dict[str, dict[str, Any]], vopts: ValidateOptions) -> None:
        self._inputs = inputs
        self._vopts = vopts
        self._open: dict[str, tuple[Iterator[tuple[str, int]], list[tuple[str, int]]]] = {}

    def take(self, path: str, first: int, last: int) -> list[tuple[str, int]] | None:
        if path in ("-", "<records>"):
            return None
        if path not in self._open:
            info = self._inputs.get(path, {})
            if is_url(path):
                source = reopen(path, info)
                if source is None:
                    return None
            elif not Path(path).exists():
                return None
            else:
                source = Source(
                    display=path,
                    path=Path(path),
                    compression=info.get("compression"),
                    size=None,
                    mtime_ns=None,
                    format=info.get("format") or format_of(path),
                )
            self._open[path] = (self._records(source), [])
        it, buffered = self._open[path]
        out: list[tuple[str, int]] = []
        while True:
            if buffered:
                rid, line = buffered[0]
            else:
                nxt = next(it, None)
                if nxt is None:
                    return out
                rid, line = nxt
                buffered.append(nxt)
            if line > last:
                return out
            buffered.pop(0)
            if line >= first:
                out.append((rid, line))

    def _records(self, source: Source) -> Iterator[tuple[str, int]]:
        for chunk in iter_chunks(source):
            result = validate_chunk(chunk.data, chunk.first_line, self._vopts)
            yield from zip(result.ids or [], result.line_nos, strict=False)


def _complete(path: Path, count: object) -> bool:
    """Whether a results file from an earlier run is there with all ``count`` lines."""
    return isinstance(count, int) and path.exists() and _count_lines(path) == count


def _count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            n += block.count(b"\n")
    return n
