import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkload._config import GiB, KiB, LoadConfig, MiB, parse_rate, parse_size
from bulkload._errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("64MiB", 64 * MiB),
        ("500MB", 500_000_000),
        ("1GiB", GiB),
        ("1gib", GiB),
        ("1024", 1024),
        ("1.5 KiB", int(1.5 * KiB)),
        ("5GiB", 5 * GiB),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MiB", "12 parsecs", "-5MB", "1e3"])
def test_parse_size_rejects_nonsense(text: str) -> None:
    with pytest.raises(ConfigError, match="as a size"):
        parse_size(text)


def test_parse_rate() -> None:
    assert parse_rate("50MB/s") == 50e6
    assert parse_rate("1MiB") == MiB


@given(st.integers(min_value=1, max_value=10**12))
def test_parse_size_plain_bytes_round_trip(n: int) -> None:
    assert parse_size(str(n)) == n


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("shard_max_bytes", 5 * GiB + 1, "5 GiB"),
        ("shard_max_bytes", 0, "shard size"),
        ("shard_max_records", 0, "shard records"),
        ("upload_concurrency", 0, "concurrency"),
        ("max_retries", -1, "max retries"),
        ("timeout", 0, "timeout"),
        ("id_field", "", "id field"),
        ("max_rps", 0, "max rps"),
    ],
)
def test_config_refuses_bad_values(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(LoadConfig(), **{field: value})


def test_default_queue_keeps_about_twice_concurrency_on_disk() -> None:
    cfg = LoadConfig(upload_concurrency=5)
    assert cfg.effective_queue_depth + cfg.upload_concurrency == 10
