"""Pacing: a rate cap for API calls and bytes, and a concurrency limit that backs off on 429.

Two mechanisms, both owned by the loader and shared by its workers:

* ``RateLimiter`` — generic cell rate algorithm (a token bucket without a refill task):
  each acquisition reserves the next slot, so ``--max-rps 20`` never lets 21 calls start in
  any one-second window, and ``--max-bandwidth`` paces bytes the same way.
* ``AdaptiveLimit`` — additive-increase / multiplicative-decrease on the number of uploads
  in flight, as TCP does for its window: a 429 or S3 ``SlowDown`` halves the limit (to no
  less than 1) and opens a pause for the server's Retry-After; each success grows the limit
  by ``1/limit`` until it is back at ``--concurrency``. Throttled servers get relief at
  once and full speed returns within a few dozen successes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RateLimiter:
    """At most ``rate`` units per second, starting with a burst of ``burst`` units."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float = 1.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.rate = rate
        self._burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tat = clock()  # theoretical arrival time of the next unit

    async def acquire(self, amount: float = 1.0) -> None:
        now = self._clock()
        tat = max(self._tat, now)
        self._tat = tat + amount / self.rate
        wait = tat - now - (self._burst - 1.0) / self.rate
        if wait > 0:
            await self._sleep(wait)


class AdaptiveLimit:
    """A concurrency limit between 1 and ``maximum`` that shrinks on throttling."""

    def __init__(
        self, maximum: int, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep
    ) -> None:
        self.maximum = maximum
        self.limit = float(maximum)
        self.in_use = 0
        self._clock = clock
        self._sleep = sleep
        self._paused_until = 0.0
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_use < int(self.limit))
            self.in_use += 1
        await self.wait_pause()

    async def __aexit__(self, *exc: object) -> None:
        async with self._changed:
            self.in_use -= 1
            self._changed.notify_all()

    async def wait_pause(self) -> None:
        """Wait out a pause the server asked for (Retry-After on a 429)."""
        while (remaining := self._paused_until - self._clock()) > 0:
            await self._sleep(remaining)

    def throttled(self, retry_after: float | None = None) -> None:
        """The server said slow down: halve the limit, and pause everyone if it said how long."""
        self.limit = max(1.0, self.limit / 2.0)
        if retry_after:
            self._paused_until = max(self._paused_until, self._clock() + retry_after)

    async def succeeded(self) -> None:
        if self.limit < self.maximum:
            self.limit = min(float(self.maximum), self.limit + 1.0 / self.limit)
            async with self._changed:
                self._changed.notify_all()


def api_rate(max_rps: float | None) -> RateLimiter | None:
    """The limiter for ``--max-rps``: calls are paced at 95 % of the cap, because what counts
    is what the server sees, and arrival jitter of a few ms would otherwise put N + 1 calls
    into some one-second window at the server."""
    return RateLimiter(max_rps * 0.95) if max_rps else None
