"""What every benchmark shares: paths, the emulator in its own process, measured child
processes, and RSS sampling.

Units everywhere: MB = 10^6 bytes, MB/s of wall time, "CPU s/GB" = user + system seconds
per 10^9 bytes, RSS in MB (10^6 bytes).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil  # type: ignore[import-untyped]

MiB = 1024 * 1024
GiB = 1024 * MiB
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = PROJECT_ROOT / "bench-data"
RESULTS_DIR = PROJECT_ROOT / "bench-results"
API_KEY = "bench-key"
NAMESPACE = "bench"
#: RSS sampling period: fine enough to catch a buffer that lives for a few ms.
SAMPLE_EVERY_S = 0.005
#: How often a tree sampler looks for new child processes: a scan of /proc costs ~1 ms,
#: too much to do every 5 ms on a 2-core machine that is also running the benchmark.
RESCAN_CHILDREN_S = 0.05


def cpu() -> float:
    """CPU seconds (user + system) of this process and its waited-for children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def warm(paths: list[Path]) -> None:
    """Read ``paths`` into the page cache, so that a measurement reads memory, not the disk.
    The machine is shared: other work evicts cached files within minutes (a 1 GiB file
    read 20 s earlier was 5 % gone, 45 % after half an hour)."""
    buf = bytearray(8 * MiB)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def env_with_project() -> dict[str, str]:
    """This environment, with the project importable and no API key from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFETYKIT_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
    )
    return env


def git_info() -> dict[str, Any]:
    """The commit being measured, and whether the work tree differs from it."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "bulkload"))
    return {"commit": commit or None, "dirty": dirty}


