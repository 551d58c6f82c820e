"""One shard, one PUT to its pre-signed URL: streamed from disk with a Content-Length.

S3 refuses chunked bodies on a pre-signed PUT (501) and bodies without a length (411), so
the body is a ``ShardPayload`` of known size that reads the file in 1 MiB slices through
aiofiles' executor: never the whole shard in memory, never a blocking read on the event loop, and
re-readable, so aiohttp's own resend of an idempotent PUT on a stale pooled connection
sends the whole body again. The answer is classified here, once, into bulkload's terms:
done (with the ETag), expired URL (ask for a new one), worth retrying, or final.
"""

from __future__ import annotations

import base64
import enum
import errno
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiofiles.os
import aiohttp
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload
from yarl import URL

from .._errors import option
from .._model import Piece
from .._redact import redact_url
from .api import s3_error, server_side_encryption
from .retry import is_retryable_status, parse_retry_after
from .session import TRANSIENT_ERRORS, describe_exception, tls_hint
from .throttle import RateLimiter

#: 1 MiB slices: one 64 MiB bytes body measured 3× slower than streamed slices, and a slice
#: this size keeps a thread hop per MiB negligible.
SLICE = 1 << 20
#: Reads run in aiofiles' executor: a slice from the page cache is fast, but not free, and a
#: cold disk read would stall every upload on the loop.
_pread = aiofiles.os.wrap(os.pread)


class SourceChanged(Exception):
    """A file a shard is read from is gone or shorter than when the shard was made: a local
    problem that no retry of the PUT can fix."""


def _changed(path: Path, needed: int) -> SourceChanged:
    """Why ``path`` cannot give the bytes up to ``needed`` any more, in words."""
    try:
        now = os.stat(path).st_size
    except FileNotFoundError:
        return SourceChanged(f"{path} was removed during the load")
    except OSError as exc:
        return SourceChanged(f"{path} cannot be read any more: {exc.strerror}")
    return SourceChanged(
        f"{path} changed during the load: it has {now:,} bytes now, this shard needs bytes up "
        f"to {needed:,}"
    )


def _open_piece(piece: Piece) -> int:
    try:
        return os.open(piece.path, os.O_RDONLY)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise _changed(piece.path, piece.offset + piece.length) from exc
        raise SourceChanged(f"{piece.path} cannot be read: {exc.strerror}") from exc


