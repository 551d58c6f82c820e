"""``EmulatorThread``: the emulator on its own event loop in a background thread.

For tests that run code with its own ``asyncio.run`` (a CLI called in-process) or plain
synchronous clients. Every inspection call is executed on the emulator's loop and
returns a snapshot, so it is safe from any thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

from ._faults import Faults
from ._records import PutAttempt, RequestInfo
from ._server import Emulator, EmulatorOptions, read_stored_records

__all__ = ["EmulatorThread"]

T = TypeVar("T")

#: Bound on any one hop into the emulator's loop; far above what a snapshot takes, so
#: hitting it means the loop is wedged and the test should fail loudly.
CALL_TIMEOUT = 60.0


class EmulatorThread:
    """An :class:`Emulator` served from a background thread; same (keyword) arguments.

    ``with EmulatorThread() as emu:`` starts the thread and the server; leaving the block
    stops both and removes the temp data dir. ``stop()``/``start()`` restart the server on
    the same port while the thread keeps running.
    """

    def __init__(self, **options: Unpack[EmulatorOptions]) -> None:
        self._emulator = Emulator(**options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._changes = threading.Condition()
        self._version = 0
        self._emulator.add_listener(self._on_change)

    # --- plumbing -----------------------------------------------------------------------

    def _on_change(self) -> None:
        # Runs on the emulator's loop; the waiting thread never holds this lock while it
        # calls into the loop, so this cannot deadlock.
        with self._changes:
            self._version += 1
            self._changes.notify_all()

    def _moved_on(self, seen: int) -> bool:
        return self._version != seen

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("the emulator thread is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(CALL_TIMEOUT)

    def _call(self, fn: Callable[[], T]) -> T:
        """``fn()`` executed on the emulator's loop (directly once the thread is gone)."""
        loop = self._loop
        if loop is None or threading.current_thread() is self._thread:
            return fn()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except Exception as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(CALL_TIMEOUT)

    # --- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> Self:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        thread = threading.Thread(target=serve, name="bulkload-emulator", daemon=True)
        thread.start()
        ready.wait()
        self._loop, self._thread = loop, thread
        try:
            self._run(self._emulator.start())
        except BaseException:
            self._shutdown_loop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._run(self._emulator.aclose())
        finally:
            self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def drain() -> None:
            await loop.shutdown_asyncgens()
            await loop.shutdown_default_executor()

        asyncio.run_coroutine_threadsafe(drain(), loop).result(CALL_TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(CALL_TIMEOUT)
        loop.close()
        self._loop = self._thread = None

    def start(self) -> None:
        """Serve again, on the same port, after ``stop()``."""
        self._run(self._emulator.start())

    def stop(self) -> None:
        """Stop serving; state is kept for ``start()``."""
        self._run(self._emulator.stop())

    # --- same surface as Emulator -------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self._emulator.base_url

    @property
    def port(self) -> int:
        return self._emulator.port

    @property
    def data_dir(self) -> Path:
        return self._emulator.data_dir

    @property
    def running(self) -> bool:
        return self._call(lambda: self._emulator.running)

    @property
    def faults(self) -> Faults:
        """The live fault settings. Assigning one field at a time is safe from any thread."""
        return self._emulator.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        def assign() -> None:
            self._emulator.faults = faults

        self._call(assign)

    def set_faults(self, faults: Faults | None = None, /, **changes: Any) -> None:
        self._call(lambda: self._emulator.set_faults(faults, **changes))

    @property
    def ingest_delay(self) -> float:
        return self._call(lambda: self._emulator.ingest_delay)

    @ingest_delay.setter
    def ingest_delay(self, seconds: float) -> None:
        def assign() -> None:
            self._emulator.ingest_delay = seconds

        self._call(assign)

    @property
    def clock_skew_s(self) -> float:
        return self._call(lambda: self._emulator.clock_skew_s)

    @clock_skew_s.setter
    def clock_skew_s(self, seconds: float) -> None:
        def assign() -> None:
            self._emulator.clock_skew_s = seconds

        self._call(assign)

    @property
    def aws_access_key_id(self) -> str:
        return self._emulator.aws_access_key_id

    @property
    def aws_secret_access_key(self) -> str:
        return self._emulator.aws_secret_access_key

    @property
    def aws_session_token(self) -> str | None:
        return self._emulator.aws_session_token

    @property
    def region(self) -> str:
        return self._emulator.region

    @property
    def bucket(self) -> str:
        return self._emulator.bucket

    def requests(self) -> list[RequestInfo]:
        return self._call(self._emulator.requests)

    def request(self, request_id: str) -> RequestInfo:
        return self._call(lambda: self._emulator.request(request_id))

    def counters(self) -> dict[str, dict[str, int]]:
        return self._call(self._emulator.counters)

    @property
    def puts_in_flight(self) -> int:
        return self._call(lambda: self._emulator.puts_in_flight)

    @property
    def max_puts_in_flight(self) -> int:
        return self._call(lambda: self._emulator.max_puts_in_flight)

    @property
    def chunked_puts(self) -> int:
        return self._call(lambda: self._emulator.chunked_puts)

    def put_log(self) -> list[PutAttempt]:
        return self._call(self._emulator.put_log)

    def call_log(self, endpoint: str) -> list[float]:
        return self._call(lambda: self._emulator.call_log(endpoint))

    def state(self) -> dict[str, Any]:
        return self._call(self._emulator.state)

    def stored_objects(self, namespace: str | None = None) -> list[tuple[str, Path]]:
        return self._call(lambda: self._emulator.stored_objects(namespace))

    def stored_records(self, namespace: str | None = None) -> list[tuple[str, bytes]]:
        # Only the list of objects comes from the loop; the files are read here, so a
        # big read never stalls the server.
        return read_stored_records(self.stored_objects(namespace))

    def notify(self) -> None:
        """Wake every ``wait_for`` to check its predicate again: for a predicate that also
        watches something outside the emulator (a child process that ended)."""
        self._on_change()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Block until ``predicate()`` is true, re-checking it on every state change.

        ``predicate`` runs in the calling thread and may use the inspection methods.
        Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._changes:
                seen = self._version
            if predicate():
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"emulator condition not met within {timeout} s; counters: {self.counters()}"
                )
            with self._changes:
                self._changes.wait_for(partial(self._moved_on, seen), remaining)
