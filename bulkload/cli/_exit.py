"""The contract's exit codes, as the command line spells them: the same numbers as
``bulkload._errors.ExitCode``, without importing it (``--help`` stays cheap; a test checks
that they agree)."""

import sys

EXIT_OK, EXIT_FATAL, EXIT_USAGE, EXIT_REJECTS, EXIT_FAILED = 0, 1, 2, 3, 4
EXIT_SIGINT, EXIT_SIGTERM = 130, 143


def error(message: str) -> None:
    """The one line a failure ends with, on stderr (red on a terminal)."""
    if sys.stderr.isatty():
        message = f"\x1b[31m{message}\x1b[0m"
    print(f"bulkload: error: {message}", file=sys.stderr, flush=True)
