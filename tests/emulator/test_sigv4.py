"""The fake bucket's SigV4 against an oracle neither side wrote: botocore.

botocore pre-signs PUT URLs (no network: it only computes) with the emulator's fake
credentials, and the emulator must accept them as S3 does and refuse every tampered
variant with S3's own error; the other way round, botocore's signer, given the same
date, must write exactly the URLs the emulator issues. Requests go out with
``yarl.URL(url, encoded=True)`` or by hand, so the bytes sent are the bytes meant.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Callable, Mapping
from urllib.parse import parse_qs, urlsplit

import aiohttp
import botocore.session
import pytest
import pytest_asyncio
import yarl
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from conftest import API_KEY, EmuClient, RawHttp

from bulkload.emulator import Emulator

BODY = b'{"id": "a"}\n{"id": "b"}\n'
JSON = "application/json"
TTL = 3600


def presigner(emu: Emulator, endpoint: str | None = None):
    """A botocore S3 client holding the emulator's fake credentials; it never connects."""
    session = botocore.session.get_session()
    return session.create_client(
        "s3",
        region_name=emu.region,
        endpoint_url=endpoint or emu.base_url,
        aws_access_key_id=emu.aws_access_key_id,
        aws_secret_access_key=emu.aws_secret_access_key,
        aws_session_token=emu.aws_session_token,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def presign(emu: Emulator, key: str, *, endpoint: str | None = None) -> str:
    url: str = presigner(emu, endpoint).generate_presigned_url(
        "put_object",
        Params={"Bucket": emu.bucket, "Key": key, "ContentType": JSON},
        ExpiresIn=TTL,
    )
    return url


def target(url: str) -> str:
    """The request target of an absolute URL: its path and query, as written."""
    return "/" + url.split("/", 3)[3]


async def put(
    session: aiohttp.ClientSession, url: str, body: bytes = BODY, **headers: str
) -> tuple[int, Mapping[str, str], str]:
    """PUT ``url`` exactly as written (no re-quoting); status, headers, body text."""
    headers = {"Content-Type": JSON, **headers}
    async with session.put(yarl.URL(url, encoded=True), data=body, headers=headers) as resp:
        return resp.status, resp.headers.copy(), (await resp.read()).decode()


def error_code(text: str) -> str:
    match = re.search(r"<Code>([^<]*)</Code><Message>([^<]*)</Message>", text)
    assert match is not None, text
    return f"{match[1]}: {match[2]}"


def element(text: str, name: str) -> str:
    match = re.search(f"<{name}>([^<]*)</{name}>", text)
    assert match is not None, (name, text)
    return match[1]


@pytest_asyncio.fixture(params=["sts-token", "no-token"])
async def emu(request: pytest.FixtureRequest) -> AsyncIterator[Emulator]:
    """The emulator with its default, reserved-character-laden session token, and without
    any token (long-term credentials)."""
    if request.param == "sts-token":
        emulator = Emulator(api_key=API_KEY)
        assert set("+/=") <= set(emulator.aws_session_token or "")
    else:
        emulator = Emulator(api_key=API_KEY, aws_session_token=None)
    async with emulator:
        yield emulator


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def new_request(emu: Emulator, session: aiohttp.ClientSession) -> dict[str, str]:
    created: dict[str, str] = await EmuClient(session, emu.base_url).new()
    return created


# --- botocore's URLs are accepted --------------------------------------------------------


async def test_botocore_presigned_put_is_accepted(emu, session):
    created = await new_request(emu, session)
    url = presign(emu, created["objectKey"])
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-SignedHeaders"] == ["content-type;host"]
    if emu.aws_session_token is not None:
        assert "%2B" in url and "%2F" in url and "%3D" in url
    status, headers, _ = await put(session, url)
    assert status == 200
    assert headers["ETag"] == f'"{hashlib.md5(BODY).hexdigest()}"'
    info = emu.request(created["requestId"])
    assert (info.put_successes, info.size) == (1, len(BODY))
    assert info.object_path is not None and info.object_path.read_bytes() == BODY
    [attempt] = emu.put_log()
    assert attempt.raw_target == target(url)
    assert (attempt.outcome, attempt.error_code) == ("200", None)


async def test_any_key_botocore_signs_is_stored(emu, session):
    """A key no request owns, with characters that need encoding in the path: S3 stores
    it; the emulator too (out of every request's way)."""
    key = "elsewhere/a b+c~d/é.jsonl"
    url = presign(emu, key)
    assert "/a%20b%2Bc~d/%C3%A9.jsonl?" in url
    status, _, _ = await put(session, url)
    assert status == 200
    assert [a.request_id for a in emu.put_log()] == [None]
    assert emu.stored_objects() == []


# --- ...and each tampering is refused with S3's error ------------------------------------


def _flip(text: str, old: str, new: str) -> str:
    assert old in text, (old, text)
    return text.replace(old, new, 1)


def _param(url: str, name: str) -> str:
    match = re.search(f"[?&]{name}=([^&]*)", url)
    assert match is not None
    return match[1]


def _change_param(url: str, name: str, change: Callable[[str], str]) -> str:
    value = _param(url, name)
    return _flip(url, f"{name}={value}", f"{name}={change(value)}")


def _other_char(c: str) -> str:
    return "1" if c != "1" else "2"


TAMPERINGS: dict[str, tuple[Callable[[str], str], str]] = {
    "signature": (
        lambda u: _change_param(u, "X-Amz-Signature", lambda v: _other_char(v[0]) + v[1:]),
        "SignatureDoesNotMatch",
    ),
    "credential-key-id": (
        lambda u: _change_param(u, "X-Amz-Credential", lambda v: "B" + v[1:]),
        "InvalidAccessKeyId",
    ),
    "credential-day": (
        lambda u: _change_param(
            u, "X-Amz-Credential", lambda v: re.sub(r"%2F(\d{7})\d", r"%2F\g<1>0", v, count=1)
        ),
        "SignatureDoesNotMatch",
    ),
    "credential-region": (
        lambda u: _change_param(
            u, "X-Amz-Credential", lambda v: v.replace("us-east-1", "us-east-2")
        ),
        "AuthorizationQueryParametersError",
    ),
    "date": (
        lambda u: _change_param(u, "X-Amz-Date", lambda v: v[:-2] + _other_char(v[-2]) + "Z"),
        "SignatureDoesNotMatch",
    ),
    "expires": (
        lambda u: _change_param(u, "X-Amz-Expires", lambda v: str(int(v) - 1)),
        "SignatureDoesNotMatch",
    ),
    "expires-over-a-week": (
        lambda u: _change_param(u, "X-Amz-Expires", lambda v: "604801"),
        "AuthorizationQueryParametersError",
    ),
    "signed-headers": (
        lambda u: _change_param(u, "X-Amz-SignedHeaders", lambda v: "host"),
        "SignatureDoesNotMatch",
    ),
    "algorithm": (
        lambda u: _change_param(u, "X-Amz-Algorithm", lambda v: "AWS4-HMAC-SHA512"),
        "AuthorizationQueryParametersError",
    ),
    "path": (
        lambda u: _flip(u, "data-api-request-input", "data-api-request-inpuT"),
        "SignatureDoesNotMatch",
    ),
    "extra-parameter": (lambda u: u + "&x-id=PutObject", "SignatureDoesNotMatch"),
    "double-encoded-query": (
        lambda u: _change_param(u, "X-Amz-Credential", lambda v: v.replace("%", "%25")),
        "AuthorizationQueryParametersError",
    ),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
async def test_tampered_botocore_url_is_refused(emu, session, tampering):
    change, code = TAMPERINGS[tampering]
    created = await new_request(emu, session)
    url = change(presign(emu, created["objectKey"]))
    status, headers, text = await put(session, url)
    assert error_code(text).startswith(code + ":"), text
    assert status == (400 if code == "AuthorizationQueryParametersError" else 403)
    assert headers["Content-Type"] == "application/xml"
    if code == "SignatureDoesNotMatch":
        # S3 shows what it computed, so a client's author can diff it against theirs.
        assert element(text, "StringToSign").startswith("AWS4-HMAC-SHA256\n")
        assert element(text, "CanonicalRequest").startswith("PUT\n/")
        assert element(text, "CanonicalRequest").endswith("\nUNSIGNED-PAYLOAD")
    [attempt] = emu.put_log()
    assert (attempt.outcome, attempt.error_code) == (str(status), code)
    assert attempt.raw_target == target(url)
    assert emu.request(created["requestId"]).put_successes == 0
    assert emu.stored_objects() == []


async def test_changed_session_token_is_an_invalid_token(session):
    async with Emulator(api_key=API_KEY) as emu:
        created = await new_request(emu, session)
        url = presign(emu, created["objectKey"])
        token = _param(url, "X-Amz-Security-Token")
        for bad in [_other_char(token[0]) + token[1:], token.replace("%2B", "+")]:
            status, _, text = await put(session, url.replace(token, bad))
            assert (status, error_code(text)) == (
                400,
                "InvalidToken: The provided token is malformed or otherwise invalid.",
            )
        # No token at all: temporary credentials are unknown without their session.
        status, _, text = await put(session, url.replace(f"&X-Amz-Security-Token={token}", ""))
        assert (status, error_code(text).partition(":")[0]) == (403, "InvalidAccessKeyId")


async def test_plus_for_percent_2b_breaks_the_signature(emu, session):
    """``+`` in a query means a space to S3; in a path it is a plus, but the canonical URI
    is the path as sent, so ``%2B`` -> ``+`` there changes it too."""
    key = "TEAM_ID/plus+sign/x.jsonl"
    url = presign(emu, key)
    assert "plus%2Bsign" in url
    status, _, text = await put(session, url.replace("plus%2Bsign", "plus+sign"))
    assert (status, error_code(text).partition(":")[0]) == (403, "SignatureDoesNotMatch")


async def test_the_query_may_be_re_encoded_as_long_as_it_decodes_the_same(emu, session):
    """S3 decodes the query and re-encodes it itself: ``/`` for ``%2F``, ``=`` for ``%3D``
    or lowercase hex change no value, so they pass (what aiohttp's default re-quoting
    does, for instance); ``+`` for ``%2B`` or a double encoding change values and fail
    (see the tamperings)."""
    created = await new_request(emu, session)
    url = presign(emu, created["objectKey"])
    path, _, query = url.partition("?")
    requoted = query.replace("%2F", "/").replace("%3D", "=").replace("%2B", "%2b")
    assert requoted != query
    status, _, _ = await put(session, f"{path}?{requoted}")
    assert status == 200
    # Parameters in another order are the same parameters.
    reordered = "&".join(reversed(requoted.split("&")))
    status, _, _ = await put(session, f"{path}?{reordered}")
    assert status == 200
    assert [a.raw_target for a in emu.put_log()] == [
        target(f"{path}?{requoted}"),
        target(f"{path}?{reordered}"),
    ]


@pytest.mark.parametrize(
    "content_type", ["application/octet-stream", "application/json; charset=utf-8"]
)
async def test_other_content_type_is_refused(emu, session, content_type):
    created = await new_request(emu, session)
    url = presign(emu, created["objectKey"])
    status, _, text = await put(session, url, **{"Content-Type": content_type})
    assert (status, error_code(text).partition(":")[0]) == (403, "SignatureDoesNotMatch")
    assert f"content-type:{content_type}\nhost:" in element(text, "CanonicalRequest")


async def test_content_type_with_extra_spaces_is_the_same_header(emu, session):
    """Canonical header values are trimmed and inner runs of spaces collapsed."""
    created = await new_request(emu, session)
    url = presign(emu, created["objectKey"])
    status, _, _ = await put(session, url, **{"Content-Type": f"  {JSON}  "})
    assert status == 200


async def test_unsigned_amz_header_is_refused(emu, session):
    created = await new_request(emu, session)
    url = presign(emu, created["objectKey"])
    status, _, text = await put(session, url, **{"x-amz-meta-origin": "bulkload"})
    assert (status, error_code(text)) == (
        403,
        "AccessDenied: There were headers present in the request which were not signed",
    )
    assert element(text, "HeadersNotSigned") == "x-amz-meta-origin"


async def test_expiry_and_not_yet_valid_follow_the_emulator_clock(emu, session):
    created = await new_request(emu, session)
    url = presign(emu, created["objectKey"])
    emu.clock_skew_s = TTL + 1  # botocore signed with the real clock: now past expiry
    status, _, text = await put(session, url)
    assert (status, error_code(text)) == (403, "AccessDenied: Request has expired")
    assert element(text, "X-Amz-Expires") == str(TTL)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", element(text, "Expires"))
    assert element(text, "ServerTime") > element(text, "Expires")
    emu.clock_skew_s = -1000  # X-Amz-Date now lies over 15 minutes in S3's future
    status, _, text = await put(session, url)
    assert (status, error_code(text)) == (403, "AccessDenied: Request is not valid yet")
    emu.clock_skew_s = 0
    assert (await put(session, url))[0] == 200
    assert [a.error_code for a in emu.put_log()] == ["AccessDenied", "AccessDenied", None]


async def test_host_letter_case_is_signed(emu):
    """The canonical Host is the header as received: a client that changes its case (or
    a proxy that rewrites it) breaks the signature."""
    endpoint = emu.base_url.replace("127.0.0.1", "localhost")
    async with aiohttp.ClientSession() as s:
        created = await new_request(emu, s)
    url = presign(emu, created["objectKey"], endpoint=endpoint)
    host = endpoint.removeprefix("http://")
    raw = RawHttp()
    replies = []
    for sent_host in [host.upper(), host]:
        head = "\r\n".join(
            [
                f"PUT {target(url)} HTTP/1.1",
                f"Host: {sent_host}",
                f"Content-Type: {JSON}",
                f"Content-Length: {len(BODY)}",
            ]
        )
        replies.append(await raw.send(emu.base_url, head, BODY))
    assert replies[0].status == 403
    assert error_code(replies[0].body.decode()).startswith("SignatureDoesNotMatch:")
    assert f"host:{host.upper()}\n" in element(replies[0].body.decode(), "CanonicalRequest")
    assert replies[1].status == 200


# --- the emulator's URLs are botocore's --------------------------------------------------


def botocore_url(emu: Emulator, issued: str, *, content_type: str | None) -> str:
    """What botocore's own query signer writes for the issued URL's key and date."""
    parts = urlsplit(issued)
    query = parse_qs(parts.query)
    request = AWSRequest(
        method="PUT",
        url=f"{parts.scheme}://{parts.netloc}{parts.path}",
        headers={} if content_type is None else {"Content-Type": content_type},
    )
    request.context["timestamp"] = query["X-Amz-Date"][0]
    credentials = Credentials(
        emu.aws_access_key_id, emu.aws_secret_access_key, emu.aws_session_token
    )
    auth = S3SigV4QueryAuth(credentials, "s3", emu.region, expires=int(query["X-Amz-Expires"][0]))
    # add_auth() would stamp the current time; these are its steps with the issued date.
    auth._modify_request_before_signing(request)
    string_to_sign = auth.string_to_sign(request, auth.canonical_request(request))
    auth._inject_signature_to_request(request, auth.signature(string_to_sign, request))
    url: str = request.url
    return url


async def test_issued_urls_are_what_botocore_signs(emu, session):
    created = await new_request(emu, session)
    issued = created["upload_url"]
    assert issued == botocore_url(emu, issued, content_type=JSON)


async def test_host_only_urls_are_what_botocore_signs(session):
    async with Emulator(api_key=API_KEY, sign_content_type=False) as emu:
        created = await new_request(emu, session)
        issued = created["upload_url"]
        assert "X-Amz-SignedHeaders=host&" in issued
        assert issued == botocore_url(emu, issued, content_type=None)
        # Only the host is signed: any Content-Type goes.
        for content_type in [JSON, "application/octet-stream"]:
            status, _, _ = await put(session, issued, **{"Content-Type": content_type})
            assert status == 200


async def test_raw_target_is_recorded_byte_for_byte(emu, session):
    """Sent as issued, the target is the issued URL's; sent through aiohttp's default
    re-quoting (a plain string URL), it is not, though S3 still accepts it."""
    created = await new_request(emu, session)
    issued = created["upload_url"]
    assert (await put(session, issued))[0] == 200
    async with session.put(issued, data=BODY, headers={"Content-Type": JSON}) as resp:
        assert resp.status == 200
    exact, requoted = emu.put_log()
    assert exact.raw_target == target(issued)
    assert requoted.raw_target != target(issued)  # e.g. the credential's %2F went out as /
    assert parse_qs(urlsplit(requoted.raw_target).query) == parse_qs(urlsplit(issued).query)
