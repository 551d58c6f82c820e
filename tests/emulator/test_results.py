"""Results downloads served as S3 serves an object (Content-Length, ETag = MD5), and
downloads that are cut or stall halfway. Read over raw connections where what matters is
exactly which bytes arrived."""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp
import pytest
from conftest import API_KEY, EmuClient, exchange

from bulkload.emulator import Emulator, Faults

RECORDS = b"".join(b'{"id": "obj-%04d"}\n' % i for i in range(2000))


async def get(url: str) -> tuple[int, dict[str, str], bytes, float]:
    """GET ``url`` on its own connection; status, headers, every body byte that arrived
    before the server closed, and how long that took."""
    base, _, target = url.partition("/results/")
    reply = await exchange(base, f"GET /results/{target} HTTP/1.1\r\nHost: e")
    return reply.status, reply.headers, reply.body, reply.elapsed


async def data_url(client: EmuClient) -> str:
    created = await client.upload(RECORDS)
    reply = await client.download_url("products", created["requestId"])
    url: str = reply.json()["data_url"]
    return url


async def test_download_has_length_and_md5_etag(emulator, emu_client):
    url = await data_url(emu_client)
    status, headers, body, _ = await get(url)
    assert status == 200
    assert len(body.splitlines()) == 2000
    assert int(headers["content-length"]) == len(body)
    assert headers["etag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert headers["content-type"] == "application/x-ndjson"
    assert emulator.counters()["results"] == {"200": 1}


async def test_etag_of_an_older_results_file_is_its_md5(emulator, emu_client):
    """While a newer object ingests, the last results file is still served, and its ETag
    is still the MD5 of what is sent."""
    created = await emu_client.upload(RECORDS)
    rid = created["requestId"]
    url = (await emu_client.download_url("products", rid)).json()["data_url"]
    emulator.ingest_delay = 3600
    assert (await emu_client.put(created["upload_url"], RECORDS[:19])).status == 200
    assert emulator.request(rid).status == "ingesting"
    status, headers, body, _ = await get(url)
    assert status == 200
    assert len(body) == int(headers["content-length"]) > 0
    assert headers["etag"] == f'"{hashlib.md5(body).hexdigest()}"'


async def test_cut_download_is_short_of_its_length(emulator, emu_client):
    url = await data_url(emu_client)
    whole = (await get(url))[2]
    emulator.faults.results_cut_first_n = 1
    status, headers, body, _ = await get(url)
    assert status == 200
    assert int(headers["content-length"]) == len(whole)  # the full length was promised
    assert len(body) == len(whole) // 2  # about half came, then the connection closed
    assert whole.startswith(body)
    # The ETag is the whole file's MD5, so what arrived does not match it.
    assert headers["etag"] == f'"{hashlib.md5(whole).hexdigest()}"'
    assert hashlib.md5(body).hexdigest() != hashlib.md5(whole).hexdigest()
    # What an HTTP client reports:
    emulator.faults.results_cut_first_n = 1
    async with aiohttp.ClientSession() as s, s.get(url) as resp:
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert (await get(url))[2] == whole  # the fault is spent
    assert emulator.counters()["results"] == {"200": 2, "cut": 2}


async def test_stalled_download_sends_half_then_nothing_then_closes(emulator, emu_client):
    url = await data_url(emu_client)
    whole = (await get(url))[2]
    emulator.set_faults(results_stall_first_n=1, hang_s=0.3)
    status, headers, body, elapsed = await get(url)
    assert status == 200
    assert int(headers["content-length"]) == len(whole)
    assert body == whole[: len(whole) // 2]
    assert elapsed >= 0.3  # the connection stayed open, silent, for hang_s
    assert emulator.counters()["results"] == {"200": 1, "stalled": 1}


async def test_stall_outlasts_a_client_read_timeout(emulator, emu_client):
    url = await data_url(emu_client)
    emulator.set_faults(results_stall_first_n=1, hang_s=60)
    timeout = aiohttp.ClientTimeout(sock_read=0.2)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        async with s.get(url) as resp:
            assert resp.status == 200
            with pytest.raises(asyncio.TimeoutError):
                await resp.read()
        # Giving up does not hold the next download up.
        async with s.get(url) as resp:
            assert await resp.read() == (await get(url))[2]
    assert emulator.counters()["results"]["stalled"] == 1


async def test_results_fault_rates_are_seeded():
    async def run(seed: int) -> list[int]:
        faults = Faults(results_cut_rate=0.5)
        async with Emulator(api_key=API_KEY, seed=seed, faults=faults) as emu:
            async with aiohttp.ClientSession() as s:
                url = await data_url(EmuClient(s, emu.base_url))
            return [len((await get(url))[2]) for _ in range(16)]

    first, again, other = await run(1), await run(1), await run(2)
    assert first == again != other
    assert len(set(first)) == 2  # whole files and halves
