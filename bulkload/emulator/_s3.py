"""The S3 side of the emulator: pre-signed PUTs of request objects (results files are
served by ``_results``).

A PUT is checked in full from its headers and URL before a byte of its body is read, as
S3 does (and, with ``Expect: 100-continue``, before the client is asked to send it).
The body then streams into a temp file in bounded chunks, hashed as it goes, and is
renamed into place only once all of ``Content-Length`` has arrived: a short body stores
nothing. File calls run in worker threads, so the loop never waits on the disk.

A ``Content-MD5`` header is checked as S3 checks it: ``400 InvalidDigest`` before the body
when it is not a base64 MD5, ``400 BadDigest`` (nothing stored) when the body that arrived
has another MD5.

In sink mode (``discard_bodies``) a PUT that passes every check has its body read to the
end and dropped: only its size and line count are kept (no Content-MD5 check, as nothing
is hashed), and its ETag is ``"discarded-<size>"``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar
from xml.sax.saxutils import escape

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ._core import Core
from ._records import MAX_PUT_BYTES, PutAttempt
from ._sigv4 import Refusal, verify_presigned

__all__ = ["S3Handlers", "s3_error", "to_the_end"]

T = TypeVar("T")

#: Bytes handed to a worker thread per write: large enough that the thread hop costs
#: little (about 1000 hops per GiB), small enough to keep memory flat.
WRITE_BATCH = 1 << 20
#: Injected PUT failures other than a drop: S3 answers them after reading the body.
_PUT_FAULTS = (
    ("put_503", 503, "SlowDown", "Please reduce your request rate."),
    ("put_500", 500, "InternalError", "We encountered an internal error. Please try again."),
)


def s3_error(status: int, code: str, message: str, **extra: str) -> S3ErrorResponse:
    """An S3-style XML error answer."""
    return refusal_response(Refusal(status, code, message, tuple(extra.items())))


class S3ErrorResponse(web.Response):
    """An S3 error answer that remembers its ``<Code>``, for the put log."""

    def __init__(self, refusal: Refusal, body: bytes, request_id: str) -> None:
        super().__init__(
            status=refusal.status,
            body=body,
            content_type="application/xml",
            headers={"x-amz-request-id": request_id},
        )
        self.s3_code = refusal.code


def refusal_response(refusal: Refusal) -> S3ErrorResponse:
    """S3's XML error answer for ``refusal``."""
    request_id = uuid.uuid4().hex[:16].upper()
    fields = [f"<Code>{refusal.code}</Code>", f"<Message>{escape(refusal.message)}</Message>"]
    fields += [f"<{name}>{escape(value)}</{name}>" for name, value in refusal.extra]
    fields += [f"<RequestId>{request_id}</RequestId>", "<HostId>emulator</HostId>"]
    body = '<?xml version="1.0" encoding="UTF-8"?><Error>' + "".join(fields) + "</Error>"
    return S3ErrorResponse(refusal, body.encode(), request_id)


@dataclass(frozen=True, slots=True)
class _Rejection:
    response: web.Response
    chunked: bool = False


@dataclass(slots=True)
class _Progress:
    """What a PUT came to, set as soon as it is known: the put log reads it even when
    the handler is cancelled. ``"incomplete"`` unless the body was read in full."""

    outcome: str = "incomplete"
    damaged: bool = False


#: What the bucket answers a stored PUT with, by ``etag_mode`` (besides the ETag).
#: Plain and SSE-S3 objects get the MD5 as ETag; S3 has encrypted every new object with
#: SSE-S3 by default since January 2023, so it says so. The others get an opaque ETag.
ETAG_MODES = ("md5", "sse-kms", "sse-kms-dsse", "sse-c", "opaque")


