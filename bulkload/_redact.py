"""Secrets out of every text a person or a file sees: one redactor for URLs and messages.

A pre-signed URL's query string *is* a credential (anyone holding it can write the object
until it expires), and library errors embed URLs freely: aiohttp's ``ClientOSError`` says
"Can not write request body for https://bucket/key?X-Amz-Signature=...", a
``ClientResponseError`` carries ``url=URL('...')``. So no exception text is trusted: every
message that reaches stderr, a log line, the journal or the manifest passes through
:func:`redact_text` first, which cuts the query string off every URL in it and blanks the
value of any signature-like parameter that appears without a URL around it.

Standard library only: the CLI's last-resort guard uses it before anything heavy loads.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

#: ``scheme://host/path?query``: the query (and fragment) goes. A URL ends at whitespace,
#: a quote or a bracket, which is how URLs appear inside messages and reprs.
_URL_WITH_QUERY = re.compile(
    r"""(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s?#'"<>()\[\]]*)[?#][^\s'"<>()\[\]]*"""
)
#: A credential-bearing parameter seen on its own (a raw request target, a query string
#: logged without its URL): its value goes.
_SECRET_PARAM = re.compile(
    r"(?i)\b(X-Amz-Signature|X-Amz-Security-Token|X-Amz-Credential|Signature|sig|token"
    r"|access_token|api_key|apikey|key)=[^&\s'\"<>]+"
)


def redact_text(text: str) -> str:
    """``text`` with every URL's query string replaced by ``…`` and signature-like
    parameter values blanked: safe to print, log or write down."""
    text = _URL_WITH_QUERY.sub(r"\1?…", text)
    return _SECRET_PARAM.sub(r"\1=…", text)


def redact_url(url: str) -> str:
    """``https://bucket/key?X-Amz-Signature=...`` → ``https://bucket/key?…``: safe to print.

    User info (``https://user:pass@host``) goes too."""
    parts = urlsplit(url)
    query = "…" if parts.query else ""
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


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


class RedactingFilter(logging.Filter):
    """Redacts every record of the logger it is attached to, arguments included: a
    message built from an exception's text cannot leak a signed URL through a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_text(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True
