"""Secrets on every path: no pre-signed URL's query string reaches a message, a log line or the
manifest, whatever error carries it."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp.client_reqrep import ConnectionKey
from conftest import API_KEY
from helpers import read_manifest, record, write_lines
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

import bulkload
from bulkload._net.session import describe_exception, tls_hint
from bulkload._redact import RedactingFilter, redact_text, redact_url
from bulkload.emulator import EmulatorThread

SIGNED = (
    "https://bucket.s3.us-east-1.amazonaws.com/TEAM/req_1.jsonl?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAX%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Security-Token=IQoJb3JpZ2luX2VjE%2Bab%2Fcd%3D%3D&X-Amz-Signature=deadbeef0123456789"
)
SECRETS = ("deadbeef0123456789", "IQoJb3JpZ2luX2VjE", "AKIAX")


def assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, text


def request_info(url: str) -> aiohttp.RequestInfo:
    headers = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"}))
    return aiohttp.RequestInfo(URL(url, encoded=True), "PUT", headers, URL(url, encoded=True))


def _errors_that_can_carry_a_url() -> list[BaseException]:
    """Every aiohttp error type whose text can hold the URL of the request, built the way
    aiohttp builds it (messages copied from aiohttp 3.14's client code)."""
    info = request_info(SIGNED)
    key = ConnectionKey("bucket.s3.us-east-1.amazonaws.com", 443, True, True, None, None, None)
    responses = [
        cls(info, (), status=403, message="Forbidden")
        for cls in (
            aiohttp.ClientResponseError,
            aiohttp.ContentTypeError,
            aiohttp.TooManyRedirects,
            aiohttp.ClientHttpProxyError,
            aiohttp.WSServerHandshakeError,
        )
    ]
    urls = [
        cls(URL(SIGNED, encoded=True), "bad")
        for cls in (
            aiohttp.InvalidURL,
            aiohttp.InvalidUrlClientError,
            aiohttp.InvalidUrlRedirectClientError,
        )
    ]
    return [
        *responses,
        *urls,
        aiohttp.NonHttpUrlClientError(SIGNED),
        aiohttp.NonHttpUrlRedirectClientError(SIGNED),
        aiohttp.ClientOSError(32, f"Can not write request body for {SIGNED}"),
        aiohttp.ClientConnectionResetError(f"Cannot write to closing transport {SIGNED}"),
        aiohttp.ClientPayloadError(f"Response payload is not completed for {SIGNED}"),
        aiohttp.ServerDisconnectedError(f"Server disconnected: {SIGNED}"),
        aiohttp.ConnectionTimeoutError(f"Connection timeout to host {SIGNED}"),
        aiohttp.SocketTimeoutError(f"Timeout on reading data from socket {SIGNED}"),
        aiohttp.ClientConnectorError(key, OSError(111, f"Connect call failed {SIGNED}")),
        aiohttp.ClientConnectorSSLError(key, ssl.SSLError(1, f"bad handshake {SIGNED}")),
        aiohttp.ClientConnectorCertificateError(key, ssl.SSLError(1, f"verify failed {SIGNED}")),
        RuntimeError(f"something went wrong with {SIGNED}"),
    ]


@pytest.mark.parametrize("exc", _errors_that_can_carry_a_url(), ids=lambda e: type(e).__name__)
def test_every_aiohttp_error_is_described_without_the_signature(exc: BaseException) -> None:
    assert_clean(describe_exception(exc))
    assert_clean(redact_text(str(exc)))
    assert_clean(redact_text(repr(exc)))
    assert_clean(tls_hint(SIGNED, exc))


def test_the_redactor_keeps_what_a_person_needs() -> None:
    text = redact_text(f"PUT failed for {SIGNED} (connection reset)")
    assert "https://bucket.s3.us-east-1.amazonaws.com/TEAM/req_1.jsonl?…" in text
    assert text.endswith("(connection reset)")
    assert redact_url(SIGNED) == "https://bucket.s3.us-east-1.amazonaws.com/TEAM/req_1.jsonl?…"
    # A raw query string logged without its URL loses its values too.
    assert_clean(redact_text("target /TEAM/req_1.jsonl?" + SIGNED.split("?", 1)[1]))


def test_log_records_are_redacted_with_their_arguments(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("bulkload.test-secrets")
    logger.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO, logger="bulkload.test-secrets"):
        logger.info("upload to %s failed", SIGNED)
    assert_clean(caplog.text)
    assert "req_1.jsonl?…" in caplog.text


def test_a_dropped_put_leaves_no_signature_in_manifest_or_output(
    emulator_thread: EmulatorThread,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server cuts every PUT off half way: aiohttp's errors name the URL; the failed
    shards' errors in the manifest, stderr and the log must not."""
    emulator_thread.set_faults(put_drop_rate=1.0)
    src = write_lines(tmp_path / "in.jsonl", [record(i) for i in range(300)])
    with caplog.at_level(logging.INFO, logger="bulkload"):
        result = bulkload.load(
            "products", [str(src)], api_key=API_KEY, base_url=emulator_thread.base_url,
            work_dir=tmp_path / "w", shard_max_records=100, max_retries=1,
        )  # fmt: skip
    assert result.exit_code == 4 and result.failed == 3
    manifest = read_manifest(tmp_path / "w")
    errors = [s["error"] for s in manifest["shards"]]
    assert all(errors), "each failed shard says why"
    signatures = {
        URL(r["upload_url"]).query.get("X-Amz-Signature", "")
        for r in map(orjson.loads, (tmp_path / "w/state/journal.jsonl").read_bytes().splitlines())
        if r.get("t") == "ticket"
    }
    assert signatures and "" not in signatures
    everything = (
        (tmp_path / "w/manifest.json").read_text() + caplog.text + "".join(capfd.readouterr())
    )
    for signature in signatures:
        assert signature not in everything
    assert "X-Amz-Signature=" not in everything