class RssSampler:
    """Samples RSS in a background thread; ``peak`` since the last ``reset()``.

    With ``tree=True`` the sample is the sum over the process and all its descendants
    (validation workers included); pages shared between them count once per process, so
    this errs high. Beside it ``peak_pss``: the sum of the processes' PSS (each shared
    page divided among its sharers, what a cgroup's memory limit roughly sees), sampled
    every ``PSS_EVERY_S`` (reading smaps_rollup costs more than statm). It also keeps the CPU seconds of the descendants that are not the
    process's own children (``grandchild_cpu``): workers started by a forkserver are the
    server's children, so ``wait4`` on the process never counts them.
    """

    #: Seconds between the entries of ``timeline``: enough to tell growth from a spike.
    TIMELINE_EVERY_S = 0.5
    #: Seconds between PSS samples (the tree only).
    PSS_EVERY_S = 0.05

    def __init__(self, pid: int, *, tree: bool = False) -> None:
        self.process = psutil.Process(pid)
        #: ``(seconds since start, RSS)`` every ``TIMELINE_EVERY_S``.
        self.timeline: list[tuple[float, int]] = []
        self.tree = tree
        self._members: list[psutil.Process] = [self.process]
        self._children: set[int] = set()
        self._cpu: dict[int, float] = {}  # grandchildren: last CPU seconds seen
        self._scanned = 0.0
        self._pss_at = 0.0
        #: The highest sum of PSS seen (``tree=True`` only; 0 where /proc has no PSS).
        self.peak_pss = 0
        self.peak = self.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def rss(self) -> int:
        if not self.tree:
            value: int = self.process.memory_info().rss
            return value
        now = time.monotonic()
        if now - self._scanned >= RESCAN_CHILDREN_S:
            self._scanned = now
            with contextlib.suppress(psutil.Error):
                self._members = [self.process, *self.process.children(recursive=True)]
                self._children = {c.pid for c in self.process.children()}
        total = pss = 0
        want_pss = now - self._pss_at >= self.PSS_EVERY_S
        for member in self._members:
            try:
                with member.oneshot():
                    total += member.memory_info().rss
                    if want_pss:
                        pss += getattr(member.memory_full_info(), "pss", 0)
                    if member.pid != self.process.pid and member.pid not in self._children:
                        times = member.cpu_times()
                        self._cpu[member.pid] = times.user + times.system
            except psutil.Error:
                continue  # a worker that just exited
        if want_pss:
            self._pss_at = now
            self.peak_pss = max(self.peak_pss, pss)
        return total

    @property
    def grandchild_cpu(self) -> float:
        """CPU seconds of the descendants below the children (to within one sample)."""
        return sum(self._cpu.values())

    def _sample(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(SAMPLE_EVERY_S):
            try:
                rss = self.rss()
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            elapsed = time.monotonic() - started
            if not self.timeline or elapsed - self.timeline[-1][0] >= self.TIMELINE_EVERY_S:
                self.timeline.append((elapsed, rss))

    def reset(self) -> int:
        self.peak = self.rss()
        return self.peak

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- child processes ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessRun:
    """One measured child process (all its descendants included in ``cpu_s``)."""

    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss: int
    #: The sum of PSS over the tree at its highest (0 where unknown); see ``RssSampler``.
    peak_pss: int
    rss_timeline: list[tuple[float, int]]
    stdout: str
    stderr: str


class BenchTimeout(RuntimeError):
    """A measured process ran past its time limit and was killed."""


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def start(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path = PROJECT_ROOT,
    **kwargs: Any,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session (so a timeout can kill all of it), in ``cwd`` (the
    tree whose ``bulkload`` a ``python -m bulkload`` runs)."""
    return subprocess.Popen(
        cmd, env=env or env_with_project(), cwd=cwd, start_new_session=True, **kwargs
    )


def reap(procs: list[subprocess.Popen[bytes]], deadline: float) -> tuple[list[int], float]:
    """Wait for every process with ``os.wait4``; their exit codes and total CPU seconds.

    Kills them all (their whole process groups) and raises ``BenchTimeout`` at
    ``deadline`` (``time.monotonic()``).
    """
    codes: dict[int, int] = {}
    cpu_s = 0.0
    while len(codes) < len(procs):
        progressed = False
        for proc in procs:
            if proc.pid in codes:
                continue
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == 0:
                continue
            progressed = True
            codes[proc.pid] = os.waitstatus_to_exitcode(status)
            proc.returncode = codes[proc.pid]  # keep Popen from waiting on a reaped pid
            cpu_s += usage.ru_utime + usage.ru_stime
        if not progressed:
            if time.monotonic() > deadline:
                for proc in procs:
                    if proc.pid not in codes:
                        _kill_group(proc.pid)
                        proc.wait()
                raise BenchTimeout(f"{len(procs) - len(codes)} process(es) timed out; killed")
            time.sleep(0.005)
    return [codes[p.pid] for p in procs], cpu_s


def run_measured(
    cmd: list[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    stdin: IO[bytes] | None = None,
    cwd: Path = PROJECT_ROOT,
) -> ProcessRun:
    """Run ``cmd``; its wall time, CPU seconds (descendants included) and the peak RSS
    of its process tree. Killed, with ``BenchTimeout``, after ``timeout`` seconds."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = start(
            cmd, env=env, cwd=cwd, stdout=out, stderr=err, stdin=stdin or subprocess.DEVNULL
        )
        with RssSampler(proc.pid, tree=True) as sampler:
            (code,), cpu_s = reap([proc], time.monotonic() + timeout)
        cpu_s += sampler.grandchild_cpu
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return ProcessRun(
            returncode=code,
            wall_s=wall,
            cpu_s=cpu_s,
            peak_rss=sampler.peak,
            peak_pss=sampler.peak_pss,
            rss_timeline=sampler.timeline,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


class EmulatorProcess:
    """``python -m bulkload.emulator`` in a process of its own, so that its CPU and memory
    are measured apart from the client's; a sink (``--discard-bodies``) by default.

    ``with EmulatorProcess() as emu:`` starts it and reads the base URL from its first
    line of stdout; leaving the block stops it (SIGTERM, then SIGKILL after 30 s).
    ``tls=True`` serves HTTPS (``benchmarks/tls_sink.py``, a sink only): ``ca_file`` is
    then the private CA's certificate that clients must trust.
    """

    #: Longest wait for the first line: the emulator imports aiohttp, well under this.
    START_TIMEOUT = 60.0

    def __init__(
        self, *, discard_bodies: bool = True, data_dir: Path | None = None, tls: bool = False
    ) -> None:
        self.discard_bodies = discard_bodies
        self.data_dir = data_dir
        self.tls = tls
        self.base_url = ""
        self.ca_file: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.process: psutil.Process | None = None

    def client(self) -> Any:
        """An ``httpx.Client`` that trusts this sink."""
        import httpx

        return httpx.Client(timeout=60, verify=str(self.ca_file) if self.ca_file else True)

    def __enter__(self) -> EmulatorProcess:
        cmd = [sys.executable, "-m", "bulkload.emulator", "--port", "0", "--api-key", API_KEY]
        if self.discard_bodies:
            cmd.append("--discard-bodies")
        if self.data_dir is not None:
            cmd += ["--data-dir", str(self.data_dir)]
        if self.tls:
            if not self.discard_bodies or self.data_dir is not None:
                raise ValueError("the TLS sink only discards bodies")
            self._tmp = tempfile.TemporaryDirectory(prefix="bench-tls-")
            self.ca_file = Path(self._tmp.name) / "ca.pem"
            cmd = [sys.executable, "-m", "benchmarks.tls_sink", "--api-key", API_KEY]
            cmd += ["--ca-file", str(self.ca_file)]
        proc = start(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._proc = proc
        stdout = proc.stdout
        assert stdout is not None
        line: list[bytes] = []
        # readline() has no timeout of its own: read in a thread, wait for it with one.
        reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(self.START_TIMEOUT)
        url = line[0].decode().strip() if line else ""
        if not url.startswith("https://" if self.tls else "http://"):
            self.__exit__()
            raise RuntimeError(f"the emulator did not print its URL (got {url!r})")
        self.base_url = url
        self.process = psutil.Process(proc.pid)
        return self

    def cpu_seconds(self) -> float:
        """CPU seconds the emulator has used so far."""
        assert self.process is not None
        t = self.process.cpu_times()
        return float(t.user + t.system)

    def rss(self) -> int:
        assert self.process is not None
        value: int = self.process.memory_info().rss
        return value

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def new_upload_url(client: Any, base_url: str, namespace: str = NAMESPACE) -> str:
    """One import call (``client`` is an ``httpx.Client``); its pre-signed upload URL."""
    resp = client.post(
        f"{base_url}/v1/data/{namespace}/import",
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    resp.raise_for_status()
    url: str = resp.json()["upload_url"]
    return url


def sink_state(client: Any, base_url: str) -> dict[str, Any]:
    """``GET /_emulator/state``."""
    resp = client.get(f"{base_url}/_emulator/state")
    resp.raise_for_status()
    state: dict[str, Any] = resp.json()
    return state


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of ``runs`` (by ``mb_s``), with every run's MB/s and the highest peak
    RSS of them all (memory is judged by the worst run, speed by the best)."""
    best = dict(max(runs, key=lambda r: r["mb_s"]))
    if len(runs) > 1:
        best["runs_mb_s"] = [r["mb_s"] for r in runs]
        if all("peak_rss_mb" in r for r in runs):
            best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
        if all("peak_pss_mb" in r for r in runs):
            best["peak_pss_mb"] = max(r["peak_pss_mb"] for r in runs)
    return best


def mb(nbytes: float) -> float:
    return nbytes / 1e6


def log(message: str) -> None:
    """Progress for the person waiting, on stderr (the table goes to stdout)."""
    print(message, file=sys.stderr, flush=True)
