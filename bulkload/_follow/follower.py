"""Follow every request of a run to its end: ``status``, ``wait``, results and reconciliation.

``wait`` polls each requestId with its own backoff (about 1 s growing to a minute, with
jitter) under a global rate cap, records each request's processing status in the manifest
as it changes, downloads the results of each request as soon as it succeeds, and at the end
joins every result back to the source file and line of its record (``_results``).

The API's answers are held to the same rules as during a load: one that cannot be had
(unreachable, malformed, cut short) after every retry stops the command only while no call
has been answered properly yet (the base URL or the key is wrong); after that it is one
request's problem, named in the result, and the others go on.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import random
import shlex
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._config import DEFAULT_BASE_URL, Endpoint
from .._errors import (
    ApiError,
    ConfigError,
    ExitCode,
    StateError,
    UsageError,
)
from .._journal import MANIFEST, RunState, events
from .._model import TERMINAL, ProcessingStatus, RequestStatus, ShardStatus
from .._net import ApiClient, ClientOptions, DownloadFailure, RetryPolicy, open_client
from .._redact import redact_text
from .results import SourceLines, locate_lines, reconcile, unreadable_notes

log = logging.getLogger("bulkload")

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
    """What ``status`` or ``wait`` found: counts per processing status, the failures with
    their source lines, what could not be learnt or checked, and the exit code."""

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
    #: Requests whose status (or results) could not be had after every retry, and why.
    errors: list[str] = field(default_factory=list)
    #: What could not be checked (a source that cannot be read from here), in words.
    unchecked: list[str] = field(default_factory=list)
    #: The command that sends the failed requests' records again (None: nothing to resend).
    resend_command: str | None = None

    @property
    def exit_code(self) -> ExitCode:
        """``wait``'s rule: 1 if anything is unfinished or unknown, else 4 if anything
        failed or was never uploaded, else 0."""
        if self.timed_out or self.unfinished or self.errors:
            return ExitCode.FATAL
        if self.failed or self.not_uploaded:
            return ExitCode.FAILED
        return ExitCode.OK

    @property
    def status_exit_code(self) -> ExitCode:
        """``status``'s rule: it only reports, so unfinished requests are no error; failed
        ones are (4), and statuses it could not learn (1)."""
        if self.failed:
            return ExitCode.FAILED
        return ExitCode.FATAL if self.errors else ExitCode.OK

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
            "errors": self.errors,
            "unchecked": self.unchecked,
            "resend_command": self.resend_command,
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
        self._endpoint = Endpoint.resolve(
            api_key=api_key, base_url=base_url, recorded_base_url=self.state.run.get("base_url")
        )
        self.base_url = self._endpoint.base_url
        if concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
        if max_rps is not None and not max_rps > 0:
            raise ConfigError(f"max_rps must be > 0, got {max_rps}")
        self._options = ClientOptions(
            timeout=timeout, ca_bundle=ca_bundle, max_retries=max_retries, max_rps=max_rps
        )
        self._policy = RetryPolicy(max_retries=max_retries)
        self._concurrency = concurrency
        self._poll_start = poll_start
        self._poll_cap = poll_cap
        self._api: ApiClient | None = None
        #: Whether any call was answered properly: before that, a call that fails for good
        #: means the command cannot work (exit 1); after, it is one request's problem.
        self._api_ok = False

    def __repr__(self) -> str:
        return f"Follower(manifest={str(self.state.manifest_path)!r}, base_url={self.base_url!r})"

    async def __aenter__(self) -> Follower:
        self._api = open_client(self._endpoint, self._options)
        return self

    async def __aexit__(self, *exc: object) -> None:
        api, self._api = self._api, None
        if api is not None:
            await api.aclose()
        await asyncio.to_thread(self.state.close)

    # -- status ----------------------------------------------------------------------------

    async def status(self) -> WaitResult:
        """One status call per request (bounded concurrency); records them in the manifest.

        Raises ``ApiError`` when no call could be answered (the base URL or the key is
        wrong, the API is unreachable); a request whose status cannot be had once others
        were is named in ``errors``. On cancellation: what was learnt is in the manifest."""
        result = WaitResult()
        shards = [s for s in self.state.shards.values() if s.request_id]
        queue: asyncio.Queue[int] = asyncio.Queue()
        for s in shards:
            queue.put_nowait(s.index)

        async def worker() -> None:
            while not queue.empty():
                index = queue.get_nowait()
                st = await self._ask(index, result)
                if st is not None:
                    await self._note(index, st, None)

        try:
            await _run_workers(worker, min(self._concurrency, max(1, len(shards))))
        finally:
            await asyncio.to_thread(self.state.write_manifest, force=True)
        await self._finish(result)
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
        self._require_api()
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
                st = await self._ask(index, result)
                if st is None:
                    continue  # named in result.errors; the others go on
                results_file = None
                if st.status == ProcessingStatus.SUCCEEDED and out is not None:
                    results_file = await self._download(index, st, out, result)
                    if results_file is None:
                        continue  # likewise
                change = await self._note(index, st, results_file)
                if change is not None and on_change is not None:
                    on_change(change)
                if not st.terminal:
                    nxt = min(self._poll_cap, delay * POLL_GROWTH)
                    jitter = rng.uniform(0.8, 1.2)
                    heapq.heappush(pending, (time.monotonic() + delay * jitter, index, nxt))

        try:
            async with asyncio.timeout(timeout):
                await _run_workers(worker, min(self._concurrency, max(1, len(pending))))
        except TimeoutError:
            result.timed_out = True
        finally:
            await asyncio.to_thread(self.state.write_manifest, force=True)
        result.timed_out = result.timed_out or bool(pending)
        await self._finish(result)
        if out is not None and not result.timed_out:
            mismatches, unchecked = await asyncio.to_thread(reconcile, self.state, out)
            result.mismatches = mismatches
            result.unchecked = list(dict.fromkeys([*result.unchecked, *unchecked]))
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
            raise UsageError("use the Follower as `async with Follower(...) as f:`")
        return self._api

    async def _ask(self, index: int, result: WaitResult) -> RequestStatus | None:
        """The request's status; None (and a line in ``result.errors``) when it could not
        be had after every retry, once the API has answered others."""
        entry = self.state.shards[index]
        assert entry.request_id is not None
        try:
            st = await self._require_api().get_status(self.namespace, entry.request_id)
        except ApiError as exc:
            if not exc.transient or not self._api_ok:
                raise
            message = redact_text(f"shard {index}: status of {entry.request_id} unknown: {exc}")
            log.warning("%s", message)
            result.errors.append(message)
            return None
        self._api_ok = True
        return st

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
        await self.state.record_async(events.Processing(index=index, **doc))
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
            if entry.status != ShardStatus.UPLOADED or not entry.request_id:
                continue
            done = (entry.processing or {}).get("processing_status") in TERMINAL
            if not done or (out is not None and not self._has_results(entry.index, out)):
                todo.append(entry.index)
        return sorted(todo)

    def _has_results(self, index: int, out: Path) -> bool:
        entry = self.state.shards[index]
        proc = entry.processing or {}
        if proc.get("processing_status") == ProcessingStatus.FAILED:
            return True
        return _complete(out / f"{entry.request_id}.jsonl", proc.get("data_count"))

    async def _download(
        self, index: int, st: RequestStatus, out: Path, result: WaitResult
    ) -> Path | None:
        """Fetch the results file of one request, complete and checked; a fresh URL after a
        failed attempt (it may have expired meanwhile). None, with the reason in
        ``result.errors``, when every attempt failed: the next ``wait`` tries again."""
        api = self._require_api()
        entry = self.state.shards[index]
        assert entry.request_id is not None
        path = out / f"{entry.request_id}.jsonl"
        if await asyncio.to_thread(_complete, path, st.data_count):
            return path  # downloaded by an earlier run, and complete
        url = st.data_url
        last = "no results URL"
        for attempt in range(self._policy.max_retries + 1):
            if url is None or attempt > 0:
                url = (await api.get_results_url(self.namespace, entry.request_id)).data_url
            if url is not None:
                try:
                    await api.download(url, path)
                    return path
                except DownloadFailure as failure:
                    last = str(failure)
                    if not (failure.retry or failure.expired):
                        break
            if attempt < self._policy.max_retries:
                await asyncio.sleep(self._policy.delay(attempt, None))
        message = (
            f"shard {index}: results of {entry.request_id} not downloaded (last: "
            f"{redact_text(last)}); run `bulkload wait` again to retry"
        )
        log.warning("%s", message)
        result.errors.append(message)
        return None

    async def _finish(self, result: WaitResult) -> None:
        """Counts per status; failed requests located in their sources; the resend hint."""
        self._tally(result)
        if result.failures:
            notes = await asyncio.to_thread(self._locate_failures, result.failures)
            result.unchecked = list(dict.fromkeys([*result.unchecked, *notes]))
            result.resend_command = self._resend_command()

    def _locate_failures(self, failures: list[dict[str, Any]]) -> list[str]:
        """Each failure's ``error_summary`` names lines of the uploaded shard: add the
        source file and line of each (``lines``, and in the summary text)."""
        lines = SourceLines(self.state)
        for failure in sorted(failures, key=lambda f: f["shard"]):
            summary = failure.get("error_summary")
            entry = self.state.shards[failure["shard"]]
            if not summary or entry.extra:  # a merged manifest's sources are elsewhere
                continue
            records = lines.of_shard(entry)
            if records is not None:
                failure["error_summary"], failure["lines"] = locate_lines(summary, records)
        return unreadable_notes(lines)

    def _resend_command(self) -> str | None:
        """How to send the failed requests' records again, for the summary."""
        run = self.state.run
        if self.state.manifest_path.name != MANIFEST or not run.get("inputs"):
            return None
        options = run.get("options", {})
        argv = ["bulkload", "load", str(run.get("namespace")), *(i["path"] for i in run["inputs"])]
        argv += ["--work-dir", str(self.state.work_dir), "--resend-failed"]
        if run.get("base_url") and run["base_url"] != DEFAULT_BASE_URL:
            argv += ["--base-url", run["base_url"]]
        flags = {
            "shard_max_bytes": ("--shard-size", 64 << 20),
            "shard_max_records": ("--shard-records", 100_000),
            "id_field": ("--id-field", "id"),
        }
        for key, (flag, default) in flags.items():
            if options.get(key, default) != default:
                argv += [flag, str(options[key])]
        if options.get("coerce_id"):
            argv.append("--coerce-id")
        command = shlex.join(argv)
        cwd = run.get("cwd")
        return f"cd {shlex.quote(cwd)} && {command}" if cwd and cwd != os.getcwd() else command

    def _tally(self, result: WaitResult) -> None:
        statuses: dict[str, int] = {}
        for entry in self.state.shards.values():
            if entry.status != ShardStatus.UPLOADED or not entry.request_id:
                continue
            result.requests += 1
            proc = entry.processing or {}
            status = str(proc.get("processing_status") or "unknown")
            statuses[status] = statuses.get(status, 0) + 1
            if status == ProcessingStatus.SUCCEEDED:
                result.succeeded += 1
                result.objects += int(proc.get("data_count") or 0)
            elif status == ShardStatus.FAILED:
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
            1
            for e in self.state.shards.values()
            if e.status != ShardStatus.UPLOADED or not e.request_id
        )
        result.statuses = statuses


async def _run_workers(worker: Callable[[], Any], count: int) -> None:
    """Run ``count`` copies of ``worker`` in a task group; an error ends them all and is
    raised itself, not wrapped in an ExceptionGroup."""
    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(count):
                tg.create_task(worker())
    except BaseExceptionGroup as group:
        raise _first_cause(group) from None


def _first_cause(group: BaseExceptionGroup[Any]) -> BaseException:
    for exc in group.exceptions:
        found = _first_cause(exc) if isinstance(exc, BaseExceptionGroup) else exc
        if not isinstance(found, asyncio.CancelledError):
            return found
    return group.exceptions[0]


def _complete(path: Path, count: object) -> bool:
    """Whether a results file from an earlier run is there with all ``count`` lines."""
    return isinstance(count, int) and path.exists() and _count_lines(path) == count


def _count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            n += block.count(b"\n")
    return n
