"""Sink mode (``discard_bodies``): the emulator as a benchmark's upload target.

A PUT passes the same S3 checks, has its whole body read and dropped, and is answered
with an ETag that is not an MD5; the request then succeeds with ``data_count`` = lines.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from conftest import API_KEY, EmuClient

from bulkload.emulator import Emulator
from bulkload.emulator._cli import add_arguments

BODY = b'{"id": "a"}\n{"id": "b"}\n\n{"id": "c"}'  # three records, a blank line, no final \n


@pytest_asyncio.fixture
async def sink() -> AsyncIterator[Emulator]:
    async with Emulator(api_key=API_KEY, discard_bodies=True) as emu:
        yield emu


@pytest_asyncio.fixture
async def sink_client(sink: Emulator) -> AsyncIterator[EmuClient]:
    async with aiohttp.ClientSession() as session:
        yield EmuClient(session, sink.base_url)


async def test_put_is_counted_not_stored(sink, sink_client):
    created = await sink_client.new()
    reply = await sink_client.put(created["upload_url"], BODY)
    assert reply.status == 200, reply.body
    etag = reply.headers["ETag"]
    assert etag == f'"discarded-{len(BODY)}"'
    assert not re.fullmatch(r'"[0-9a-f]{32}"', etag)  # clients must skip the MD5 check
    info = sink.request(created["requestId"])
    assert (info.status, info.size, info.md5, info.object_path) == (
        "ingesting",
        len(BODY),
        None,
        None,
    )
    assert sink.stored_objects() == []
    assert list((sink.data_dir / "objects").rglob("*.jsonl")) == []
    assert list((sink.data_dir / "tmp").iterdir()) == []
    assert sink.counters()["put"] == {"200": 1}
    assert sink.state()["discard_bodies"] is True


async def test_request_succeeds_with_the_line_count(sink, sink_client):
    created = await sink_client.new()
    assert (await sink_client.put(created["upload_url"], BODY)).status == 200
    status = (await sink_client.status("products", created["requestId"])).json()
    # Four lines (one blank): the sink counts lines, it does not parse them.
    assert (status["status"], status["data_count"], status["error_summary"]) == (
        "succeeded",
        4,
        None,
    )
    # The results were never made: the data_url answers S3's 404.
    download = await sink_client.request("GET", status["data_url"])
    assert download.status == 404
    assert b"<Code>NoSuchKey</Code>" in download.body


@pytest.mark.parametrize("line_bytes", [12, 1000])
async def test_data_count_of_a_large_body(sink, sink_client, line_bytes):
    """Many read chunks, short lines or long (the sink counts them two ways)."""
    line = b'{"id":"' + b"x" * (line_bytes - 10) + b'"}\n'
    body = line * (3 * 2**20 // line_bytes) + b'{"id": "last"}'
    created = await sink_client.new()
    assert (await sink_client.put(created["upload_url"], body)).status == 200
    status = (await sink_client.status("products", created["requestId"])).json()
    assert status["data_count"] == body.count(b"\n") + 1


async def test_s3_checks_still_apply(sink, sink_client, raw_http):
    created = await sink_client.new()
    wrong_type = await sink_client.put(created["upload_url"], BODY, content_type="text/plain")
    assert wrong_type.status == 403
    head = raw_http.put_head(
        created["upload_url"], "Content-Type: application/json", "Transfer-Encoding: chunked"
    )
    chunked = await raw_http.send(sink.base_url, head, b"0\r\n\r\n")
    assert chunked.status == 501
    assert sink.request(created["requestId"]).status == "uploading"


async def test_short_body_is_not_counted(sink, sink_client, raw_http):
    created = await sink_client.new()
    head = raw_http.put_head(
        created["upload_url"], "Content-Type: application/json", "Content-Length: 1000"
    )
    reader, writer = await raw_http.connect(sink.base_url)
    writer.write(head.encode() + b"\r\n\r\n" + b"x" * 10)
    await writer.drain()
    await raw_http.close(writer)
    await sink.wait_for(lambda: sink.put_log() != [], timeout=10)
    assert [a.outcome for a in sink.put_log()] == ["incomplete"]
    assert sink.request(created["requestId"]).put_successes == 0


@pytest.mark.parametrize(("argv", "expected"), [([], False), (["--discard-bodies"], True)])
def test_cli_flag(argv, expected):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(argv).discard_bodies is expected


async def test_bulkload_loads_into_the_sink(sink, tmp_path):
    """The loader takes the non-MD5 ETag as "nothing to verify", and every shard's
    request ends with as many results as the shard had records."""
    import bulkload

    lines = b"".join(b'{"id": "p-%06d", "title": "thing"}\n' % i for i in range(1000))
    src = tmp_path / "in.jsonl"
    src.write_bytes(lines)
    async with bulkload.Loader(
        "products",
        api_key=API_KEY,
        base_url=sink.base_url,
        work_dir=tmp_path / "work",
        shard_max_records=300,
    ) as loader:
        result = await loader.load([str(src)])
    assert (result.records, result.uploaded, result.failed, result.exit_code) == (1000, 4, 0, 0)
    assert sum(r.size or 0 for r in sink.requests()) == len(lines)
    async with aiohttp.ClientSession() as session:
        client = EmuClient(session, sink.base_url)
        counts = [
            (await client.status("products", r.request_id)).json()["data_count"]
            for r in sink.requests()
        ]
    assert sorted(counts) == [100, 300, 300, 300]
