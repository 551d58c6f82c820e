"""What a person sees off a terminal: one plain line per interval, never a redrawn bar."""

from __future__ import annotations

import io

from bulkload._progress import LineDisplay, Progress, progress_line


def snapshot(**overrides: object) -> Progress:
    values: dict[str, object] = dict(
        bytes_total=2_000_000_000, bytes_read=500_000_000, lines=800_000, records=799_000,
        rejected=990, blank=10, shards=8, uploaded=6, failed=0, in_flight=2,
        bytes_uploaded=400_000_000, elapsed=10.0,
    )  # fmt: skip
    values.update(overrides)
    return Progress(**values)  # type: ignore[arg-type]


def test_progress_line_says_read_of_total_counts_shards_rate_and_eta() -> None:
    line = progress_line(snapshot())
    assert "read 500.0 MB of 2.0 GB (25%)" in line
    assert "799,000 records, 990 rejected" in line
    assert "shards 6/8 uploaded, 2 in flight, 0 failed" in line
    assert "50.0 MB/s" in line and "ETA 30s" in line
    assert "\r" not in line


def test_unknown_total_has_no_percentage_or_eta() -> None:
    line = progress_line(snapshot(bytes_total=None))
    assert "%" not in line and "ETA" not in line


def test_line_display_prints_at_most_once_per_interval() -> None:
    out = io.StringIO()
    display = LineDisplay(out, interval=0.0)
    display(snapshot())
    display(snapshot(bytes_read=600_000_000))
    assert out.getvalue().count("\n") == 2
    quiet = io.StringIO()
    slow = LineDisplay(quiet, interval=3600.0)
    slow(snapshot())
    assert quiet.getvalue() == "", "the first line comes after one interval, not at once"
