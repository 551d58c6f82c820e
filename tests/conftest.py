"""Shared fixtures: the emulator (in the test's loop, or in a thread) and small clients."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from bulkload.emulator import Emulator, EmulatorThread

API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
JSON_CT = {"Content-Type": "application/json"}


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """An :class:`Emulator` on a free loopback port, in the test's event loop."""
    async with Emulator(api_key=API_KEY, port=0) as emu:
        yield emu


@pytest.fixture
def emulator_thread() -> Iterator[EmulatorThread]:
    """An :class:`EmulatorThread`: the emulator on its own loop in a background thread."""
    with EmulatorThread(api_key=API_KEY, port=0) as emu:
        yield emu


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


class EmuClient:
    """A thin aiohttp client of the emulator's endpoints; asserts nothing by itself."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url

    async def request(self, method: str, url: str, **kwargs: Any) -> Reply:
        if url.startswith("/"):
            url = self.base_url + url
        async with self.session.request(method, url, **kwargs) as resp:
            return Reply(resp.status, resp.headers, await resp.read())

    async def create(self, namespace: str = "products", *, path: str = "import") -> Reply:
        return await self.request(
            "POST", f"/v1/data/{namespace}/{path}", headers={**AUTH, **JSON_CT}, data=b"{}"
        )

    async def new(self, namespace: str = "products") -> dict[str, Any]:
        """Create a request; its JSON answer."""
        reply = await self.create(namespace)
        assert reply.status == 200, reply.body
        data: dict[str, Any] = reply.json()
        return data

    async def put(
        self, url: str, body: bytes, content_type: str | None = "application/json"
    ) -> Reply:
        headers = {} if content_type is None else {"Content-Type": content_type}
        # A BytesIO still gets a Content-Length, and spares aiohttp's warning about
        # large bytes bodies.
        return await self.request("PUT", url, data=io.BytesIO(body), headers=headers)

    async def status(self, namespace: str, request_id: str) -> Reply:
        return await self.request(
            "GET", f"/v1/data/{namespace}/requests/{request_id}", headers=AUTH
        )

    async def download_url(self, namespace: str, request_id: str) -> Reply:
        return await self.request(
            "GET", f"/v1/data/{namespace}/requests/{request_id}/results/download-url", headers=AUTH
        )

    async def upload(self, body: bytes, namespace: str = "products") -> dict[str, Any]:
        """Create a request and PUT ``body`` to it; the create answer."""
        created = await self.new(namespace)
        reply = await self.put(created["upload_url"], body)
        assert reply.status == 200, reply.body
        return created


@pytest_asyncio.fixture
async def emu_client(emulator: Emulator) -> AsyncIterator[EmuClient]:
    """An :class:`EmuClient` bound to the ``emulator`` fixture."""
    async with aiohttp.ClientSession() as session:
        yield EmuClient(session, emulator.base_url)


@dataclass(frozen=True)
class RawReply:
    status: int | None  # None: the server closed the connection without answering
    headers: dict[str, str]
    body: bytes
    interim: tuple[int, ...]  # 1xx answers seen before the final one


class RawHttp:
    """Hand-written HTTP/1.1 over ``asyncio.open_connection``.

    aiohttp and httpx clients add or fix up Content-Length and Transfer-Encoding and
    always send whole bodies; this sends exactly what a test says.
    """

    @staticmethod
    def put_head(url: str, *headers: str) -> str:
        """The head of a PUT to ``url`` (absolute) with the given header lines."""
        host, _, target = url.removeprefix("http://").partition("/")
        return "\r\n".join([f"PUT /{target} HTTP/1.1", f"Host: {host}", *headers])

    @staticmethod
    async def connect(base_url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = base_url.removeprefix("http://").rsplit(":", 1)
        return await asyncio.open_connection(host, int(port))

    @staticmethod
    async def close(writer: asyncio.StreamWriter) -> None:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    @staticmethod
    async def read_reply(reader: asyncio.StreamReader) -> RawReply:
        """One final answer (1xx interim answers are collected on the way)."""
        interim: list[int] = []
        while True:
            try:
                status_line = await reader.readline()
            except ConnectionResetError:
                status_line = b""
            if not status_line:
                return RawReply(None, {}, b"", tuple(interim))
            status = int(status_line.split()[1])
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            if 100 <= status < 200:
                interim.append(status)
                return RawReply(status, headers, b"", tuple(interim))
            length = int(headers.get("content-length", "0"))
            return RawReply(status, headers, await reader.readexactly(length), tuple(interim))

    async def send(
        self, base_url: str, head: str, body: bytes = b"", *, wait_for_continue: bool = False
    ) -> RawReply:
        """Send ``head`` (request line and headers, without the blank line) and ``body``
        on a fresh connection; the answer. With ``wait_for_continue``, the body goes
        only after a 100 Continue (and not at all if the server answers otherwise)."""
        reader, writer = await self.connect(base_url)
        try:
            writer.write(head.encode() + b"\r\n\r\n")
            if wait_for_continue:
                await writer.drain()
                first = await self.read_reply(reader)
                if first.status != 100:
                    return first
            writer.write(body)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            reply = await self.read_reply(reader)
            if wait_for_continue:
                reply = RawReply(reply.status, reply.headers, reply.body, (100,))
            return reply
        finally:
            await self.close(writer)


@pytest.fixture
def raw_http() -> RawHttp:
    return RawHttp()


@dataclass(frozen=True)
class ClosedReply:
    """An answer read until the server closed the connection: every body byte that
    arrived (fewer than Content-Length, when the answer was cut), and how long it took."""

    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes
    elapsed: float


async def exchange(base_url: str, head: str, body: bytes = b"") -> ClosedReply:
    """Send ``head`` (request line and headers, without ``Connection`` or the blank line)
    and ``body`` with ``Connection: close`` on a fresh connection; read to the end."""
    reader, writer = await RawHttp.connect(base_url)
    started = time.monotonic()
    try:
        writer.write(head.encode() + b"\r\nConnection: close\r\n\r\n" + body)
        data = await asyncio.wait_for(reader.read(), 30)
    finally:
        await RawHttp.close(writer)
    elapsed = time.monotonic() - started
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    status_line, *lines = head_bytes.decode().split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return ClosedReply(int(status_line.split()[1]), headers, payload, elapsed)
