"""``Emulator``: the aiohttp.web server, its lifecycle and the inspection API for tests."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypedDict

from aiohttp import web

from ._api import ApiHandlers
from ._core import Core, Settings
from ._faults import Faults
from ._records import PutAttempt, RequestInfo, read_object_lines
from ._results import ResultsHandlers
from ._s3 import ETAG_MODES, S3Handlers
from ._sigv4 import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_SECRET_ACCESS_KEY,
    DEFAULT_SESSION_TOKEN,
    MAX_EXPIRES,
    S3Credentials,
)

__all__ = ["Emulator", "EmulatorOptions", "read_stored_records"]

#: aiohttp's read buffer per connection. Its flow control pauses the socket at twice this,
#: so each PUT holds at most ~512 KiB in the loop plus one write batch in a thread.
READ_BUFSIZE = 256 * 1024
#: S3's bucket naming rules (3-63 characters: lowercase letters, digits, dots, hyphens;
#: a letter or digit at each end).
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
#: Paths the API and results are served under, so no bucket may be named so.
RESERVED_BUCKETS = frozenset({"results", "v1"})


class EmulatorOptions(TypedDict, total=False):
    """``Emulator``'s keyword arguments, for ``EmulatorThread`` to pass on as they are
    (a test checks that the two lists agree)."""

    api_key: str
    host: str
    port: int
    data_dir: str | Path | None
    ingest_delay: float
    url_ttl: float
    results_ttl: float
    faults: Faults | None
    seed: int
    team_id: str
    shutdown_timeout: float
    discard_bodies: bool
    ssl_context: ssl.SSLContext | None
    aws_access_key_id: str
    aws_secret_access_key: str
    aws_session_token: str | None
    region: str
    bucket: str
    sign_content_type: bool
    clock_skew_s: float
    etag_mode: str


class Emulator:
    """A local SafetyKit Data API plus S3 pre-signed PUT store, over real sockets.

    ``async with Emulator() as emu:`` serves on ``emu.base_url`` until the block ends.
    ``data_dir=None`` keeps objects in a temp dir removed on exit; with a ``data_dir``,
    objects and requests persist there, so an emulator started again on the same
    directory (and port) carries on with the requests of the previous one.

    ``ingest_delay`` is how long (loop clock, from the object's arrival) a request stays
    ``ingesting``. ``url_ttl`` is the upload URLs' lifetime and ``results_ttl`` the
    results ``data_url``'s, both in seconds. ``shutdown_timeout`` is how long ``stop()``
    lets in-flight requests finish before cutting them off.

    Upload URLs are real SigV4 pre-signed PUT URLs, path-style
    (``{base_url}/{bucket}/{key}?X-Amz-...``), signed with ``aws_access_key_id``,
    ``aws_secret_access_key``, ``aws_session_token`` (``None``: no token) and ``region``,
    and verified as S3 verifies them. The default session token is full of ``+``, ``/``
    and ``=``, as a real STS token is, so a client must send the URL byte for byte (or
    at least never turn ``%2B`` into ``+``). ``sign_content_type`` makes the URLs sign
    ``content-type;host`` (the PUT must carry ``Content-Type: application/json``), else
    only ``host``. ``clock_skew_s`` moves the emulator's clock (issuing and checking
    URLs) by that many seconds; it can be changed while running, so a test can make
    every URL expire without waiting.

    ``etag_mode`` is how a stored PUT is answered: ``"md5"`` (the default) as plain S3
    does, ETag = the body's hex MD5 with ``x-amz-server-side-encryption: AES256``;
    ``"sse-kms"`` / ``"sse-kms-dsse"`` with ``aws:kms`` / ``aws:kms:dsse`` and a KMS key
    id; ``"sse-c"`` with the customer-key algorithm and key MD5; ``"opaque"`` with no
    encryption headers, as some S3-compatible stores. In every mode but ``"md5"`` the
    ETag is 32 hex digits, the same for the same key and content, and never the MD5.

    ``discard_bodies=True`` makes it a sink for benchmarks: a PUT that passes every S3
    check has its body read in full and dropped (not hashed, not stored), and is answered
    200 with ETag ``"discarded-<size>"``, which is not an MD5, so clients skip their
    check. The request then goes ``ingesting`` → ``succeeded`` with ``data_count`` = the
    body's line count; its ``data_url`` is issued as usual but answers 404
    ``NoSuchKey`` (no results were kept), and ``stored_objects()`` leaves it out.

    On cancellation: ``start()`` leaves nothing listening; ``stop()`` still closes the
    listening socket and every connection.
    """

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: str | Path | None = None,
        ingest_delay: float = 0.0,
        url_ttl: float = 12 * 3600,
        results_ttl: float = 3600,
        faults: Faults | None = None,
        seed: int = 0,
        team_id: str = "TEAM_ID",
        shutdown_timeout: float = 0.5,
        discard_bodies: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        aws_access_key_id: str = DEFAULT_ACCESS_KEY_ID,
        aws_secret_access_key: str = DEFAULT_SECRET_ACCESS_KEY,
        aws_session_token: str | None = DEFAULT_SESSION_TOKEN,
        region: str = "us-east-1",
        bucket: str = "bulkload-emulator",
        sign_content_type: bool = True,
        clock_skew_s: float = 0.0,
        etag_mode: str = "md5",
    ) -> None:
        """``ssl_context`` serves HTTPS (and upload URLs) with it, e.g. to test private CAs."""
        if ingest_delay < 0 or url_ttl <= 0 or results_ttl <= 0:
            raise ValueError("ingest_delay must be >= 0, url_ttl and results_ttl > 0")
        if url_ttl > MAX_EXPIRES:
            raise ValueError(f"url_ttl must be at most {MAX_EXPIRES} s (S3's limit), got {url_ttl}")
        if not BUCKET_RE.match(bucket) or bucket in RESERVED_BUCKETS:
            raise ValueError(f"bucket {bucket!r} is not a valid S3 bucket name for the emulator")
        if etag_mode not in ETAG_MODES:
            raise ValueError(f"etag_mode must be one of {', '.join(ETAG_MODES)}, got {etag_mode!r}")
        if not aws_access_key_id or "/" in aws_access_key_id or not aws_secret_access_key:
            raise ValueError("aws_access_key_id (without '/') and aws_secret_access_key are needed")
        self.host = host
        self.port = port
        self._temp_dir = data_dir is None
        settings = Settings(
            api_key=api_key,
            # A temp dir is only made by the first start(), so an emulator that never
            # runs leaves nothing behind.
            data_dir=Path(data_dir) if data_dir is not None else Path(),
            persistent=data_dir is not None,
            url_ttl=url_ttl,
            results_ttl=results_ttl,
            team_id=team_id,
            credentials=S3Credentials(
                access_key_id=aws_access_key_id,
                secret_access_key=aws_secret_access_key,
                session_token=aws_session_token,
                region=region,
            ),
            bucket=bucket,
            sign_content_type=sign_content_type,
            etag_mode=etag_mode,
            discard_bodies=discard_bodies,
        )
        self._core = Core(settings, faults or Faults(), seed, ingest_delay)
        self._core.clock_skew_s = clock_skew_s
        self._shutdown_timeout = shutdown_timeout
        self._ssl_context = ssl_context
        self._runner: web.AppRunner | None = None

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``; set once the emulator has started."""
        if not self._core.base_url:
            raise RuntimeError("the emulator has not been started")
        return self._core.base_url

    @property
    def data_dir(self) -> Path:
        """Where objects (and, when persistent, ``state.json``) live."""
        if self._core.settings.data_dir == Path():
            raise RuntimeError("the emulator has not been started")
        return self._core.settings.data_dir

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        """Listen on ``host:port``; after a first start on port 0, restarts reuse the port."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        core = self._core
        if self._temp_dir and core.settings.data_dir == Path():
            root = await asyncio.to_thread(tempfile.mkdtemp, prefix="bulkload-emulator-")
            core.settings = dataclasses.replace(core.settings, data_dir=Path(root))
        await core.load()
        app = web.Application()
        app.add_routes(ApiHandlers(self._core).routes())
        app.add_routes(S3Handlers(self._core).routes())
        app.add_routes(ResultsHandlers(self._core).routes())
        runner = web.AppRunner(
            app,
            access_log=None,
            # A client that gives up (a timeout during a hang, a dropped PUT) cancels its
            # handler, as a real server's would stop working for it.
            handler_cancellation=True,
            shutdown_timeout=self._shutdown_timeout,
            read_bufsize=READ_BUFSIZE,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, ssl_context=self._ssl_context)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        # A wildcard address is no place to connect to: advertise loopback instead.
        wildcard = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}
        url_host = wildcard.get(self.host, self.host)
        if ":" in url_host:
            url_host = f"[{url_host}]"
        scheme = "https" if self._ssl_context is not None else "http"
        self._core.base_url = f"{scheme}://{url_host}:{self.port}"
        self._runner = runner

    async def stop(self) -> None:
        """Stop serving; requests, counters and objects are kept for ``start()``."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self._core.persist()

    async def aclose(self) -> None:
        """Stop, and remove the data dir if it is the emulator's own temp dir."""
        try:
            await self.stop()
        finally:
            root = self._core.settings.data_dir
            if self._temp_dir and root != Path():
                await asyncio.to_thread(shutil.rmtree, root, True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- knobs --------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        """The live fault settings; assign fields to change them while running."""
        return self._core.injector.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._core.injector.faults = faults

    def set_faults(self, faults: Faults | None = None, /, **changes: Any) -> None:
        """Replace the fault settings and/or change some knobs (``put_503_rate=0.2``)."""
        if faults is not None:
            self._core.injector.faults = faults
        self._core.injector.faults.update(**changes)

    @property
    def ingest_delay(self) -> float:
        return self._core.ingest_delay

    @ingest_delay.setter
    def ingest_delay(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"ingest_delay must be >= 0, got {seconds}")
        self._core.ingest_delay = seconds

    @property
    def clock_skew_s(self) -> float:
        """Seconds added to the emulator's clock; assign to move time (e.g. past expiry)."""
        return self._core.clock_skew_s

    @clock_skew_s.setter
    def clock_skew_s(self, seconds: float) -> None:
        self._core.clock_skew_s = seconds
        self._core.changed()

    # --- the fake bucket's settings, for clients that pre-sign their own URLs ------------

    @property
    def aws_access_key_id(self) -> str:
        return self._core.settings.credentials.access_key_id

    @property
    def aws_secret_access_key(self) -> str:
        return self._core.settings.credentials.secret_access_key

    @property
    def aws_session_token(self) -> str | None:
        return self._core.settings.credentials.session_token

    @property
    def region(self) -> str:
        return self._core.settings.credentials.region

    @property
    def bucket(self) -> str:
        return self._core.settings.bucket

    # --- inspection ---------------------------------------------------------------------

    def requests(self) -> list[RequestInfo]:
        """Every request, in creation order."""
        return [self._core.info(rec) for rec in self._core.requests.values()]

    def request(self, request_id: str) -> RequestInfo:
        return self._core.info(self._core.requests[request_id])

    def counters(self) -> dict[str, dict[str, int]]:
        """Calls by endpoint and outcome: ``{"import": {"200": 10, "429": 3}, ...}``."""
        return self._core.counters_copy()

    @property
    def puts_in_flight(self) -> int:
        """PUT bodies being received right now."""
        return self._core.puts_in_flight

    @property
    def max_puts_in_flight(self) -> int:
        """The most PUT bodies ever received at once."""
        return self._core.max_puts_in_flight

    @property
    def chunked_puts(self) -> int:
        """PUTs that arrived with ``Transfer-Encoding: chunked`` (all refused)."""
        return self._core.chunked_puts

    def put_log(self) -> list[PutAttempt]:
        """Every PUT received, in order of completion."""
        return list(self._core.put_log)

    def call_log(self, endpoint: str) -> list[float]:
        """When each call to ``endpoint`` (a key of ``counters()``) arrived, as
        ``time.monotonic()`` readings taken before any injected delay."""
        return list(self._core.call_times[endpoint])

    def state(self) -> dict[str, Any]:
        """The JSON document ``GET /_emulator/state`` answers."""
        return self._core.snapshot()

    def stored_objects(self, namespace: str | None = None) -> list[tuple[str, Path]]:
        """``(request_id, path)`` of every stored object, in request creation order."""
        return self._core.stored_objects(namespace)

    def stored_records(self, namespace: str | None = None) -> list[tuple[str, bytes]]:
        """``(request_id, line)`` for every non-blank line of every stored object.

        Reads the files synchronously: a test helper, meant for assertions after a run.
        """
        return read_stored_records(self.stored_objects(namespace))

    # The timeout is part of the documented test API (``emu.wait_for(pred, timeout=5)``).
    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 10.0,
    ) -> None:
        """Return once ``predicate()`` is true, re-checking it on every state change.

        Raises ``TimeoutError`` after ``timeout`` seconds. On cancellation: nothing to undo.
        """
        await self._core.wait_for(predicate, timeout)

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` (from the loop) on every state change."""
        self._core.listeners.append(listener)


def read_stored_records(objects: list[tuple[str, Path]]) -> list[tuple[str, bytes]]:
    return [(request_id, line) for request_id, path in objects for line in read_object_lines(path)]
