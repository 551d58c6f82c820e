"""What a person sees while a load runs: a live bar on a terminal, plain lines elsewhere.

A rich live display on a terminal; off a terminal (cron, Airflow and CI logs keep every
line, so a redrawn bar would fill them with carriage returns) one plain line every few
seconds on stderr; nothing with ``--quiet``. The upload leads, reading follows.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from .._config import format_bytes, format_seconds
from .._load.progress import Progress


def progress_line(p: Progress) -> str:
    """The plain one-line form, for logs: the upload first, then reading."""
    read = format_bytes(p.bytes_read)
    if p.bytes_total:
        read += f" of {format_bytes(p.bytes_total)} ({100 * p.bytes_read / p.bytes_total:.0f}%)"
    eta = f", ETA {format_seconds(p.eta)}" if p.eta is not None else ""
    counts = f"{p.records:,} records, {p.rejected:,} rejected"
    if p.dry_run:
        return f"bulkload: read {read}, {counts}; {p.shards} shards; {format_bytes(p.read_rate)}/s{eta}"
    sent = format_bytes(p.bytes_confirmed)
    if p.bytes_to_upload:
        about = "" if p.reading_done else "~"
        share = 100 * p.bytes_confirmed / p.bytes_to_upload
        sent += f" of {about}{format_bytes(p.bytes_to_upload)} ({share:.0f}%)"
    return (
        f"bulkload: uploaded {sent} at {format_bytes(p.upload_rate)}/s{eta}; "
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
