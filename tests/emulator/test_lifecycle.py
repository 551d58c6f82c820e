"""Start, stop, restart and persistence; the thread-hosted variant; the command line;
waiting on the emulator; its memory bound."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import aiohttp
import psutil  # type: ignore[import-untyped]
import pytest

from bulkload.emulator import Emulator, EmulatorThread, Faults, RequestInfo
from bulkload.emulator._cli import add_arguments

API_KEY = "test-key"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": f"Bearer {API_KEY}"}
JSON_CT = {"Content-Type": "application/json"}
BODY = b'{"id": "a"}\n{"id": "b"}\n'


async def test_restart_on_the_same_data_dir_keeps_requests(tmp_path, emu_client):
    async with Emulator(api_key=API_KEY, data_dir=tmp_path) as first:
        client = type(emu_client)(emu_client.session, first.base_url)
        done = await client.upload(BODY)
        pending = await client.new()
        port, before = first.port, first.requests()
    assert (tmp_path / "state.json").is_file()

    async with Emulator(api_key=API_KEY, data_dir=tmp_path, port=port) as second:
        assert second.base_url == first.base_url
        assert second.requests() == before
        client = type(emu_client)(emu_client.session, second.base_url)
        status = (await client.status("products", done["requestId"])).json()
        assert (status["status"], status["data_count"]) == ("succeeded", 2)
        # An upload URL issued before the restart still works after it.
        assert (await client.put(pending["upload_url"], BODY)).status == 200
        info = second.request(pending["requestId"])
        assert (info.put_attempts, info.put_successes) == (1, 1)
        assert [rid for rid, _ in second.stored_records()] == [done["requestId"]] * 2 + [
            pending["requestId"]
        ] * 2


async def test_stop_and_start_the_same_emulator(emulator, emu_client):
    created = await emu_client.new()
    base_url = emulator.base_url
    await emulator.stop()
    assert not emulator.running
    with pytest.raises(aiohttp.ClientConnectionError):
        await emu_client.status("products", created["requestId"])
    await emulator.start()
    assert emulator.base_url == base_url
    async with aiohttp.ClientSession() as session:  # the old pool holds dead connections
        client = type(emu_client)(session, base_url)
        assert (await client.put(created["upload_url"], BODY)).status == 200
        assert (await client.status("products", created["requestId"])).json()["status"] == (
            "succeeded"
        )
    assert emulator.counters()["import"] == {"200": 1}  # counters survive the restart


async def test_stop_during_a_put_stores_nothing(emulator, emu_client, raw_http):
    created = await emu_client.new()
    head = raw_http.put_head(
        created["upload_url"], "Content-Type: application/json", "Content-Length: 1000"
    )
    reader, writer = await raw_http.connect(emulator.base_url)
    try:
        writer.write(head.encode() + b"\r\n\r\n" + b"x" * 10)
        await writer.drain()
        await emulator.wait_for(lambda: emulator.puts_in_flight == 1)
        await emulator.stop()
        assert (await raw_http.read_reply(reader)).status is None
    finally:
        await raw_http.close(writer)
    assert emulator.counters()["put"] == {"incomplete": 1}
    assert emulator.stored_records() == []
    assert list((emulator.data_dir / "tmp").iterdir()) == []
    await emulator.start()
    assert emulator.request(created["requestId"]).status == "uploading"


async def test_temp_data_dir_is_removed_on_exit():
    emu = Emulator(api_key=API_KEY)
    with pytest.raises(RuntimeError, match="not been started"):
        _ = emu.base_url
    async with emu:
        data_dir = emu.data_dir
        assert data_dir.is_dir()
    assert not data_dir.exists()


async def test_wait_for_wakes_on_state_changes(emulator, emu_client):
    async def later() -> None:
        await asyncio.sleep(0)
        await emu_client.upload(BODY)

    task = asyncio.ensure_future(later())
    await emulator.wait_for(lambda: any(r.put_successes for r in emulator.requests()))
    await task
    with pytest.raises(TimeoutError, match=r"not met within 0\.05 s"):
        await emulator.wait_for(lambda: False, timeout=0.05)


def test_constructor_checks_its_arguments():
    with pytest.raises(ValueError, match="ingest_delay"):
        Emulator(ingest_delay=-1)
    with pytest.raises(ValueError, match="url_ttl"):
        Emulator(url_ttl=0)
    with pytest.raises(ValueError, match="url_ttl must be at most 604800"):
        Emulator(url_ttl=604801)
    for bucket in ["s3", "Upper", "results", "-dash", "v1"]:
        with pytest.raises(ValueError, match="bucket"):
            Emulator(bucket=bucket)


def test_thread_variant_takes_every_emulator_argument():
    import inspect
    import typing

    from bulkload.emulator._server import EmulatorOptions

    params = inspect.signature(Emulator).parameters
    assert set(EmulatorOptions.__annotations__) == set(params)
    hints = typing.get_type_hints(EmulatorOptions)
    assert hints == {name: typing.get_type_hints(Emulator.__init__)[name] for name in params}


def test_request_info_is_frozen():
    info = RequestInfo("req_x", "p", "uploading", 0, 0, None, None, None, 0.0, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.status = "failed"  # type: ignore[misc]


def test_thread_variant_serves_a_client_running_its_own_loop(emulator_thread):
    """As a CLI under test would: asyncio.run() in the test's thread, the emulator in its
    own; inspection and waiting from the test's thread."""

    async def client() -> str:
        async with aiohttp.ClientSession() as s:
            base = emulator_thread.base_url
            async with s.post(f"{base}/v1/data/p/import", headers=AUTH, json={}) as resp:
                created = await resp.json()
            async with s.put(created["upload_url"], data=BODY, headers=JSON_CT) as resp:
                assert resp.status == 200
            return str(created["requestId"])

    rid = asyncio.run(client())
    emulator_thread.wait_for(lambda: emulator_thread.request(rid).put_successes == 1)
    assert emulator_thread.counters()["put"] == {"200": 1}
    assert emulator_thread.max_puts_in_flight == 1
    assert emulator_thread.stored_records() == [(rid, b'{"id": "a"}'), (rid, b'{"id": "b"}')]
    assert [a.outcome for a in emulator_thread.put_log()] == ["200"]
    assert emulator_thread.state()["requests"][0]["request_id"] == rid

    emulator_thread.stop()
    assert not emulator_thread.running
    emulator_thread.start()
    assert emulator_thread.running
    assert emulator_thread.request(rid).status == "ingesting"
    with pytest.raises(TimeoutError):
        emulator_thread.wait_for(lambda: False, timeout=0.05)


