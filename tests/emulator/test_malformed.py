"""Malformed API answers (proxies, gateways, broken deployments), shape by shape.

Answers are read over a raw connection, so what is checked is what was sent: status,
headers, and the body bytes, even when they fall short of the Content-Length."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pytest
from conftest import API_KEY, exchange

from bulkload.emulator import Emulator, Faults
from bulkload.emulator._faults import IMPORT_MALFORMED_SHAPES, STATUS_MALFORMED_SHAPES
from bulkload.emulator._malformed import CREATES_REQUEST

BODY = b'{"id": "a"}\n'


async def call(
    base_url: str, method: str, path: str, body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """One call on its own connection: status, headers (lower case), and every body byte
    that arrived before the server closed."""
    head = "\r\n".join(
        [
            f"{method} {path} HTTP/1.1",
            "Host: emulator",
            f"Authorization: Bearer {API_KEY}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
    )
    reply = await exchange(base_url, head, body)
    return reply.status, reply.headers, reply.body


async def create(emu: Emulator) -> tuple[int, dict[str, str], bytes]:
    return await call(emu.base_url, "POST", "/v1/data/products/import", b"{}")


def check_any_answer_shape(shape: str, headers: dict[str, str], payload: bytes) -> Any:
    """The checks every answer's generic shapes share; the parsed JSON of the others."""
    length = int(headers["content-length"])
    if shape == "short-body":
        assert headers["content-type"] == "application/json"
        assert 0 < len(payload) < length  # headers promised more; the connection closed
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(payload)
        return None
    assert len(payload) == length
    if shape == "html":
        assert headers["content-type"].startswith("text/html")
        assert payload.startswith(b"<!DOCTYPE html>")
        return None
    assert headers["content-type"] == "application/json"
    if shape == "empty":
        assert payload == b""
        return None
    if shape == "truncated-json":
        assert payload.startswith(b"{")
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(payload)
        return None
    return orjson.loads(payload)


@pytest.mark.parametrize("shape", IMPORT_MALFORMED_SHAPES)
async def test_malformed_import_answer(emulator, shape):
    emulator.set_faults(import_malformed_first_n=1, import_malformed_shape=shape)
    status, headers, payload = await create(emulator)
    assert status == 200
    doc = check_any_answer_shape(shape, headers, payload)
    created = emulator.requests()
    # Only an answer that names its request (and hands over a usable key) made one.
    assert len(created) == (1 if shape in CREATES_REQUEST else 0)
    if shape == "json-array":
        [inner] = doc
        assert inner["status"] == "pending_upload"
        assert inner["upload_url"].startswith(emulator.base_url)
    elif doc is not None:
        assert set(doc) <= {"status", "requestId", "objectKey", "upload_url", "expires_at"}
        url = doc.get("upload_url")
        if shape == "upload-url-missing":
            assert "upload_url" not in doc
        elif shape == "upload-url-null":
            assert url is None and doc["requestId"].startswith("req_")
        elif shape == "request-id-null":
            assert doc["requestId"] is None and url.startswith(emulator.base_url)
        elif shape == "upload-url-relative":
            assert url.startswith(f"/{emulator.bucket}/") and "X-Amz-Signature=" in url
        elif shape == "upload-url-s3-uri":
            assert url == f"s3://{emulator.bucket}/{doc['objectKey']}"
        elif shape == "request-id-missing":
            assert "requestId" not in doc and url.startswith(emulator.base_url)
        elif shape == "expires-at-unparseable":
            with pytest.raises(ValueError, match=r"month must be in 1\.\.12"):
                datetime.fromisoformat(doc["expires_at"])
        if shape in CREATES_REQUEST:
            assert [r.request_id for r in created] == [doc["requestId"]]
    # The fault is spent: the next call is answered in full.
    status, _, payload = await create(emulator)
    assert status == 200 and "upload_url" in orjson.loads(payload)
    assert emulator.counters()["import"] == {f"malformed:{shape}": 1, "200": 1}


@pytest.mark.parametrize("endpoint", ["status", "results_url"])
@pytest.mark.parametrize("shape", STATUS_MALFORMED_SHAPES)
async def test_malformed_status_answer(emulator, emu_client, shape, endpoint):
    created = await emu_client.upload(BODY)
    path = f"/v1/data/products/requests/{created['requestId']}"
    if endpoint == "results_url":
        path += "/results/download-url"
    emulator.set_faults(status_malformed_first_n=1, status_malformed_shape=shape)
    status, headers, payload = await call(emulator.base_url, "GET", path)
    assert status == 200
    doc = check_any_answer_shape(shape, headers, payload)
    if shape == "json-array":
        [inner] = doc
        assert inner["status"] == "succeeded"
    elif shape == "status-missing":
        assert "status" not in doc and doc["requestId"] == created["requestId"]
    elif shape == "status-null":
        assert doc["status"] is None
    elif shape == "status-not-string":
        assert doc["status"] == {"value": "succeeded"}
    # The request went on as it would have; the next answer says so in full.
    status, _, payload = await call(emulator.base_url, "GET", path)
    assert (status, orjson.loads(payload)["status"]) == (200, "succeeded")
    assert emulator.counters()[endpoint] == {f"malformed:{shape}": 1, "200": 1}


async def test_cycle_takes_every_shape_in_turn(emulator, emu_client):
    n = len(IMPORT_MALFORMED_SHAPES)
    emulator.set_faults(import_malformed_first_n=n + 1)  # shape: "cycle", the default
    for _ in range(n + 1):
        await create(emulator)
    counts = emulator.counters()["import"]
    assert counts == {
        **{f"malformed:{s}": 1 for s in IMPORT_MALFORMED_SHAPES},
        f"malformed:{IMPORT_MALFORMED_SHAPES[0]}": 2,  # and round again
    }
    assert len(emulator.requests()) == len(CREATES_REQUEST)


async def test_faults_never_mask_a_client_error(emulator):
    emulator.faults.import_malformed_first_n = 1
    status, _, _ = await call(emulator.base_url, "POST", "/v1/data/bad.ns/import", b"{}")
    assert status == 400
    status, _, payload = await create(emulator)
    assert status == 200
    assert emulator.counters()["import"] == {"400": 1, "malformed:html": 1}


@pytest.mark.parametrize("kind", ["import", "status"])
async def test_malformed_rate_is_seeded(kind):
    async def run(seed: int) -> list[tuple[int, str, int]]:
        faults = Faults()
        faults.update(**{f"{kind}_malformed_rate": 0.5})
        async with Emulator(api_key=API_KEY, seed=seed) as emu:
            status, _, payload = await create(emu)
            path = f"/v1/data/products/requests/{orjson.loads(payload)['requestId']}"
            emu.set_faults(faults)
            seen = []
            for _ in range(20):
                if kind == "import":
                    status, headers, payload = await create(emu)
                else:
                    status, headers, payload = await call(emu.base_url, "GET", path)
                seen.append((status, headers["content-type"], len(payload)))
            return seen

    first, again, other = await run(9), await run(9), await run(10)
    assert first == again
    assert first != other
    assert len(set(first)) > 2  # good answers and several shapes
