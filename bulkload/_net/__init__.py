"""④ ⑥ The wire: the only package that imports aiohttp (a contract checks).

::

    session.py    TLS, the connection pool, User-Agent; how a network failure is described
    api.py        the SafetyKit API client: import, status, results URL, results download;
                  what the server "really said" is decided here, once
    put.py        one shard, one PUT to its pre-signed URL, streamed with a Content-Length
    retry.py      the one retry policy: what is retried, and how long to wait
    throttle.py   --max-rps and --max-bandwidth pacing; adaptive concurrency on 429
"""

from .api import ApiClient, ClientOptions, DownloadFailure, is_md5, open_client
from .put import SLICE, PutFailure, PutOutcome, Stored, put_shard
from .retry import RetryPolicy
from .throttle import AdaptiveLimit, RateLimiter

__all__ = [
    "SLICE",
    "AdaptiveLimit",
    "ApiClient",
    "ClientOptions",
    "DownloadFailure",
    "PutFailure",
    "PutOutcome",
    "RateLimiter",
    "RetryPolicy",
    "Stored",
    "is_md5",
    "open_client",
    "put_shard",
]
