"""Results downloads (``GET /results/<requestId>.jsonl?expires=...&sig=...``), served as
S3 serves an object: ``Content-Length``, and ``ETag`` = the hex MD5 of the file in quotes
(aiohttp's ``FileResponse`` would send an ETag of its own making).

Faults model the ways a long download fails in the wild: ``results_cut`` sends the full
Content-Length, about half the body, then closes the connection; ``results_stall`` sends
half, then nothing for ``hang_s`` seconds (longer than any client's read timeout), then
closes. Either way a client can tell from the length it got (and the MD5 of what it got)
that the file is incomplete. The file is read in worker threads, a chunk at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path
from typing import IO

from aiohttp import web

from ._core import Core
from ._records import Outcome
from ._s3 import s3_error, to_the_end
from ._sigv4 import s3_time

__all__ = ["ResultsHandlers"]

#: Bytes read (in a worker thread) and sent per step: few thread hops, flat memory.
CHUNK = 256 * 1024


class ResultsHandlers:
    """The aiohttp handler of results files, bound to one :class:`Core`."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/results/{name}", self.results)]

    async def results(self, request: web.Request) -> web.StreamResponse:
        """Counted by outcome (the status, ``"cut"`` or ``"stalled"``) as soon as it is
        decided, before the body goes out: a client that has read the whole answer finds
        it counted."""
        self.core.arrived("results")
        return await self._results(request)

    def _refused(self, response: web.Response) -> web.Response:
        self.core.count("results", str(response.status))
        return response

    async def _results(self, request: web.Request) -> web.StreamResponse:
        core = self.core
        name = request.match_info["name"]
        request_id = name.removesuffix(".jsonl")
        expires = request.query.get("expires", "")
        provided = request.query.get("sig", "")
        signer = core.signer
        if not expires.lstrip("-").isdigit() or not signer.same(
            signer.results(request_id, expires), provided
        ):
            return self._refused(
                s3_error(
                    403,
                    "SignatureDoesNotMatch",
                    "The request signature we calculated does not match the signature you "
                    "provided. Check your key and signing method.",
                    StringToSign=f"GET\n{request_id}\n{expires}",
                    SignatureProvided=provided,
                )
            )
        now = core.now()
        if now > int(expires):
            return self._refused(
                s3_error(
                    403,
                    "AccessDenied",
                    "Request has expired",
                    Expires=s3_time(int(expires)),
                    ServerTime=s3_time(now),
                )
            )
        rec = core.requests.get(request_id)
        path = core.results_path(request_id)
        found = await asyncio.to_thread(_size_and_md5, path, rec.outcome if rec else None)
        if rec is None or found is None:
            return self._refused(
                s3_error(404, "NoSuchKey", "The specified key does not exist.", Key=name)
            )
        size, md5 = found
        fault = None
        if core.injector.fire("results_cut"):
            fault = "cut"
        elif core.injector.fire("results_stall"):
            fault = "stalled"
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/x-ndjson", "ETag": f'"{md5}"'}
        )
        response.content_length = size
        if fault is not None:
            response.force_close()  # the connection ends with the handler
        core.count("results", fault or "200")
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):  # the client went away: nobody listens
            await _send_file(response, path, size // 2 if fault else size)
            if fault == "stalled":
                await asyncio.sleep(core.injector.faults.hang_s)
        return response


def _size_and_md5(path: Path, outcome: Outcome | None) -> tuple[int, str] | None:
    """The results file's size and MD5, None when there is none. Taken from the
    processing outcome that wrote the file when there is one, else (an older file still
    served while a newer object is ingesting) computed."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if outcome is not None and outcome.results_md5 is not None and outcome.results_size == size:
        return size, outcome.results_md5
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return size, digest.hexdigest()


async def _send_file(response: web.StreamResponse, path: Path, limit: int) -> None:
    """Send the first ``limit`` bytes of ``path``. Opening and closing run to the end even
    when the handler is cancelled (a client that has read all it wanted hangs up), so
    the file is never left open."""

    def open_it() -> IO[bytes]:
        return path.open("rb")

    f = await to_the_end(open_it)
    try:
        sent = 0
        while sent < limit:
            chunk = await asyncio.to_thread(f.read, min(CHUNK, limit - sent))
            if not chunk:
                break
            await response.write(chunk)
            sent += len(chunk)
    finally:
        await to_the_end(f.close)
