"""The HTTP session and the small helpers every network module shares.

One place decides TLS (verification always on; ``--ca-bundle`` adds a private CA), the
connection pool, and how a URL is shown to a person: without its query string, because a
pre-signed URL's query *is* the credential.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from .._errors import option
from .._redact import Secret, redact_text, redact_url
from .._version import __version__

__all__ = [
    "TRANSIENT_ERRORS",
    "USER_AGENT",
    "Secret",
    "describe_exception",
    "is_loopback_host",
    "make_session",
    "redact_text",
    "redact_url",
    "tls_hint",
]

USER_AGENT = f"bulkload/{__version__}"


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
    """A short, secret-free description of a network failure.

    aiohttp puts the full URL into some messages (``ClientOSError``: "Can not write request
    body for <url>"; ``ClientResponseError``: ``url=URL(...)``), and an OS error's text is
    anyone's guess, so the description as a whole goes through the redactor."""
    return redact_text(_describe(exc))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "DNS lookup failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connection failed ({exc.os_error.strerror or exc.os_error})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "connection dropped mid-transfer"
    if isinstance(exc, aiohttp.ClientOSError):
        return f"connection error ({exc.strerror or type(exc).__name__})"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def tls_hint(url: str, exc: BaseException) -> str:
    """What went wrong with TLS, and the way out (a private CA is the usual cause)."""
    host = urlsplit(url).hostname or redact_url(url)
    reason = redact_text(str(getattr(exc, "os_error", None) or exc))
    return (
        f"the TLS connection to {host} failed ({reason}); if its certificate comes from a "
        f"private CA, pass {option('--ca-bundle FILE (PEM)', 'ca_bundle= (a PEM file)')}, else "
        "check the host name and the clock"
    )


#: Failures of the transport (not answers of the server) worth another try.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientConnectionError, TimeoutError)