def test_thread_variant_wait_for_is_woken_from_the_loop(emulator_thread):
    import urllib.request

    def make_request() -> None:
        request = urllib.request.Request(
            f"{emulator_thread.base_url}/v1/data/p/import", data=b"", method="POST", headers=AUTH
        )
        urllib.request.urlopen(request, timeout=10).close()

    worker = threading.Thread(target=make_request)
    worker.start()
    emulator_thread.wait_for(lambda: len(emulator_thread.requests()) == 1, timeout=10)
    worker.join()


def test_thread_variant_restarts_on_a_data_dir(tmp_path):
    with EmulatorThread(api_key=API_KEY, data_dir=tmp_path, ingest_delay=7.5) as emu:
        assert emu.ingest_delay == 7.5
        emu.ingest_delay = 0
        port = emu.port
        emu.faults.import_429_first_n = 0
    with EmulatorThread(api_key=API_KEY, data_dir=tmp_path, port=port) as again:
        assert again.port == port
        assert again.requests() == []


def test_every_fault_knob_has_a_flag():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = []
    for field in dataclasses.fields(Faults):
        if field.init and field.name != "fail_ids":
            value = "0.5" if field.name.endswith(("_rate", "_s")) else "3"
            if field.name.endswith("_status"):
                value = "503"
            if field.name.endswith("_shape"):
                value = "html"
            flags += ["--" + field.name.replace("_", "-"), value]
    args = parser.parse_args([*flags, "--fail-id", "x", "--fail-id", "y", "--port", "9"])
    assert args.fault_put_503_rate == 0.5
    assert args.fault_hang_first_n == 3
    assert args.fault_import_malformed_shape == "html"
    with pytest.raises(SystemExit):
        parser.parse_args(["--status-malformed-shape", "upload-url-null"])  # import only
    assert args.fault_fail_ids == ["x", "y"]
    assert (args.port, args.api_key, args.seed) == (9, API_KEY, 0)


