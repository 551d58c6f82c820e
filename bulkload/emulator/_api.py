"""The SafetyKit Data API side of the emulator: import, status, download-url, state.

Order of checks on every API call: injected hang and latency, then authentication, then
the request's own validity (namespace, body, known request id), then injected 429/5xx
faults, then malformed-answer faults, then the real answer. So a 401/400/404 is never
masked by a fault, and the first-N fault counters count only calls that would otherwise
have succeeded. A malformed answer is counted as ``malformed:<shape>``, not by its status.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from ._core import Core
from ._malformed import (
    CREATES_REQUEST,
    IMPORT_MALFORMED_SHAPES,
    STATUS_MALFORMED_SHAPES,
    MalformedResponse,
    malformed_answer,
)
from ._records import NAMESPACE_RE, RequestRecord

__all__ = ["ApiHandlers"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": message}, status=status, headers=headers)


class ApiHandlers:
    """aiohttp handlers of the JSON API, bound to one :class:`Core`."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/data/{namespace}/import", self._counted("import", self.create)),
            web.post(
                "/v1/data/{namespace}/requests/upload-url", self._counted("import", self.create)
            ),
            web.get(
                "/v1/data/{namespace}/requests/{request_id}/results/download-url",
                self._counted("results_url", self.download_url),
            ),
            web.get(
                "/v1/data/{namespace}/requests/{request_id}",
                self._counted("status", self.status),
            ),
            web.get("/_emulator/state", self.state),
        ]

    def _counted(self, endpoint: str, handler: Handler) -> Handler:
        """Wrap an API handler: injected delays first, then count the answer's status."""
        core = self.core

        async def wrapped(request: web.Request) -> web.StreamResponse:
            core.arrived(endpoint)
            try:
                faults = core.injector.faults
                if core.injector.fire("hang"):
                    await asyncio.sleep(faults.hang_s)
                if faults.latency_s > 0:
                    await asyncio.sleep(faults.latency_s)
                response = await handler(request)
            except asyncio.CancelledError:
                # The client gave up (handler cancellation is on), e.g. during a hang.
                core.count(endpoint, "cancelled")
                raise
            except web.HTTPException as exc:
                core.count(endpoint, str(exc.status))
                raise
            if isinstance(response, MalformedResponse):
                core.count(endpoint, f"malformed:{response.shape}")
            else:
                core.count(endpoint, str(response.status))
            return response

        return wrapped

    # --- shared checks ------------------------------------------------------------------

    def _check_auth(self, request: web.Request) -> web.Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.core.settings.api_key:
            return json_error(
                401,
                "Invalid or missing API key: send 'Authorization: Bearer <API key>'.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return None

    def _check_namespace(self, namespace: str) -> web.Response | None:
        if not NAMESPACE_RE.match(namespace):
            return json_error(
                400,
                f"Invalid namespace {namespace!r}: use only the characters 0-9 a-z A-Z _ -.",
            )
        return None

    def _find(self, request: web.Request) -> RequestRecord | web.Response:
        namespace = request.match_info["namespace"]
        request_id = request.match_info["request_id"]
        rejected = self._check_auth(request) or self._check_namespace(namespace)
        if rejected is not None:
            return rejected
        rec = self.core.requests.get(request_id)
        if rec is None or rec.namespace != namespace:
            return json_error(404, f"Request {request_id!r} not found in namespace {namespace!r}.")
        return rec

    def _status_fault(self) -> web.Response | None:
        if self.core.injector.fire("status_5xx"):
            return json_error(self.core.injector.faults.status_5xx_status, "Internal error.")
        return None

    # --- handlers -----------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.StreamResponse:
        """POST .../import (and the SDK's .../requests/upload-url): one new request."""
        core = self.core
        namespace = request.match_info["namespace"]
        rejected = self._check_auth(request) or self._check_namespace(namespace)
        if rejected is not None:
            return rejected
        raw = await request.read()
        if raw.strip():
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = None
            if not isinstance(body, dict):
                return json_error(400, "The request body must be empty or a JSON object.")
        faults = core.injector.faults
        if core.injector.fire("import_429"):
            delay = faults.retry_after_s
            return json_error(
                429,
                "Rate limit exceeded; retry later.",
                headers={
                    # HTTP's Retry-After takes whole seconds; the SDK prefers the exact
                    # retry-after-ms when present.
                    "Retry-After": str(math.ceil(delay)),
                    "retry-after-ms": str(round(delay * 1000)),
                },
            )
        if core.injector.fire("import_5xx"):
            return json_error(faults.import_5xx_status, "Internal error.")
        if core.injector.fire("import_malformed"):
            shape = core.injector.shape("import_malformed", IMPORT_MALFORMED_SHAPES)
            creates = shape in CREATES_REQUEST
            rec, url = core.create_request(namespace, register=creates)
            if creates:
                await core.persist()
            body = core.import_body(rec, url)
            return await malformed_answer(request, shape, body, bucket=core.settings.bucket)
        rec, url = core.create_request(namespace)
        await core.persist()
        return json_response(core.import_body(rec, url))

    async def status(self, request: web.Request) -> web.StreamResponse:
        """GET .../requests/{request_id}: status, and results metadata once succeeded."""
        return await self._status_answer(request, with_inline_data=True)

    async def download_url(self, request: web.Request) -> web.StreamResponse:
        """GET .../requests/{request_id}/results/download-url."""
        return await self._status_answer(request, with_inline_data=False)

    async def _status_answer(
        self, request: web.Request, *, with_inline_data: bool
    ) -> web.StreamResponse:
        found = self._find(request)
        if isinstance(found, web.Response):
            return found
        rejected = self._status_fault()
        if rejected is not None:
            return rejected
        core = self.core
        # A malformed answer is the server's own, mangled on the way (or by a bug in
        # writing it): the request advances as it would have.
        rec = await core.resolve(found)
        body = core.status_body(rec, with_inline_data=with_inline_data)
        if core.injector.fire("status_malformed"):
            shape = core.injector.shape("status_malformed", STATUS_MALFORMED_SHAPES)
            return await malformed_answer(request, shape, body, bucket=core.settings.bucket)
        return json_response(body)

    async def state(self, request: web.Request) -> web.Response:
        """GET /_emulator/state: the inspection data, no authentication."""
        return json_response(self.core.snapshot())
