"""The closing words of a command: what happened, where it is, and what to do next.

Pure functions from results to lines of text, so that the CLI only prints them and tests
can read them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ._progress import human_bytes, human_seconds

if TYPE_CHECKING:
    from ._follow import WaitResult
    from ._pipeline import LoadResult


def load_summary(r: LoadResult) -> list[str]:
    rate = human_bytes(r.bytes_read / max(r.elapsed, 1e-9))
    verb = "validated (dry run)" if r.dry_run else "loaded"
    lines = [
        f"bulkload: {verb} {r.records:,} records into {r.namespace} in {r.shards} shard(s) "
        f"({human_bytes(r.bytes_read)} in {human_seconds(r.elapsed)}, {rate}/s)",
        f"  lines {r.lines:,}: {r.records:,} records, {r.rejected:,} rejected, {r.blank:,} blank",
    ]
    if not r.dry_run:
        lines.append(
            f"  shards {r.shards}: {r.uploaded} uploaded ({r.skipped} already by an earlier "
            f"run), {r.failed} failed"
        )
    lines.append(f"  manifest: {r.manifest_path}")
    if r.rejected:
        lines.append(
            f"  rejects:  {r.rejects_path} ({r.rejected:,} lines, with line numbers and why)"
        )
    if r.duplicate_ids is not None:
        where = f", listed with their lines in {r.work_dir / 'duplicates.jsonl'}"
        lines.append(
            f"  duplicates: {r.duplicate_ids:,} ids seen more than once"
            + (where if r.duplicate_ids else "")
        )
    if r.failed:
        shown = ", ".join(str(i) for i in r.failed_shards[:10])
        more = "…" if r.failed > 10 else ""
        lines.append(f"  failed shards: {shown}{more}; rerun the same command to retry them")
    elif r.dry_run:
        lines.append("next: run again without --dry-run to upload")
    else:
        lines.append(f"next: bulkload wait {r.work_dir}  (follows every request to the end)")
    return lines


def follow_summary(result: WaitResult, command: str, manifest: Path) -> list[str]:
    """For ``status`` and ``wait``: counts per status, failures with their source lines."""
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.statuses.items())) or "none"
    lines = [f"bulkload: {result.requests} request(s): {counts}"]
    if result.not_uploaded:
        lines.append(f"  {result.not_uploaded} shard(s) not uploaded: rerun `bulkload load` first")
    if result.succeeded:
        lines.append(f"  {result.objects:,} objects processed")
    for f in result.failures:
        ranges = "; ".join(
            f"{r['path']} lines {r['first_line']}-{r['last_line']}" for r in f["sources"]
        )
        lines.append(
            f"  FAILED shard {f['shard']} {f['request_id']}: {f['error_summary']} [{ranges}]"
        )
    out = result.results_dir
    if out is not None and not result.timed_out:
        lines.append(
            f"  results: {out}/<requestId>.jsonl; joined to source lines in {out / 'results.jsonl'}"
        )
    lines += [f"  MISMATCH {m}" for m in result.mismatches[:20]]
    if len(result.mismatches) > 20:
        lines.append(f"  … and {len(result.mismatches) - 20} more mismatches (see --json)")
    if result.timed_out:
        lines.append(
            f"  timed out with {result.unfinished} request(s) unfinished; run "
            f"`bulkload wait {manifest}` again"
        )
    elif command == "status" and result.unfinished:
        lines.append(f"  next: bulkload wait {manifest}")
    return lines
