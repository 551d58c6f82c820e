"""Worker processes for ``--workers N``: started from a fork server, proven alive before the
load relies on them, or not used at all (the load then validates in its own process)."""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from .._validate import worker

log = logging.getLogger("bulkload")
#: How long the first worker may take to answer before the load goes on without workers.
POOL_START_TIMEOUT = 60.0
#: What a worker process imports first: light on purpose (no aiohttp; a test checks).
PRELOAD = worker.__name__


def start_pool(workers: int) -> ProcessPoolExecutor | None:
    """A pool whose first worker answered; None, with a warning, if processes cannot start
    here (no POSIX semaphores without /dev/shm, no socket for the fork server, a script
    without a ``__main__`` guard): the load then runs in this process."""
    pool = None
    try:
        pool = _pool(workers)
        pool.submit(worker.ready).result(timeout=POOL_START_TIMEOUT)
    except (OSError, ImportError, NotImplementedError, RuntimeError, BrokenProcessPool) as exc:
        log.warning(
            "worker processes could not start (%s); validating in this process instead. "
            "(From a script, keep its code under `if __name__ == '__main__':`.)",
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
        )
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        return None
    return pool


def _pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes started from a clean server process (forkserver) rather than forked
    from this one, whose other threads may hold locks at the moment of a fork."""
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload([PRELOAD])
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=worker.exit_with_parent)
