"""Ctrl-C and SIGTERM end a load in every phase of the input side, within seconds.

The real CLI runs as a subprocess (``--dry-run``: no network needed). Each test sends its
signal only once the process is provably in the phase under test, as seen from outside
(a FIFO opened for reading, a connection accepted, data consumed from a pipe), and expects
the contract's exit code, quickly, without a traceback.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest

#: How long a stopped load may take to exit: the grace for a stuck reader is 1.5 s.
EXIT_WITHIN = 6.0
#: How long to wait for the process to reach the phase under test (it imports first).
REACH_WITHIN = 60.0


def start_load(tmp_path: Path, *inputs: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "bulkload", "load", "ns", *inputs, "--dry-run", "--quiet"]
    # The default --grace (30 s): with no upload in flight, a stop must not wait for it.
    cmd += ["--work-dir", str(tmp_path / "work"), "--workers", "0"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def until(condition: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    """Poll a condition that has no event (another process's state), with a deadline."""
    deadline = time.monotonic() + REACH_WITHIN
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the load never reached the phase under test"
        time.sleep(0.01)


def stopped(proc: subprocess.Popen[bytes], signum: int) -> tuple[int, str, float]:
    started = time.monotonic()
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=EXIT_WITHIN)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"still running {EXIT_WITHIN} s after the signal: {err.decode()[-2000:]}")
    return proc.returncode, err.decode(errors="replace"), time.monotonic() - started


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.jsonl"
    os.mkfifo(path)
    return path


def reader_has_it_open(path: Path, keep: list[int]) -> Callable[[], bool]:
    """True once someone has the FIFO open for reading; the write end is kept in ``keep``."""

    def check() -> bool:
        try:
            keep.append(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no reader yet
                return False
            raise
        return True

    return check


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_fifo_without_a_writer(tmp_path: Path, fifo: Path, signum: int, code: int) -> None:
    proc = start_load(tmp_path, str(fifo))
    writers: list[int] = []
    try:
        until(reader_has_it_open(fifo, writers), proc)
        returncode, err, _ = stopped(proc, signum)
    finally:
        for fd in writers:
            os.close(fd)
    assert returncode == code, err
    assert "Traceback" not in err


def test_a_read_that_never_returns(tmp_path: Path, fifo: Path) -> None:
    """A writer sent a line and went quiet: the reader is blocked inside read()."""
    proc = start_load(tmp_path, str(fifo))
    writers: list[int] = []
    try:
        until(reader_has_it_open(fifo, writers), proc)
        os.write(writers[0], b'{"id":"a"}\n')

        def consumed() -> bool:  # bytes still in the pipe, seen from the write end
            waiting = bytearray(4)
            fcntl.ioctl(writers[0], termios.FIONREAD, waiting)
            return int.from_bytes(waiting, sys.byteorder) == 0

        until(consumed, proc)
        returncode, err, _ = stopped(proc, signal.SIGINT)
    finally:
        for fd in writers:
            os.close(fd)
    assert returncode == 130, err
    assert "Traceback" not in err
    assert "reading did not stop" in err
    assert (tmp_path / "work" / "manifest.json").exists()  # flushed all the same


def test_input_resolution_that_hangs(tmp_path: Path) -> None:
    """Listing a remote input whose server accepts the connection and never answers."""
    pytest.importorskip("fsspec")
    pytest.importorskip("aiohttp")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        proc = start_load(tmp_path, f"http://127.0.0.1:{port}/data.jsonl")
        server.settimeout(REACH_WITHIN)
        conn, _ = server.accept()  # the load is inside resolve_inputs now
        with conn:
            returncode, err, _ = stopped(proc, signal.SIGTERM)
    assert returncode == 143, err
    assert "Traceback" not in err
    assert not (tmp_path / "work" / "manifest.json").exists()  # nothing was begun


def test_a_fifo_in_a_directory_is_skipped_and_a_symlink_loop_ends(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.jsonl").write_bytes(b'{"id":"a"}\n')
    (data / "sub" / "b.jsonl").write_bytes(b'{"id":"b"}\n')
    os.mkfifo(data / "sub" / "pipe.jsonl")
    (data / "sub" / "loop").symlink_to("..")  # sub/loop/sub/loop/... without a guard
    (data / "sub" / "up").symlink_to(data)
    for spec in (str(data), str(data / "**" / "*.jsonl")):
        proc = start_load(tmp_path, spec)
        out, err = proc.communicate(timeout=120)
        text = err.decode()
        assert proc.returncode == 0, text
        assert "pipe.jsonl is not a regular file (a named pipe); skipped" in text
        assert "Traceback" not in text
        assert "2 records" in out.decode() or '"records": 2' in out.decode(), out


def test_a_socket_named_on_the_command_line_is_read_as_a_stream(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        proc = start_load(tmp_path, str(path))
        server.settimeout(REACH_WITHIN)
        conn, _ = server.accept()
        with conn:
            conn.sendall(b'{"id":"a"}\n{"id":"b"}\n')
        out, err = proc.communicate(timeout=REACH_WITHIN)
    assert proc.returncode == 0, err.decode()
    assert b"2 records" in out, out
