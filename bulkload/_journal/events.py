"""The journal's vocabulary: one typed event per step of a run, in the order they happen.

"Write down before you act": each step is appended (and fsynced) before the step it enables,
so a crash at any point leaves a journal from which a rerun finishes the work. Read top to
bottom, this file is that argument:

::

    Run ─► Shard ─► Ticket ─► Uploaded            a shard's life in one run
                      │  └──► Failed ─► (next run) Retry ─► Ticket/Uploaded
                      └─────► Abandon ─► Ticket   its URL expired or was refused
    Finish                                        every shard settled, totals counted
    Processing                                    status/wait: what the server made of it
    Resend                                        load --resend-failed: a new request for it

Each event is a ``msgspec.Struct`` tagged by ``"t"``, so the bytes on disk are the ones
earlier versions wrote (a golden journal of 81c995b is a test fixture), unknown fields of a
newer version are ignored, and mypy checks every writer.
"""

from __future__ import annotations

from typing import Any

import msgspec


class _Event(msgspec.Struct, tag_field="t", omit_defaults=True, kw_only=True):
    """Common base: the tag goes first on disk, defaults are not written."""


class Run(_Event, tag="run"):
    """A run begins: what it loads and how (a resume must match it)."""

    namespace: str
    #: The run's id in the ledger of an incremental load (``--incremental``).
    run_id: str | None = None
    base_url: str | None = None
    #: The directory the load ran in: relative input paths are relative to it.
    cwd: str | None = None
    inputs: list[dict[str, Any]] = msgspec.field(default_factory=list)
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    started_at: str | None = None
    partition: dict[str, Any] | None = None


class Shard(_Event, tag="shard"):
    """A shard is complete on disk (fsynced): its identity, before its import call."""

    index: int
    records: int
    bytes: int
    md5: str
    sources: list[dict[str, Any]]


class Ticket(_Event, tag="ticket"):
    """The import call answered: the requestId and the URL, before the PUT."""

    index: int
    request_id: str
    object_key: str | None = None
    upload_url: str | None = None
    expires_at: str | None = None


class Abandon(_Event, tag="abandon"):
    """The shard's URL expired (or was refused as expired): nothing is stored under it."""

    index: int
    reason: str = ""


class Uploaded(_Event, tag="uploaded"):
    """The store confirmed the shard; whether its ETag proved the bytes, and why not."""

    index: int
    etag: str | None = None
    etag_verified: bool | None = None
    etag_note: str | None = None
    attempts: int = 0
    at: str | None = None


class Failed(_Event, tag="failed"):
    """The shard failed after every retry (the next run retries it)."""

    index: int
    error: str | None = None
    attempts: int = 0
    #: An input changed under the shard: a plain rerun is refused, --restart is needed.
    restart: bool = False


class Retry(_Event, tag="retry"):
    """A later run tries a failed shard again."""

    index: int


class Resend(_Event, tag="resend"):
    """The shard's request failed processing; its records go up again under a new one."""

    index: int


class Processing(_Event, tag="processing"):
    """``status``/``wait`` learnt what the server made of the shard's request."""

    index: int
    processing_status: str | None = None
    data_count: int | None = None
    error_summary: str | None = None
    results_file: str | None = None


class Finish(_Event, tag="finish"):
    """Every shard of the run settled: the totals of its input lines."""

    at: str | None = None
    totals: dict[str, int] = msgspec.field(default_factory=dict)


Event = Run | Shard | Ticket | Abandon | Uploaded | Failed | Retry | Resend | Processing | Finish

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Event)


def encode(event: Event) -> bytes:
    """One journal line, ending in a newline."""
    return _ENCODER.encode(event) + b"\n"


def decode(line: bytes) -> Event | None:
    """The event on one journal line; None for a line that cannot be one: the torn last
    line of a killed run (it was never acted on), or an event kind of a newer version."""
    try:
        return _DECODER.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
