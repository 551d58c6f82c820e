"""ETags that are not an MD5 (``etag_mode``), and bodies damaged on their way in."""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from conftest import API_KEY, EmuClient

from bulkload.emulator import Emulator, Faults
from bulkload.emulator._cli import add_arguments

BODY = b'{"id": "a", "n": 1}\n{"id": "b", "n": 2}\n'
MD5 = hashlib.md5(BODY).hexdigest()
SSE = "x-amz-server-side-encryption"

#: Per mode: the encryption headers S3 answers a stored PUT with (value None: present,
#: any value).
EXPECTED_HEADERS: dict[str, dict[str, str | None]] = {
    "md5": {SSE: "AES256"},
    "sse-kms": {SSE: "aws:kms", f"{SSE}-aws-kms-key-id": None},
    "sse-kms-dsse": {SSE: "aws:kms:dsse", f"{SSE}-aws-kms-key-id": None},
    "sse-c": {f"{SSE}-customer-algorithm": "AES256", f"{SSE}-customer-key-MD5": None},
    "opaque": {},
}


@contextlib.asynccontextmanager
async def started(**kwargs) -> AsyncIterator[tuple[Emulator, EmuClient]]:
    async with Emulator(api_key=API_KEY, **kwargs) as emu, aiohttp.ClientSession() as session:
        yield emu, EmuClient(session, emu.base_url)


@pytest.mark.parametrize("mode", sorted(EXPECTED_HEADERS))
async def test_etag_mode_answers_as_s3_does(mode):
    async with started(etag_mode=mode) as (emu, client):
        created = await client.new()
        reply = await client.put(created["upload_url"], BODY)
        assert reply.status == 200
        etag = reply.headers["ETag"]
        assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
        assert (etag == f'"{MD5}"') is (mode == "md5")
        sse_headers = {k: v for k, v in reply.headers.items() if k.lower().startswith(SSE)}
        assert {k.lower() for k in sse_headers} == {k.lower() for k in EXPECTED_HEADERS[mode]}
        for name, value in EXPECTED_HEADERS[mode].items():
            assert value is None or reply.headers[name] == value
        if mode.startswith("sse-kms"):
            assert reply.headers[f"{SSE}-aws-kms-key-id"].startswith("arn:aws:kms:us-east-1:")
        # Stored as sent, whatever the answer says.
        info = emu.request(created["requestId"])
        assert info.object_path is not None and info.object_path.read_bytes() == BODY
        assert (info.md5, info.etag) == (MD5, etag.strip('"'))
        # Deterministic per object: the same content gets the same ETag, other content
        # another one.
        again = await client.put(created["upload_url"], BODY)
        assert again.headers["ETag"] == etag
        other = await client.put(created["upload_url"], BODY + b'{"id": "c"}\n')
        assert other.headers["ETag"] != etag
        assert emu.state()["etag_mode"] == mode


async def test_sink_mode_keeps_its_etag_whatever_the_mode():
    async with started(etag_mode="sse-kms", discard_bodies=True) as (emu, client):
        created = await client.new()
        reply = await client.put(created["upload_url"], BODY)
        assert reply.headers["ETag"] == f'"discarded-{len(BODY)}"'
        assert SSE not in reply.headers


def test_bad_etag_mode_is_refused():
    with pytest.raises(ValueError, match="etag_mode must be one of md5, sse-kms"):
        Emulator(etag_mode="sha256")


@pytest.mark.parametrize(("argv", "expected"), [([], "md5"), (["--etag-mode", "sse-c"], "sse-c")])
def test_etag_mode_flag(argv, expected):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(argv).etag_mode == expected


