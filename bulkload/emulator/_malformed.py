"""Malformed API answers: what proxies, gateways and broken deployments send with a 200.

Each *shape* is one way an answer goes wrong (``Faults.import_malformed_shape`` and
``Faults.status_malformed_shape`` pick one, or ``"cycle"`` through them all):

- ``html``: a proxy's error page, ``text/html``, status 200;
- ``truncated-json``: the JSON answer cut in half, with a Content-Length that matches
  what is sent (so only the JSON parser can tell);
- ``short-body``: the whole answer's Content-Length, half of it, then the connection
  closes;
- ``empty``: status 200 and no body at all;
- ``json-array``: the answer wrapped in a JSON array;
- import answers: ``upload-url-missing``, ``upload-url-null``, ``upload-url-relative``
  (only the path and query), ``upload-url-s3-uri`` (``s3://bucket/key``: absolute, but
  no URL to PUT to), ``request-id-missing``, ``request-id-null``,
  ``expires-at-unparseable`` (ISO-looking, but month 13);
- status and download-url answers: ``status-missing``, ``status-null``,
  ``status-not-string``.

Which import answers create a request: those that name it and hand over a usable key
(``upload-url-*`` and ``expires-at-unparseable``: a deployment bug after the request
was made, so the client can see its id, record it and abandon it). The others create
none: the id is missing, or the answer never parses, and a request the client can never
see would be an orphan that no test could account for (a real server might leave one
behind; it would expire unused, which the emulator does not model). Their body still
looks real: it describes a request that was never registered.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
from aiohttp import web

from ._faults import IMPORT_MALFORMED_SHAPES, STATUS_MALFORMED_SHAPES

__all__ = [
    "CREATES_REQUEST",
    "IMPORT_MALFORMED_SHAPES",
    "STATUS_MALFORMED_SHAPES",
    "MalformedResponse",
    "malformed_answer",
]

#: Import shapes whose answer names a request the client can see: it is created.
CREATES_REQUEST = frozenset(
    {
        "upload-url-missing",
        "upload-url-null",
        "upload-url-relative",
        "upload-url-s3-uri",
        "expires-at-unparseable",
    }
)
_HTML = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    b"<body><h1>Bad Gateway</h1><p>The proxy server received an invalid response from "
    b"an upstream server.</p><hr><address>corporate-proxy</address></body></html>\n"
)


class MalformedResponse(web.StreamResponse):
    """A malformed answer; ``shape`` names it for the counters (``malformed:<shape>``)."""

    def __init__(self, shape: str, *, content_type: str, length: int) -> None:
        super().__init__(status=200, headers={"Content-Type": content_type})
        self.content_length = length
        self.shape = shape


def _mangled(shape: str, body: dict[str, Any], *, bucket: str) -> Any:
    """The JSON value a field-level shape sends instead of ``body``."""
    changed = copy.copy(body)
    url = str(body.get("upload_url", ""))
    if shape == "upload-url-missing":
        del changed["upload_url"]
    elif shape == "upload-url-null":
        changed["upload_url"] = None
    elif shape == "upload-url-relative":
        changed["upload_url"] = "/" + url.split("/", 3)[3]
    elif shape == "upload-url-s3-uri":
        changed["upload_url"] = f"s3://{bucket}/{body['objectKey']}"
    elif shape == "request-id-missing":
        del changed["requestId"]
    elif shape == "request-id-null":
        changed["requestId"] = None
    elif shape == "expires-at-unparseable":
        changed["expires_at"] = str(body["expires_at"])[:4] + "-13-45T25:61:61.000Z"
    elif shape == "status-missing":
        del changed["status"]
    elif shape == "status-null":
        changed["status"] = None
    elif shape == "status-not-string":
        changed["status"] = {"value": body["status"]}
    elif shape == "json-array":
        return [body]
    else:
        raise ValueError(f"not a field-level shape: {shape!r}")
    return changed


async def malformed_answer(
    request: web.Request, shape: str, body: dict[str, Any], *, bucket: str
) -> MalformedResponse:
    """Send ``body`` (the answer a healthy server would give) malformed as ``shape``."""
    if shape == "html":
        return await _send(request, shape, "text/html; charset=utf-8", _HTML)
    if shape == "empty":
        return await _send(request, shape, "application/json", b"")
    whole = orjson.dumps(body)
    if shape == "truncated-json":
        return await _send(request, shape, "application/json", whole[: len(whole) // 2])
    if shape == "short-body":
        response = MalformedResponse(shape, content_type="application/json", length=len(whole))
        # Half the promised bytes, then the connection closes, as when a proxy or the
        # server dies mid-answer.
        response.force_close()
        await response.prepare(request)
        await response.write(whole[: len(whole) // 2])
        return response
    return await _send(
        request, shape, "application/json", orjson.dumps(_mangled(shape, body, bucket=bucket))
    )


async def _send(
    request: web.Request, shape: str, content_type: str, payload: bytes
) -> MalformedResponse:
    response = MalformedResponse(shape, content_type=content_type, length=len(payload))
    await response.prepare(request)
    await response.write(payload)
    return response
