"""AWS Signature Version 4 for S3 pre-signed PUT URLs: issue them, and verify a PUT as S3
does.

Written from AWS's description of query-string authentication ("Authenticating Requests:
Using Query Parameters"), not from botocore: ``tests/test_emulator_sigv4.py`` checks both
directions against botocore, so that the emulator and the client are measured against a
signer neither of them wrote.

What S3 does, and so what :func:`verify_presigned` does, with what arrives:

- the canonical URI is the request's path exactly as received (S3 does not normalise it);
- the canonical query is rebuilt from the *decoded* query parameters (``+`` decodes to a
  space, as in a form), each name and value re-encoded per RFC 3986 and sorted: so a
  client may send ``/`` for ``%2F``, but one that turns ``%2B`` into ``+`` changes a value;
- each signed header's value comes from the request's own headers, trimmed, with inner
  runs of spaces collapsed; ``host`` is the Host header as received, letter case and all.

Everything here is pure: no clock, no I/O. Callers pass ``now``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, quote_from_bytes, unquote_to_bytes, urlsplit

__all__ = [
    "ALGORITHM",
    "DEFAULT_ACCESS_KEY_ID",
    "DEFAULT_SECRET_ACCESS_KEY",
    "DEFAULT_SESSION_TOKEN",
    "MAX_EXPIRES",
    "Refusal",
    "S3Credentials",
    "amz_date",
    "parse_amz_date",
    "presign_put",
    "s3_time",
    "verify_presigned",
]

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
#: S3's longest pre-signed URL lifetime: a week.
MAX_EXPIRES = 604800
#: How far ahead of S3's clock an ``X-Amz-Date`` may lie before the URL is "not valid
#: yet": S3 tolerates 15 minutes of clock skew.
MAX_FUTURE_SKEW = 15 * 60
#: Fake, and shaped like the real thing: an ``ASIA`` key id is a temporary one, which
#: comes with a session token; real secrets hold ``/`` and ``+`` too.
DEFAULT_ACCESS_KEY_ID = "ASIAEMULATOR0EXAMPLE"
DEFAULT_SECRET_ACCESS_KEY = "emulator/Secret+Access/Key+EXAMPLE000000"
#: Shaped like an STS session token (base64, so full of ``+``, ``/`` and ``=``): every
#: upload URL then carries ``%2B``, ``%2F`` and ``%3D``, and a client that re-encodes the
#: URL it was given is caught by every test, not only by the ones about encoding.
DEFAULT_SESSION_TOKEN = (
    "IQoJb3JpZ2luX2VjEMb//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+emulator/session+token=="
    "/Zm9vYmFy+YmF6/cXV4==+a2V5/dmFsdWU=+/+//==EMULATOR+ONLY/not+a+real+token=="
)
_AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
# RFC 3986's unreserved characters besides letters and digits: never percent-encoded.
_UNRESERVED = "-_.~"
_REQUIRED = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
    "X-Amz-Expires",
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class S3Credentials:
    """The fake bucket's credentials: what a real pre-signer would hold."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None
    region: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """An S3 error answer: status, code, message and S3's extra XML elements, in order."""

    status: int
    code: str
    message: str
    extra: tuple[tuple[str, str], ...] = ()


def amz_date(t: float) -> str:
    """``20260219T123456Z``: SigV4's timestamp, whole seconds, UTC."""
    return datetime.fromtimestamp(int(t), UTC).strftime(_AMZ_DATE_FORMAT)


