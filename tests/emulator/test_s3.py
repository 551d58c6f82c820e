"""The emulator's fake bucket follows S3's rules for pre-signed PUTs, one test per rule.

Requests that real clients refuse to send (no length, chunked, a body cut short) are
written by hand over ``asyncio.open_connection``."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest

BODY = b'{"id": "a"}\n{"id": "b"}\n'


def with_query(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    for name, value in changes.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


def xml_code(text: str) -> str:
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?><Error><Code>'), text
    match = re.search(r"<Code>([^<]*)</Code><Message>([^<]*)</Message>", text)
    assert match is not None
    return f"{match[1]}: {match[2]}"


def nothing_stored(emulator) -> bool:
    leftovers = list((emulator.data_dir / "tmp").iterdir())
    return emulator.stored_objects() == [] and leftovers == []


async def test_chunked_body_is_refused_with_501(emulator, emu_client, raw_http):
    created = await emu_client.new()
    head = raw_http.put_head(
        created["upload_url"], "Content-Type: application/json", "Transfer-Encoding: chunked"
    )
    chunks = b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)
    reply = await raw_http.send(emulator.base_url, head, chunks)
    assert reply.status == 501
    assert reply.headers["content-type"] == "application/xml"
    assert xml_code(reply.body.decode()) == (
        "NotImplemented: A header you provided implies functionality that is not implemented"
    )
    assert "<Header>Transfer-Encoding</Header>" in reply.body.decode()
    assert emulator.chunked_puts == 1
    [attempt] = emulator.put_log()
    assert (attempt.outcome, attempt.chunked, attempt.content_length) == ("501", True, None)
    assert nothing_stored(emulator)


async def test_missing_content_length_is_refused_with_411(emulator, emu_client, raw_http):
    created = await emu_client.new()
    head = raw_http.put_head(created["upload_url"], "Content-Type: application/json")
    reply = await raw_http.send(emulator.base_url, head)
    assert reply.status == 411
    assert xml_code(reply.body.decode()) == (
        "MissingContentLength: You must provide the Content-Length HTTP header."
    )
    assert emulator.counters()["put"] == {"411": 1}
    assert emulator.request(created["requestId"]).put_attempts == 1
    assert nothing_stored(emulator)


async def test_expired_url_is_refused_with_access_denied(emulator, emu_client):
    emulator.faults.expired_url_first_n = 1
    created = await emu_client.new()
    reply = await emu_client.put(created["upload_url"], BODY)
    assert reply.status == 403
    assert reply.headers["Content-Type"] == "application/xml"
    assert xml_code(reply.text) == "AccessDenied: Request has expired"
    assert "<X-Amz-Expires>43200</X-Amz-Expires>" in reply.text
    info = emulator.request(created["requestId"])
    assert info.expired_url
    assert (info.put_attempts, info.put_successes, info.status) == (1, 0, "uploading")
    assert nothing_stored(emulator)


async def test_clock_skew_expires_issued_urls_and_new_ones_work(emulator, emu_client):
    """Moving the emulator's clock is time passing for SafetyKit and S3 alike: a URL held
    past its lifetime is refused, and one issued afterwards works."""
    old = await emu_client.new()
    emulator.clock_skew_s = 12 * 3600 + 1
    reply = await emu_client.put(old["upload_url"], BODY)
    assert (reply.status, xml_code(reply.text)) == (403, "AccessDenied: Request has expired")
    fresh = await emu_client.new()
    assert (await emu_client.put(fresh["upload_url"], BODY)).status == 200
    assert [a.error_code for a in emulator.put_log()] == ["AccessDenied", None]


@pytest.mark.parametrize(
    "content_type",
    ["application/octet-stream", "application/json; charset=utf-8", "text/plain", None],
)
async def test_other_content_type_breaks_the_signature(emulator, emu_client, content_type):
    created = await emu_client.new()
    reply = await emu_client.put(created["upload_url"], BODY, content_type=content_type)
    assert reply.status == 403
    assert xml_code(reply.text).startswith("SignatureDoesNotMatch: The request signature")
    assert emulator.put_log()[0].content_type == content_type or content_type is None
    assert nothing_stored(emulator)


@pytest.mark.parametrize(
    "tamper",
    ["flip-signature", "drop-signature", "longer-expiry", "other-date", "other-key"],
)
async def test_tampered_url_is_refused(emulator, emu_client, tamper):
    created = await emu_client.new()
    other = await emu_client.new()
    url = created["upload_url"]
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    sig = query["X-Amz-Signature"]
    if tamper == "flip-signature":
        url = with_query(url, **{"X-Amz-Signature": ("0" if sig[0] != "0" else "1") + sig[1:]})
    elif tamper == "drop-signature":
        url = with_query(url, **{"X-Amz-Signature": None})
    elif tamper == "longer-expiry":
        url = with_query(url, **{"X-Amz-Expires": "604800"})
    elif tamper == "other-date":
        date = query["X-Amz-Date"]
        other_seconds = "01Z" if date.endswith("00Z") else "00Z"  # always another second
        url = with_query(url, **{"X-Amz-Date": date[:-3] + other_seconds})
    else:  # this request's signature on another request's key
        url = with_query(other["upload_url"], **{"X-Amz-Signature": sig})
    reply = await emu_client.put(url, BODY)
    if tamper == "drop-signature":
        assert reply.status == 400
        assert xml_code(reply.text).startswith(
            "AuthorizationQueryParametersError: Query-string authentication version 4 requires"
        )
    else:
        assert reply.status == 403
        assert xml_code(reply.text).startswith("SignatureDoesNotMatch:")
    assert emulator.put_log()[0].error_code == xml_code(reply.text).partition(":")[0]
    assert nothing_stored(emulator)


async def test_etag_is_the_md5_of_the_body(emulator, emu_client):
    body = os.urandom(3 * 1024 * 1024 + 17)  # several write batches and a ragged tail
    created = await emu_client.new()
    reply = await emu_client.put(created["upload_url"], body)
    assert reply.status == 200
    md5 = hashlib.md5(body).hexdigest()
    assert reply.headers["ETag"] == f'"{md5}"'
    info = emulator.request(created["requestId"])
    assert (info.size, info.md5, info.put_successes) == (len(body), md5, 1)
    assert info.object_path is not None
    assert info.object_path.read_bytes() == body
    assert info.object_path.name == f"{created['requestId']}.jsonl"
    assert list((emulator.data_dir / "tmp").iterdir()) == []


async def test_over_5_gib_is_refused_before_the_body(emulator, emu_client, raw_http):
    created = await emu_client.new()
    too_big = 5 * 1024**3 + 1
    head = raw_http.put_head(
        created["upload_url"], "Content-Type: application/json", f"Content-Length: {too_big}"
    )
    reply = await raw_http.send(emulator.base_url, head)  # headers only: no body is sent
    assert reply.status == 400
    text = reply.body.decode()
    assert xml_code(text) == "EntityTooLarge: Your proposed upload exceeds the maximum allowed size"
    assert f"<ProposedSize>{too_big}</ProposedSize>" in text
    assert "<MaxSizeAllowed>5368709120</MaxSizeAllowed>" in text
    assert emulator.max_puts_in_flight == 0
    assert nothing_stored(emulator)


async def test_put_to_the_same_key_overwrites_and_counts(emulator, emu_client):
    created = await emu_client.new()
    rid = created["requestId"]
    assert (await emu_client.put(created["upload_url"], b'{"id": "old"}\n')).status == 200
    assert (await emu_client.status("products", rid)).json()["data_count"] == 1
    assert (await emu_client.put(created["upload_url"], BODY)).status == 200
    info = emulator.request(rid)
    assert (info.put_attempts, info.put_successes, info.size) == (2, 2, len(BODY))
    assert [line for _, line in emulator.stored_records()] == [b'{"id": "a"}', b'{"id": "b"}']
    # The new object is processed afresh.
    assert emulator.request(rid).status == "ingesting"
    assert (await emu_client.status("products", rid)).json()["data_count"] == 2


async def test_short_body_stores_nothing(emulator, emu_client, raw_http):
    created = await emu_client.new()
    head = raw_http.put_head(
        created["upload_url"], "Content-Type: application/json", "Content-Length: 100000"
    )
    _, writer = await raw_http.connect(emulator.base_url)
    writer.write(head.encode() + b"\r\n\r\n" + b"x" * 40000)
    await writer.drain()
    await emulator.wait_for(lambda: emulator.puts_in_flight == 1)
    await raw_http.close(writer)  # the connection drops mid-body
    await emulator.wait_for(lambda: emulator.counters()["put"].get("incomplete") == 1)
    assert emulator.puts_in_flight == 0
    info = emulator.request(created["requestId"])
    assert (info.put_attempts, info.put_successes, info.object_path) == (1, 0, None)
    assert nothing_stored(emulator)


async def test_whole_body_is_read_before_answering(emulator, emu_client, raw_http):
    created = await emu_client.new()
    head = raw_http.put_head(
        created["upload_url"], "Content-Type: application/json", f"Content-Length: {len(BODY)}"
    )
    reader, writer = await raw_http.connect(emulator.base_url)
    try:
        writer.write(head.encode() + b"\r\n\r\n" + BODY[:5])
        await writer.drain()
        await emulator.wait_for(lambda: emulator.puts_in_flight == 1)
        answer = asyncio.ensure_future(raw_http.read_reply(reader))
        await asyncio.sleep(0)  # give a premature answer every chance to arrive
        assert not answer.done()
        writer.write(BODY[5:])
        reply = await answer
        assert reply.status == 200
    finally:
        await raw_http.close(writer)


async def test_expect_100_continue_refuses_before_the_body(emulator, emu_client, raw_http):
    created = await emu_client.new()
    bad = raw_http.put_head(
        created["upload_url"],
        "Content-Type: text/plain",
        f"Content-Length: {len(BODY)}",
        "Expect: 100-continue",
    )
    reply = await raw_http.send(emulator.base_url, bad, BODY, wait_for_continue=True)
    assert (reply.status, reply.interim) == (403, ())
    good = bad.replace("text/plain", "application/json")
    reply = await raw_http.send(emulator.base_url, good, BODY, wait_for_continue=True)
    assert (reply.status, reply.interim) == (200, (100,))
    assert [a.outcome for a in emulator.put_log()] == ["403", "200"]
    assert emulator.request(created["requestId"]).put_attempts == 2


async def test_max_puts_in_flight_counts_concurrent_bodies(emulator, emu_client, raw_http):
    n = 4
    created = [await emu_client.new() for _ in range(n)]
    connections = []
    try:
        for c in created:
            reader, writer = await raw_http.connect(emulator.base_url)
            head = raw_http.put_head(
                c["upload_url"], "Content-Type: application/json", f"Content-Length: {len(BODY)}"
            )
            writer.write(head.encode() + b"\r\n\r\n" + BODY[:3])
            connections.append((reader, writer))
        await emulator.wait_for(lambda: emulator.puts_in_flight == n)
        for _, writer in connections:
            writer.write(BODY[3:])
        replies = [await raw_http.read_reply(reader) for reader, _ in connections]
    finally:
        for _, writer in connections:
            await raw_http.close(writer)
    assert [r.status for r in replies] == [200] * n
    assert emulator.max_puts_in_flight == n
    assert emulator.puts_in_flight == 0
    assert emulator.counters()["put"] == {"200": n}
    assert sorted(rid for rid, _ in emulator.stored_records()) == sorted(
        c["requestId"] for c in created for _ in range(2)
    )


async def test_stored_records_lists_every_line(emulator, emu_client):
    first = await emu_client.upload(b'{"id": "1"}\r\n\n{"id": "2"}', namespace="products")
    second = await emu_client.upload(b'{"id": "3"}\n', namespace="users")
    assert emulator.stored_records() == [
        (first["requestId"], b'{"id": "1"}'),
        (first["requestId"], b'{"id": "2"}'),
        (second["requestId"], b'{"id": "3"}'),
    ]
    assert emulator.stored_records("users") == [(second["requestId"], b'{"id": "3"}')]
    assert emulator.stored_records("nobody") == []


def test_the_loop_never_blocks_on_files(emulator_thread):
    """blockbuster raises if the emulator's loop thread makes a blocking file call."""
    import json
    import urllib.request

    from blockbuster import blockbuster_ctx

    base, auth = emulator_thread.base_url, {"Authorization": "Bearer test-key"}

    def call(
        method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> bytes:
        request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        with urllib.request.urlopen(request, timeout=10) as resp:
            data: bytes = resp.read()
            return data

    with blockbuster_ctx("bulkload.emulator"):
        created = json.loads(call("POST", f"{base}/v1/data/p/import", b"{}", auth))
        body = b'{"id": "x"}\n' * 300_000
        call("PUT", created["upload_url"], body, {"Content-Type": "application/json"})
        status = json.loads(
            call("GET", f"{base}/v1/data/p/requests/{created['requestId']}", None, auth)
        )
        assert status["status"] == "succeeded"
        assert len(call("GET", status["data_url"]).splitlines()) == 300_000
    assert emulator_thread.counters()["put"] == {"200": 1}
