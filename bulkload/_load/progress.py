"""What a person sees: counters in, a live display or plain log lines out.

The loader only updates a ``Stats`` object and hands ``Progress`` snapshots to a callback;
it never prints. The CLI picks the display: a rich live bar on a terminal, one plain line
every few seconds on stderr elsewhere (cron, Airflow and CI logs keep every line, so a
redrawn bar would fill them with carriage returns), or nothing with ``--quiet``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import IO, Any


@dataclass(slots=True)
class Stats:
    """Live counters of a run. Written by the reader thread and the upload tasks: each field
    has one writer, and readers only need a consistent-enough view for display."""

    bytes_total: int | None = None
    bytes_read: int = 0
    lines: int = 0
    records: int = 0
    rejected: int = 0
    blank: int = 0
    shards: int = 0
    uploaded: int = 0
    skipped: int = 0
    failed: int = 0
    in_flight: int = 0
    #: Bytes sent so far (a failed attempt's bytes are taken back).
    bytes_uploaded: int = 0
    #: Bytes of shards the store confirmed (this run's and, for a resume, earlier runs').
    bytes_confirmed: int = 0
    #: Bytes of every shard made so far (to upload, or uploaded by an earlier run).
    bytes_planned: int = 0
    records_uploaded: int = 0
    reading_done: bool = False
    dry_run: bool = False
    started: float = 0.0

    def snapshot(self) -> Progress:
        elapsed = max(1e-9, time.monotonic() - self.started)
        if self.reading_done:
            to_upload: int | None = self.bytes_planned
        elif self.bytes_total:
            # While reading, the input's size is the estimate (records are most of it).
            to_upload = max(self.bytes_total, self.bytes_planned)
        else:
            to_upload = None
        return Progress(
            bytes_total=self.bytes_total,
            bytes_read=self.bytes_read,
            lines=self.lines,
            records=self.records,
            rejected=self.rejected,
            blank=self.blank,
            shards=self.shards,
            uploaded=self.uploaded + self.skipped,
            failed=self.failed,
            in_flight=self.in_flight,
            bytes_uploaded=self.bytes_uploaded,
            elapsed=elapsed,
            bytes_confirmed=self.bytes_confirmed,
            bytes_to_upload=to_upload,
            records_uploaded=self.records_uploaded,
            reading_done=self.reading_done,
            dry_run=self.dry_run,
        )


@dataclass(frozen=True, slots=True)
class Progress:
    """One look at a run in progress.

    The upload is the main measure (``bytes_confirmed`` of ``bytes_to_upload``, which is
    an estimate — the input's size — until reading ends), reading the secondary one: with
    the queue full, reading runs ahead of uploads, and a bar of bytes read would sit at
    100 % while the uploads go on."""

    bytes_total: int | None
    bytes_read: int
    lines: int
    records: int
    rejected: int
    blank: int
    shards: int
    uploaded: int
    failed: int
    in_flight: int
    bytes_uploaded: int
    elapsed: float
    bytes_confirmed: int = 0
    bytes_to_upload: int | None = None
    records_uploaded: int = 0
    reading_done: bool = False
    dry_run: bool = False

    @property
    def read_rate(self) -> float:
        """Bytes read per second so far."""
        return self.bytes_read / self.elapsed

    @property
    def upload_rate(self) -> float:
        """Bytes sent per second so far."""
        return self.bytes_uploaded / self.elapsed

    @property
    def eta(self) -> float | None:
        """Seconds left: to upload what is left, or for a dry run to read it; None while
        the amount left is unknown."""
        if self.dry_run:
            if not self.bytes_total or not self.bytes_read:
                return None
            return max(0.0, (self.bytes_total - self.bytes_read) / max(self.read_rate, 1e-9))
        if self.bytes_to_upload is None or not self.bytes_uploaded:
            return None
        left = self.bytes_to_upload - self.bytes_confirmed
        return max(0.0, left / max(self.upload_rate, 1e-9))


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_seconds(s: float) -> str:
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress_line(p: Progress) -> str:
    """The plain one-line form, for logs: the upload first, then reading."""
    read = human_bytes(p.bytes_read)
    if p.bytes_total:
        read += f" of {human_bytes(p.bytes_total)} ({100 * p.bytes_read / p.bytes_total:.0f}%)"
    eta = f", ETA {human_seconds(p.eta)}" if p.eta is not None else ""
    counts = f"{p.records:,} records, {p.rejected:,} rejected"
    if p.dry_run:
        return (
            f"bulkload: read {read}, {counts}; {p.shards} shards; {human_bytes(p.read_rate)}/s{eta}"
        )
    sent = human_bytes(p.bytes_confirmed)
    if p.bytes_to_upload:
        about = "" if p.reading_done else "~"
        share = 100 * p.bytes_confirmed / p.bytes_to_upload
        sent += f" of {about}{human_bytes(p.bytes_to_upload)} ({share:.0f}%)"
    return (
        f"bulkload: uploaded {sent} at {human_bytes(p.upload_rate)}/s{eta}; "
        f"shards {p.uploaded}/{p.shards} uploaded, {p.in_flight} in flight, {p.failed} failed; "
        f"read {read}, {counts}"
    )


class LineDisplay:
    """A plain progress line on ``stream`` every ``interval`` seconds."""

    def __init__(self, stream: IO[str] | None = None, interval: float = 5.0) -> None:
        self._stream = stream
        self._interval = interval
        self._last = time.monotonic()  # the first line after one interval, not at once

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            print(progress_line(p), file=self._stream or sys.stderr, flush=True)

    def close(self) -> None:
        pass


class RichDisplay:
    """Live bars on a terminal (rich): the upload (bytes confirmed of bytes to upload, rate,
    ETA) and, under it, reading (bytes read of total, records, rejects)."""

    def __init__(self, description: str = "loading") -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import (
            Progress as RichProgress,
        )

        self._bar: Any = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[detail]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self._upload = self._bar.add_task(f"{description} upload", total=None, detail="")
        self._read = self._bar.add_task("read", total=None, detail="")
        self._bar.start()

    def __call__(self, p: Progress) -> None:
        detail = f"{p.uploaded}/{p.shards} shards"
        if p.in_flight:
            detail += f" ({p.in_flight} sending)"
        if p.failed:
            detail += f", {p.failed} FAILED"
        if p.dry_run:
            self._bar.update(self._upload, visible=False)
        else:
            self._bar.update(
                self._upload, completed=p.bytes_confirmed, total=p.bytes_to_upload, detail=detail
            )
        reading = f"{p.records:,} rec, {p.rejected:,} rej" + (", done" if p.reading_done else "")
        self._bar.update(self._read, completed=p.bytes_read, total=p.bytes_total, detail=reading)

    def close(self) -> None:
        self._bar.stop()
