"""The command line: parse arguments, call the library, turn the outcome into an exit code.

Kept thin and cheap to import (``bulkload --help`` must answer fast): the library, aiohttp
and rich are imported only once a command runs.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._version import __version__

if TYPE_CHECKING:
    from .._config import LoadConfig
    from .._load.loader import LoadResult

# The contract's exit codes; the same numbers as bulkload._errors.ExitCode, spelled here so
# that `bulkload --help` imports nothing of the library.
EXIT_OK, EXIT_FATAL, EXIT_USAGE, EXIT_REJECTS = 0, 1, 2, 3
EXIT_SIGINT, EXIT_SIGTERM = 130, 143

log = logging.getLogger("bulkload")


def _size(text: str) -> int:
    from .._config import parse_size
    from .._errors import ConfigError

    try:
        return parse_size(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _rate(text: str) -> float:
    from .._config import parse_rate
    from .._errors import ConfigError

    try:
        return parse_rate(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _partition(text: str) -> tuple[int, int]:
    from .._config import parse_partition
    from .._errors import ConfigError

    try:
        return parse_partition(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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

    # Listed for --help; `bulkload emulator ...` is dispatched before parsing (see main) so
    # that its options live with the emulator and load commands don't import it.
    sub.add_parser(
        "emulator",
        help="run the local SafetyKit + S3 emulator (for tests and demos); see emulator --help",
        add_help=False,
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (the console script exits with it)."""
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["emulator"]:
        from ..emulator._cli import main as emulator_main

        return emulator_main(args_list[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    _setup_logging(args.verbose)
    from .._errors import BulkloadError, speaking_to_cli

    try:
        with speaking_to_cli():
            return _dispatch(args, args_list)
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_SIGINT
    except BaseException as raised:
        cause = _first_cause(raised)
        if isinstance(cause, BulkloadError):
            _error(str(cause))
            for note in getattr(cause, "__notes__", ()):
                print(f"  {note}", file=sys.stderr, flush=True)
            return cause.exit_code
        if not isinstance(cause, Exception):
            raise  # SystemExit and the like: not ours to turn into a message
        return _unexpected(cause, args)


def _dispatch(args: argparse.Namespace, argv: list[str]) -> int:
    if args.command == "load":
        return _load(args, argv)
    if args.command in ("status", "wait"):
        timeout = getattr(args, "wait_timeout", None)
        return _follow(args, command=args.command, manifest=args.manifest, timeout=timeout)[0]
    if args.command == "merge":
        return _merge(args)
    raise AssertionError(f"unknown command {args.command}")  # argparse allows no other


def _first_cause(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups, as a person wants to see it:
    not "unhandled errors in a TaskGroup"."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio_cancelled())]
        exc = (inner or list(exc.exceptions))[0]
    return exc


def asyncio_cancelled() -> type[BaseException]:
    import asyncio

    return asyncio.CancelledError


#: What each command was doing, for the last-resort message.
_DOING = {
    "load": "loading {namespace}",
    "status": "asking for the status of {manifest}",
    "wait": "waiting for the requests of {manifest}",
    "merge": "merging manifests",
}


def _unexpected(exc: Exception, args: argparse.Namespace) -> int:
    """The last resort: an exception bulkload did not mean to raise is a bug in bulkload.
    One readable message (what was being done, what went wrong, what to do), the traceback
    only with -vv; the manifest was flushed on the way out (the load and the follower write
    it in their own ``finally``). Exit 1."""
    from .._redact import redact_text

    doing = _DOING.get(args.command, args.command).format(**vars(args))
    what = redact_text(f"{type(exc).__name__}: {exc}".strip().rstrip(":"))
    log.debug("the traceback of the unexpected error:", exc_info=exc)
    detail = "" if args.verbose >= 2 else "rerun with -vv to see the traceback, and "
    _error(
        f"unexpected error while {doing}: {what}. This is a bug in bulkload: {detail}report it "
        "with the traceback -vv prints (the work dir's manifest is up to date; rerunning the "
        "same command resumes)"
    )
    return EXIT_FATAL


class _RedactingFormatter(logging.Formatter):
    """Redacts the whole formatted record, traceback included (an exception's text can hold
    a signed URL)."""

    def format(self, record: logging.LogRecord) -> str:
        from .._redact import redact_text

        return redact_text(super().format(record))


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("bulkload: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def _error(message: str) -> None:
    if sys.stderr.isatty():
        message = f"\x1b[31m{message}\x1b[0m"
    print(f"bulkload: error: {message}", file=sys.stderr, flush=True)


def _read_key(args: argparse.Namespace) -> str | None:
    from .._errors import MissingKeyError

    if args.api_key_file is not None:
        try:
            key: str = args.api_key_file.read_text().strip()
        except OSError as exc:
            raise MissingKeyError(
                f"cannot read the API key file {args.api_key_file}: {exc.strerror}"
            ) from None
        if not key:
            raise MissingKeyError(f"the API key file {args.api_key_file} is empty")
        return key
    return os.environ.get("SAFETYKIT_API_KEY") or None


def _one_malloc_arena() -> None:
    """Keep the loader's memory flat on glibc: one malloc arena for all threads.

    By default glibc gives threads their own arenas; 8 MiB blocks allocated by the reader
    thread and freed by others then fragment them, and RSS crept from ~77 to ~104 MB over a
    4 GiB load. One arena kept it flat at ~80 MB at the same speed (benchmarks/, memory row).
    A process-wide setting, so the CLI makes it, not the library. Same as MALLOC_ARENA_MAX=1.
    """
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.mallopt(-8, 1)  # M_ARENA_MAX from malloc.h
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        pass


def _config_from(args: argparse.Namespace) -> LoadConfig:
    """The LoadConfig the options ask for: each option's ``dest`` is the field it sets, so a
    new field needs only its option. An option not given leaves the library's default,
    except ``--workers``: not given, the CLI chooses by input size and cores (None)."""
    from dataclasses import fields

    from .._config import LoadConfig

    given = {
        f.name: getattr(args, f.name)
        for f in fields(LoadConfig)
        if getattr(args, f.name, None) is not None
    }
    return LoadConfig(**{"workers": None, **given})


def _load(args: argparse.Namespace, argv: list[str]) -> int:
    import asyncio

    _one_malloc_arena()

    from .._load.loader import Loader, run_async
    from .._load.progress import LineDisplay, RichDisplay

    config = _config_from(args)
    loader = Loader(
        args.namespace,
        api_key=None if args.dry_run else _read_key(args),
        base_url=args.base_url,
        work_dir=args.work_dir,
        config=config,
    )
    display: Any = None
    if not args.quiet:
        display = RichDisplay(f"{args.namespace}") if sys.stderr.isatty() else LineDisplay()
    loader.on_progress = display
    signals: list[int] = []

    async def run() -> LoadResult | None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_signal(signum: int) -> None:
            signals.append(signum)
            if len(signals) == 1:
                print(
                    f"\nbulkload: stopping — finishing uploads in flight (up to {config.grace:g}s); "
                    "press Ctrl-C again to stop at once",
                    file=sys.stderr,
                    flush=True,
                )
                loader.request_stop()
            else:
                task.cancel()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            async with loader:
                return await loader.load(args.inputs)
        except asyncio.CancelledError:
            if signals:
                return None
            raise
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    try:
        result = run_async(run())
    finally:
        if display is not None:
            display.close()
    if signals:
        code = EXIT_SIGTERM if signals[0] == signal.SIGTERM else EXIT_SIGINT
        work_dir = loader.work_dir
        resume = ["bulkload", *argv]
        if args.work_dir is None:
            resume += ["--work-dir", str(work_dir)]
        if result is not None and not result.interrupted:
            code = result.exit_code  # everything finished before the signal took effect
        else:
            print(
                f"bulkload: interrupted; the manifest is in {work_dir / 'manifest.json'}. "
                f"To resume: {shlex.join(resume)}",
                file=sys.stderr,
                flush=True,
            )
            if result is not None and args.json:
                _print_json({**result.to_dict(), "exit_code": code})
            return code
    assert result is not None
    if args.wait and not args.dry_run and result.exit_code in (EXIT_OK, EXIT_REJECTS):
        if not args.json:
            _print_summary(result, args)
            print(f"bulkload: waiting for {result.uploaded} request(s) to finish", file=sys.stderr)
        wait_code, waited = _follow(
            args, command="wait", manifest=result.work_dir, timeout=None, print_json=False
        )
        final = wait_code if wait_code != EXIT_OK else result.exit_code
        if args.json:
            _print_json({**result.to_dict(), "wait": waited, "exit_code": final})
        return final
    _print_summary(result, args)
    code = result.exit_code
    return code


def _merge(args: argparse.Namespace) -> int:
    from .._errors import StateError
    from .._partition import merge_manifests, write_merged

    doc = merge_manifests(args.manifests)
    target = args.output / "manifest.json" if args.output.is_dir() else args.output
    if any(Path(m["manifest"]).resolve() == target.resolve() for m in doc["merged_from"]):
        raise StateError(f"{target} is one of the manifests being merged; write elsewhere")
    path = write_merged(doc, args.output)
    totals = doc["totals"]
    unfinished = [m["manifest"] for m in doc["merged_from"] if not m["finished_at"]]
    if args.json:
        _print_json({"manifest": str(path), "merged": len(doc["merged_from"]),
                     "unfinished": unfinished, "totals": totals})  # fmt: skip
        return EXIT_OK
    count = doc.get("partition", {}).get("count")
    what = f"{count} partitions" if count else f"{len(doc['merged_from'])} manifests"
    print(
        f"bulkload: merged {what}: {totals['shards']} shard(s), {totals['records']:,} records "
        f"({totals['uploaded']} uploaded, {totals['failed']} failed) into {path}"
    )
    for where in unfinished:
        print(f"  not finished: {where} (rerun its load to finish it, then merge again)")
    print(f"next: bulkload wait {path}")
    return EXIT_OK


def _print_json(doc: dict[str, Any]) -> None:
    import orjson

    sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    sys.stdout.flush()


def _print_summary(r: LoadResult, args: argparse.Namespace) -> None:
    if args.json:
        _print_json(r.to_dict())
        return
    from ._summary import load_summary

    print("\n".join(load_summary(r)), file=sys.stdout, flush=True)


def _follow(
    args: argparse.Namespace,
    *,
    command: str,
    manifest: Path,
    timeout: float | None,
    print_json: bool = True,
) -> tuple[int, dict[str, Any]]:
    """``status`` and ``wait`` (also ``load --wait``, with its own work dir and no time
    limit): the exit code and the summary. ``args`` gives the shared options."""
    import asyncio

    from .._follow.follower import Follower, StatusChange, WaitResult
    from .._load.loader import run_async

    key = _read_key(args)
    follower = Follower(
        manifest,
        api_key=key,
        base_url=args.base_url,
        max_rps=args.max_rps,
        timeout=args.timeout,
        max_retries=args.max_retries,
        ca_bundle=args.ca_bundle,
    )
    quiet = args.quiet or args.json

    def on_change(c: StatusChange) -> None:
        if not quiet:
            extra = f" ({c.data_count} results)" if c.data_count is not None else ""
            why = f": {c.error_summary}" if c.error_summary else ""
            print(
                f"bulkload: shard {c.shard} {c.request_id}: {c.status}{extra}{why}",
                file=sys.stderr,
                flush=True,
            )

    async def run() -> WaitResult:
        async with follower:
            if command == "status":
                return await follower.status()
            return await follower.wait(
                results_dir=args.results, timeout=timeout, on_change=on_change
            )

    try:
        result = run_async(run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        _error(f"interrupted; rerun `bulkload {command} {manifest}` to go on")
        return EXIT_SIGINT, {}
    code = result.exit_code if command == "wait" else result.status_exit_code
    if args.json:
        if print_json:
            _print_json({**result.to_dict(), "exit_code": code})
        return code, result.to_dict()
    from ._summary import follow_summary

    lines = follow_summary(result, command, manifest)
    print("\n".join(lines), file=sys.stdout, flush=True)
    return code, result.to_dict()
