"""The HTTP session and the small helpers every network module shares.

One place decides TLS (verification always on; ``--ca-bundle`` adds a private CA), the
connection pool, and how a URL is shown to a person: without its query string, because a
pre-signed URL's query *is* the credential.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from ._version import __version__

USER_AGENT = f"bulkload/{__version__}"


class Secret:
    """A credential that no repr, log line or traceback's locals can show."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('…')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


def redact_url(url: str) -> str:
    """``https://bucket/key?X-Amz-Signature=...`` → ``https://bucket/key?…``: safe to print."""
    parts = urlsplit(url)
    query = "…" if parts.query else ""
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def make_session(*, timeout: float, ca_bundle: Path | None = None) -> aiohttp.ClientSession:
    """A session for API calls and uploads.

    ``timeout`` bounds connecting and each wait for data, not the whole transfer: a 5 GiB
    shard may take many minutes on a slow link and that is fine as long as bytes move.
    100 connections is the official SDK's limit too; uploads are bounded far below it.
    """
    ssl_context: ssl.SSLContext | bool = True
    if ca_bundle is not None:
        ssl_context = ssl.create_default_context(cafile=str(ca_bundle))
    connector = aiohttp.TCPConnector(limit=100, ssl=ssl_context)
    client_timeout = aiohttp.ClientTimeout(
        total=None, connect=timeout, sock_connect=timeout, sock_read=timeout
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=client_timeout,
        headers={"User-Agent": USER_AGENT},
        # Keep the environment's proxies (HTTPS_PROXY etc.): corporate networks need them.
        trust_env=True,
        raise_for_status=False,
    )


def is_loopback_host(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in {"localhost", "::1"} or host.startswith("127.")


def describe_exception(exc: BaseException) -> str:
    """A short, secret-free description of a network failure."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "DNS lookup failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connection failed ({exc.os_error.strerror or type(exc.os_error).__name__})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "connection dropped mid-transfer"
    if isinstance(exc, aiohttp.ClientOSError):
        return f"connection error ({exc.strerror or type(exc).__name__})"
    return type(exc).__name__


def tls_hint(url: str, exc: BaseException) -> str:
    """What went wrong with TLS, and the way out (a private CA is the usual cause)."""
    host = urlsplit(url).hostname or url
    reason = getattr(exc, "os_error", None) or exc
    return (
        f"the TLS connection to {host} failed ({reason}); if its certificate comes from a "
        "private CA, pass --ca-bundle FILE (PEM), else check the host name and the clock"
    )


#: Failures of the transport (not answers of the server) worth another try.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientConnectionError, TimeoutError)
