"""What a run counts as it goes: ``Stats`` (live counters) and the ``Progress`` a caller sees.

The loader only updates a ``Stats`` object and hands ``Progress`` snapshots to a callback; it
never prints. How they are shown is the CLI's business (``bulkload.cli._display``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass


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