async def test_damage_stores_a_flipped_byte_and_answers_its_md5(emulator, emu_client):
    emulator.faults.put_damage_first_n = 1
    created = await emu_client.new()
    reply = await emu_client.put(created["upload_url"], BODY)
    assert reply.status == 200
    info = emulator.request(created["requestId"])
    assert info.object_path is not None
    stored = info.object_path.read_bytes()
    assert len(stored) == len(BODY)
    differing = [i for i in range(len(BODY)) if stored[i] != BODY[i]]
    assert differing == [len(BODY) // 2]
    assert stored[len(BODY) // 2] == BODY[len(BODY) // 2] ^ 0xFF
    # Exactly what S3 answers for a body corrupted on the way: the MD5 of what it got.
    assert reply.headers["ETag"] == f'"{hashlib.md5(stored).hexdigest()}"'
    assert reply.headers["ETag"] != f'"{MD5}"'
    assert info.md5 == hashlib.md5(stored).hexdigest()
    # The next PUT arrives whole.
    reply = await emu_client.put(created["upload_url"], BODY)
    assert reply.headers["ETag"] == f'"{MD5}"'
    assert [(a.outcome, a.damaged) for a in emulator.put_log()] == [("200", True), ("200", False)]


async def test_damage_across_read_chunks(emulator, emu_client):
    """The flipped byte lies deep in a body that arrives in many chunks."""
    body = b'{"id": "x"}\n' * 400_000
    emulator.faults.put_damage_first_n = 1
    created = await emu_client.new()
    reply = await emu_client.put(created["upload_url"], body)
    info = emulator.request(created["requestId"])
    assert info.object_path is not None
    stored = info.object_path.read_bytes()
    expected = bytearray(body)
    expected[len(body) // 2] ^= 0xFF
    assert stored == bytes(expected)
    assert reply.headers["ETag"] == f'"{hashlib.md5(expected).hexdigest()}"'


async def test_damage_under_an_opaque_etag_mode_changes_the_etag():
    async with started(etag_mode="sse-kms") as (emu, client):
        created = await client.new()
        clean = (await client.put(created["upload_url"], BODY)).headers["ETag"]
        emu.faults.put_damage_first_n = 1
        damaged = (await client.put(created["upload_url"], BODY)).headers["ETag"]
        assert re.fullmatch(r'"[0-9a-f]{32}"', damaged)
        assert damaged != clean


async def test_damage_rate_is_seeded():
    runs = []
    for seed in (5, 5, 6):
        async with started(seed=seed, faults=Faults(put_damage_rate=0.5)) as (emu, client):
            created = await client.new()
            for _ in range(16):
                await client.put(created["upload_url"], BODY)
            runs.append([a.damaged for a in emu.put_log()])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert set(runs[0]) == {True, False}


def content_md5(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()


@pytest.mark.parametrize("mode", ["md5", "sse-kms", "opaque"])
async def test_content_md5_is_checked_whatever_the_etag(mode):
    """A client that cannot read the ETag as an MD5 can still have S3 check the body."""
    async with started(etag_mode=mode) as (emu, client):
        created = await client.new()
        url = created["upload_url"]
        good = await client.request(
            "PUT",
            url,
            data=BODY,
            headers={"Content-Type": "application/json", "Content-MD5": content_md5(BODY)},
        )
        assert good.status == 200
        bad = await client.request(
            "PUT",
            url,
            data=BODY,
            headers={"Content-Type": "application/json", "Content-MD5": content_md5(b"other")},
        )
        assert bad.status == 400
        assert "<Code>BadDigest</Code>" in bad.text
        assert f"<CalculatedDigest>{content_md5(BODY)}</CalculatedDigest>" in bad.text
        invalid = await client.request(
            "PUT",
            url,
            data=BODY,
            headers={"Content-Type": "application/json", "Content-MD5": "not-an-md5"},
        )
        assert invalid.status == 400
        assert "<Code>InvalidDigest</Code>" in invalid.text
        assert [(a.outcome, a.error_code) for a in emu.put_log()] == [
            ("200", None),
            ("400", "BadDigest"),
            ("400", "InvalidDigest"),
        ]
        assert emu.request(created["requestId"]).put_successes == 1


async def test_damage_under_content_md5_is_refused_and_stores_nothing(emulator, emu_client):
    emulator.faults.put_damage_first_n = 1
    created = await emu_client.new()
    headers = {"Content-Type": "application/json", "Content-MD5": content_md5(BODY)}
    reply = await emu_client.request("PUT", created["upload_url"], data=BODY, headers=headers)
    assert reply.status == 400
    assert "<Code>BadDigest</Code>" in reply.text
    damaged = bytearray(BODY)
    damaged[len(BODY) // 2] ^= 0xFF
    assert f"<CalculatedDigest>{content_md5(bytes(damaged))}</CalculatedDigest>" in reply.text
    assert emulator.stored_objects() == []
    assert list((emulator.data_dir / "tmp").iterdir()) == []
    [attempt] = emulator.put_log()
    assert (attempt.outcome, attempt.error_code, attempt.damaged) == ("400", "BadDigest", True)
    # Resent, it arrives whole.
    reply = await emu_client.request("PUT", created["upload_url"], data=BODY, headers=headers)
    assert reply.status == 200
