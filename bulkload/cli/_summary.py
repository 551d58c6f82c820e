"""The closing words of a command: what happened, where it is, and what to do next.

Pure functions from results to lines of text, so that the CLI only prints them and tests
can read them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .._config import format_bytes, format_seconds
from .._journal import DUPLICATES

if TYPE_CHECKING:
    from .._follow import WaitResult
    from .._load.run import LoadResult

#: Mismatches and failures printed before the rest are only counted (all are in --json).
_MAX_SHOWN = 20
#: Characters of a rejected line shown as an example of its reason.
_EXAMPLE = 100


def load_summary(r: LoadResult) -> list[str]:
    lines = _load_lines(r)
    if r.ledger is None:
        return lines
    # The ledger's words go before the closing "next:" line.
    return lines[:-1] + ledger_lines(r) + lines[-1:]


def ledger_lines(r: LoadResult) -> list[str]:
    """What an incremental load decided and recorded: files loaded and skipped and why,
    changed files by name, the earlier run resumed or kept, runs repaired."""
    doc = r.ledger or {}
    reasons = doc.get("reasons", {})
    said = ", ".join(f"{n} {reason}" for reason, n in reasons.items()) or "no files"
    verb = "would load" if doc.get("dry_run") else "loaded"
    lines = [
        f"  ledger {doc.get('path')}: {doc.get('files', 0)} file(s) — {said}; {verb} "
        f"{doc.get('load', 0)}, skipped {doc.get('skip', 0)}"
    ]
    if doc.get("run_id"):
        lines[0] += f" (run {doc['run_id']})"
    changed = [d for d in doc.get("decisions", []) if d["reason"] in ("changed", "changed-skipped")]
    for d in changed[:_MAX_SHOWN]:
        what = "loaded again" if d["reason"] == "changed" else "SKIPPED (--skip-changed)"
        lines.append(f"    changed, {what}: {d['path']}: {d['detail']}")
    if len(changed) > _MAX_SHOWN:
        lines.append(f"    … and {len(changed) - _MAX_SHOWN} more changed files (see --json)")
    resumed = r.resumed_run
    if doc.get("resumed") and resumed is not None:
        lines.append(
            f"  first finished the work dir's unfinished run {doc['resumed']}: "
            f"{resumed.uploaded} of {resumed.shards} shard(s) uploaded "
            f"({resumed.skipped} already before), {resumed.rejected:,} lines rejected"
        )
    if doc.get("waiting"):
        lines.append(
            f"  the work dir's unfinished run {doc.get('resumed')} is still not complete: "
            f"the {doc['waiting']} input file(s) wait until it is (rerun this command)"
        )
    if doc.get("not_resumed"):
        lines.append(
            f"  the work dir's unfinished run could not be resumed ({doc['not_resumed']}): "
            "the files it loaded are recorded, the others are loaded again now"
        )
    archived = doc.get("archived")
    if archived:
        lines.append(f"  earlier run {archived['run_id']}: kept in {archived['path']}")
    for rep in doc.get("repaired", []):
        where = f" from its journal in {rep['journal']}" if rep.get("journal") else ""
        lines.append(
            f"  repaired: run {rep['run_id']} had loaded {rep['recorded']} file(s) the ledger "
            f"had not recorded (it ended before it could){where}"
        )
    for rec in doc.get("recovered", []):
        lines.append(f"  took over the namespace from a run that is gone: {rec}")
    if not doc.get("dry_run") and doc.get("load"):
        lines.append(f"  recorded as loaded: {doc.get('recorded', 0)} file(s)")
    missing = doc.get("not_loaded", [])
    if missing and not doc.get("dry_run"):
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        lines.append(
            f"  not loaded (a shard holding their records is not uploaded): {shown}; the next "
            "run resumes this one first"
        )
    return lines


def _load_lines(r: LoadResult) -> list[str]:
    rate = format_bytes(r.bytes_read / max(r.elapsed, 1e-9))
    took = f"({format_bytes(r.bytes_read)} in {format_seconds(r.elapsed)}, {rate}/s)"
    ledger = r.ledger or {}
    if ledger and not ledger.get("load") and not ledger.get("waiting"):
        reasons = ", ".join(f"{n} {why}" for why, n in ledger.get("reasons", {}).items())
        head = (
            f"nothing to load into {r.namespace}: the ledger skips all "
            f"{ledger.get('files', 0)} input file(s) ({reasons or 'none given'})"
        )
        took = ""
    elif not r.records and r.rejected:
        head = f"nothing to load into {r.namespace}: every one of {r.rejected:,} lines was rejected"
    elif r.dry_run:
        head = f"validated (dry run) {r.records:,} records for {r.namespace} in {r.shards} shard(s)"
    elif r.failed or r.records_uploaded < r.records:
        head = (
            f"uploaded {r.records_uploaded:,} of {r.records:,} records into {r.namespace} "
            f"({r.uploaded} of {r.shards} shards); {r.failed} shard(s) failed"
        )
    else:
        head = f"loaded {r.records:,} records into {r.namespace} in {r.shards} shard(s)"
    lines = [
        f"bulkload: {head} {took}".rstrip(),
        f"  lines {r.lines:,}: {r.records:,} records, {r.rejected:,} rejected, {r.blank:,} blank",
    ]
    if not r.dry_run:
        lines.append(
            f"  shards {r.shards}: {r.uploaded} uploaded ({r.skipped} already by an earlier "
            f"run), {r.failed} failed"
        )
    if r.resent:
        lines.append(
            f"  resent: {r.resent} shard(s) whose request had failed processing, under new requests"
        )
    lines.append(f"  manifest: {r.manifest_path}")
    if r.rejected:
        lines.append(
            f"  rejects:  {r.rejects_path} ({r.rejected:,} lines, with line numbers and why)"
        )
        lines += _reasons(r)
    lines += [f"  note: {note}" for note in r.notes]
    if r.duplicate_ids is not None:
        where = f", listed with their lines in {r.work_dir / DUPLICATES}"
        lines.append(
            f"  duplicates: {r.duplicate_ids:,} ids seen more than once"
            + (where if r.duplicate_ids else "")
        )
    if r.etag_unverified:
        lines.append(
            f"  note: {r.etag_unverified} uploaded shard(s) could not be checked byte for byte: "
            f"{'; '.join(r.etag_notes)}. What still protects them: the store took exactly "
            "Content-Length bytes (S3 stores nothing for a short body), TLS checks every byte "
            "on the way over https, and `bulkload wait --results` reconciles every id with "
            "SafetyKit's results."
        )
    if r.failed:
        shown = ", ".join(str(i) for i in r.failed_shards[:10])
        more = "…" if r.failed > 10 else ""
        if r.restart_needed:
            advice = (
                "an input changed during the load (see the error in the manifest); rerun "
                "with --restart to load the inputs as they are now"
            )
        else:
            advice = "rerun the same command to retry them"
        lines.append(f"  failed shards: {shown}{more}; {advice}")
    elif not r.records and r.rejected:
        lines.append(f"next: fix the inputs (the notes above, and why each line: {r.rejects_path})")
    elif r.dry_run:
        lines.append("next: run again without --dry-run to upload")
    else:
        lines.append(f"next: bulkload wait {r.work_dir}  (follows every request to the end)")
    return lines


def _reasons(r: LoadResult) -> list[str]:
    """The most common reasons, with counts and an example line each: enough to fix an
    export before it goes anywhere (``--dry-run --schema``)."""
    if not r.reasons:
        return []
    lines = ["  the most common reasons:"]
    for reason in r.reasons:
        raw = reason.raw.decode("utf-8", "replace") if isinstance(reason.raw, bytes) else reason.raw
        example = (raw or "").strip()
        example = example if len(example) <= _EXAMPLE else example[: _EXAMPLE - 1] + "…"
        lines.append(f"    {reason.count:>10,}  {reason.shape}")
        lines.append(f"                {reason.source}:{reason.line}  {example}")
    shown = sum(reason.count for reason in r.reasons)
    if shown < r.rejected:
        lines.append(
            f"    and {r.rejected - shown:,} more lines for other reasons (all in rejects.jsonl)"
        )
    return lines


def follow_summary(result: WaitResult, command: str, manifest: Path) -> list[str]:
    """For ``status`` and ``wait``: counts per status, failures with their source lines."""
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.statuses.items())) or "none"
    lines = [f"bulkload: {result.requests} request(s): {counts}"]
    if result.not_uploaded:
        lines.append(f"  {result.not_uploaded} shard(s) not uploaded: rerun `bulkload load` first")
    if result.succeeded:
        lines.append(f"  {result.objects:,} objects processed")
    for f in result.failures[:_MAX_SHOWN]:
        ranges = "; ".join(
            f"{r['path']} lines {r['first_line']}-{r['last_line']}" for r in f["sources"]
        )
        lines.append(
            f"  FAILED shard {f['shard']} {f['request_id']}: {f['error_summary']} [{ranges}]"
        )
    if len(result.failures) > _MAX_SHOWN:
        lines.append(f"  … and {len(result.failures) - _MAX_SHOWN} more failed (see --json)")
    if result.resend_command:
        lines.append(
            "  to send the failed requests' records again (fix them first if the error is in "
            f"the records): {result.resend_command}"
        )
    lines += [f"  ERROR {e}" for e in result.errors[:_MAX_SHOWN]]
    out = result.results_dir
    if out is not None and not result.timed_out:
        lines.append(
            f"  results: {out}/<requestId>.jsonl; joined to source lines in {out / 'results.jsonl'}"
        )
    lines += [f"  not checked: {u}" for u in result.unchecked]
    lines += [f"  MISMATCH {m}" for m in result.mismatches[:_MAX_SHOWN]]
    if len(result.mismatches) > _MAX_SHOWN:
        lines.append(f"  … and {len(result.mismatches) - _MAX_SHOWN} more mismatches (see --json)")
    if result.timed_out:
        lines.append(
            f"  timed out with {result.unfinished} request(s) unfinished; run "
            f"`bulkload wait {manifest}` again"
        )
    elif result.errors:
        lines.append(f"  next: bulkload {command} {manifest} (asks again for what is missing)")
    elif command == "status" and result.unfinished:
        lines.append(f"  next: bulkload wait {manifest}")
    return lines
