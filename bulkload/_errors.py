"""The one exception tree of bulkload.

Every failure a user can meet is one of these, with a message that says what failed, where
(file and line, shard, requestId) and what to try next. aiohttp's exceptions are translated
in one package, ``_net`` (the API client, the PUT, the results download); each stage
translates the OS errors of its own files (inputs in ``_inputs``, shard files and rejects
in ``_load``, the work dir in ``_journal`` and ``_load.run``), naming the file. Chained with
``raise ... from exc``; every message passes through ``_redact`` before anyone sees it.

::

    BulkloadError
    ├── ConfigError(BulkloadError, ValueError)    a bad option value
    │   └── MissingKeyError                       no usable API key
    ├── SourceError                               an input cannot be read (path, line_no)
    ├── DiskSpaceError                            the work dir is (nearly) full
    ├── StateError                                the work dir does not match this run
    ├── TooManyRejectsError                       --max-rejects exceeded
    ├── WorkerError                               a --workers process died
    ├── ApiError                                  the SafetyKit API said no (status, body)
    │   └── AuthError                             401/403 on an API call: the key
    ├── PartitionError                            bulkload.dask: partitions did not finish
    └── UsageError(BulkloadError, RuntimeError)   the library used wrongly

Each class carries the exit code the command line ends with (``exc.exit_code``), so the CLI
needs no policy of its own: ``except BulkloadError as exc: return exc.exit_code``.

A shard that fails after all retries raises nothing: the run goes on with the others, and
the failure is in the result (``LoadResult.failed_shards``, exit code 4) and the manifest
(``status: failed`` with its last ``error``), so that a rerun retries exactly those.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from typing import Any


class ExitCode(enum.IntEnum):
    """The contract's exit codes, in one place."""

    OK = 0
    #: Bad API key, API unreachable, unreadable input, a bug … (the message says which).
    FATAL = 1
    USAGE = 2
    #: Every record uploaded, but some lines were rejected.
    REJECTS = 3
    #: Some shards failed after all retries (status/wait: some requests failed).
    FAILED = 4
    SIGINT = 130
    SIGTERM = 143


class BulkloadError(Exception):
    """Root of every error bulkload raises on purpose."""

    #: What the command line exits with when this error ends a command.
    exit_code: ExitCode = ExitCode.FATAL


class ConfigError(BulkloadError, ValueError):
    """An option has a value bulkload cannot use."""

    exit_code = ExitCode.USAGE


class MissingKeyError(ConfigError):
    """No usable API key: none given, or its file cannot be read. A fatal error (exit 1),
    not a usage error: the command line was right, the environment is not."""

    exit_code = ExitCode.FATAL


class SourceError(BulkloadError):
    """An input cannot be read: missing, unreadable, corrupt or not JSONL."""

    def __init__(self, message: str, *, path: str | None = None, line_no: int | None = None):
        super().__init__(message)
        self.path = path
        self.line_no = line_no


class DiskSpaceError(BulkloadError):
    """The work dir has no room for the next shard."""


class StateError(BulkloadError):
    """The work dir belongs to another run (other inputs, namespace or options)."""


class TooManyRejectsError(BulkloadError):
    """More lines were rejected than ``max_rejects`` allows."""


class WorkerError(BulkloadError):
    """A worker process (``--workers``) died before finishing its part of the run."""


class ApiError(BulkloadError):
    """The SafetyKit API answered with an error, or could not be reached.

    ``transient`` marks a call that failed only after every retry for a reason worth
    retrying (the network, a 5xx, a 429, an answer that was not the API's): once the API has
    answered a run properly, such a failure costs one shard, not the run."""

    def __init__(
        self, message: str, *, status: int | None = None, body: str = "", transient: bool = False
    ):
        super().__init__(message)
        self.status = status
        self.body = body
        self.transient = transient


class AuthError(ApiError):
    """The API refused the key (401/403 on an API call)."""


class PartitionError(BulkloadError):
    """Some partitions of a ``bulkload.dask`` load did not finish. ``failures`` maps each
    partition index to its error; ``manifest`` is the merged manifest, or None when it
    could not be built."""

    def __init__(
        self, message: str, *, failures: dict[int, BaseException], manifest: dict[str, Any] | None
    ) -> None:
        super().__init__(message)
        self.failures = failures
        self.manifest = manifest


class UsageError(BulkloadError, RuntimeError):
    """The library was used wrongly, e.g. a Loader used after it was closed."""


#: Who reads bulkload's messages: a library caller, unless the command line said otherwise.
#: Advice names options the way the reader can act on them (``--restart`` in a shell,
#: ``restart=True`` in Python); a process-wide choice, made by ``bulkload.cli.main``.
_speaking_to_cli = False


@contextlib.contextmanager
def speaking_to_cli() -> Iterator[None]:
    """Word advice in messages with command-line flags while a command runs (a process-wide
    setting, since messages are also made in threads that no context reaches)."""
    global _speaking_to_cli
    before, _speaking_to_cli = _speaking_to_cli, True
    try:
        yield
    finally:
        _speaking_to_cli = before


def option(flag: str, keyword: str) -> str:
    """An option as the reader writes it: ``option("--restart", "restart=True")``."""
    return flag if _speaking_to_cli else keyword
