"""The emulator's JSON API: shapes, auth and validation, the status lifecycle, results,
and conformance with the official SDK's own response models."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from safetykit import AsyncSafetykit
from safetykit.types.data_create_upload_url_response import DataCreateUploadURLResponse
from safetykit.types.data_get_download_url_response import DataGetDownloadURLResponse
from safetykit.types.data_get_status_response import Data, DataGetStatusResponse

from bulkload.emulator import Emulator

API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def parse_iso(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").astimezone(UTC).timestamp()


def jsonl(*records: object) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


@pytest.mark.parametrize("path", ["import", "requests/upload-url"])
async def test_create_answers_pending_upload(emulator, emu_client, path):
    reply = await emu_client.create("products", path=path)
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    assert set(body) == {"status", "requestId", "objectKey", "upload_url", "expires_at"}
    assert body["status"] == "pending_upload"
    request_id = body["requestId"]
    assert re.fullmatch(r"req_[0-9a-z]{26}", request_id)
    assert body["objectKey"] == f"TEAM_ID/data-api-request-input/products/{request_id}.jsonl"
    url = urlsplit(body["upload_url"])
    assert f"{url.scheme}://{url.netloc}" == emulator.base_url
    assert url.path == f"/{emulator.bucket}/{body['objectKey']}"
    # A real pre-signer's parameters, in its order, the signature last.
    names = [item.partition("=")[0] for item in url.query.split("&")]
    assert names == [
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Security-Token",
        "X-Amz-Signature",
    ]
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Expires"] == str(12 * 3600)
    assert re.fullmatch(r"\d{8}T\d{6}Z", query["X-Amz-Date"])
    day = query["X-Amz-Date"][:8]
    assert (
        query["X-Amz-Credential"] == f"{emulator.aws_access_key_id}/{day}/us-east-1/s3/aws4_request"
    )
    assert f"X-Amz-Credential={emulator.aws_access_key_id}%2F{day}%2Fus-east-1%2Fs3%2F" in url.query
    assert query["X-Amz-SignedHeaders"] == "content-type;host"
    assert query["X-Amz-Security-Token"] == emulator.aws_session_token
    assert re.fullmatch(r"[0-9a-f]{64}", query["X-Amz-Signature"])
    assert ISO_MS.match(body["expires_at"])
    assert abs(parse_iso(body["expires_at"]) - (time.time() + 12 * 3600)) < 60
    [info] = emulator.requests()
    assert (info.request_id, info.namespace, info.status) == (request_id, "products", "uploading")


async def test_each_create_is_a_new_request(emulator, emu_client):
    ids = [(await emu_client.new())["requestId"] for _ in range(5)]
    assert len(set(ids)) == 5
    assert [r.request_id for r in emulator.requests()] == ids  # creation order


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": f"Basic {API_KEY}"},
        {"Authorization": API_KEY},
    ],
    ids=["none", "wrong-key", "basic", "no-scheme"],
)
async def test_api_calls_need_the_bearer_key(emulator, emu_client, headers):
    created = await emu_client.new()
    rid = created["requestId"]
    for method, path in [
        ("POST", "/v1/data/products/import"),
        ("POST", "/v1/data/products/requests/upload-url"),
        ("GET", f"/v1/data/products/requests/{rid}"),
        ("GET", f"/v1/data/products/requests/{rid}/results/download-url"),
    ]:
        reply = await emu_client.request(method, path, headers=headers)
        assert reply.status == 401, (method, path)
        assert isinstance(reply.json()["error"], str)
    assert emulator.counters()["import"] == {"200": 1, "401": 2}
    assert len(emulator.requests()) == 1


@pytest.mark.parametrize("namespace", ["bad.ns", "bad%20ns", "b%C3%A4d", "a+b"])
async def test_namespace_characters_are_checked(emu_client, namespace):
    for reply in [
        await emu_client.create(namespace),
        await emu_client.status(namespace, "req_x"),
    ]:
        assert reply.status == 400
        assert "namespace" in reply.json()["error"]


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"1", b"null", b"{", b"not json"])
async def test_create_body_must_be_empty_or_an_object(emu_client, body):
    reply = await emu_client.request("POST", "/v1/data/products/import", headers=AUTH, data=body)
    assert reply.status == 400
    assert "JSON object" in reply.json()["error"]


@pytest.mark.parametrize("body", [b"", b"{}", b'{"note": 1}', b"  \n"])
async def test_create_accepts_empty_or_object_bodies(emu_client, body):
    reply = await emu_client.request("POST", "/v1/data/products/import", headers=AUTH, data=body)
    assert reply.status == 200


async def test_unknown_request_or_wrong_namespace_is_404(emu_client):
    rid = (await emu_client.new("products"))["requestId"]
    for reply in [
        await emu_client.status("products", "req_00000000000000000000000000"),
        await emu_client.status("users", rid),
        await emu_client.download_url("users", rid),
        await emu_client.download_url("products", "nope"),
    ]:
        assert reply.status == 404
        assert "not found" in reply.json()["error"]


async def test_status_lifecycle_uploading_ingesting_succeeded(emu_client):
    async with Emulator(api_key=API_KEY, ingest_delay=3600) as emu, aiohttp.ClientSession() as s:
        client = type(emu_client)(s, emu.base_url)
        created = await client.new()
        rid = created["requestId"]
        status = (await client.status("products", rid)).json()
        assert status["status"] == "uploading"
        assert status["requestId"] == status["request_id"] == rid
        assert status["namespace"] == "products"
        assert status["data_url"] is None
        assert status["error_summary"] is None

        reply = await client.put(created["upload_url"], jsonl({"id": "a"}, {"id": "b"}))
        assert reply.status == 200
        for _ in range(3):  # stays ingesting for as long as the delay runs
            assert (await client.status("products", rid)).json()["status"] == "ingesting"
        assert emu.request(rid).status == "ingesting"

        emu.ingest_delay = 0  # the delay is over
        status = (await client.status("products", rid)).json()
        assert status["status"] == "succeeded"
        assert status["data_count"] == 2
        assert status["data_url"].startswith(f"{emu.base_url}/results/{rid}.jsonl?")
        assert ISO_MS.match(status["data_expires_at"])
        assert emu.request(rid).status == "succeeded"


async def test_ingest_delay_is_measured_from_arrival(emu_client):
    async with Emulator(api_key=API_KEY, ingest_delay=0.05) as emu, aiohttp.ClientSession() as s:
        client = type(emu_client)(s, emu.base_url)
        before_put = time.monotonic()  # the object arrives after this (same clock as the loop)
        created = await client.upload(jsonl({"id": "a"}))
        seen: list[str] = []
        while not seen or seen[-1] == "ingesting":
            seen.append((await client.status("products", created["requestId"])).json()["status"])
        assert seen[-1] == "succeeded"
        assert time.monotonic() - before_put >= 0.05


async def test_failed_request_names_the_bad_lines(emulator, emu_client):
    body = b"\n".join(
        [
            b'{"id": "ok-1"}',
            b"   ",
            b'{"name": "no id"}',
            b'{"id": "broken"',
            b"[1, 2]",
            b'{"id": 7}',
            b'{"id": ""}',
            b'{"id": "ok-2"}',
        ]
    )
    created = await emu_client.upload(body)
    status = (await emu_client.status("products", created["requestId"])).json()
    assert status["status"] == "failed"
    assert status["error_summary"] == (
        "line 3: missing id; line 4: invalid JSON; line 5: not a JSON object; "
        "line 6: id is not a non-empty string; line 7: id is not a non-empty string"
    )
    assert status["data_url"] is None
    assert status["data_count"] is None
    download = (await emu_client.download_url("products", created["requestId"])).json()
    assert download["status"] == "failed"
    assert download["error_summary"] == status["error_summary"]


async def test_error_summary_is_cut_after_ten_lines(emu_client):
    created = await emu_client.upload(b"{}\n" * 15)
    summary = (await emu_client.status("products", created["requestId"])).json()["error_summary"]
    assert summary.count("missing id") == 10
    assert summary.endswith("line 10: missing id; and 5 more bad lines")


async def test_fail_ids_make_a_request_fail(emulator, emu_client):
    emulator.faults.fail_ids = {"poison"}
    bad = await emu_client.upload(jsonl({"id": "fine"}, {"id": "poison", "x": 1}))
    good = await emu_client.upload(jsonl({"id": "fine"}))
    bad_status = (await emu_client.status("products", bad["requestId"])).json()
    assert bad_status["status"] == "failed"
    assert bad_status["error_summary"] == "line 2: id 'poison' rejected (fail_ids)"
    assert (await emu_client.status("products", good["requestId"])).json()["status"] == (
        "succeeded"
    )


async def test_empty_object_succeeds_with_no_records(emu_client):
    created = await emu_client.upload(b"")
    status = (await emu_client.status("products", created["requestId"])).json()
    assert (status["status"], status["data_count"]) == ("succeeded", 0)


async def test_download_url_fields_are_null_until_succeeded(emu_client):
    created = await emu_client.new()
    rid = created["requestId"]
    before = (await emu_client.download_url("products", rid)).json()
    assert before == {
        "requestId": rid,
        "request_id": rid,
        "namespace": "products",
        "status": "uploading",
        "error_summary": None,
        "data_url": None,
        "data_count": None,
        "data_expires_at": None,
    }
    await emu_client.put(created["upload_url"], jsonl({"id": "a"}))
    after = (await emu_client.download_url("products", rid)).json()
    assert after["status"] == "succeeded"
    assert after["data_count"] == 1
    expires = parse_iso(after["data_expires_at"])
    assert abs(expires - (time.time() + 3600)) < 60


async def test_results_file_has_one_line_per_object(emulator, emu_client):
    records = [{"id": f"obj-{i}", "price": i} for i in range(50)] + [{"id": "a/b c"}]
    created = await emu_client.upload(b"\n" + jsonl(*records) + b"\n\n")
    url = (await emu_client.download_url("products", created["requestId"])).json()["data_url"]
    reply = await emu_client.request("GET", url)
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/x-ndjson"
    lines = reply.body.decode().splitlines()
    assert len(lines) == len(records)
    for record, line in zip(records, lines, strict=True):
        result = json.loads(line)
        assert result == {
            "id": record["id"],
            "output": {"actions": [], "labels": [{"label": "ok"}], "fields": {}},
            "metadata": {},
            "url": result["url"],
        }
        assert result["url"].startswith("https://app.safetykit.com/")
        Data.model_validate(result)  # the SDK's model of a per-object result
    assert lines[-1].endswith('"url":"https://app.safetykit.com/data/products/a%2Fb%20c"}')
    assert emulator.counters()["results"] == {"200": 1}


async def test_expired_data_url_is_refused(emulator, emu_client):
    emulator.faults.expired_data_url_first_n = 1
    created = await emu_client.upload(jsonl({"id": "a"}))
    expired = (await emu_client.download_url("products", created["requestId"])).json()
    assert parse_iso(expired["data_expires_at"]) < time.time()
    reply = await emu_client.request("GET", expired["data_url"])
    assert reply.status == 403
    assert reply.headers["Content-Type"] == "application/xml"
    assert "<Code>AccessDenied</Code><Message>Request has expired</Message>" in reply.text
    fresh = (await emu_client.download_url("products", created["requestId"])).json()
    assert (await emu_client.request("GET", fresh["data_url"])).status == 200
    assert emulator.counters()["results"] == {"403": 1, "200": 1}


async def test_results_ttl_sets_data_url_lifetime(emu_client):
    async with Emulator(api_key=API_KEY, results_ttl=120) as emu, aiohttp.ClientSession() as s:
        client = type(emu_client)(s, emu.base_url)
        created = await client.upload(jsonl({"id": "a"}))
        body = (await client.download_url("products", created["requestId"])).json()
        assert abs(parse_iso(body["data_expires_at"]) - (time.time() + 120)) < 5


async def test_tampered_data_url_is_refused(emu_client):
    created = await emu_client.upload(jsonl({"id": "a"}))
    url = (await emu_client.download_url("products", created["requestId"])).json()["data_url"]
    query = parse_qs(urlsplit(url).query)
    later = int(query["expires"][0]) + 10_000
    tampered = url.replace(f"expires={query['expires'][0]}", f"expires={later}")
    reply = await emu_client.request("GET", tampered)
    assert reply.status == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in reply.text
    reply = await emu_client.request("GET", url.replace(created["requestId"], "req_other"))
    assert reply.status == 403


async def test_state_endpoint_needs_no_auth(emulator, emu_client):
    await emu_client.upload(jsonl({"id": "a"}))
    reply = await emu_client.request("GET", "/_emulator/state")
    assert reply.status == 200
    state = reply.json()
    assert state == json.loads(json.dumps(emulator.state()))
    [request] = state["requests"]
    assert request["put_successes"] == 1
    assert state["counters"]["import"] == {"200": 1}
    assert state["put_log"][0]["outcome"] == "200"
    assert state["faults"]["put_503_rate"] == 0.0


async def test_sdk_conformance(emulator):
    """Every answer parses with the official SDK's models, with strict validation on."""
    client = AsyncSafetykit(
        api_key=API_KEY,
        base_url=emulator.base_url,
        max_retries=0,
        _strict_response_validation=True,
    )
    async with client, aiohttp.ClientSession() as session:
        created = await client.data.create_upload_url("products")
        assert isinstance(created, DataCreateUploadURLResponse)
        assert created.status == "pending_upload"
        assert created.object_key.endswith(f"/products/{created.request_id}.jsonl")

        status = await client.data.get_status(created.request_id, namespace="products")
        assert isinstance(status, DataGetStatusResponse)
        assert (status.status, status.data) == ("uploading", [])
        download = await client.data.get_download_url(created.request_id, namespace="products")
        assert isinstance(download, DataGetDownloadURLResponse)
        assert (download.status, download.data_url) == ("uploading", None)

        # The documented upload step: PUT the JSONL with Content-Type: application/json.
        body = jsonl({"id": "p1", "title": "lamp"}, {"id": "p2"})
        async with session.put(
            created.upload_url, data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            assert resp.status == 200

        status = await client.data.get_status(created.request_id, namespace="products")
        assert status.status == "succeeded"
        assert status.request_id == created.request_id
        download = await client.data.get_download_url(created.request_id, namespace="products")
        assert download.status == "succeeded"
        assert download.data_count == 2
        assert download.data_url is not None
        assert download.data_expires_at is not None
        async with session.get(download.data_url) as resp:
            results = [json.loads(line) for line in (await resp.read()).splitlines()]
        assert [Data.model_validate(r).id for r in results] == ["p1", "p2"]

        # The docs' /import answer parses with the SDK's model of the same operation.
        async with session.post(
            f"{emulator.base_url}/v1/data/products/import", headers=AUTH, json={}
        ) as resp:
            DataCreateUploadURLResponse.model_validate(await resp.json())
    assert emulator.counters()["import"] == {"200": 2}