def test_s3_flags():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = parser.parse_args([])
    assert defaults.aws_session_token == Emulator().aws_session_token
    assert (defaults.region, defaults.sign_content_type, defaults.clock_skew) == (
        "us-east-1",
        True,
        0.0,
    )
    args = parser.parse_args(
        [
            "--aws-access-key-id",
            "AKIAX",
            "--aws-secret-access-key",
            "s",
            "--aws-session-token",
            "",
            "--region",
            "eu-west-1",
            "--bucket",
            "my-bucket",
            "--no-sign-content-type",
            "--clock-skew",
            "-30",
        ]
    )
    assert (args.aws_access_key_id, args.aws_secret_access_key, args.aws_session_token) == (
        "AKIAX",
        "s",
        "",
    )
    assert (args.region, args.bucket, args.sign_content_type, args.clock_skew) == (
        "eu-west-1",
        "my-bucket",
        False,
        -30.0,
    )


@pytest.mark.timeout(60)
async def test_cli_serves_and_streams_without_growing(tmp_path):
    """``python -m bulkload.emulator`` prints its URL first; a 192 MiB PUT barely moves
    its RSS, because the body streams to disk; SIGTERM ends it cleanly."""
    env = {**os.environ, "BULKLOAD_EMULATOR_API_KEY": "cli-key"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bulkload.emulator",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "data"),
        "--put-503-first-n",
        "1",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=PROJECT_ROOT,
    )
    try:
        assert proc.stdout is not None
        base_url = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        assert base_url.startswith("http://127.0.0.1:")
        body_path = tmp_path / "body.jsonl"
        line = b'{"id": "x", "pad": "' + b"p" * 1000 + b'"}\n'
        size = 192 * 1024 * 1024 // len(line) * len(line)
        await asyncio.to_thread(body_path.write_bytes, line * (size // len(line)))
        emulator_process = psutil.Process(proc.pid)
        async with aiohttp.ClientSession() as s:
            async with s.post(
                f"{base_url}/v1/data/p/import", headers={"Authorization": "Bearer cli-key"}
            ) as resp:
                assert resp.status == 200
                url = (await resp.json())["upload_url"]
            statuses = []
            baseline = emulator_process.memory_info().rss
            peak = baseline
            for _ in range(2):
                with body_path.open("rb") as f:
                    put = asyncio.ensure_future(s.put(url, data=f, headers=JSON_CT))
                    while not put.done():
                        peak = max(peak, emulator_process.memory_info().rss)
                        await asyncio.wait([put], timeout=0.01)
                    async with put.result() as resp:
                        statuses.append(resp.status)
            async with s.get(f"{base_url}/_emulator/state") as resp:
                state = await resp.json()
        assert statuses == [503, 200]  # the flag took effect
        assert state["requests"][0]["size"] == size
        growth = peak - baseline
        assert growth < 16 * 1024 * 1024, f"RSS grew by {growth / 2**20:.1f} MiB"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 20)
        stderr = await proc.stderr.read() if proc.stderr else b""
    assert code == 0, stderr.decode()
    assert json.loads((tmp_path / "data" / "state.json").read_bytes())["requests"]
