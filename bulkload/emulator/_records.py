"""Records the emulator keeps, the public snapshots of them, and the blocking file work.

Everything here is synchronous and loop-free: the functions that touch the disk
(:func:`validate_object`, :func:`save_state`, ...) are run through ``asyncio.to_thread``
by the server, so the event loop never waits on a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

__all__ = [
    "MAX_PUT_BYTES",
    "NAMESPACE_RE",
    "Outcome",
    "PutAttempt",
    "RequestInfo",
    "RequestRecord",
    "Signer",
    "iso_ms",
    "load_state",
    "new_request_id",
    "read_object_lines",
    "save_state",
    "validate_object",
]

#: S3's limit for a single PUT: 5 GiB.
MAX_PUT_BYTES = 5 * 1024**3
NAMESPACE_RE = re.compile(r"^[0-9A-Za-z_-]+$")
#: Lines named in an ``error_summary`` before it is cut short; enough to debug, short
#: enough to print.
MAX_NAMED_ERRORS = 10
STATE_VERSION = 1

# Crockford's base32, lowercase: the alphabet of ULIDs such as req_01h2m7qdmdjckc30e1mnq6xqfd.
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def new_request_id(now: float) -> str:
    """A ULID-shaped id: 48 bits of milliseconds then 80 random bits, 26 characters."""
    n = (int(now * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[n & 31])
        n >>= 5
    return "req_" + "".join(reversed(chars))


def iso_ms(t: float) -> str:
    """``2026-02-19T12:34:56.000Z``, the API's timestamp format."""
    dt = datetime.fromtimestamp(t, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class Signer:
    """HMAC-SHA256 signatures of the emulator's results URLs (``data_url``).

    Upload URLs are real SigV4 (``_sigv4``); a results URL only has to be unforgeable and
    expire, as the API documents nothing more about it.
    """

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def _sign(self, *parts: str) -> str:
        message = "\n".join(parts).encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def results(self, request_id: str, expires: str) -> str:
        return self._sign("GET", request_id, expires)

    @staticmethod
    def same(a: str, b: str) -> bool:
        return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What the emulator knows about one request, as tests see it.

    ``status`` is what the status endpoint last established: ``uploading`` until an
    object arrives, ``ingesting`` until a status call has validated it, then
    ``succeeded`` or ``failed``. ``put_attempts`` counts every PUT aimed at the request's
    key, whatever its outcome; ``put_successes`` the ones answered 200.
    """

    request_id: str
    namespace: str
    status: str
    put_attempts: int
    put_successes: int
    object_path: Path | None
    size: int | None
    md5: str | None
    created_at: float
    expired_url: bool
    #: The ETag the last stored object was answered with, without quotes: its ``md5``
    #: unless ``etag_mode`` says otherwise.
    etag: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "namespace": self.namespace,
            "status": self.status,
            "put_attempts": self.put_attempts,
            "put_successes": self.put_successes,
            "object_path": None if self.object_path is None else str(self.object_path),
            "size": self.size,
            "md5": self.md5,
            "created_at": self.created_at,
            "expired_url": self.expired_url,
            "etag": self.etag,
        }


@dataclass(frozen=True, slots=True)
class PutAttempt:
    """One PUT as received. ``outcome`` is the status code answered (``"200"``,
    ``"403"``...), ``"dropped"`` when a fault cut the connection, or ``"incomplete"``
    when the client went away before the whole body arrived.

    ``raw_target`` is the request target exactly as it arrived (path and query, every
    percent-escape as the client wrote it), so a test can compare it with the URL the
    emulator issued. ``error_code`` is S3's ``<Code>`` of an error answer
    (``"SignatureDoesNotMatch"``...), else None. ``damaged`` is True when the damage fault
    flipped a byte of the body on its way in (stored, or refused as ``BadDigest`` when
    the PUT carried a Content-MD5).
    """

    request_id: str | None
    content_type: str | None
    content_length: int | None
    outcome: str
    chunked: bool
    raw_target: str = ""
    error_code: str | None = None
    damaged: bool = False
    #: The names of the headers the PUT carried, lowercase and sorted: a test can check that
    #: a client sends nothing a signature might cover (``content-md5`` for SigV2 URLs).
    header_names: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "content_type": self.content_type,
            "content_length": self.content_length,
            "outcome": self.outcome,
            "chunked": self.chunked,
            "raw_target": self.raw_target,
            "error_code": self.error_code,
            "damaged": self.damaged,
            "header_names": list(self.header_names),
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    """Result of processing one stored object; when ``ok``, the results file's MD5 and
    size, which its download answers with (ETag, Content-Length)."""

    ok: bool
    count: int
    error_summary: str | None
    results_md5: str | None = None
    results_size: int = 0


@dataclass(slots=True)
class RequestRecord:
    """Mutable server-side state of one request; owned by the event loop."""

    request_id: str
    namespace: str
    object_key: str
    created_at: float
    url_expires_at: float
    expired_url: bool
    put_attempts: int = 0
    put_successes: int = 0
    size: int | None = None
    md5: str | None = None
    etag: str | None = None
    arrived_at: float | None = None  # wall clock, persisted
    arrived_loop: float | None = None  # loop clock, for the ingest delay
    generation: int = 0  # bumped by every stored object, so a stale validation is dropped
    outcome: Outcome | None = None
    #: Sink mode: the line count of the last body, which was discarded; None when stored.
    discarded_lines: int | None = None

    @property
    def status(self) -> str:
        if self.arrived_at is None:
            return "uploading"
        if self.outcome is None:
            return "ingesting"
        return "succeeded" if self.outcome.ok else "failed"

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "namespace": self.namespace,
            "object_key": self.object_key,
            "created_at": self.created_at,
            "url_expires_at": self.url_expires_at,
            "expired_url": self.expired_url,
            "put_attempts": self.put_attempts,
            "put_successes": self.put_successes,
            "size": self.size,
            "md5": self.md5,
            "etag": self.etag,
            "arrived_at": self.arrived_at,
            "discarded_lines": self.discarded_lines,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, now_wall: float, now_loop: float) -> RequestRecord:
        rec = cls(
            request_id=data["request_id"],
            namespace=data["namespace"],
            object_key=data["object_key"],
            created_at=data["created_at"],
            url_expires_at=data["url_expires_at"],
            expired_url=data["expired_url"],
            put_attempts=data["put_attempts"],
            put_successes=data["put_successes"],
            size=data["size"],
            md5=data["md5"],
            # Absent in state files written before etag modes existed.
            etag=data.get("etag", data["md5"]),
            arrived_at=data["arrived_at"],
            # Absent in state files written before sink mode existed.
            discarded_lines=data.get("discarded_lines"),
        )
        if rec.arrived_at is not None:
            # Carry the time already spent ingesting across the restart.
            rec.arrived_loop = now_loop - max(0.0, now_wall - rec.arrived_at)
            rec.generation = 1
        return rec


# --- blocking file work, run in worker threads -------------------------------------------


def save_state(path: Path, payload: bytes) -> None:
    """Write the state file atomically: a reader sees the old or the new one, whole."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def load_state(path: Path) -> dict[str, Any] | None:
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: not an emulator state file (version {STATE_VERSION})")
    return data


def _result_line(namespace: str, record_id: str) -> bytes:
    return orjson.dumps(
        {
            "id": record_id,
            "output": {"actions": [], "labels": [{"label": "ok"}], "fields": {}},
            "metadata": {},
            "url": f"https://app.safetykit.com/data/{namespace}/{quote(record_id, safe='')}",
        }
    )


#: The deepest nesting a line may have. An object holding 1,023 nested arrays is 1,024
#: deep and passes; one level more is refused. This is orjson's limit, which the model
#: of SafetyKit's parser inherits and states as its rule.
MAX_DEPTH = 1024

#: Why orjson refused a line, by a phrase of its message, as the reason the server
#: gives; any other refusal is "invalid JSON".
_JSON_REASONS = (
    ("surrogate", "lone surrogate escape"),
    ("infinity", "number does not fit a double"),
    ("depth limit exceeded", f"nested deeper than {MAX_DEPTH} levels"),
)


def _line_error(line: bytes, fail_ids: frozenset[str]) -> tuple[str | None, str | None]:
    """(id, None) for a good line, (None, reason) for a bad one; see
    :func:`validate_object` for the rules."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return None, "invalid UTF-8"
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        message = str(exc).lower()
        reason = next((r for phrase, r in _JSON_REASONS if phrase in message), "invalid JSON")
        return None, reason
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    if "id" not in obj:
        return None, "missing id"
    record_id = obj["id"]
    if not isinstance(record_id, str) or not record_id:
        return None, "id is not a non-empty string"
    if record_id in fail_ids:
        return None, f"id {record_id!r} rejected (fail_ids)"
    return record_id, None


def validate_object(
    path: Path, results_tmp: Path, namespace: str, fail_ids: frozenset[str]
) -> Outcome:
    """Process a stored object line by line, never holding it whole.

    Writes the results file to ``results_tmp`` when every non-blank line is good, and
    removes it otherwise. Lines end at ``\n``; surrounding whitespace (a ``\r`` too) is
    ignored and blank lines are skipped. The model of what SafetyKit's JSON parser
    refuses, with the reason each refusal gives in ``error_summary``
    (``line N: reason; ...``, at most ten lines named, then a count):

    - ``invalid UTF-8``: the line is not valid UTF-8 (a surrogate encoded in UTF-8 is
      not either);
    - ``invalid JSON``: not one JSON value, ``NaN``, ``Infinity`` and ``-Infinity``
      included;
    - ``lone surrogate escape``: a ``\ud800``-``\udfff`` escape without its pair,
      anywhere (in a key too);
    - ``number does not fit a double``: a number that rounds to infinity (``1e400``);
      ``1e-400`` (it rounds to 0) and integers past 64 bits (they become doubles) are
      fine;
    - ``nested deeper than 1024 levels``: more than :data:`MAX_DEPTH` nested objects and
      arrays, the line's own object counting as one;
    - ``not a JSON object``; ``missing id``; ``id is not a non-empty string``;
    - ``id '...' rejected (fail_ids)``: the fault that fails chosen records.
    """
    errors: list[str] = []
    n_errors = 0
    count = 0
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0
    with path.open("rb") as src, results_tmp.open("wb") as out:
        for line_no, raw in enumerate(src, start=1):
            line = raw.strip()
            if not line:
                continue
            record_id, reason = _line_error(line, fail_ids)
            if reason is not None:
                n_errors += 1
                if len(errors) < MAX_NAMED_ERRORS:
                    errors.append(f"line {line_no}: {reason}")
            elif record_id is not None and not n_errors:
                count += 1
                result = _result_line(namespace, record_id) + b"\n"
                out.write(result)
                md5.update(result)
                size += len(result)
    if not n_errors:
        return Outcome(
            ok=True,
            count=count,
            error_summary=None,
            results_md5=md5.hexdigest(),
            results_size=size,
        )
    with contextlib.suppress(FileNotFoundError):
        results_tmp.unlink()
    summary = "; ".join(errors)
    if n_errors > len(errors):
        summary += f"; and {n_errors - len(errors)} more bad lines"
    return Outcome(ok=False, count=0, error_summary=summary)


def read_object_lines(path: Path) -> Iterator[bytes]:
    """The non-blank lines of a stored object, without their line endings."""
    with path.open("rb") as f:
        for raw in f:
            line = raw.rstrip(b"\r\n")
            if line.strip():
                yield line
