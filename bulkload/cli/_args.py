"""The command line's grammar: every command and option, and the types that read them.

Each load option's ``dest`` is the ``LoadConfig`` field it sets, so ``_commands`` builds the
config by field name. Cheap to import (``bulkload --help`` answers in well under 0.3 s):
only the standard library and bulkload's foundations.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .._config import parse_partition, parse_rate, parse_size
from .._errors import ConfigError
from .._version import __version__

T = TypeVar("T")


def _argtype(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from one of the library's parsers: its ConfigError becomes
    argparse's usage error, with the same words."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__  # argparse names the type in its messages
    return convert


_size = _argtype(parse_size)
_rate = _argtype(parse_rate)
_partition = _argtype(parse_partition)


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number no less than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_nonneg_int = _int_at_least(0)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, got {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _per_second(text: str) -> float:
    """A rate of calls: a finite number above 0 (0 would mean never)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of calls per second: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text!r}")
    return value


def _common(p: argparse.ArgumentParser, *, timeout_flag: str = "--timeout") -> None:
    p.add_argument(
        "--base-url",
        help="API base; else $SAFETYKIT_BASE_URL; else https://api.safetykit.com",
    )
    p.add_argument(
        "--api-key-file",
        type=Path,
        help="read the API key from this file (else $SAFETYKIT_API_KEY); never on the command line",
    )
    p.add_argument("--ca-bundle", type=Path, help="extra CA certificates (PEM) for a private CA")
    p.add_argument(
        timeout_flag,
        dest="timeout",
        type=_seconds,
        default=60.0,
        help="seconds without progress before one HTTP attempt is abandoned (default 60)",
    )
    p.add_argument(
        "--max-retries",
        type=_nonneg_int,
        default=6,
        help="retries per call and per upload (default 6)",
    )
    p.add_argument("--max-rps", type=_per_second, help="most API calls per second")
    p.add_argument(
        "--json", action="store_true", help="the final summary as one JSON object on stdout"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    p.add_argument(
        "--verbose", "-v", action="count", default=0, help="more logging on stderr (-vv for debug)"
    )


def _ledger_parser(sub: Any) -> None:
    """``bulkload ledger ACTION NAMESPACE …``: what incremental loads recorded."""
    ledger = sub.add_parser(
        "ledger",
        help="what incremental loads recorded: list, forget, release, merge, adopt, backup",
        description="The ledger of `load --incremental`: which files were loaded into a "
        "namespace, by which run, in which shards and requestIds.",
    )
    actions = ledger.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    def action(name: str, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(name, help=help, description=help)
        p.add_argument("namespace", help="the SafetyKit namespace, e.g. products")
        p.add_argument(
            "--ledger",
            metavar="PATH",
            help="the ledger file or its directory (default: $BULKLOAD_LEDGER, else "
            "./bulkload-NAMESPACE.ledger.sqlite)",
        )
        p.add_argument("--json", action="store_true", help="the answer as JSON on stdout")
        p.add_argument("--verbose", "-v", action="count", default=0, help="more logging")
        return p

    listing = action("list", "the files loaded (the latest load of each), or the runs")
    listing.add_argument("--runs", action="store_true", help="list the runs instead")
    listing.add_argument(
        "--history", action="store_true", help="every load, forgotten ones included"
    )
    listing.add_argument("--run", dest="run_id", metavar="RUN_ID", help="only this run's files")
    forget = action("forget", "forget loads so that the next incremental run loads them again")
    forget.add_argument("paths", nargs="*", metavar="PATH", help="files or URLs, as loaded")
    forget.add_argument("--match", metavar="GLOB", help="every file whose path matches (* spans /)")
    forget.add_argument("--run", dest="run_id", metavar="RUN_ID", help="every file of this run")
    action("release", "clear the claim of a run that died on another machine")
    merge = action("merge", "add the ledgers of other machines (partitions) to this one")
    merge.add_argument("others", nargs="+", type=Path, metavar="OTHER_LEDGER")
    adopt = action("adopt", "record what earlier (not incremental) loads of work dirs loaded")
    adopt.add_argument("work_dirs", nargs="+", type=Path, metavar="WORK_DIR")
    backup = action("backup", "a consistent copy of the ledger, safe while runs write")
    backup.add_argument("dest", type=Path, metavar="DEST")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bulkload",
        description="Load very large JSONL datasets into SafetyKit through its import API.",
        epilog="Exit codes: 0 ok, 1 fatal error, 2 usage, 3 some lines rejected, "
        "4 some shards/requests failed, 130 SIGINT, 143 SIGTERM.",
    )
    parser.add_argument("--version", action="version", version=f"bulkload {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    load = sub.add_parser(
        "load",
        help="validate, shard and upload JSONL inputs",
        description="Validate every line, split the data into shards, upload them in "
        "parallel and write a manifest of requestIds to the work dir. Rerun the same "
        "command to resume.",
    )
    load.add_argument("namespace", help="the SafetyKit namespace, e.g. products")
    load.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="file, directory, glob, URL (s3://, gs://, https://; pip install "
        "'bulkload[remote]'), or - for stdin; .gz .bz2 .xz .zst by suffix; *.parquet and "
        "*.csv are read row by row (Parquet needs 'bulkload[parquet]')",
    )
    load.add_argument(
        "--work-dir",
        type=Path,
        help="manifest, rejects, shards and state (default ./bulkload-NAMESPACE); the same dir resumes",
    )
    load.add_argument(
        "--shard-size",
        dest="shard_max_bytes",
        type=_size,
        default=None,
        help="most bytes in one shard, e.g. 64MiB (default), 500MB, 1GiB; at most 5GiB",
    )
    load.add_argument(
        "--shard-records",
        dest="shard_max_records",
        type=_positive_int,
        default=None,
        help="most records in one shard (default 100000)",
    )
    load.add_argument(
        "--concurrency",
        dest="upload_concurrency",
        type=_positive_int,
        default=None,
        help="most uploads in flight at once (default 8)",
    )
    load.add_argument(
        "--workers",
        type=_nonneg_int,
        default=None,
        help="processes that validate plain files and hash shards (default: one per core, "
        "up to 8, for 256 MiB or more of plain JSONL; else 0, all in this process)",
    )
    load.add_argument(
        "--id-field",
        default=None,
        help="take each record's id from this field; user.id is a path into nested objects",
    )
    load.add_argument("--coerce-id", action="store_true", help="turn integer ids into strings")
    load.add_argument(
        "--schema",
        type=Path,
        metavar="FILE",
        help="a JSON Schema (draft 2020-12) every record must satisfy, as uploaded; a record "
        "that does not is rejected with the pointer of the offending value (with --dry-run: "
        "check an export without uploading; the summary lists the most common reasons)",
    )
    load.add_argument(
        "--max-rejects",
        type=_nonneg_int,
        help="stop (exit 1) once more lines than this are rejected",
    )
    load.add_argument(
        "--max-bandwidth", type=_rate, help="cap upload bytes per second, e.g. 50MB/s"
    )
    load.add_argument(
        "--check-duplicates",
        action="store_true",
        help="list every id seen more than once, with its lines, in WORK_DIR/duplicates.jsonl",
    )
    load.add_argument(
        "--wait",
        action="store_true",
        help="after uploading, wait for every request to finish (as `bulkload wait`)",
    )
    load.add_argument(
        "--results", type=Path, metavar="DIR", help="with --wait: download results here"
    )
    load.add_argument("--keep-shards", action="store_true", help="keep shard files after upload")
    load.add_argument(
        "--dry-run", action="store_true", help="validate and shard only; no network, no key"
    )
    load.add_argument(
        "--restart", action="store_true", help="start over in a work dir that holds another run"
    )
    load.add_argument(
        "--resend-failed",
        action="store_true",
        help="send again, under new requests, the shards whose request failed processing "
        "(as `status`/`wait` recorded in the work dir)",
    )
    load.add_argument(
        "--no-etag-check",
        dest="verify_etag",
        action="store_false",
        help="do not compare MD5-like ETags with the shards' MD5 (for S3-compatible stores "
        "whose ETags are opaque; SSE-KMS/SSE-C buckets are recognised without it)",
    )
    load.add_argument(
        "--content-md5",
        action="store_true",
        help="send each shard's MD5 as Content-MD5 so the store itself refuses a damaged "
        "body (proves the bytes on SSE-KMS buckets); only for SigV4 URLs, which do not sign it",
    )
    load.add_argument(
        "--partition",
        type=_partition,
        metavar="I/N",
        help="load only worker I's share (I counts from 0) of the inputs split N ways by "
        "size; each worker has its own work dir; combine them with `bulkload merge`",
    )
    inc = load.add_argument_group(
        "scheduled loads",
        "the same command every night over a growing export: each file is loaded once "
        "(see `bulkload ledger`)",
    )
    inc.add_argument(
        "--incremental",
        action="store_true",
        help="skip the files the ledger says were loaded with the same size and time (or "
        "object ETag); record each file once all its shards are uploaded; keep earlier runs "
        "under WORK_DIR/runs/ and resume an unfinished one first",
    )
    inc.add_argument(
        "--ledger",
        metavar="PATH",
        help="the ledger file (SQLite) or a directory for it (default: $BULKLOAD_LEDGER, else "
        "./bulkload-NAMESPACE.ledger.sqlite)",
    )
    inc.add_argument(
        "--skip-changed",
        action="store_true",
        help="skip (and name) files that changed since they were loaded, instead of "
        "loading them again",
    )
    inc.add_argument(
        "--force", action="store_true", help="load every file, whatever the ledger says"
    )
    inc.add_argument(
        "--ledger-wait",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="how long to wait for another run that holds the namespace (default 300)",
    )
    inc.add_argument(
        "--checksum",
        action="store_true",
        help="also record the MD5 of each local file (one more read of it): a file "
        "re-exported with the same bytes is then recognised",
    )
    load.add_argument(
        "--grace",
        type=_seconds,
        default=30.0,
        help="on Ctrl-C/SIGTERM, seconds to let uploads in flight finish (default 30)",
    )
    _common(load)

    status = sub.add_parser(
        "status",
        help="show the processing status of every request of a run",
        description="One status call per request in the manifest; a table, or --json.",
    )
    status.add_argument("manifest", type=Path, metavar="MANIFEST_OR_WORK_DIR")
    _common(status, timeout_flag="--http-timeout")

    wait = sub.add_parser(
        "wait",
        help="poll every request of a run until it is done; download the results",
        description="Poll until every request is terminal, record the outcome in the "
        "manifest, and with --results download each request's results and join them to "
        "the source lines of their records.",
    )
    wait.add_argument("manifest", type=Path, metavar="MANIFEST_OR_WORK_DIR")
    wait.add_argument("--results", type=Path, metavar="DIR", help="download results here")
    wait.add_argument(
        "--timeout",
        dest="wait_timeout",
        type=_seconds,
        default=None,
        help="give up after this many seconds (exit 1); run wait again to go on",
    )
    _common(wait, timeout_flag="--http-timeout")

    merge = sub.add_parser(
        "merge",
        help="combine the manifests of --partition workers into one",
        description="Check that the manifests (or work dirs) are one complete run — same "
        "namespace, every partition once, no input twice — and write one manifest that "
        "`status` and `wait` accept.",
    )
    merge.add_argument("manifests", nargs="+", type=Path, metavar="MANIFEST_OR_DIR")
    merge.add_argument(
        "--output", "-o", type=Path, required=True, metavar="PATH",
        help="where to write the merged manifest (a file, or a directory for its manifest.json)",
    )  # fmt: skip
    merge.add_argument(
        "--json", action="store_true", help="the summary as one JSON object on stdout"
    )
    merge.add_argument("--verbose", "-v", action="count", default=0, help="more logging on stderr")

    _ledger_parser(sub)

    # Listed for --help; `bulkload emulator ...` is dispatched before parsing (see main) so
    # that its options live with the emulator and load commands don't import it.
    sub.add_parser(
        "emulator",
        help="run the local SafetyKit + S3 emulator (for tests and demos); see emulator --help",
        add_help=False,
    )
    return parser