def etag_answer(mode: str, *, key: str, md5: str, region: str) -> dict[str, str]:
    """The ETag and encryption headers of a stored object's 200, as S3 (or an
    S3-compatible store) sends them for ``mode``."""
    if mode == "md5":
        return {"ETag": f'"{md5}"', "x-amz-server-side-encryption": "AES256"}
    # Deterministic per object (its key and content), and never its MD5, which is what
    # KMS- and customer-key-encrypted objects and some S3-compatible stores answer.
    opaque = hashlib.sha256(f"{mode}\0{key}\0{md5}".encode()).hexdigest()[:32]
    if opaque == md5:
        opaque = opaque[::-1]
    headers = {"ETag": f'"{opaque}"'}
    if mode in ("sse-kms", "sse-kms-dsse"):
        headers["x-amz-server-side-encryption"] = "aws:kms" if mode == "sse-kms" else "aws:kms:dsse"
        headers["x-amz-server-side-encryption-aws-kms-key-id"] = (
            f"arn:aws:kms:{region}:111122223333:key/0e1a2b3c-emul-4a7e-8000-000000000000"
        )
    elif mode == "sse-c":
        headers["x-amz-server-side-encryption-customer-algorithm"] = "AES256"
        # The base64 MD5 of the customer's key, as S3 echoes it; the emulator has no key,
        # so it is that of 32 zero bytes.
        headers["x-amz-server-side-encryption-customer-key-MD5"] = base64.b64encode(
            hashlib.md5(bytes(32), usedforsecurity=False).digest()
        ).decode()
    return headers


async def to_the_end(fn: Callable[[], T]) -> T:
    """Run a short, bounded file operation in a worker thread and wait for it even if
    cancelled meanwhile (the cancellation is re-raised after), so its effect is never
    left half-observed: a temp file closed but not removed, an object moved but not
    recorded."""
    running = asyncio.get_running_loop().run_in_executor(None, fn)
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        await running
        raise


class _Sink:
    """Streams a PUT body into a temp file from worker threads, one batch at a time.

    The file is opened by the first write, in a thread like every other file call. At
    most one batch is being written while the next is collected, so reading the socket
    and writing the disk overlap, and memory stays at about two batches.
    """

    def __init__(self, path: Path, *, damage_at: int | None = None) -> None:
        self.path = path
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0
        #: The offset of the byte to flip on its way in (the damage-in-transit fault).
        self.damage_at = damage_at
        self._file: IO[bytes] | None = None
        self._closed = False
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._pending: asyncio.Future[None] | None = None
        # Orders the threads' writes against close(): a write still queued when the
        # upload is abandoned finds the sink closed and does nothing.
        self._lock = threading.Lock()

    def _write(self, chunks: list[bytes]) -> None:
        with self._lock:
            if self._closed:
                return
            if self._file is None:
                self._file = self.path.open("wb")
            for chunk in chunks:
                self._file.write(chunk)

    async def add(self, chunk: bytes) -> None:
        at = self.damage_at
        if at is not None and self.size <= at < self.size + len(chunk):
            damaged = bytearray(chunk)
            damaged[at - self.size] ^= 0xFF
            chunk = bytes(damaged)
        self._batch.append(chunk)
        # Hashing here rather than in the writer thread measured ~30% faster: MD5 runs
        # at ~700 MB/s, so a 256 KiB chunk holds the loop for ~0.4 ms, while handing the
        # GIL back and forth with the thread cost more than it saved.
        self.md5.update(chunk)
        self._batch_bytes += len(chunk)
        self.size += len(chunk)
        if self._batch_bytes >= WRITE_BATCH:
            await self._submit(last=False)

    async def _submit(self, *, last: bool) -> None:
        if self._pending is not None:
            await self._pending
            self._pending = None
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        if batch or last:  # the last write also creates the file of an empty body
            self._pending = asyncio.get_running_loop().run_in_executor(None, self._write, batch)

    async def finish(self) -> str:
        """Flush the last batch; the body's MD5."""
        await self._submit(last=True)
        await self._submit(last=False)  # waits for that batch
        return self.md5.hexdigest()

    async def close(self, *, discard: bool) -> None:
        """Close the file, and remove it when ``discard`` is set, even if cancelled."""
        if self._pending is not None and not self._pending.done():
            # Nobody will await this write any more; keep its outcome from being logged.
            self._pending.add_done_callback(_consume)

        def _close() -> None:
            with self._lock:
                self._closed = True
                if self._file is not None:
                    self._file.close()
            if discard:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()

        await to_the_end(_close)


