"""The command line: parse arguments, call the library, turn the outcome into an exit code.

::

    __init__.py   main(): dispatch; every error ends as one line and its code
    _args.py      the parser: commands, options (dest = LoadConfig field), their types
    _commands.py  load (signals, resume hint, --wait), status, wait, merge
    _ledger.py    ledger: list, forget, release, merge, adopt, backup
    _display.py   the live bar and the plain progress lines
    _summary.py   the closing lines of each command
    _exit.py      the contract's exit codes, and the error line

Kept thin and cheap to import (``bulkload --help`` must answer fast): the library, aiohttp
and rich are imported only once a command runs.
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import _commands
from ._args import build_parser
from ._exit import EXIT_FATAL, EXIT_SIGINT, EXIT_USAGE, error

log = logging.getLogger("bulkload")


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
        error("interrupted")
        return EXIT_SIGINT
    except BaseException as raised:
        cause = _first_cause(raised)
        if isinstance(cause, BulkloadError):
            error(str(cause))
            for note in getattr(cause, "__notes__", ()):
                print(f"  {note}", file=sys.stderr, flush=True)
            return cause.exit_code
        if not isinstance(cause, Exception):
            raise  # SystemExit and the like: not ours to turn into a message
        return _unexpected(cause, args)


def _dispatch(args: argparse.Namespace, argv: list[str]) -> int:
    if args.command == "load":
        return _commands.load(args, argv)
    if args.command in ("status", "wait"):
        timeout = getattr(args, "wait_timeout", None)
        return _commands.follow(
            args, command=args.command, manifest=args.manifest, timeout=timeout
        )[0]
    if args.command == "merge":
        return _commands.merge(args)
    if args.command == "ledger":
        from ._ledger import ledger

        return ledger(args)
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
    "ledger": "using the ledger of {namespace}",
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
    error(
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