def _read_small_pieces(pieces: Sequence[Piece]) -> bytes:
    """The pieces' bytes back to back: many small files' pieces in one executor hop."""
    parts = []
    for piece in pieces:
        fd = _open_piece(piece)
        try:
            data = os.pread(fd, piece.length, piece.offset)
        finally:
            os.close(fd)
        if len(data) != piece.length:
            raise _changed(piece.path, piece.offset + piece.length)
        parts.append(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


_read_pieces = aiofiles.os.wrap(_read_small_pieces)
#: What a PUT attempt can fail with short of an answer: the network, a body cut short, or
#: one of the shard's files (which aiohttp may hand back as a connection error).
_PUT_ERRORS: tuple[type[BaseException], ...] = (
    *TRANSIENT_ERRORS,
    aiohttp.ClientPayloadError,
    SourceChanged,
)
_open = aiofiles.os.wrap(_open_piece)
CONTENT_TYPE = "application/json"  # exactly: the URL may be signed over it


class ShardPayload(Payload):
    """The shard's pieces (byte ranges of files) back to back; can be written any number of
    times, so a resend sends the whole body again."""

    def __init__(
        self,
        pieces: Sequence[Piece],
        *,
        on_bytes: Callable[[int], None] | None = None,
        bandwidth: RateLimiter | None = None,
    ) -> None:
        super().__init__(pieces, content_type=CONTENT_TYPE)
        self._pieces = tuple(pieces)
        self._size = sum(p.length for p in self._pieces)
        self._on_bytes = on_bytes
        self._bandwidth = bandwidth
        self._autoclose = True  # nothing is held open between writes
        #: Set when a file the shard is read from failed us: the PUT failed because of it,
        #: not because of the network (aiohttp reports it as a connection error).
        self.source_problem: SourceChanged | None = None

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a shard payload is streamed from disk, not decoded in memory")

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        try:
            await self._write_pieces(writer, content_length)
        except SourceChanged as exc:
            self.source_problem = exc
            raise

    async def _write_pieces(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        assert self._size is not None
        budget = self._size if content_length is None else min(self._size, content_length)
        # Small pieces (whole small input files, typically) are read in groups of up to a
        # slice, in one executor hop per group: one hop per 64 KiB file cost more than
        # reading it. Bigger pieces are streamed slice by slice.
        group: list[Piece] = []
        grouped = 0
        for piece in self._pieces:
            if budget <= 0:
                break
            if piece.length > budget:
                piece = Piece(piece.path, piece.offset, budget)
            budget -= piece.length
            if piece.length > SLICE or grouped + piece.length > SLICE:
                await self._send_group(writer, group, grouped)
                group, grouped = [], 0
            if piece.length > SLICE:
                await self._send_large(writer, piece)
            else:
                group.append(piece)
                grouped += piece.length
        await self._send_group(writer, group, grouped)

    async def _send_group(
        self, writer: AbstractStreamWriter, group: list[Piece], size: int
    ) -> None:
        if not group:
            return
        if self._bandwidth is not None:
            await self._bandwidth.acquire(size)
        data = await _read_pieces(group)
        await writer.write(data)
        if self._on_bytes is not None:
            self._on_bytes(len(data))

    async def _send_large(self, writer: AbstractStreamWriter, piece: Piece) -> None:
        length = piece.length
        position = piece.offset
        remaining = length
        fd = await _open(piece)
        # A plain descriptor closed in ``finally``: aiohttp may abandon this coroutine
        # mid-body (a dropped connection), and a file object would then leak until GC.
        try:
            while remaining > 0:
                n = min(SLICE, remaining)
                if self._bandwidth is not None:
                    await self._bandwidth.acquire(n)
                data = await _pread(fd, n, position)
                if not data:
                    raise _changed(piece.path, piece.offset + piece.length)
                await writer.write(data)
                position += len(data)
                remaining -= len(data)
                if self._on_bytes is not None:
                    self._on_bytes(len(data))
        finally:
            os.close(fd)


class PutOutcome(enum.StrEnum):
    """Why a PUT attempt did not store the shard, and so what to do next."""

    EXPIRED = "expired"  # the URL's time is up: ask for a new one
    RETRY = "retry"  # worth another try
    THROTTLED = "throttled"  # retry, and slow everyone down
    SOURCE = "source"  # an input changed under the shard: no retry can help
    FATAL = "fatal"  # the store refuses this for good


class PutFailure(Exception):
    """One PUT attempt that did not store the shard."""

    def __init__(self, message: str, kind: PutOutcome, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Stored:
    """The store's answer to a successful PUT: its ETag (without quotes), and the
    server-side encryption that makes that ETag something other than the body's MD5."""

    etag: str
    encryption: str | None


async def put_shard(
    session: aiohttp.ClientSession,
    url: str,
    pieces: Sequence[Piece],
    *,
    on_bytes: Callable[[int], None] | None = None,
    bandwidth: RateLimiter | None = None,
    content_md5: str | None = None,
) -> Stored:
    """PUT one shard to its pre-signed URL. Raises ``PutFailure``.

    The URL goes out byte for byte as it was issued: aiohttp re-quotes a URL given as a
    string (``%2F`` in ``X-Amz-Credential`` becomes ``/``, ``%7E`` becomes ``~``), and a
    store that checks the signature over what it received would refuse it. The headers
    are the documented ones, ``Content-Type`` (signed on some URLs) and ``Content-Length``;
    nothing else a signature might cover (no ``Content-MD5``: SigV2 and GCS V2 URLs sign it),
    unless ``content_md5`` (the body's hex MD5) is given: then the store itself checks the
    body against it (S3 answers ``400 BadDigest`` and stores nothing on a mismatch), which
    proves the bytes where the ETag cannot (SSE-KMS). Only for URLs that do not sign it.

    On cancellation: the connection is closed mid-body; S3 stores nothing for a short body.
    """
    payload = ShardPayload(pieces, on_bytes=on_bytes, bandwidth=bandwidth)
    headers = {"Content-Type": CONTENT_TYPE, "Content-Length": str(payload.size)}
    if content_md5 is not None:
        headers["Content-MD5"] = base64.b64encode(bytes.fromhex(content_md5)).decode("ascii")
    where = redact_url(url)
    try:
        async with session.put(URL(url, encoded=True), data=payload, headers=headers) as resp:
            body = await resp.content.read(64 * 1024)
            status = resp.status
            etag = resp.headers.get("ETag", "")
            encryption = server_side_encryption(resp.headers)
            retry_after = parse_retry_after(resp.headers)
            retryable = is_retryable_status(status, resp.headers)
    except aiohttp.ClientSSLError as exc:
        raise PutFailure(f"PUT {where}: {tls_hint(url, exc)}", PutOutcome.FATAL) from exc
    except _PUT_ERRORS as exc:
        if payload.source_problem is not None:
            raise PutFailure(
                f"{payload.source_problem}; its records cannot be sent as they were read. "
                f"Rerun with {option('--restart', 'restart=True')} to load the inputs as "
                "they are now",
                PutOutcome.SOURCE,
            ) from exc
        raise PutFailure(f"PUT {where}: {describe_exception(exc)}", PutOutcome.RETRY) from exc
    if status == 200:
        return Stored(etag.strip().strip('"'), encryption)
    code, message = s3_error(body)
    text = f"PUT {where}: HTTP {status} {code}: {message}".rstrip(": ")
    if status == 403 and code == "AccessDenied" and "expired" in message.lower():
        raise PutFailure(text, PutOutcome.EXPIRED)
    if status == 400 and code == "BadDigest":
        # The body that arrived is not the one sent: damaged on the way. Send it again.
        raise PutFailure(text, PutOutcome.RETRY)
    if status in (429, 503) and (status == 429 or code == "SlowDown"):
        raise PutFailure(text, PutOutcome.THROTTLED, retry_after)
    if retryable:
        raise PutFailure(text, PutOutcome.RETRY, retry_after)
    raise PutFailure(text, PutOutcome.FATAL)
