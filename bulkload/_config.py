"""Load options: one frozen, validated record, and the parsers for human sizes and rates."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import ConfigError, MissingKeyError, option
from ._redact import Secret

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: S3 refuses a single PUT over 5 GiB, so no shard may be larger.
MAX_SHARD_BYTES = 5 * GiB
DEFAULT_BASE_URL = "https://api.safetykit.com"

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": KiB, "mib": MiB, "gib": GiB, "tib": 1024 * GiB,
}  # fmt: skip
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the API is and the key to it, resolved once for every command and the library.

    The base URL: the one given, else the one a manifest recorded (``status``/``wait``
    follow requests where they were made), else ``SAFETYKIT_BASE_URL``, else the public API.
    The key: the one given, else ``SAFETYKIT_API_KEY``; never printed (``Secret``).
    """

    base_url: str
    api_key: Secret

    @classmethod
    def resolve(
        cls,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        recorded_base_url: str | None = None,
        need_key: bool = True,
        dry_run_possible: bool = False,
    ) -> Endpoint:
        url = base_url or recorded_base_url or os.environ.get("SAFETYKIT_BASE_URL")
        key = api_key if api_key is not None else os.environ.get("SAFETYKIT_API_KEY")
        if need_key and not key:
            dry = (
                option(" (or use --dry-run)", " (or dry_run=True to validate only)")
                if dry_run_possible
                else ""
            )
            raise MissingKeyError(
                "no API key: set SAFETYKIT_API_KEY or "
                + option("pass --api-key-file FILE", "pass api_key=")
                + dry
            )
        return cls((url or DEFAULT_BASE_URL).rstrip("/"), Secret(key or ""))


def parse_size(text: str) -> int:
    """``"64MiB"`` → 67108864, ``"500MB"`` → 500000000, ``"1024"`` → 1024 bytes."""
    m = _SIZE_RE.match(text)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS:
        raise ConfigError(f"cannot read {text!r} as a size; write e.g. 64MiB, 500MB or 1GiB")
    return int(float(m.group(1)) * _UNITS[unit])


