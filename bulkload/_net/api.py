"""The SafetyKit Data API client: ask for an upload URL, follow a request, fetch its results.

The single seam where aiohttp's exceptions and the API's answers become bulkload's
(``ApiError``, ``AuthError``). Every call is paced (``--max-rps``), retried by the one
``RetryPolicy``, and backs off together with the uploads when the server answers 429.

What the server "really said" is decided here, once, for every call and download: an
answer counts only when it is whole (its ``Content-Length`` arrived) and has the shape the
API documents. A proxy's HTML page with status 200, a JSON body cut short, an empty body,
an array, a missing or null ``upload_url`` or ``requestId``, an ``upload_url`` that is not
an absolute http(s) URL, an ``expires_at`` that does not parse: each is retried with
backoff like a 5xx, and described (status, content type, first bytes) if it persists.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import orjson
from yarl import URL

from .._config import Endpoint
from .._errors import ApiError, AuthError, option
from .._model import ImportTicket, RequestStatus, parse_time
from .._redact import Secret, redact_text, redact_url
from .retry import RetryPolicy, is_retryable_status, parse_retry_after
from .session import TRANSIENT_ERRORS, describe_exception, is_loopback_host, make_session, tls_hint
from .throttle import AdaptiveLimit, RateLimiter, api_rate

log = logging.getLogger("bulkload")

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
#: API answers are small JSON documents; anything bigger is not the API talking.
_MAX_BODY = 1 << 20
#: The documented path first; the official SDK 0.11.0a1 calls the same operation here.
_IMPORT_PATHS = ("/v1/data/{ns}/import", "/v1/data/{ns}/requests/upload-url")
#: Results files are streamed to disk in slices of this size.
_DOWNLOAD_SLICE = 1 << 20
#: A download cut short (reset, proxy timeout) raises ClientPayloadError; worth a retry.
_DOWNLOAD_ERRORS: tuple[type[BaseException], ...] = (
    *TRANSIENT_ERRORS,
    aiohttp.ClientPayloadError,
)


class BadAnswer(Exception):
    """An answer that is not the API's (or not whole): worth another try, like a 5xx."""


class DownloadFailure(Exception):
    """One attempt at a results download that did not give a complete, checked file.

    ``expired``: the URL's time is up (ask for a fresh one); ``retry``: worth another try
    (cut, reset, stalled, 5xx, damaged); anything else is final."""

    def __init__(self, message: str, *, expired: bool = False, retry: bool = False) -> None:
        super().__init__(message)
        self.expired = expired
        self.retry = retry


def describe_answer(status: int, headers: Mapping[str, str], body: bytes, limit: int = 120) -> str:
    """What came back, for a person: ``HTTP 200, text/html, 1,024 bytes: <html>...``."""
    kind = headers.get("Content-Type") or "no content type"
    if not body:
        return f"HTTP {status}, {kind}, an empty body"
    text = " ".join(body[:limit].decode("utf-8", "replace").split())
    more = "…" if len(body) > limit else ""
    return f"HTTP {status}, {kind}, {len(body):,} bytes: {redact_text(text)}{more}"


def _is_web_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _ticket(doc: dict[str, Any]) -> ImportTicket:
    request_id = doc.get("requestId")
    if not isinstance(request_id, str) or not request_id:
        raise BadAnswer(f"its requestId is {_shown(request_id)}, not a request id")
    url = doc.get("upload_url")
    if not _is_web_url(url):
        raise BadAnswer(f"its upload_url is {_shown(url)}, not an absolute http(s) URL")
    assert isinstance(url, str)
    expires = doc.get("expires_at")
    expires_at = parse_time(expires)
    if expires is not None and expires_at is None:
        raise BadAnswer(f"its expires_at {_shown(expires)} is not a time")
    key = doc.get("objectKey")
    return ImportTicket(request_id, key if isinstance(key, str) else "", url, expires_at)


