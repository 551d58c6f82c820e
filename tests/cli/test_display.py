"""What a person sees off a terminal: one plain line per interval, never a redrawn bar; the
upload is the main measure, reading the secondary one."""

from __future__ import annotations

import io

from bulkload._load.progress import Progress
from bulkload.cli._display import LineDisplay, progress_line


def snapshot(**overrides: object) -> Progress:
    values: dict[str, object] = dict(
        bytes_total=2_000_000_000, bytes_read=500_000_000, lines=800_000, records=799_000,
        rejected=990, blank=10, shards=8, uploaded=6, failed=0, in_flight=2,
        bytes_uploaded=400_000_000, elapsed=10.0, bytes_confirmed=384_000_000,
        bytes_to_upload=2_000_000_000, reading_done=False,
    )  # fmt: skip
    values.update(overrides)
    return Progress(**values)  # type: ignore[arg-type]


def test_progress_line_leads_with_the_upload_then_reading() -> None:
    line = progress_line(snapshot())
    # Uploaded (confirmed by the store) of the estimate (~: reading is not done), upload rate,
    # and the ETA of what is left to upload at that rate: (2,000 - 384) MB / 40 MB/s.
    assert line.startswith("bulkload: uploaded 384.0 MB of ~2.0 GB (19%) at 40.0 MB/s, ETA 40s")
    assert "shards 6/8 uploaded, 2 in flight, 0 failed" in line
    assert "read 500.0 MB of 2.0 GB (25%), 799,000 records, 990 rejected" in line
    assert "\r" not in line


def test_once_reading_is_done_the_total_is_exact_and_the_bar_does_not_stop_at_reading() -> None:
    done = snapshot(bytes_read=2_000_000_000, reading_done=True, bytes_to_upload=1_900_000_000)
    line = progress_line(done)
    assert "uploaded 384.0 MB of 1.9 GB (20%)" in line, "no ~ once the shards are all known"
    assert "read 2.0 GB of 2.0 GB (100%)" in line
    assert done.eta is not None and done.eta > 0, "reading at 100 % is not the end"


def test_a_dry_run_measures_reading() -> None:
    line = progress_line(snapshot(dry_run=True, bytes_uploaded=0, bytes_confirmed=0))
    assert line.startswith("bulkload: read 500.0 MB of 2.0 GB (25%)")
    assert "ETA 30s" in line and "uploaded" not in line


def test_unknown_total_has_no_percentage_or_eta() -> None:
    line = progress_line(snapshot(bytes_total=None, bytes_to_upload=None))
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
