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
from collections.abc import Callable
from dataclasses import dataclass, field

from .._errors import ApiError, option
from .._journal import RunState, events, now_iso
from .._model import ImportTicket
from .._net import (
    AdaptiveLimit,
    ApiClient,
    PutFailure,
    PutOutcome,
    RateLimiter,
    Stored,
    is_md5,
    put_shard,
)
from .._redact import redact_text
from .progress import Stats
from .shard import ShardInfo

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
    limit: AdaptiveLimit
    stats: Stats
    bandwidth: RateLimiter | None = None
    keep_files: bool = False
    #: Compare an ETag that looks like an MD5 with the shard's MD5 (off only for stores
    #: whose ETags are opaque 32-hex strings without saying so).
    verify_etag: bool = True
    #: Send each shard's MD5 as Content-MD5, so that the store checks the body itself.
    content_md5: bool = False
    #: Told of each upload once it is journaled (the ledger of an incremental load).
    on_uploaded: Callable[[int, str], None] | None = None
    #: Whether any import call has succeeded: before that, an API that cannot be reached or
    #: keeps failing is a fatal error of the run (exit 1), after it a failure of one shard
    #: (exit 4), the others going on.
    api_ok: bool = False
    failed: list[int] = field(default_factory=list)

    async def deliver(self, shard: ShardInfo) -> None:
        """Upload ``shard`` until it is stored or has failed for good (journaled either way).

        Raises ``AuthError``, and ``ApiError`` while the API has never answered properly or
        for an error that every shard would meet (the base URL, the namespace): those stop
        the whole run. On cancellation: the PUT is abandoned; the journal has its URL.
        """
        entry = self.state.shards[shard.index]
        attempts = 0
        renewals = 0
        while True:
            ticket = entry.ticket()
            if ticket is not None and not ticket.usable():
                await self._record(events.Abandon(index=shard.index, reason="URL expired"))
                ticket = None
            if ticket is None:
                try:
                    ticket = await self.api.create_import(self.namespace)
                except ApiError as exc:
                    if not self.api_ok or not exc.transient:
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
                stored = await put_shard(
                    self.api.session,
                    ticket.upload_url,
                    shard.pieces,
                    on_bytes=count,
                    bandwidth=self.bandwidth,
                    content_md5=shard.md5 if self.content_md5 else None,
                )
                verified, note = self._check_etag(shard, stored)
                if self.content_md5 and not verified:
                    # The store took the body only because it matched Content-MD5.
                    verified, note = True, f"checked by the store against Content-MD5 ({note})"
            except PutFailure as failure:
                self.stats.bytes_uploaded -= sent
                if failure.kind is PutOutcome.EXPIRED and renewals < MAX_RENEWALS:
                    renewals += 1
                    await self._record(events.Abandon(index=shard.index, reason=str(failure)))
                    continue
                if failure.kind is PutOutcome.THROTTLED:
                    self.limit.throttled(failure.retry_after)
                final = failure.kind in (PutOutcome.FATAL, PutOutcome.SOURCE)
                if final or attempts > self.api.policy.max_retries:
                    rerun_helps = failure.kind is not PutOutcome.SOURCE
                    await self._fail(shard, attempts, str(failure), rerun_helps=rerun_helps)
                    return
                log.info(
                    "shard %d: attempt %d failed: %s; retrying", shard.index, attempts, failure
                )
                await asyncio.sleep(self.api.policy.delay(attempts - 1, failure.retry_after))
                continue
            await self._record(
                events.Uploaded(
                    index=shard.index,
                    etag=stored.etag,
                    etag_verified=verified,
                    etag_note=note,
                    attempts=attempts,
                    at=now_iso(),
                )
            )
            if self.on_uploaded is not None:
                self.on_uploaded(shard.index, ticket.request_id)
            await self.limit.succeeded()
            self.stats.uploaded += 1
            self.stats.records_uploaded += shard.records
            self.stats.bytes_confirmed += shard.bytes
            if not self.keep_files:
                await asyncio.to_thread(remove_shard_file, shard)
            return

    def _check_etag(self, shard: ShardInfo, stored: Stored) -> tuple[bool, str | None]:
        """Whether the store's ETag proves it holds the shard's bytes, and if not, why.

        S3's ETag is the body's MD5 only for a plaintext or SSE-S3 single-part object; with
        SSE-KMS or SSE-C it is an opaque string that is often 32 hex digits too, so the
        encryption headers decide. Raises ``PutFailure`` (retry) when an MD5 ETag differs:
        the body was damaged on the way, or an input changed while it was sent.
        """
        etag = stored.etag
        if stored.encryption is not None:
            return False, f"the store encrypts with {stored.encryption}: its ETag is not an MD5"
        if not is_md5(etag):
            shown = repr(etag[:40]) if etag else "none"
            return False, f"the store's ETag ({shown}) is not an MD5 (a multipart or non-S3 store)"
        if not self.verify_etag:
            return False, "the ETag check is turned off"
        if etag.lower() != shard.md5:
            raise PutFailure(
                f"shard {shard.index}: the stored object's ETag {etag} is not the shard's MD5 "
                f"{shard.md5}: the body was damaged on the way, or an input file changed while "
                "it was being sent (if this store's ETags are never MD5s — some S3-compatible "
                f"stores — use {option('--no-etag-check', 'verify_etag=False')})",
                PutOutcome.RETRY,
            )
        return True, None

    async def _fail(
        self, shard: ShardInfo, attempts: int, error: str, *, rerun_helps: bool = True
    ) -> None:
        error = redact_text(error)
        log.warning(
            "shard %d: upload failed after %d attempt(s) (last: %s)%s",
            shard.index,
            attempts,
            error,
            "; rerun the same command to retry it" if rerun_helps else "",
        )
        # restart: the inputs changed, so a plain rerun would be refused.
        failed = events.Failed(
            index=shard.index, error=error, attempts=attempts, restart=not rerun_helps
        )
        await self._record(failed)
        self.stats.failed += 1
        self.failed.append(shard.index)

    async def _record(self, event: events.Event) -> None:
        await self.state.record_async(event)


def remove_shard_file(shard: ShardInfo) -> None:
    with contextlib.suppress(FileNotFoundError):
        shard.path.unlink()


def _ticket_event(index: int, ticket: ImportTicket) -> events.Ticket:
    return events.Ticket(
        index=index,
        request_id=ticket.request_id,
        object_key=ticket.object_key,
        upload_url=ticket.upload_url,
        expires_at=ticket.expires_at.isoformat() if ticket.expires_at else None,
    )