def format_bytes(n: float, *, binary: bool = False) -> str:
    """``1.5 MB``, ``12.0 GB``: decimal units, as rates and the README use them (MB = 10^6);
    with ``binary``, ``64.0 MiB``: the units sizes are given in (``--shard-size 64MiB``)."""
    base, units = (
        (1024, ("B", "KiB", "MiB", "GiB", "TiB"))
        if binary
        else (1000, ("B", "KB", "MB", "GB", "TB"))
    )
    for unit in units:
        if abs(n) < base or unit == units[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= base
    return f"{n:.1f} {units[-1]}"


def format_seconds(s: float) -> str:
    """``45s``, ``3m07s``, ``2h05m``."""
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def parse_partition(text: str) -> tuple[int, int]:
    """``"1/4"`` → ``(1, 4)``: worker 1 (counting from 0) of 4."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if m is None:
        raise ConfigError(
            f"cannot read {text!r} as a partition; write I/N, e.g. 0/4 (I counts from 0)"
        )
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1 or index >= count:
        raise ConfigError(
            f"partition {text!r}: I must be between 0 and N-1 (I counts from 0), N at least 1"
        )
    return index, count


def parse_rate(text: str) -> float:
    """``"50MB/s"`` → 5e7 bytes per second (the ``/s`` is optional)."""
    body = text.strip()
    if body.lower().endswith("/s"):
        body = body[:-2]
    value = parse_size(body)
    if value <= 0:
        raise ConfigError(f"a rate must be positive, got {text!r}")
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadConfig:
    """Everything that shapes a load, validated on construction.

    Memory: the loader holds about one read block per validation worker plus its results
    (``2 × workers × block_size``), and streams shards from disk in 1 MiB slices, so its
    memory does not grow with the input. Disk: at most about ``2 × upload_concurrency``
    shards (``queue_depth + upload_concurrency``) of ``shard_max_bytes`` each are on disk at
    once; uploaded shards are removed unless ``keep_shards``.

    Overrides go through ``dataclasses.replace``; a bad value raises ``ConfigError``.
    """

    shard_max_bytes: int = 64 * MiB
    #: 100,000 records: with the ~600-byte records of a typical export the byte limit and
    #: this one meet near 64 MiB; with tiny records it keeps one request (its processing
    #: time, its results file, what a failure makes you resend) at a reviewable size.
    shard_max_records: int = 100_000
    upload_concurrency: int = 8
    #: Shards waiting for an upload worker; with the ones in flight, ~2× concurrency on disk.
    queue_depth: int | None = None
    #: Retries after the first attempt, per API call and per PUT.
    max_retries: int = 6
    #: Seconds without progress (connect, or between reads) before an attempt is abandoned.
    timeout: float = 60.0
    #: Longest Retry-After honoured; the SDK ignores values over 60 s, which servers that
    #: ask for 2 minutes during an incident then see as a retry storm.
    retry_after_cap: float = 300.0
    id_field: str = "id"
    coerce_id: bool = False
    max_rejects: int | None = None
    keep_shards: bool = False
    dry_run: bool = False
    check_duplicates: bool = False
    max_bandwidth: float | None = None
    max_rps: float | None = None
    #: Worker processes that validate byte ranges of plain files and hash shards; 0 (the
    #: library's default) does it all in the loader's own threads. None picks, as the CLI
    #: does: one per CPU core (at most 8) when there are 2 or more cores and at least
    #: 256 MiB of plain JSONL files to read, else 0 (for less, starting the processes costs
    #: more than they save). Worker processes import the program's main module, as every
    #: multiprocessing child does: a script that asks for them keeps its code under
    #: ``if __name__ == "__main__":``.
    workers: int | None = 0
    block_size: int = 8 * MiB
    restart: bool = False
    grace: float = 30.0
    ca_bundle: Path | None = None
    #: ``(index, count)``: load only worker ``index``'s share (0-based) of the inputs split
    #: ``count`` ways by size (see ``partition_inputs``); None loads every input.
    partition: tuple[int, int] | None = None
    #: Compare an ETag that looks like an MD5 (and comes without SSE-KMS/SSE-C headers)
    #: with the shard's MD5; turn off only for a store whose ETags are opaque 32-hex
    #: strings without saying so (some S3-compatible stores).
    verify_etag: bool = True
    #: Send each shard's MD5 as a ``Content-MD5`` header, so the store itself refuses a
    #: damaged body (S3: 400 BadDigest): proof of the bytes where the ETag is not an MD5
    #: (SSE-KMS). Off by default: SigV2 and GCS V2 URLs sign Content-MD5, and a header the
    #: URL did not expect breaks their signature. For SigV4 URLs (X-Amz-Algorithm) it is safe.
    content_md5: bool = False
    #: ``--schema``: a JSON Schema (a dict, or the path of a JSON file) every record must
    #: satisfy, as uploaded; a record that does not is rejected with the pointer of the
    #: offending value. Checked when the Loader is made, before any input is read.
    schema: Mapping[str, Any] | str | os.PathLike[str] | None = None
    #: Send again, under a new request, the records of every shard whose request failed
    #: processing on the server (as ``status``/``wait`` recorded in the work dir).
    resend_failed: bool = False
    #: ``--incremental``: skip the input files the ledger says were loaded with the same
    #: identity (size and modification time, or the store's ETag), record each file once
    #: every shard holding its records is uploaded; a finished run in the work dir is kept
    #: under ``runs/RUN_ID/`` and an unfinished one is resumed first.
    incremental: bool = False
    #: The ledger file (or a directory for the default name): else ``$BULKLOAD_LEDGER``,
    #: else ``./bulkload-NAMESPACE.ledger.sqlite``.
    ledger: str | os.PathLike[str] | None = None
    #: A file whose identity changed since it was loaded is skipped (and named), not
    #: loaded again.
    skip_changed: bool = False
    #: Load every input whatever the ledger says (and record them again).
    force: bool = False
    #: Seconds to wait for another run that holds the namespace in the ledger.
    ledger_wait: float = 300.0
    #: Also record the MD5 of each local file's bytes (one more read of each file loaded);
    #: a file re-exported with the same bytes but a new time is then recognised.
    checksum: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.shard_max_bytes <= MAX_SHARD_BYTES:
            raise ConfigError(
                f"shard size must be between 1 byte and 5 GiB (S3's limit for one PUT), "
                f"got {self.shard_max_bytes}"
            )
        if self.shard_max_records < 1:
            raise ConfigError(f"shard records must be >= 1, got {self.shard_max_records}")
        if self.upload_concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {self.upload_concurrency}")
        if self.queue_depth is not None and self.queue_depth < 1:
            raise ConfigError(f"queue_depth must be >= 1, got {self.queue_depth}")
        if self.max_retries < 0:
            raise ConfigError(f"max retries must be >= 0, got {self.max_retries}")
        if self.timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {self.timeout}")
        if not self.id_field:
            raise ConfigError("id field must not be empty")
        if self.max_rejects is not None and self.max_rejects < 0:
            raise ConfigError(f"max rejects must be >= 0, got {self.max_rejects}")
        if self.max_rps is not None and self.max_rps <= 0:
            raise ConfigError(f"max rps must be > 0, got {self.max_rps}")
        if self.max_bandwidth is not None and self.max_bandwidth <= 0:
            raise ConfigError(f"max bandwidth must be > 0, got {self.max_bandwidth}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.block_size < 64 * KiB:
            raise ConfigError(f"block size must be >= 64 KiB, got {self.block_size}")
        if self.grace < 0:
            raise ConfigError(f"grace must be >= 0 seconds, got {self.grace}")
        if self.ledger_wait < 0:
            raise ConfigError(f"ledger wait must be >= 0 seconds, got {self.ledger_wait}")
        if not self.incremental:
            used = [
                flag
                for flag, on in (
                    ("--ledger", self.ledger is not None),
                    ("--skip-changed", self.skip_changed),
                    ("--force", self.force),
                    ("--checksum", self.checksum),
                )
                if on
            ]
            if used:
                raise ConfigError(
                    f"{option(used[0], used[0].lstrip('-').replace('-', '_'))} applies to "
                    f"incremental loads: add {option('--incremental', 'incremental=True')}"
                )
        if self.skip_changed and self.force:
            raise ConfigError(
                f"{option('--force', 'force')} loads every file and "
                f"{option('--skip-changed', 'skip_changed')} skips changed ones: choose one"
            )
        if self.partition is not None:
            index, count = self.partition
            if count < 1 or not 0 <= index < count:
                raise ConfigError(
                    f"partition must be I/N with 0 <= I < N (I counts from 0), got {index}/{count}"
                )

    @property
    def effective_queue_depth(self) -> int:
        return self.queue_depth if self.queue_depth is not None else self.upload_concurrency
