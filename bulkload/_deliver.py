"""Delivering one shard: import call just in time, PUT, retries, and the journal around them.

The order per shard is the crash-safety argument ("write down before you act"): the shard
is journaled before its import call (by the pipeline), the requestId and URL are journaled
before the PUT, and the outcome after it. A crash at any point leaves a journal from which a
rerun finishes the shard: with the same URL (same requestId) while it is valid, else with a
new one, never by creating a second request for a shard that already holds data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ._api import ApiClient, ImportTicket
from ._errors import ApiError
from ._manifest import RunState, now_iso
from ._progress import Stats
from ._retry import RetryPolicy
from ._shard import ShardInfo
from ._throttle import AdaptiveLimit, RateLimiter
from ._upload import PutFailure, put_shard

log = logging.getLogger("bulkload")

#: Fresh URLs fetched for one shard after "Request has expired" before it counts as failed:
#: one expiry is normal after a long pause, three in a row mean a clock or server problem.
MAX_RENEWALS = 3


@dataclass(slots=True)
class Deliverer:
    """Uploads shards of one run; shared by the upload workers."""

    namespace: str
    state: RunState
    api: ApiClient
    session: aiohttp.ClientSession
    limit: AdaptiveLimit
    policy: RetryPolicy
    stats: Stats
    bandwidth: RateLimiter | None = None
    keep_files: bool = False
    #: Whether any import call has succeeded: before that, an API that cannot be reached or
    #: keeps failing is a fatal error of the run (exit 1), after it a failure of one shard
    #: (exit 4), the others going on.
    api_ok: bool = False
    failed: list[int] = field(default_factory=list)

    async def deliver(self, shard: ShardInfo) -> None:
        """Upload ``shard`` until it is stored or has failed for good (journaled either way).

        Raises ``AuthError`` (and ``ApiError`` while the API was never reachable), which
        stop the whole run. On cancellation: the PUT is abandoned; the journal has its URL.
        """
        entry = self.state.shards[shard.index]
        attempts = 0
        renewals = 0
        while True:
            ticket = entry.ticket()
            if ticket is not None and not ticket.usable():
                await self._record({"t": "abandon", "index": shard.index, "reason": "URL expired"})
                ticket = None
            if ticket is None:
                try:
                    ticket = await self.api.create_import(self.namespace)
                except ApiError as exc:
                    if not self.api_ok or (exc.status is not None and exc.status < 500):
                        raise  # the key, the base URL, the namespace: every shard would fail
                    await self._fail(shard, attempts, str(exc))
                    return
                self.api_ok = True
                await self._record(_ticket_event(shard.index, ticket))
            attempts += 1
            sent = 0

            def count(n: int) -> None:
                nonlocal sent
                sent += n
                self.stats.bytes_uploaded += n

            try:
                etag = await put_shard(
                    self.session,
                    ticket.upload_url,
                    shard.pieces,
                    on_bytes=count,
                    bandwidth=self.bandwidth,
                )
                if _is_md5(etag) and etag.lower() != shard.md5:
                    raise PutFailure(
                        f"shard {shard.index}: the stored object's ETag {etag} is not the "
                        f"shard's MD5 {shard.md5}: the body was damaged on the way, or an "
                        "input file changed while it was being sent",
                        "retry",
                    )
            except PutFailure as failure:
                self.stats.bytes_uploaded -= sent
                if failure.kind == "expired" and renewals < MAX_RENEWALS:
                    renewals += 1
                    await self._record(
                        {"t": "abandon", "index": shard.index, "reason": str(failure)}
                    )
                    continue
                if failure.kind == "throttled":
                    self.limit.throttled(failure.retry_after)
                if failure.kind == "fatal" or attempts > self.policy.max_retries:
                    await self._fail(shard, attempts, str(failure))
                    return
                log.info(
                    "shard %d: attempt %d failed: %s; retrying", shard.index, attempts, failure
                )
                await asyncio.sleep(self.policy.delay(attempts - 1, failure.retry_after))
                continue
            await self._record(
                {
                    "t": "uploaded",
                    "index": shard.index,
                    "etag": etag,
                    "attempts": attempts,
                    "at": now_iso(),
                }
            )
            await self.limit.succeeded()
            self.stats.uploaded += 1
            if not self.keep_files:
                await asyncio.to_thread(remove_shard_file, shard)
            return

    async def _fail(self, shard: ShardInfo, attempts: int, error: str) -> None:
        log.warning(
            "shard %d: upload failed after %d attempt(s) (last: %s); rerun the same command "
            "to retry it",
            shard.index,
            attempts,
            error,
        )
        await self._record(
            {"t": "failed", "index": shard.index, "error": error, "attempts": attempts}
        )
        self.stats.failed += 1
        self.failed.append(shard.index)

    async def _record(self, event: dict[str, Any]) -> None:
        await asyncio.to_thread(self.state.record, event)


def remove_shard_file(shard: ShardInfo) -> None:
    with contextlib.suppress(FileNotFoundError):
        shard.path.unlink()


def _ticket_event(index: int, ticket: ImportTicket) -> dict[str, Any]:
    return {
        "t": "ticket",
        "index": index,
        "request_id": ticket.request_id,
        "object_key": ticket.object_key,
        "upload_url": ticket.upload_url,
        "expires_at": ticket.expires_at.isoformat() if ticket.expires_at else None,
    }


def _is_md5(etag: str) -> bool:
    """A plain single-part PUT's ETag is the hex MD5; multipart ones carry a ``-N`` suffix."""
    return len(etag) == 32 and all(c in "0123456789abcdefABCDEF" for c in etag)
