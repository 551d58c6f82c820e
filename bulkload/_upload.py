"""One shard, one PUT to its pre-signed URL: streamed from disk with a Content-Length.

S3 refuses chunked bodies on a pre-signed PUT (501) and bodies without a length (411), so
the body is a ``ShardPayload`` of known size that reads the file in 1 MiB slices through
aiofiles' executor: never the whole shard in memory, never a blocking read on the event loop, and
re-readable, so aiohttp's own resend of an idempotent PUT on a stale pooled connection
sends the whole body again. The answer is classified here, once, into bulkload's terms:
done (with the ETag), expired URL (ask for a new one), worth retrying, or final.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiofiles.os
import aiohttp
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from ._http import TRANSIENT_ERRORS, describe_exception, redact_url, tls_hint
from ._retry import is_retryable_status, parse_retry_after
from ._shard import Piece
from ._throttle import RateLimiter

#: 1 MiB slices: PERF-NOTES measured one 64 MiB bytes body 3× slower than streamed slices,
#: and a slice this size keeps a thread hop per MiB negligible.
SLICE = 1 << 20
#: Reads run in aiofiles' executor: a slice from the page cache is fast, but not free, and a
#: cold disk read would stall every upload on the loop.
_open = aiofiles.os.wrap(os.open)
_pread = aiofiles.os.wrap(os.pread)


def _read_small_pieces(pieces: Sequence[Piece]) -> bytes:
    """The pieces' bytes back to back: many small files' pieces in one executor hop."""
    parts = []
    for piece in pieces:
        fd = os.open(piece.path, os.O_RDONLY)
        try:
            data = os.pread(fd, piece.length, piece.offset)
        finally:
            os.close(fd)
        if len(data) != piece.length:
            raise OSError(f"{piece.path} ended {piece.length - len(data)} bytes early")
        parts.append(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


_read_pieces = aiofiles.os.wrap(_read_small_pieces)
CONTENT_TYPE = "application/json"  # exactly: the URL may be signed over it
_XML_CODE = re.compile(rb"<Code>([^<]*)</Code>")
_XML_MESSAGE = re.compile(rb"<Message>([^<]*)</Message>")


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

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a shard payload is streamed from disk, not decoded in memory")

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
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
        fd = await _open(piece.path, os.O_RDONLY)
        # A plain descriptor closed in ``finally``: aiohttp may abandon this coroutine
        # mid-body (a dropped connection), and a file object would then leak until GC.
        try:
            while remaining > 0:
                n = min(SLICE, remaining)
                if self._bandwidth is not None:
                    await self._bandwidth.acquire(n)
                data = await _pread(fd, n, position)
                if not data:
                    raise OSError(f"{piece.path} ended {remaining} bytes early")
                await writer.write(data)
                position += len(data)
                remaining -= len(data)
                if self._on_bytes is not None:
                    self._on_bytes(len(data))
        finally:
            os.close(fd)


@dataclass(frozen=True, slots=True)
class PutFailure(Exception):
    """One PUT attempt that did not store the shard."""

    message: str
    kind: str  # "expired" | "retry" | "throttled" | "fatal"
    retry_after: float | None = None

    def __str__(self) -> str:
        return self.message


async def put_shard(
    session: aiohttp.ClientSession,
    url: str,
    pieces: Sequence[Piece],
    *,
    on_bytes: Callable[[int], None] | None = None,
    bandwidth: RateLimiter | None = None,
) -> str:
    """PUT one shard; return the ETag without quotes. Raises ``PutFailure``.

    On cancellation: the connection is closed mid-body; S3 stores nothing for a short body.
    """
    payload = ShardPayload(pieces, on_bytes=on_bytes, bandwidth=bandwidth)
    headers = {"Content-Type": CONTENT_TYPE, "Content-Length": str(payload.size)}
    where = redact_url(url)
    try:
        async with session.put(url, data=payload, headers=headers) as resp:
            body = await resp.content.read(64 * 1024)
            status = resp.status
            etag = resp.headers.get("ETag", "")
            retry_after = parse_retry_after(resp.headers)
            retryable = is_retryable_status(status, resp.headers)
    except aiohttp.ClientSSLError as exc:
        raise PutFailure(f"PUT {where}: {tls_hint(url, exc)}", "fatal") from exc
    except TRANSIENT_ERRORS as exc:
        raise PutFailure(f"PUT {where}: {describe_exception(exc)}", "retry") from exc
    if status == 200:
        return etag.strip().strip('"')
    code, message = _s3_error(body)
    text = f"PUT {where}: HTTP {status} {code}: {message}".rstrip(": ")
    if status == 403 and code == "AccessDenied" and "expired" in message.lower():
        raise PutFailure(text, "expired")
    if status in (429, 503) and (status == 429 or code == "SlowDown"):
        raise PutFailure(text, "throttled", retry_after)
    if retryable:
        raise PutFailure(text, "retry", retry_after)
    raise PutFailure(text, "fatal")


def _s3_error(body: bytes) -> tuple[str, str]:
    """S3's XML error: only Code and Message (the rest can echo signature material)."""
    code = _XML_CODE.search(body)
    message = _XML_MESSAGE.search(body)
    return (
        code.group(1).decode("utf-8", "replace") if code else "",
        message.group(1).decode("utf-8", "replace") if message else "",
    )