def _status_of(request_id: str) -> Callable[[dict[str, Any]], RequestStatus]:
    def parse(doc: dict[str, Any]) -> RequestStatus:
        status = doc.get("status")
        if not isinstance(status, str) or not status:
            raise BadAnswer(f"its status is {_shown(status)}, not a processing status")
        data_url = doc.get("data_url") or None
        if data_url is not None and not _is_web_url(data_url):
            raise BadAnswer("its data_url is not an absolute http(s) URL")
        count = doc.get("data_count")
        summary = doc.get("error_summary")
        return RequestStatus(
            request_id=request_id,
            status=status,
            error_summary=str(summary) if summary else None,
            data_url=data_url,
            data_count=count if isinstance(count, int) and not isinstance(count, bool) else None,
            data_expires_at=parse_time(doc.get("data_expires_at")),
        )

    return parse


def _shown(value: object) -> str:
    if value is None:
        return "missing or null"
    text = repr(value)
    return redact_text(text if len(text) <= 60 else text[:60] + "…")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientOptions:
    """How the client talks: per-attempt timeout, TLS, retries, pace. The same for a load,
    ``status``/``wait`` and the Dask runner."""

    timeout: float = 60.0
    ca_bundle: Path | None = None
    max_retries: int = 6
    retry_after_cap: float = 300.0
    max_rps: float | None = None


def open_client(endpoint: Endpoint, options: ClientOptions) -> ApiClient:
    """The one place an HTTP session and an API client are built; close with ``aclose``."""
    if endpoint.base_url.startswith("http://") and not is_loopback_host(endpoint.base_url):
        log.warning(
            "the API key will travel unencrypted over plain http to %s; "
            "use https unless this is a trusted test server",
            endpoint.base_url,
        )
    session = make_session(timeout=options.timeout, ca_bundle=options.ca_bundle)
    policy = RetryPolicy(max_retries=options.max_retries, retry_after_cap=options.retry_after_cap)
    return ApiClient(
        session,
        endpoint.base_url,
        endpoint.api_key.reveal(),
        policy=policy,
        rate=api_rate(options.max_rps),
    )


