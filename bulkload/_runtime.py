"""Process-wide choices and the threads the event loop does not own.

``run_async`` runs a coroutine on uvloop where it is installed; ``one_malloc_arena`` is a
process-wide memory setting the CLI opts into (a library must not make it for its caller);
``DaemonCall`` runs blocking work (reading inputs, resolving them) in a daemon thread whose
outcome the loop awaits but never has to join. Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

log = logging.getLogger("bulkload")
T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop where it is installed (it is on Linux and macOS)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run(coro)
    result: T = uvloop.run(coro)
    return result


def one_malloc_arena() -> None:
    """Keep the loader's memory flat on glibc: one malloc arena for all threads.

    By default glibc gives threads their own arenas; 8 MiB blocks allocated by the reader
    thread and freed by others then fragment them, and RSS crept from ~77 to ~104 MB over a
    4 GiB load. One arena kept it flat at ~80 MB at the same speed (benchmarks/, memory row).
    A process-wide setting, so the CLI makes it, not the library. Same as MALLOC_ARENA_MAX=1.
    """
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.mallopt(-8, 1)  # M_ARENA_MAX from malloc.h
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        pass


#: Seconds the reading thread gets to notice a stop (it checks between blocks, and every
#: 0.5 s while it waits for the upload queue) before the run ends without it.
READER_GRACE = 1.5


class DaemonCall(Generic[T]):
    """``fn()`` in a daemon thread whose outcome the loop awaits but never has to join.

    Reading and resolving inputs block in ways nothing can interrupt (a FIFO whose writer
    is quiet, a hung network file system or store). In the default executor such a thread
    would keep ``asyncio.run`` from returning after a stop; a daemon thread is left behind
    instead, and ends with the process.
    """

    def __init__(self, fn: Callable[[], T], name: str) -> None:
        self._loop = asyncio.get_running_loop()
        #: The outcome; awaiting it may be cancelled without affecting the thread.
        self.result: asyncio.Future[T] = self._loop.create_future()
        #: Set once the thread has returned, whatever happened to ``result``.
        self.ended: asyncio.Future[None] = self._loop.create_future()
        threading.Thread(target=self._run, args=(fn,), name=name, daemon=True).start()

    def _run(self, fn: Callable[[], T]) -> None:
        try:
            value = fn()
        except BaseException as exc:  # handed to the loop, which re-raises it
            self._post(None, exc)
        else:
            self._post(value, None)

    def _post(self, value: T | None, exc: BaseException | None) -> None:
        # RuntimeError: the loop is closed, and nobody waits for this any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._settle, value, exc)

    def _settle(self, value: T | None, exc: BaseException | None) -> None:
        if not self.result.done():
            if exc is None:
                self.result.set_result(value)  # type: ignore[arg-type]  # T when exc is None
            else:
                self.result.set_exception(exc)
        if not self.ended.done():
            self.ended.set_result(None)

    async def until(self, event: asyncio.Event) -> T | None:
        """The result, or None as soon as ``event`` is set first (the thread is left)."""
        waiter: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait([self.result, waiter], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if self.result.done():
            return self.result.result()
        self.result.add_done_callback(_retrieve)
        return None

    async def let_go(self, timeout: float) -> None:
        """Give the thread ``timeout`` seconds to return (after a stop); one stuck in a read
        (a pipe whose writer is quiet, a hung file system) is left behind, so that the run
        still ends and flushes its manifest."""
        try:
            await asyncio.wait_for(asyncio.shield(self.ended), timeout)
        except TimeoutError:
            log.warning(
                "reading did not stop within %g s (a read is blocked, e.g. a pipe whose "
                "writer is quiet); ending the run without it",
                timeout,
            )


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark an abandoned outcome as seen, so that asyncio does not log it as lost."""
    if not future.cancelled():
        future.exception()