def _consume(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()


class S3Handlers:
    """aiohttp handlers of the fake bucket, bound to one :class:`Core`."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def routes(self) -> list[web.RouteDef]:
        bucket = self.core.settings.bucket
        return [web.put(f"/{bucket}/{{key:.+}}", self.put, expect_handler=self.expect)]

    # --- PUT ----------------------------------------------------------------------------

    def _precheck(self, request: web.Request, key: str) -> _Rejection | None:
        """Every check S3 makes from the headers and URL alone; pure."""
        if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            return _Rejection(
                s3_error(
                    501,
                    "NotImplemented",
                    "A header you provided implies functionality that is not implemented",
                    Header="Transfer-Encoding",
                ),
                chunked=True,
            )
        length = request.content_length
        if length is None:
            return _Rejection(
                s3_error(
                    411, "MissingContentLength", "You must provide the Content-Length HTTP header."
                )
            )
        refusal = verify_presigned(
            self.core.settings.credentials,
            method=request.method,
            raw_target=request.raw_path,
            headers=request.headers.items(),
            now=self.core.now(),
        )
        if refusal is not None:
            return _Rejection(refusal_response(refusal))
        if length > MAX_PUT_BYTES:
            return _Rejection(
                s3_error(
                    400,
                    "EntityTooLarge",
                    "Your proposed upload exceeds the maximum allowed size",
                    ProposedSize=str(length),
                    MaxSizeAllowed=str(MAX_PUT_BYTES),
                )
            )
        content_md5 = request.headers.get("Content-MD5")
        if content_md5 is not None and _digest(content_md5) is None:
            return _Rejection(
                s3_error(400, "InvalidDigest", "The Content-MD5 you specified was invalid.")
            )
        return None

    def _record(
        self,
        request: web.Request,
        key: str,
        outcome: str,
        *,
        chunked: bool,
        response: web.StreamResponse | None = None,
        damaged: bool = False,
    ) -> None:
        core = self.core
        rec = core.by_key.get(key)
        if rec is not None:
            rec.put_attempts += 1
        if chunked:
            core.chunked_puts += 1
        core.put_log.append(
            PutAttempt(
                request_id=rec.request_id if rec is not None else _request_id_of(key),
                content_type=request.headers.get("Content-Type"),
                content_length=request.content_length,
                outcome=outcome,
                chunked=chunked,
                raw_target=request.raw_path,
                error_code=response.s3_code if isinstance(response, S3ErrorResponse) else None,
                damaged=damaged,
                header_names=tuple(sorted({name.lower() for name in request.headers})),
            )
        )
        core.count("put", outcome)

    def _record_rejection(self, request: web.Request, key: str, rejection: _Rejection) -> None:
        response = rejection.response
        self._record(
            request, key, str(response.status), chunked=rejection.chunked, response=response
        )

    async def expect(self, request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue``: refuse from the headers, else invite the body."""
        if request.headers.get("Expect", "").lower() != "100-continue":
            raise web.HTTPExpectationFailed(text=f"Unknown Expect: {request.headers['Expect']}")
        key = request.match_info["key"]
        rejection = self._precheck(request, key)
        if rejection is not None:
            self.core.arrived("put")  # the PUT ends here: put() will not run
            self._record_rejection(request, key, rejection)
            await self.core.persist()
            return rejection.response
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's own expect handler does
        return None

    async def put(self, request: web.Request) -> web.StreamResponse:
        self.core.arrived("put")
        key = request.match_info["key"]
        rejection = self._precheck(request, key)
        if rejection is not None:
            self._record_rejection(request, key, rejection)
            await self.core.persist()
            return rejection.response
        core = self.core
        core.puts_in_flight += 1
        core.max_puts_in_flight = max(core.max_puts_in_flight, core.puts_in_flight)
        core.changed()
        # "incomplete" unless _receive gets further: the client went away mid-body
        # (aiohttp reports a short body as ContentLengthError, a reset as
        # ConnectionResetError, and cancels the handler when the socket closes).
        progress = _Progress()
        response: web.Response | None = None
        try:
            response = await self._receive(request, key, progress)
        except (OSError, HttpProcessingError):
            pass
        finally:
            core.puts_in_flight -= 1
            self._record(
                request,
                key,
                progress.outcome,
                chunked=False,
                response=response,
                damaged=progress.damaged,
            )
        await core.persist()
        if response is None:
            # Nobody is listening any more; this answer goes nowhere, and aiohttp treats
            # the failed write as the client disconnecting, quietly.
            response = web.Response(status=400)
            response.force_close()
        return response

    async def _receive(
        self, request: web.Request, key: str, progress: _Progress
    ) -> web.Response | None:
        """Read the body; ``None`` when a fault dropped the connection. Sets ``progress``
        as soon as it is known."""
        core = self.core
        injector = core.injector
        declared = request.content_length or 0
        if injector.fire("put_drop"):
            await _discard(request, declared // 2)
            progress.outcome = "dropped"
            if request.transport is not None:
                request.transport.abort()
            return None
        for kind, status, code, message in _PUT_FAULTS:
            if injector.fire(kind):
                await _discard(request, declared)  # S3 answers after the whole body
                progress.outcome = str(status)
                return s3_error(status, code, message)
        if core.settings.discard_bodies:
            return await self._receive_discarding(request, key, progress)
        # Damage in transit: the middle byte arrives flipped, and S3 stores and hashes
        # what arrived. An empty body has no byte to damage.
        damage = injector.fire("put_damage") and declared > 0
        sink = _Sink(
            core.tmp_dir / f"{uuid.uuid4().hex}.part", damage_at=declared // 2 if damage else None
        )
        complete = digest_ok = False
        # S3 checks a Content-MD5 against what arrived (after any damage) and stores
        # nothing on a mismatch: a client's sure way to catch damage whatever the ETag.
        expected = request.headers.get("Content-MD5")
        try:
            while chunk := await request.content.readany():
                await sink.add(chunk)
            md5 = await sink.finish()
            # aiohttp raises on a body cut short; the size check guards the rest.
            complete = sink.size == declared
            digest_ok = expected is None or _digest(expected) == bytes.fromhex(md5)
        finally:
            await sink.close(discard=not (complete and digest_ok))
        if not complete:
            raise ConnectionResetError(f"PUT body ended after {sink.size} of {declared} bytes")
        if not digest_ok:
            progress.outcome = "400"
            progress.damaged = damage
            return s3_error(
                400,
                "BadDigest",
                "The Content-MD5 you specified did not match what we received.",
                ExpectedDigest=str(expected),
                CalculatedDigest=base64.b64encode(bytes.fromhex(md5)).decode(),
            )

        rec = core.by_key.get(key)
        final = core.object_path(key) if rec is not None else core.unclaimed_path(key)

        def store() -> None:
            _move_into_place(sink.path, final)

        headers = etag_answer(
            core.settings.etag_mode,
            key=key,
            md5=md5,
            region=core.settings.credentials.region,
        )

        def stored() -> None:
            progress.outcome = "200"
            progress.damaged = damage
            if rec is not None:
                core.object_arrived(rec, sink.size, md5, etag=headers["ETag"].strip('"'))

        try:
            await to_the_end(store)
        except asyncio.CancelledError:
            stored()  # stored is stored, even if the client vanished during the rename
            raise
        stored()
        return web.Response(
            status=200, headers={**headers, "x-amz-request-id": uuid.uuid4().hex[:16].upper()}
        )

    async def _receive_discarding(
        self, request: web.Request, key: str, progress: _Progress
    ) -> web.Response:
        """Sink mode: read the whole body (S3 answers only then), count its bytes and
        lines, keep nothing. The ETag is not an MD5, so clients skip their check."""
        declared = request.content_length or 0
        size = newlines = 0
        last = b""
        dense = True
        while chunk := await request.content.readany():
            size += len(chunk)
            # For lines over ~64 bytes, replace() (a vectorised memchr per line) measured
            # 3-5x faster than count() (a byte loop), which was half of the sink's CPU;
            # for short lines count() wins. The last chunk's density picks the method.
            n = chunk.count(b"\n") if dense else len(chunk) - len(chunk.replace(b"\n", b""))
            dense = n * 64 > len(chunk)
            newlines += n
            last = chunk
        if size != declared:
            raise ConnectionResetError(f"PUT body ended after {size} of {declared} bytes")
        progress.outcome = "200"
        rec = self.core.by_key.get(key)
        if rec is not None:
            # A last line without its newline is a line too.
            lines = newlines + (1 if last and not last.endswith(b"\n") else 0)
            self.core.object_arrived(
                rec, size, None, etag=f"discarded-{size}", discarded_lines=lines
            )
        return web.Response(
            status=200,
            headers={
                "ETag": f'"discarded-{size}"',
                "x-amz-request-id": uuid.uuid4().hex[:16].upper(),
            },
        )


def _digest(content_md5: str) -> bytes | None:
    """The 16 bytes a Content-MD5 header holds (base64), or None when it holds none."""
    try:
        digest = base64.b64decode(content_md5.strip(), validate=True)
    except ValueError:
        return None
    return digest if len(digest) == 16 else None


async def _discard(request: web.Request, limit: int) -> None:
    """Read and drop up to about ``limit`` bytes of the body."""
    seen = 0
    while seen < limit and (chunk := await request.content.readany()):
        seen += len(chunk)


def _move_into_place(tmp: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)


def _request_id_of(key: str) -> str | None:
    name = key.rsplit("/", 1)[-1]
    return name.removesuffix(".jsonl") if name.startswith("req_") else None