class ApiClient:
    """Calls to ``{base_url}/v1/data/...`` with the API key. The key is never in a repr."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str,
        *,
        policy: RetryPolicy,
        rate: RateLimiter | None = None,
        limit: AdaptiveLimit | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")
        self._key = Secret(api_key)
        self._policy = policy
        self._rate = rate
        self._limit = limit
        self._sleep = sleep
        self._import_path = 0

    def __repr__(self) -> str:
        return f"ApiClient(base_url={self.base_url!r})"

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP session: uploads share its connection pool."""
        return self._session

    @property
    def policy(self) -> RetryPolicy:
        return self._policy

    def paced_by(self, limit: AdaptiveLimit) -> ApiClient:
        """The same client (session, key, pace), whose calls also wait out the pauses of a
        run's adaptive upload limit (a 429 on a call slows the uploads, and the reverse)."""
        client = copy.copy(self)
        client._limit = limit
        client._import_path = self._import_path
        return client

    async def aclose(self) -> None:
        """Close the session. On cancellation: it is closed all the same."""
        await asyncio.shield(self._session.close())

    async def create_import(self, namespace: str) -> ImportTicket:
        """One import request: a requestId and its pre-signed upload URL."""
        while True:
            path = _IMPORT_PATHS[self._import_path].format(ns=namespace)
            try:
                return await self._call("POST", path, _ticket, body=b"{}")
            except ApiError as exc:
                # A deployment that only knows the SDK's path answers 404/405 on ours.
                if exc.status in (404, 405) and self._import_path + 1 < len(_IMPORT_PATHS):
                    self._import_path += 1
                    continue
                raise

    async def get_status(self, namespace: str, request_id: str) -> RequestStatus:
        path = f"/v1/data/{namespace}/requests/{request_id}"
        return await self._call("GET", path, _status_of(request_id))

    async def get_results_url(self, namespace: str, request_id: str) -> RequestStatus:
        path = f"/v1/data/{namespace}/requests/{request_id}/results/download-url"
        return await self._call("GET", path, _status_of(request_id))

    async def _call(
        self,
        method: str,
        path: str,
        parse: Callable[[dict[str, Any]], T],
        *,
        body: bytes | None = None,
    ) -> T:
        url = self.base_url + path
        what = f"{method} {path}"
        headers = {"Authorization": f"Bearer {self._key.reveal()}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        last = ""
        strange = False  # the last failure was an answer that was not the API's
        for attempt in range(self._policy.max_retries + 1):
            if self._limit is not None:
                await self._limit.wait_pause()
            if self._rate is not None:
                await self._rate.acquire()
            retry_after: float | None = None
            try:
                async with self._session.request(method, url, data=body, headers=headers) as resp:
                    status = resp.status
                    resp_headers = resp.headers
                    raw = await _read_capped(resp, _MAX_BODY)
            except aiohttp.ClientSSLError as exc:
                # Not worth retrying: the same certificate will be refused again.
                raise ApiError(f"{what}: {tls_hint(self.base_url, exc)}") from exc
            except aiohttp.ClientPayloadError as exc:
                last, strange = f"the answer was cut short ({describe_exception(exc)})", True
            except TRANSIENT_ERRORS as exc:
                last, strange = describe_exception(exc), False
            else:
                if status == 200:
                    try:
                        return parse(_json_object(raw))
                    except BadAnswer as bad:
                        answer = describe_answer(status, resp_headers, raw)
                        last, strange = f"{bad} ({answer})", True
                else:
                    excerpt = _excerpt(raw)
                    if status in (401, 403):
                        raise AuthError(
                            f"{what}: SafetyKit refused the API key (HTTP {status}: {excerpt}). "
                            "Check SAFETYKIT_API_KEY "
                            f"({option('or --api-key-file', 'or api_key=')}) and that the key "
                            "may use this namespace.",
                            status=status,
                            body=excerpt,
                        )
                    if not is_retryable_status(status, resp_headers):
                        hint = (
                            f"check {option('--base-url', 'base_url')} and the namespace"
                            if status == 404
                            else "this is not worth retrying as is"
                        )
                        raise ApiError(
                            f"{what}: HTTP {status}: {excerpt}; {hint}", status=status, body=excerpt
                        )
                    last, strange = f"HTTP {status}: {excerpt}", False
                    retry_after = parse_retry_after(resp_headers)
                    if status == 429 and self._limit is not None:
                        self._limit.throttled(retry_after)
            if attempt < self._policy.max_retries:
                await self._sleep(self._policy.delay(attempt, retry_after))
        advice = (
            f"the answers are not SafetyKit's: is {option('--base-url', 'base_url')} "
            f"({self.base_url}) the API root, e.g. https://api.safetykit.com, and is no proxy "
            "answering in its place?"
            if strange
            else f"check that {self.base_url} is reachable, or raise "
            f"{option('--max-retries', 'max_retries')}"
        )
        raise ApiError(
            f"{what} failed after {self._policy.max_retries + 1} attempts (last: {last}); {advice}",
            status=200 if strange else None,
            transient=True,
        )

    async def download(self, url: str, dest: Path) -> int:
        """One attempt to fetch a results file (a pre-signed URL: no API key goes with it)
        to ``dest``; the byte count. The file counts only when whole: its bytes are the
        ``Content-Length`` the store announced, and their MD5 is the ETag where the ETag is
        an MD5. Raises ``DownloadFailure``; ``dest`` is untouched unless it succeeds.

        On cancellation: the partial file is removed."""
        part = dest.with_name(dest.name + ".part")
        where = redact_url(url)
        try:
            async with self._session.get(URL(url, encoded=True)) as resp:
                if resp.status != 200:
                    raw = await _read_capped(resp, 64 * 1024)
                    raise _download_refused(where, resp.status, resp.headers, raw)
                declared = resp.content_length
                etag = resp.headers.get("ETag", "").strip().strip('"')
                digest, size = await _stream_to(resp, part)
                encryption = server_side_encryption(resp.headers)
        except aiohttp.ClientSSLError as exc:
            await asyncio.to_thread(_unlink, part)
            raise DownloadFailure(f"GET {where}: {tls_hint(url, exc)}") from exc
        except _DOWNLOAD_ERRORS as exc:
            await asyncio.to_thread(_unlink, part)
            raise DownloadFailure(f"GET {where}: {describe_exception(exc)}", retry=True) from exc
        except BaseException:
            await asyncio.to_thread(_unlink, part)
            raise
        problem = None
        if declared is not None and size != declared:
            problem = f"it ended after {size:,} of {declared:,} bytes"
        elif is_md5(etag) and encryption is None and etag.lower() != digest:
            problem = f"its MD5 {digest} is not the store's ETag {etag}: damaged on the way"
        if problem is not None:
            await asyncio.to_thread(_unlink, part)
            raise DownloadFailure(f"GET {where}: {problem}", retry=True)
        await asyncio.to_thread(os.replace, part, dest)
        return size


async def _read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    """The whole body (up to ``cap`` bytes). ``StreamReader.read(n)`` returns what has
    arrived so far, not n bytes, so read until the end; a body that ends before its
    Content-Length raises ``ClientPayloadError``."""
    parts: list[bytes] = []
    size = 0
    while size < cap and (chunk := await resp.content.read(cap - size)):
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


async def _stream_to(resp: aiohttp.ClientResponse, path: Path) -> tuple[str, int]:
    """Write the body to ``path`` in slices (off the loop); its hex MD5 and size."""
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    f = await asyncio.to_thread(open, path, "wb")
    try:
        async for block in resp.content.iter_chunked(_DOWNLOAD_SLICE):
            digest.update(block)
            size += len(block)
            await asyncio.to_thread(f.write, block)
    finally:
        await asyncio.to_thread(f.close)
    return digest.hexdigest(), size


def _download_refused(
    where: str, status: int, headers: Mapping[str, str], raw: bytes
) -> DownloadFailure:
    code, message = s3_error(raw)
    if code:
        text = f"GET {where}: HTTP {status} {code}: {message}".rstrip(": ")
    else:
        text = f"GET {where}: {describe_answer(status, headers, raw)}"
    if status == 403 and code == "AccessDenied" and "expired" in message.lower():
        return DownloadFailure(text, expired=True)
    return DownloadFailure(text, retry=is_retryable_status(status, headers))


def s3_error(body: bytes) -> tuple[str, str]:
    """S3's XML error: only Code and Message (the rest can echo signature material)."""
    text = body[: 64 * 1024].decode("utf-8", "replace")
    return _xml_field(text, "Code"), redact_text(_xml_field(text, "Message"))


def _xml_field(text: str, name: str) -> str:
    start = text.find(f"<{name}>")
    end = text.find(f"</{name}>", start)
    return text[start + len(name) + 2 : end] if 0 <= start < end else ""


def server_side_encryption(headers: Mapping[str, str]) -> str | None:
    """The encryption that makes a store's ETag something other than the body's MD5, or
    None when the ETag is the MD5 (plaintext, SSE-S3). S3: SSE-KMS (``aws:kms``), DSSE-KMS
    (``aws:kms:dsse``) and SSE-C (a customer algorithm header) give opaque ETags."""
    sse = headers.get("x-amz-server-side-encryption", "").strip()
    if sse.lower().startswith("aws:kms"):
        return f"SSE-KMS ({sse})"
    customer = headers.get("x-amz-server-side-encryption-customer-algorithm", "").strip()
    if customer:
        return f"SSE-C ({customer})"
    return None


def is_md5(etag: str) -> bool:
    """A plain single-part object's ETag is the hex MD5; multipart ones carry a ``-N``
    suffix, and other stores use other shapes."""
    return len(etag) == 32 and all(c in "0123456789abcdefABCDEF" for c in etag)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadAnswer("the answer is not JSON") from None
    if not isinstance(doc, dict):
        raise BadAnswer(f"the answer is a JSON {type(doc).__name__}, not an object")
    return doc


def _excerpt(raw: bytes, limit: int = 200) -> str:
    text = raw[:limit].decode("utf-8", "replace").strip().replace("\n", " ")
    text = redact_text(text)
    return text + ("…" if len(raw) > limit else "") if text else "(empty body)"


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)
