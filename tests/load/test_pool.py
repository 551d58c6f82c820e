"""The worker pool's fork server can be started ahead (``warm_up``, from the CLI while it
imports and lists inputs): the pool then forks its workers from that very server."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import os, psutil
    from bulkload._load import pool
    from bulkload._validate import worker

    pool.warm_up()
    servers = [p for p in psutil.Process().children() if "forkserver" in " ".join(p.cmdline())]
    assert len(servers) == 1, servers
    executor = pool.start_pool(2)
    assert executor is not None
    pids = {executor.submit(os.getpid).result() for _ in range(8)}
    assert all(psutil.Process(pid).ppid() == servers[0].pid for pid in pids), pids
    assert executor.submit(worker.ready).result() is True
    executor.shutdown()
    print("ok")
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="the fork server is a POSIX start method")
def test_a_warmed_up_fork_server_is_the_one_the_pool_forks_its_workers_from() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
