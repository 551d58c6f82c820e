"""``Loader``, the public face of a load, and ``load()`` for scripts; the engine is ``Run``
(``run.py``), and the flow is drawn in ``bulkload._load``."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .._config import Endpoint, LoadConfig
from .._errors import ConfigError, UsageError
from .._inputs import Source, Stop, resolve_inputs
from .._journal import MANIFEST, REJECTS
from .._ledger import Holder
from .._net import ApiClient, ClientOptions, open_client
from .._partition import partition_record, share_of
from .._runtime import DaemonCall, run_async
from .._validate import SchemaCheck
from .progress import Progress
from .run import LoadResult, Run, StopSignal, Tracker
from .scheduled import IncrementalLoad

log = logging.getLogger("bulkload")


class Loader:
    """Loads JSONL inputs or records into one SafetyKit namespace.

    ::

        async with Loader("products", api_key=key, work_dir="runs/products") as loader:
            result = await loader.load(["exports/"])

    The key is read from ``api_key`` or ``SAFETYKIT_API_KEY``; the base URL from
    ``base_url``, ``SAFETYKIT_BASE_URL``, or the public API. Rerunning with the same
    ``work_dir`` resumes. ``on_progress`` receives a ``Progress`` a few times a second.

    On cancellation: the reader stops, uploads in flight are abandoned (a rerun PUTs them
    again to the same URL), and the manifest is flushed before the cancellation propagates.
    """

    def __init__(
        self,
        namespace: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        work_dir: str | os.PathLike[str] | None = None,
        config: LoadConfig | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        if not namespace or not all(c.isalnum() or c in "_-" for c in namespace):
            raise ConfigError(f"namespace {namespace!r} may only hold letters, digits, '_' and '-'")
        self.namespace = namespace
        self.config = replace(config or LoadConfig(), **options)
        self._endpoint = Endpoint.resolve(
            api_key=api_key,
            base_url=base_url,
            need_key=not self.config.dry_run,
            dry_run_possible=True,
        )
        self.base_url = self._endpoint.base_url
        # A schema that cannot be used is a usage error now, before any input is read.
        schema = self.config.schema
        self._schema = SchemaCheck(schema) if schema is not None else None
        if work_dir is None:
            part = self.config.partition
            # Workers of one machine must not share a work dir: each gets its own by default.
            suffix = f"-part-{part[0]}-of-{part[1]}" if part is not None else ""
            work_dir = f"bulkload-{namespace}{suffix}"
        self.work_dir = Path(work_dir)
        self.on_progress = on_progress
        #: For remote INPUTs: fsspec file system options (credentials, endpoint); never
        #: written to the manifest.
        self.storage_options = dict(storage_options or {})
        #: An incremental load: the command line (or a description of the call) the ledger
        #: keeps with the run, and who hears that another run holds the namespace.
        self.description: str | None = None
        self.on_ledger_wait: Callable[[Sequence[Holder]], None] | None = _log_ledger_wait
        self._client: ApiClient | None = None
        self._closed = False
        self._stop = StopSignal()

    def __repr__(self) -> str:
        return (
            f"Loader(namespace={self.namespace!r}, base_url={self.base_url!r}, "
            f"work_dir={str(self.work_dir)!r})"
        )

    async def __aenter__(self) -> Loader:
        if self._closed:
            raise UsageError("this Loader is closed; make a new one")
        if not self.config.dry_run and self._client is None:
            cfg = self.config
            self._client = open_client(
                self._endpoint,
                ClientOptions(
                    timeout=cfg.timeout,
                    ca_bundle=cfg.ca_bundle,
                    max_retries=cfg.max_retries,
                    retry_after_cap=cfg.retry_after_cap,
                    max_rps=cfg.max_rps,
                ),
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session. On cancellation: the session is closed all the same."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def request_stop(self) -> None:
        """Stop gracefully: read no more, start no new upload, finish the ones in flight
        within ``config.grace`` seconds, then cancel them. Safe from a signal handler."""
        self._stop.request()

    # -- public entry points -------------------------------------------------------------

    async def load(self, inputs: Sequence[str | os.PathLike[str]]) -> LoadResult:
        """Validate, shard and upload files, directories, globs or ``-`` (stdin).

        On a stop request (``request_stop``) while the inputs are still being resolved, the
        result is an interrupted one with nothing read, and the work dir is not touched.
        """
        specs = [os.fspath(i) for i in inputs]
        if not specs:
            raise ConfigError("no inputs: give at least one file, directory, glob or -")
        self._stop.arm()
        stopped = self._stop.requested
        # In a thread the loop never has to join: a hung file system or store, or a huge
        # tree, must not keep a stop from ending the load.
        resolving = DaemonCall(
            functools.partial(
                resolve_inputs, specs, storage_options=self.storage_options, stop=self._stop.thread
            ),
            name="bulkload-inputs",
        )
        try:
            sources = await resolving.until(stopped)
        except Stop:
            sources = None
        if sources is None:
            return self._nothing_loaded()
        if self.config.incremental:
            try:
                return await self._incremental(specs).load(sources)
            except Stop:  # stopped while waiting for the ledger
                return self._nothing_loaded()
        part = self.config.partition
        if part is None:
            return await self._run(sources).execute()
        share = share_of(sources, *part)
        return await self._run(share, partition_record(sources, *part)).execute()

    def _incremental(self, specs: Sequence[str]) -> IncrementalLoad:
        return IncrementalLoad(
            namespace=self.namespace,
            config=self.config,
            work_dir=self.work_dir,
            make_run=self._make_run,
            schema=self._schema,
            storage_options=self.storage_options,
            description=self.description or f"load {self.namespace} " + " ".join(specs),
            stop=self._stop,
            on_wait=self.on_ledger_wait,
        )

    def _nothing_loaded(self) -> LoadResult:
        """The result of a load stopped before it read anything."""
        work = self.work_dir
        return LoadResult(
            self.namespace, work, work / MANIFEST, work / REJECTS, lines=0, records=0,
            rejected=0, blank=0, shards=0, uploaded=0, skipped=0, failed=0, bytes_read=0,
            bytes_uploaded=0, elapsed=0.0, dry_run=self.config.dry_run, interrupted=True,
        )  # fmt: skip

    async def load_records(
        self, records: AsyncIterable[Mapping[str, Any]] | Iterable[Mapping[str, Any]]
    ) -> LoadResult:
        """Validate, shard and upload records (e.g. rows from a database cursor).

        Each record is serialized with orjson; its origin in manifest and rejects is
        ``<records>`` and its 1-based position. A rerun resumes when the iterable yields
        the same records again. With ``config.partition`` set, the manifest records which
        partition of a larger set of records this is (as ``bulkload.dask`` does).
        """
        if self.config.incremental:
            raise ConfigError(
                "incremental loads skip input files the ledger knows; records from a program "
                "are not files: load them without incremental=True (or write them to files)"
            )
        part = self.config.partition
        partition = partition_record([], *part) if part is not None else None
        self._stop.arm()
        return await self._run([], partition).execute(records)

    def _run(self, sources: list[Source], partition: dict[str, Any] | None = None) -> Run:
        return self._make_run(self.config, sources, partition=partition)

    def _make_run(
        self,
        config: LoadConfig,
        sources: list[Source],
        *,
        work_dir: Path | None = None,
        partition: dict[str, Any] | None = None,
        run_id: str | None = None,
        tracker: Tracker | None = None,
        input_identity: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Run:
        return Run(
            namespace=self.namespace,
            config=config,
            work_dir=work_dir or self.work_dir,
            base_url=self.base_url,
            client=self._client,
            stop=self._stop,
            on_progress=self.on_progress,
            schema=self._schema,
            sources=sources,
            partition=partition,
            run_id=run_id,
            tracker=tracker,
            input_identity=input_identity,
        )


def _log_ledger_wait(holders: Sequence[Holder]) -> None:
    log.warning(
        "waiting for %s, which holds this namespace in the ledger (it ends, or the wait "
        "does: --ledger-wait)",
        holders[0].describe() if holders else "another run",
    )


def load(
    namespace: str,
    inputs: Sequence[str | os.PathLike[str]],
    **kwargs: Any,
) -> LoadResult:
    """Synchronous wrapper for scripts: ``bulkload.load("products", ["data/"], work_dir=...)``.

    Takes the keyword arguments of ``Loader``. On cancellation (Ctrl-C): as ``Loader``.
    """

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass  # no loop running here: the usual case
    else:
        raise UsageError(
            "bulkload.load() runs its own event loop, and one is already running here; "
            "in async code use `async with bulkload.Loader(...) as loader: "
            "await loader.load(...)`"
        )

    async def main() -> LoadResult:
        async with Loader(namespace, **kwargs) as loader:
            return await loader.load(inputs)

    return run_async(main())
