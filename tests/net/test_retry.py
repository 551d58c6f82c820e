import random

from hypothesis import given
from hypothesis import strategies as st

from bulkload._net import AdaptiveLimit, RateLimiter, RetryPolicy
from bulkload._net.retry import is_retryable_status, parse_retry_after


def test_retryable_statuses() -> None:
    for status in (408, 409, 429, 500, 502, 503, 504):
        assert is_retryable_status(status)
    for status in (400, 401, 403, 404, 411):
        assert not is_retryable_status(status)


def test_x_should_retry_overrides() -> None:
    assert not is_retryable_status(503, {"x-should-retry": "false"})
    assert is_retryable_status(400, {"x-should-retry": "true"})


def test_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470) == 10
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    policy = RetryPolicy(retry_after_cap=300)
    assert policy.delay(0, 120.0) == 120.0  # the SDK would ignore this; we wait as asked
    assert policy.delay(0, 1000.0) == 300.0


@given(st.integers(min_value=0, max_value=100), st.integers())
def test_backoff_is_full_jitter_within_the_cap(retry: int, seed: int) -> None:
    policy = RetryPolicy(base=0.5, cap=30.0, rng=random.Random(seed))
    delay = policy.delay(retry, None)
    assert 0.0 <= delay <= min(30.0, 0.5 * 2**retry)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@given(st.floats(min_value=0.5, max_value=100), st.integers(min_value=1, max_value=200))
async def test_rate_limiter_never_exceeds_rate_in_any_window(rate: float, calls: int) -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(calls):
        await limiter.acquire()
        starts.append(clock.now)
    # In any half-open one-second window at most ceil(rate) calls start.
    for i, t in enumerate(starts):
        in_window = sum(1 for u in starts[i:] if u < t + 1.0 - 1e-9)
        assert in_window <= max(1, -(-rate // 1))


async def test_adaptive_limit_halves_on_throttle_and_climbs_back() -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(8, clock=clock, sleep=clock.sleep)
    limit.throttled(2.0)
    assert limit.limit == 4
    limit.throttled(None)
    assert limit.limit == 2
    async with limit:  # waits out the 2 s pause the server asked for
        pass
    assert clock.sleeps == [2.0]
    for _ in range(200):
        await limit.succeeded()
    assert limit.limit == 8
