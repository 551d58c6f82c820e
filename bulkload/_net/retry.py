"""The one retry policy: what is worth retrying, and how long to wait before the next try.

Capped exponential backoff with full jitter (each wait drawn uniformly from
``[0, min(cap, base * 2**attempt)]``, as in AWS's "Exponential Backoff and Jitter"), so that
many uploaders that failed together do not retry together. A server's own word wins: the
``x-should-retry`` header decides whether to retry at all, and ``retry-after-ms`` /
``retry-after`` (seconds or an HTTP date) how long to wait, honoured up to
``retry_after_cap`` — the official SDK ignores values over 60 s, so during an incident it
retries far sooner than the server asked.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

#: 408 Request Timeout, 409 Conflict (the SDK retries it: a lock held by a concurrent
#: request), 429 Too Many Requests; every 5xx is retried too.
RETRYABLE_STATUS = frozenset({408, 409, 429})


def is_retryable_status(status: int, headers: Mapping[str, str] | None = None) -> bool:
    """Whether an HTTP answer is worth another try; ``x-should-retry`` overrides."""
    if headers is not None:
        verdict = headers.get("x-should-retry", "").strip().lower()
        if verdict == "true":
            return True
        if verdict == "false":
            return False
    return status in RETRYABLE_STATUS or status >= 500


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait, or None when it did not say (or said nonsense)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = -1.0
        if value >= 0:
            return value
    text = headers.get("retry-after")
    if text is None:
        return None
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        value = when.timestamp() - (time.time() if now is None else now)
        return max(0.0, value)
    return value if value >= 0 else None


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How many times to retry, and the wait before each retry.

    ``max_retries`` counts retries after the first attempt. ``base`` and ``cap`` shape the
    exponential backoff (0.5 s doubling to 30 s: long enough to ride out a server restart,
    short enough that a transient 503 costs seconds, not minutes).
    """

    max_retries: int = 6
    base: float = 0.5
    cap: float = 30.0
    retry_after_cap: float = 300.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def backoff(self, retry: int) -> float:
        """The jittered wait before retry number ``retry`` (0-based)."""
        ceiling = min(self.cap, self.base * (2.0 ** min(retry, 30)))
        return self.rng.uniform(0.0, ceiling)

    def delay(self, retry: int, retry_after: float | None) -> float:
        """The wait before retry ``retry``: the server's Retry-After when given (capped)."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap)
        return self.backoff(retry)
