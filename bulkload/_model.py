"""Values two parts of the flow share, kept below both so neither imports the other.

The wire (``_net``) sends a shard's ``Piece``s that the load (``_load``) planned; the journal
(``_journal``) keeps the ``ImportTicket`` the wire brought back; ``status``/``wait`` read
``RequestStatus``. Standard library only.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

#: Where records from ``load_records`` say they came from, in rejects and the manifest:
#: they cannot be read again, so ``wait`` cannot reconcile them line by line.
RECORDS_SOURCE = "<records>"
#: Standard input, as an INPUT and as a source's name.
STDIN = "-"


class ShardStatus(enum.StrEnum):
    """A shard's upload, as the manifest says it (``status``)."""

    PENDING = "pending"
    UPLOADED = "uploaded"
    FAILED = "failed"


class ProcessingStatus(enum.StrEnum):
    """What the server made of a request (``processing_status``), as the API says it."""

    QUEUED = "queued"
    UPLOADING = "uploading"
    INGESTING = "ingesting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


#: Processing is over for these: the request will not change again.
TERMINAL = frozenset({ProcessingStatus.SUCCEEDED, ProcessingStatus.FAILED})


@dataclass(frozen=True, slots=True)
class Piece:
    """``length`` bytes of ``path`` from ``offset``: part of a shard's body."""

    path: Path
    offset: int
    length: int


def parse_time(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ImportTicket:
    """One server-side request waiting for its upload. The URL is the credential: no repr."""

    request_id: str
    object_key: str
    upload_url: str = field(repr=False)
    expires_at: datetime | None

    def usable(self, *, margin: timedelta = timedelta(minutes=2)) -> bool:
        """Whether the URL will still be valid ``margin`` from now (time to send a shard)."""
        return self.expires_at is None or datetime.now(UTC) + margin < self.expires_at


@dataclass(frozen=True, slots=True)
class RequestStatus:
    """What the API said about one request: its processing status, and where its results
    are once it succeeded (``data_url`` is a credential: no repr)."""

    request_id: str
    status: str
    error_summary: str | None = None
    data_url: str | None = field(default=None, repr=False)
    data_count: int | None = None
    data_expires_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


#: Where object stores' listings (fsspec ``info``) keep a token that changes when the
#: object's bytes do, best first: content checksums (a re-upload of the same bytes keeps
#: them, so it is recognised as the same file), then versions (they change on every write).
_ETAG_FIELDS = (
    ("md5Hash", "md5"),  # GCS: base64 MD5 of the content (absent for composite objects)
    ("ETag", "etag"),  # S3 (s3fs), HTTP: MD5 for single-part uploads, else still stable
    ("crc32c", "crc32c"),  # GCS composite objects
    ("generation", "generation"),  # GCS: changes on every write
    ("VersionId", "version"),  # S3 with versioning
    ("etag", "etag"),  # GCS's and others' lower-case etag: changes on metadata updates too
)


def remote_etag(info: Mapping[str, Any]) -> str | None:
    """The identity token of a remote object from its listing, as ``kind:value``."""
    for name, kind in _ETAG_FIELDS:
        value = info.get(name)
        if value is not None and value != "":
            return f"{kind}:{str(value).strip(chr(34))}"
    return None
