"""The server's line rules (the model of what SafetyKit's JSON parser refuses), one case
each side of every limit, through the real upload and status calls."""

from __future__ import annotations

import pytest

DEPTH_1024 = b'{"id": "deep", "x": ' + b"[" * 1023 + b"]" * 1023 + b"}"
DEPTH_1025 = b'{"id": "deep", "x": ' + b"[" * 1024 + b"]" * 1024 + b"}"

ACCEPTED = {
    "plain": b'{"id": "a"}',
    "utf-8 text": '{"id": "é", "name": "Ünïcødé ✓"}'.encode(),
    "surrogate pair escape": b'{"id": "a", "emoji": "\\ud83d\\ude00"}',
    "tiny number rounds to 0": b'{"id": "a", "x": 1e-400}',
    "integer past 64 bits": b'{"id": "a", "x": 18446744073709551616}',
    "negative integer past 64 bits": b'{"id": "a", "x": -123456789012345678901234567890}',
    "largest double": b'{"id": "a", "x": 1.7976931348623157e308}',
    "depth 1024": DEPTH_1024,
    "crlf and spaces": b'  {"id": "a"}  \r',
}

REFUSED = {
    "NaN": (b'{"id": "a", "x": NaN}', "invalid JSON"),
    "Infinity": (b'{"id": "a", "x": Infinity}', "invalid JSON"),
    "-Infinity": (b'{"id": "a", "x": -Infinity}', "invalid JSON"),
    "cut short": (b'{"id": "a"', "invalid JSON"),
    "two values": (b'{"id": "a"} {"id": "b"}', "invalid JSON"),
    "invalid byte": (b'{"id": "a", "x": "\xff"}', "invalid UTF-8"),
    "overlong encoding": (b'{"id": "a", "x": "\xc0\xaf"}', "invalid UTF-8"),
    "utf-8-encoded surrogate": (b'{"id": "a", "x": "\xed\xa0\x80"}', "invalid UTF-8"),
    "lone high surrogate": (b'{"id": "a", "x": "\\ud800"}', "lone surrogate escape"),
    "lone low surrogate": (b'{"id": "a", "x": "\\udc00"}', "lone surrogate escape"),
    "lone surrogate in a key": (b'{"\\ud800": 1, "id": "a"}', "lone surrogate escape"),
    "lone surrogate in the id": (b'{"id": "a\\udbff"}', "lone surrogate escape"),
    "1e400": (b'{"id": "a", "x": 1e400}', "number does not fit a double"),
    "-1e400": (b'{"id": "a", "x": -1e400}', "number does not fit a double"),
    "just past the largest double": (
        b'{"id": "a", "x": 1.7976931348623159e308}',
        "number does not fit a double",
    ),
    "depth 1025": (DEPTH_1025, "nested deeper than 1024 levels"),
    "array": (b'[{"id": "a"}]', "not a JSON object"),
    "string": (b'"a"', "not a JSON object"),
    "null": (b"null", "not a JSON object"),
    "no id": (b'{"name": "a"}', "missing id"),
    "empty id": (b'{"id": ""}', "id is not a non-empty string"),
    "number id": (b'{"id": 7}', "id is not a non-empty string"),
    "null id": (b'{"id": null}', "id is not a non-empty string"),
}


async def process(emu_client, body: bytes) -> dict:
    created = await emu_client.upload(body)
    status: dict = (await emu_client.status("products", created["requestId"])).json()
    return status


@pytest.mark.parametrize("case", sorted(ACCEPTED))
async def test_line_is_accepted(emu_client, case):
    status = await process(emu_client, b'{"id": "first"}\n' + ACCEPTED[case] + b"\n")
    assert (status["status"], status["error_summary"], status["data_count"]) == (
        "succeeded",
        None,
        2,
    )


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_line_is_refused(emu_client, case):
    line, reason = REFUSED[case]
    status = await process(emu_client, b'{"id": "first"}\n\n' + line + b"\n{}\n")
    assert status["status"] == "failed"
    # The line number counts the blank line too; every bad line is named.
    assert status["error_summary"] == f"line 3: {reason}; line 4: missing id"
