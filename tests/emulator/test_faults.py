"""Every fault knob: its effect, and that the same seed gives the same faults."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from bulkload.emulator import Emulator, Faults

API_KEY = "test-key"
BODY = b'{"id": "a"}\n'


async def import_statuses(emu: Emulator, n: int) -> list[int]:
    statuses = []
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            async with s.post(
                f"{emu.base_url}/v1/data/products/import",
                headers={"Authorization": f"Bearer {API_KEY}"},
            ) as resp:
                statuses.append(resp.status)
    return statuses


async def test_import_429_first_n(emulator, emu_client):
    emulator.faults.import_429_first_n = 2
    emulator.faults.retry_after_s = 1.5
    replies = [await emu_client.create() for _ in range(3)]
    assert [r.status for r in replies] == [429, 429, 200]
    assert replies[0].headers["Retry-After"] == "2"  # whole seconds, rounded up
    assert replies[0].headers["retry-after-ms"] == "1500"
    assert "error" in replies[0].json()
    assert emulator.counters()["import"] == {"429": 2, "200": 1}
    assert len(emulator.requests()) == 1  # a refused call creates no request
    # Assigning the knob again arms N fresh failures.
    emulator.faults.import_429_first_n = 1
    assert [(await emu_client.create()).status for _ in range(2)] == [429, 200]


async def test_faults_never_mask_client_errors(emulator, emu_client):
    emulator.faults.import_429_first_n = 1
    reply = await emu_client.request("POST", "/v1/data/products/import")  # no key
    assert reply.status == 401
    assert (await emu_client.create()).status == 429  # the armed fault is still there


@pytest.mark.parametrize("kind", ["import_429", "import_5xx"])
async def test_import_fault_rate_is_seeded(kind):
    runs = []
    for seed in (7, 7, 8):
        faults = Faults()
        faults.update(**{f"{kind}_rate": 0.5})
        async with Emulator(api_key=API_KEY, seed=seed, faults=faults) as emu:
            runs.append(await import_statuses(emu, 24))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    failed = 429 if kind == "import_429" else 500
    assert set(runs[0]) == {200, failed}
    assert 4 <= runs[0].count(failed) <= 20


async def test_import_5xx_first_n_with_status(emulator, emu_client):
    emulator.set_faults(import_5xx_first_n=2, import_5xx_status=503)
    assert [(await emu_client.create()).status for _ in range(3)] == [503, 503, 200]
    assert emulator.counters()["import"] == {"503": 2, "200": 1}


async def test_status_5xx_first_n_covers_both_status_endpoints(emulator, emu_client):
    created = await emu_client.upload(BODY)
    rid = created["requestId"]
    emulator.set_faults(status_5xx_first_n=2, status_5xx_status=502)
    assert (await emu_client.status("products", rid)).status == 502
    assert (await emu_client.download_url("products", rid)).status == 502
    assert (await emu_client.status("products", rid)).status == 200
    assert (await emu_client.download_url("products", rid)).status == 200
    assert emulator.counters()["status"] == {"502": 1, "200": 1}
    assert emulator.counters()["results_url"] == {"502": 1, "200": 1}


async def test_status_5xx_rate_is_seeded():
    runs = []
    for _ in range(2):
        async with Emulator(api_key=API_KEY, faults=Faults(status_5xx_rate=0.5)) as emu:
            async with aiohttp.ClientSession() as s:
                async with s.post(
                    f"{emu.base_url}/v1/data/p/import",
                    headers={"Authorization": f"Bearer {API_KEY}"},
                ) as resp:
                    rid = (await resp.json())["requestId"]
                statuses = []
                for _ in range(20):
                    async with s.get(
                        f"{emu.base_url}/v1/data/p/requests/{rid}",
                        headers={"Authorization": f"Bearer {API_KEY}"},
                    ) as resp:
                        statuses.append(resp.status)
            runs.append(statuses)
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 500}


@pytest.mark.parametrize(
    ("knob", "status", "code"),
    [("put_503", 503, "SlowDown"), ("put_500", 500, "InternalError")],
)
async def test_put_error_first_n(emulator, emu_client, knob, status, code):
    emulator.set_faults(**{f"{knob}_first_n": 1})
    created = await emu_client.new()
    reply = await emu_client.put(created["upload_url"], BODY)
    assert reply.status == status
    assert reply.headers["Content-Type"] == "application/xml"
    assert f"<Code>{code}</Code>" in reply.text
    assert emulator.stored_records() == []
    assert (await emu_client.put(created["upload_url"], BODY)).status == 200
    info = emulator.request(created["requestId"])
    assert (info.put_attempts, info.put_successes) == (2, 1)
    assert [a.outcome for a in emulator.put_log()] == [str(status), "200"]


async def test_put_503_rate_is_seeded():
    runs = []
    for seed in (3, 3, 4):
        async with Emulator(api_key=API_KEY, seed=seed) as emu, aiohttp.ClientSession() as s:
            emu.faults.put_503_rate = 0.5  # set at runtime
            auth = {"Authorization": f"Bearer {API_KEY}"}
            async with s.post(f"{emu.base_url}/v1/data/p/import", headers=auth) as resp:
                url = (await resp.json())["upload_url"]
            statuses = []
            for _ in range(24):
                async with s.put(
                    url, data=BODY, headers={"Content-Type": "application/json"}
                ) as resp:
                    statuses.append(resp.status)
            runs.append(statuses)
            assert emu.counters()["put"] == {
                str(code): statuses.count(code) for code in set(statuses)
            }
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert set(runs[0]) == {200, 503}


async def test_put_drop_cuts_the_connection_halfway(emulator, emu_client, raw_http):
    emulator.faults.put_drop_first_n = 1
    created = await emu_client.new()
    body = b'{"id": "x"}\n' * 50_000
    head = raw_http.put_head(
        created["upload_url"], "Content-Type: application/json", f"Content-Length: {len(body)}"
    )
    reply = await raw_http.send(emulator.base_url, head, body)
    assert reply.status is None  # no answer at all: the connection was aborted
    assert emulator.counters()["put"] == {"dropped": 1}
    assert emulator.stored_records() == []
    assert list((emulator.data_dir / "tmp").iterdir()) == []
    reply = await raw_http.send(emulator.base_url, head, body)
    assert reply.status == 200
    assert emulator.request(created["requestId"]).put_attempts == 2


async def test_put_drop_rate_is_seeded(raw_http):
    runs = []
    for _ in range(2):
        faults = Faults(put_drop_rate=0.5)
        async with Emulator(api_key=API_KEY, seed=11, faults=faults) as emu:
            async with aiohttp.ClientSession() as s:
                auth = {"Authorization": f"Bearer {API_KEY}"}
                async with s.post(f"{emu.base_url}/v1/data/p/import", headers=auth) as resp:
                    url = (await resp.json())["upload_url"]
            head = raw_http.put_head(
                url, "Content-Type: application/json", f"Content-Length: {len(BODY)}"
            )
            runs.append([(await raw_http.send(emu.base_url, head, BODY)).status for _ in range(16)])
    assert runs[0] == runs[1]
    assert set(runs[0]) == {None, 200}


async def test_expired_url_first_n(emulator, emu_client):
    emulator.faults.expired_url_first_n = 2
    created = [await emu_client.new() for _ in range(3)]
    assert [r.expired_url for r in emulator.requests()] == [True, True, False]
    replies = [await emu_client.put(c["upload_url"], BODY) for c in created]
    assert [r.status for r in replies] == [403, 403, 200]
    assert "Request has expired" in replies[0].text


async def test_latency_delays_api_answers_only(emulator, emu_client):
    created = await emu_client.new()
    emulator.faults.latency_s = 0.4
    started = time.monotonic()
    assert (await emu_client.status("products", created["requestId"])).status == 200
    assert time.monotonic() - started >= 0.4
    # call_log notes arrivals before the delay.
    [arrival] = emulator.call_log("status")
    assert started <= arrival <= started + 0.3
    started = time.monotonic()
    assert (await emu_client.put(created["upload_url"], BODY)).status == 200
    assert time.monotonic() - started < 0.4


async def test_hang_outlasts_a_client_timeout(emulator, emu_client):
    emulator.set_faults(hang_first_n=1, hang_s=60)
    with pytest.raises(asyncio.TimeoutError):
        await emu_client.request(
            "POST",
            "/v1/data/products/import",
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=aiohttp.ClientTimeout(total=0.2),
        )
    # The client's disconnect cancels the hung handler: it does not linger for 60 s.
    await emulator.wait_for(lambda: emulator.counters()["import"].get("cancelled") == 1)
    assert (await emu_client.create()).status == 200
    assert len(emulator.requests()) == 1


def test_faults_validate_and_rearm():
    faults = Faults()
    with pytest.raises(ValueError, match="put_503_rate"):
        faults.put_503_rate = 1.5
    with pytest.raises(ValueError, match="import_5xx_first_n"):
        Faults(import_5xx_first_n=-1)
    with pytest.raises(ValueError, match="5xx status"):
        Faults(import_5xx_status=404)
    with pytest.raises(TypeError, match="unknown fault knob"):
        faults.update(put_503_first=1)
    faults.update(fail_ids=["a", "b"], put_500_rate=0.25)
    assert faults.as_dict()["fail_ids"] == ["a", "b"]
    assert faults.as_dict()["put_500_rate"] == 0.25


def test_set_faults_from_another_thread(emulator_thread):
    import urllib.error
    import urllib.request

    emulator_thread.set_faults(import_429_first_n=1)
    request = urllib.request.Request(
        f"{emulator_thread.base_url}/v1/data/p/import",
        data=b"{}",
        method="POST",
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 429
    caught.value.close()
    emulator_thread.faults = Faults(import_5xx_first_n=1)
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 500
    caught.value.close()
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200
    assert emulator_thread.counters()["import"] == {"429": 1, "500": 1, "200": 1}