def parse_amz_date(text: str) -> float | None:
    # strptime accepts one-digit fields; SigV4 wants exactly the long form.
    if len(text) != 16:
        return None
    try:
        return datetime.strptime(text, _AMZ_DATE_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def s3_time(t: float) -> str:
    """``2026-02-19T12:34:56Z``: how S3 writes times in its error bodies."""
    return datetime.fromtimestamp(int(t), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _encode(value: str) -> str:
    return quote(value, safe=_UNRESERVED)


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _signing_key(secret: str, day: str, region: str) -> bytes:
    key = _hmac(("AWS4" + secret).encode(), day)
    key = _hmac(key, region)
    key = _hmac(key, "s3")
    return _hmac(key, "aws4_request")


def _canonical_query(pairs: Iterable[tuple[bytes, bytes]]) -> str:
    encoded = sorted(
        (quote_from_bytes(name, safe=_UNRESERVED), quote_from_bytes(value, safe=_UNRESERVED))
        for name, value in pairs
    )
    return "&".join(f"{name}={value}" for name, value in encoded)


def _canonical_request(
    method: str, path: str, query: str, headers: list[tuple[str, str]], signed: str
) -> str:
    block = "".join(f"{name}:{value}\n" for name, value in headers)
    return "\n".join([method, path, query, block, signed, UNSIGNED_PAYLOAD])


def _string_to_sign(date: str, scope: str, canonical_request: str) -> str:
    digest = hashlib.sha256(canonical_request.encode()).hexdigest()
    return "\n".join([ALGORITHM, date, scope, digest])


def _host_header(scheme: str, netloc: str) -> str:
    """The Host header an HTTP client sends for this URL: no port when it is the default."""
    host, sep, port = netloc.rpartition(":")
    return host if sep and port == str(_DEFAULT_PORTS.get(scheme)) else netloc


def presign_put(
    creds: S3Credentials,
    *,
    base_url: str,
    path: str,
    now: float,
    expires: int,
    content_type: str | None,
) -> str:
    """A pre-signed PUT URL, as botocore's ``generate_presigned_url`` writes one.

    ``path`` is already URI-encoded (``/bucket/key``). With a ``content_type``, the URL
    signs ``content-type;host`` and the PUT must carry exactly that Content-Type; without
    one, only ``host``.
    """
    parts = urlsplit(base_url)
    date = amz_date(now)
    headers = [("host", _host_header(parts.scheme, parts.netloc))]
    if content_type is not None:
        headers.insert(0, ("content-type", " ".join(content_type.split())))
    signed = ";".join(name for name, _ in headers)
    params = [
        ("X-Amz-Algorithm", ALGORITHM),
        ("X-Amz-Credential", f"{creds.access_key_id}/{_scope(date, creds.region)}"),
        ("X-Amz-Date", date),
        ("X-Amz-Expires", str(expires)),
        ("X-Amz-SignedHeaders", signed),
    ]
    if creds.session_token is not None:
        params.append(("X-Amz-Security-Token", creds.session_token))
    query = _canonical_query((k.encode(), v.encode()) for k, v in params)
    canonical = _canonical_request("PUT", path, query, headers, signed)
    to_sign = _string_to_sign(date, _scope(date, creds.region), canonical)
    key = _signing_key(creds.secret_access_key, date[:8], creds.region)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    # Issue order, not canonical order: the auth parameters as a pre-signer lists them,
    # the signature last.
    issued = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in params)
    return f"{parts.scheme}://{parts.netloc}{path}?{issued}&X-Amz-Signature={signature}"


def _scope(date: str, region: str) -> str:
    return f"{date[:8]}/{region}/s3/aws4_request"


def _parse_query(raw_query: str) -> list[tuple[bytes, bytes]]:
    """Decoded ``(name, value)`` pairs as S3 reads them: ``+`` is a space, ``%XX`` a byte."""
    pairs = []
    for item in raw_query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append(
            (unquote_to_bytes(name.replace("+", " ")), unquote_to_bytes(value.replace("+", " ")))
        )
    return pairs


def _malformed(message: str, *extra: tuple[str, str]) -> Refusal:
    return Refusal(400, "AuthorizationQueryParametersError", message, extra)


_BAD_CREDENTIAL = (
    "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; "
    'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
)


def _check_credential(credential: str, creds: S3Credentials) -> Refusal | None:
    parts = credential.split("/")
    if len(parts) != 5 or len(parts[1]) != 8 or not parts[1].isdigit():
        return _malformed(_BAD_CREDENTIAL)
    akid, _, region, service, terminal = parts
    if region != creds.region:
        return _malformed(
            "Error parsing the X-Amz-Credential parameter; the region "
            f"'{region}' is wrong; expecting '{creds.region}'",
            ("Region", creds.region),
        )
    if service != "s3":
        return _malformed(
            "Error parsing the X-Amz-Credential parameter; incorrect service "
            f'"{service}". This endpoint belongs to "s3".'
        )
    if terminal != "aws4_request":
        return _malformed(
            "Error parsing the X-Amz-Credential parameter; incorrect terminal "
            f'"{terminal}". This endpoint uses "aws4_request".'
        )
    if akid != creds.access_key_id:
        return Refusal(
            403,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            (("AWSAccessKeyId", akid),),
        )
    return None


def _check_token(token: str | None, creds: S3Credentials) -> Refusal | None:
    if token == creds.session_token:
        return None
    if token is None:
        # Temporary credentials without their session are unknown to S3.
        return Refusal(
            403,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            (("AWSAccessKeyId", creds.access_key_id),),
        )
    return Refusal(
        400,
        "InvalidToken",
        "The provided token is malformed or otherwise invalid.",
        (("Token-0", token),),
    )


def _check_time(date_text: str, expires_text: str, now: float) -> Refusal | None:
    issued = parse_amz_date(date_text)
    if issued is None:
        return _malformed("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    try:
        expires = int(expires_text)
    except ValueError:
        return _malformed("X-Amz-Expires should be a number")
    if expires < 0:
        return _malformed("X-Amz-Expires must be non-negative")
    if expires > MAX_EXPIRES:
        return _malformed(
            "X-Amz-Expires must be less than a week (in seconds); that is, the given "
            f"X-Amz-Expires must be less than {MAX_EXPIRES} seconds"
        )
    if issued - now > MAX_FUTURE_SKEW:
        return Refusal(403, "AccessDenied", "Request is not valid yet")
    if now > issued + expires:
        return Refusal(
            403,
            "AccessDenied",
            "Request has expired",
            (
                ("X-Amz-Expires", expires_text),
                ("Expires", s3_time(issued + expires)),
                ("ServerTime", s3_time(now)),
            ),
        )
    return None


def verify_presigned(
    creds: S3Credentials,
    *,
    method: str,
    raw_target: str,
    headers: Iterable[tuple[str, str]],
    now: float,
) -> Refusal | None:
    """Check a pre-signed request as S3 does; ``None`` when it is good.

    ``raw_target`` is the request target as received (path and query, still encoded),
    ``headers`` every header as received (names in any case, repeats included). The
    checks run in S3's order: the parameters are well-formed, the key (and session) is
    known, the URL is within its validity, no ``x-amz-*`` header goes unsigned, and the
    signature matches.
    """
    path, _, raw_query = raw_target.partition("?")
    params: dict[str, str] = {}
    pairs = _parse_query(raw_query)
    for name, value in pairs:
        params.setdefault(name.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
    if any(not params.get(name) for name in _REQUIRED):
        return _malformed(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, "
            "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and "
            "X-Amz-Expires parameters."
        )
    if params["X-Amz-Algorithm"] != ALGORITHM:
        return _malformed(f'X-Amz-Algorithm only supports "{ALGORITHM}"')
    credential = params["X-Amz-Credential"]
    date_text = params["X-Amz-Date"]
    refusal = (
        _check_credential(credential, creds)
        or _check_token(params.get("X-Amz-Security-Token"), creds)
        or _check_time(date_text, params["X-Amz-Expires"], now)
    )
    if refusal is not None:
        return refusal
    received: dict[str, list[str]] = {}
    for header, text in headers:
        received.setdefault(header.lower(), []).append(text)
    signed = params["X-Amz-SignedHeaders"]
    signed_names = signed.split(";")
    unsigned = sorted(
        name for name in received if name.startswith("x-amz-") and name not in signed_names
    )
    if unsigned:
        return Refusal(
            403,
            "AccessDenied",
            "There were headers present in the request which were not signed",
            (("HeadersNotSigned", ", ".join(unsigned)),),
        )
    canonical_headers = [
        (name, ",".join(" ".join(v.split()) for v in received.get(name, [])))
        for name in signed_names
    ]
    query = _canonical_query((n, v) for n, v in pairs if n != b"X-Amz-Signature")
    canonical = _canonical_request(method, path, query, canonical_headers, signed)
    day = credential.split("/")[1]
    to_sign = _string_to_sign(date_text, _scope(day, creds.region), canonical)
    key = _signing_key(creds.secret_access_key, day, creds.region)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    provided = params["X-Amz-Signature"]
    if hmac.compare_digest(expected.encode(), provided.encode()):
        return None
    return Refusal(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
        (
            ("AWSAccessKeyId", creds.access_key_id),
            ("StringToSign", to_sign),
            ("SignatureProvided", provided),
            ("StringToSignBytes", _hex_bytes(to_sign)),
            ("CanonicalRequest", canonical),
            ("CanonicalRequestBytes", _hex_bytes(canonical)),
        ),
    )


def _hex_bytes(text: str) -> str:
    """S3's ``...Bytes`` elements: each byte as two hex digits, space-separated."""
    return " ".join(f"{b:02x}" for b in text.encode())
