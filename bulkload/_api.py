"""The SafetyKit Data API client: ask for an upload URL, follow a request, find its results.

The single seam where aiohttp's exceptions and the API's error answers become bulkload's
(``ApiError``, ``AuthError``). Every call is paced (``--max-rps``), retried by the one
``RetryPolicy``, and backs off together with the uploads when the server answers 429.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson

from ._errors import ApiError, AuthError
from ._http import TRANSIENT_ERRORS, Secret, describe_exception, tls_hint
from ._retry import RetryPolicy, is_retryable_status, parse_retry_after
from ._throttle import AdaptiveLimit, RateLimiter

Sleep = Callable[[float], Awaitable[None]]
#: API answers are small JSON documents; anything bigger is not the API talking.
_MAX_BODY = 1 << 20
#: The documented path first; the official SDK 0.11.0a1 calls the same operation here.
_IMPORT_PATHS = ("/v1/data/{ns}/import", "/v1/data/{ns}/requests/upload-url")


def parse_time(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ImportTicket:
    """One server-side request waiting for its upload. The URL is the credential: no repr."""

    request_id: str
    object_key: str
    upload_url: str = field(repr=False)
    expires_at: datetime | None

    def usable(self, *, margin: timedelta = timedelta(minutes=2)) -> bool:
        """Whether the URL will still be valid ``margin`` from now (time to send a shard)."""
        return self.expires_at is None or datetime.now(UTC) + margin < self.expires_at


@dataclass(frozen=True, slots=True)
class RequestStatus:
    request_id: str
    status: str
    error_summary: str | None = None
    data_url: str | None = field(default=None, repr=False)
    data_count: int | None = None
    data_expires_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.status in {"succeeded", "failed"}


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

    async def create_import(self, namespace: str) -> ImportTicket:
        """One import request: a requestId and its pre-signed upload URL."""
        while True:
            path = _IMPORT_PATHS[self._import_path].format(ns=namespace)
            try:
                doc = await self._call("POST", path, body=b"{}")
                break
            except ApiError as exc:
                # A deployment that only knows the SDK's path answers 404/405 on ours.
                if exc.status in (404, 405) and self._import_path + 1 < len(_IMPORT_PATHS):
                    self._import_path += 1
                    continue
                raise
        try:
            return ImportTicket(
                request_id=str(doc["requestId"]),
                object_key=str(doc.get("objectKey", "")),
                upload_url=str(doc["upload_url"]),
                expires_at=parse_time(doc.get("expires_at")),
            )
        except KeyError as exc:
            raise ApiError(
                f"POST {path}: the answer has no {exc.args[0]!r}; is --base-url the SafetyKit "
                "API root (e.g. https://api.safetykit.com)?",
                status=200,
            ) from None

    async def get_status(self, namespace: str, request_id: str) -> RequestStatus:
        doc = await self._call("GET", f"/v1/data/{namespace}/requests/{request_id}")
        return _status_from(request_id, doc)

    async def get_results_url(self, namespace: str, request_id: str) -> RequestStatus:
        path = f"/v1/data/{namespace}/requests/{request_id}/results/download-url"
        return _status_from(request_id, await self._call("GET", path))

    async def _call(self, method: str, path: str, *, body: bytes | None = None) -> dict[str, Any]:
        url = self.base_url + path
        what = f"{method} {path}"
        headers = {"Authorization": f"Bearer {self._key.reveal()}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        last = ""
        for attempt in range(self._policy.max_retries + 1):
            if self._limit is not None:
                await self._limit.wait_pause()
            if self._rate is not None:
                await self._rate.acquire()
            retry_after: float | None = None
            try:
                async with self._session.request(method, url, data=body, headers=headers) as resp:
                    raw = await resp.content.read(_MAX_BODY)
                    status = resp.status
                    resp_headers = resp.headers
            except aiohttp.ClientSSLError as exc:
                # Not worth retrying: the same certificate will be refused again.
                raise ApiError(f"{what}: {tls_hint(self.base_url, exc)}") from exc
            except TRANSIENT_ERRORS as exc:
                last = describe_exception(exc)
            else:
                if status == 200:
                    return _json_object(raw, what)
                excerpt = _excerpt(raw)
                if status in (401, 403):
                    raise AuthError(
                        f"{what}: SafetyKit refused the API key (HTTP {status}: {excerpt}). "
                        "Check SAFETYKIT_API_KEY (or --api-key-file) and that the key may use "
                        "this namespace.",
                        status=status,
                        body=excerpt,
                    )
                if not is_retryable_status(status, resp_headers):
                    hint = (
                        "check --base-url and the namespace"
                        if status == 404
                        else "this is not worth retrying as is"
                    )
                    raise ApiError(
                        f"{what}: HTTP {status}: {excerpt}; {hint}", status=status, body=excerpt
                    )
                last = f"HTTP {status}: {excerpt}"
                retry_after = parse_retry_after(resp_headers)
                if status == 429 and self._limit is not None:
                    self._limit.throttled(retry_after)
            if attempt < self._policy.max_retries:
                await self._sleep(self._policy.delay(attempt, retry_after))
        raise ApiError(
            f"{what} failed after {self._policy.max_retries + 1} attempts (last: {last}); "
            f"check that {self.base_url} is reachable, or raise --max-retries",
        )


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    with contextlib.suppress(orjson.JSONDecodeError):
        doc = orjson.loads(raw)
        if isinstance(doc, dict):
            return doc
    raise ApiError(f"{what}: the answer is not a JSON object: {_excerpt(raw)}", status=200)


def _excerpt(raw: bytes, limit: int = 200) -> str:
    text = raw[:limit].decode("utf-8", "replace").strip().replace("\n", " ")
    return text + ("…" if len(raw) > limit else "") if text else "(empty body)"


def _status_from(request_id: str, doc: dict[str, Any]) -> RequestStatus:
    count = doc.get("data_count")
    return RequestStatus(
        request_id=str(doc.get("requestId", request_id)),
        status=str(doc.get("status", "unknown")),
        error_summary=doc.get("error_summary") or None,
        data_url=doc.get("data_url") or None,
        data_count=count if isinstance(count, int) else None,
        data_expires_at=parse_time(doc.get("data_expires_at")),
    )
