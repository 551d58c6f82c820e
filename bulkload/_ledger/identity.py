"""What an input file is, to the ledger: a key that names it, and an identity that says
whether it is still the file that was loaded.

The key is the file's name made independent of where the command ran and of credentials:

* a local path becomes its real absolute path (``os.path.realpath``): cron and Airflow run
  the same command from different directories, and a dated directory reached through a
  ``latest -> 2024-12-01`` link is keyed by where the bytes are, so the same file reached by
  two names is one file;
* a URL loses its query string, fragment and user-info (a pre-signed URL's query *is* a
  credential, and it changes on every signing); scheme and host are lower-cased;
* standard input is ``-``.

The identity is what the store or the file system says about the bytes, without reading
them: size, modification time, and for objects the store's own checksum or version (ETag,
GCS ``md5Hash``/``generation``, S3 ``VersionId``). A content MD5 of the file's bytes is
optional: it costs a full read (~1.3 CPU s/GB here), so it is computed only when asked for
(``--checksum``); when both sides have one, it decides alone. See :func:`compare`.
"""

from __future__ import annotations

import enum
import hashlib
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .._model import remote_etag as remote_etag

#: Standard input's key (and display): it has no identity and is never skipped.
STDIN = "-"


def is_url(spec: str) -> bool:
    scheme, sep, _ = spec.partition("://")
    return bool(sep) and scheme[:1].isalpha() and all(c.isalnum() or c in "+.-" for c in scheme)


def key_for(spec: str | os.PathLike[str], *, cwd: str | os.PathLike[str] | None = None) -> str:
    """The ledger key of an INPUT as given: see the module docstring. ``cwd`` is the
    directory a relative path is relative to (default: this process's)."""
    text = os.fspath(spec)
    if text == STDIN:
        return STDIN
    if is_url(text):
        parts = urlsplit(text)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"  # an IPv6 literal keeps its brackets
        netloc = f"{host}:{parts.port}" if parts.port is not None else host
        # Buckets and object keys are case-sensitive: only the scheme and host are folded.
        return urlunsplit((parts.scheme.lower(), netloc.lower(), parts.path, "", ""))
    base = os.fspath(cwd) if cwd is not None else os.getcwd()
    return os.path.realpath(os.path.join(base, text))


class Verdict(enum.StrEnum):
    """How a file compares with the one the ledger recorded."""

    SAME = "same"
    CHANGED = "changed"
    #: Nothing comparable on both sides (standard input, a pipe, a store that gives no size):
    #: never a reason to skip.
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Comparison:
    verdict: Verdict
    #: In words, for the summary: "same size and modification time", "size 1,024 → 2,048".
    detail: str
    #: The verdict is CHANGED only because the modification time moved (same size), and
    #: the ledger holds the content MD5: hashing the file would tell a file that was only
    #: touched or re-exported identically from one whose bytes changed.
    content_would_settle: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class FileIdentity:
    """One input file as a load saw it. Plain values, so that the wiring, the journal and
    the tests can make one without opening anything.

    ``etag`` is an opaque token of the store, prefixed by its kind (``etag:``, ``md5:``,
    ``crc32c:``, ``generation:``, ``version:``; see :func:`remote_etag`): tokens of
    different kinds are not compared. ``content_md5`` is the hex MD5 of the file's bytes as
    stored (compressed files: of the compressed bytes), what ``md5sum FILE`` prints.
    """

    key: str
    #: The path as the user gave it, for messages and listings; defaults to ``key``.
    display: str = ""
    size: int | None = None
    mtime_ns: int | None = None
    etag: str | None = None
    content_md5: str | None = None

    def __post_init__(self) -> None:
        if not self.display:
            object.__setattr__(self, "display", self.key)

    @property
    def identified(self) -> bool:
        """Whether anything about the bytes is known (standard input and pipes: no)."""
        return any(v is not None for v in (self.size, self.mtime_ns, self.etag, self.content_md5))

    @classmethod
    def of_path(
        cls,
        path: str | os.PathLike[str],
        *,
        display: str | None = None,
        cwd: str | os.PathLike[str] | None = None,
        content_md5: str | None = None,
    ) -> FileIdentity:
        """A local file's identity from ``os.stat`` (size and modification time). A FIFO,
        socket or device has none: its size and time say nothing about what it yields."""
        text = os.fspath(path)
        shown = display or text
        if text == STDIN:
            return cls.unidentified(STDIN)
        full = os.path.join(os.fspath(cwd), text) if cwd is not None else text
        st = os.stat(full)
        key = key_for(text, cwd=cwd)
        if not stat.S_ISREG(st.st_mode):
            return cls(key=key, display=shown)
        return cls(
            key=key,
            display=shown,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            content_md5=content_md5,
        )

    @classmethod
    def of_object(
        cls,
        url: str,
        *,
        size: int | None,
        etag: str | None = None,
        mtime_ns: int | None = None,
        display: str | None = None,
    ) -> FileIdentity:
        """A remote object's identity from its listing: nothing is downloaded."""
        key = key_for(url)
        return cls(key=key, display=display or key, size=size, mtime_ns=mtime_ns, etag=etag)

    @classmethod
    def unidentified(cls, display: str) -> FileIdentity:
        """Standard input, a pipe, records from a program: loaded every time."""
        return cls(key=key_for(display) if display != STDIN else STDIN, display=display)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "path": self.display,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "mtime": _iso(self.mtime_ns),
            "etag": self.etag,
            "content_md5": self.content_md5,
        }


def compare(recorded: FileIdentity, now: FileIdentity) -> Comparison:
    """Whether ``now`` is the file the ledger ``recorded``.

    Strongest evidence first: a different size is a change; a content MD5 on both sides
    decides alone (a re-export with the same bytes but a new time is the same file; a
    rewrite that kept size and time is not); then the store's ETag or version of the same
    kind; then size and modification time together. Anything less is UNKNOWN, and the file
    is loaded: the ledger never skips a file it cannot show to be the same.
    """
    if not (recorded.identified and now.identified):
        return Comparison(Verdict.UNKNOWN, "it has no identity (standard input or a pipe)")
    if recorded.size is not None and now.size is not None and recorded.size != now.size:
        return Comparison(Verdict.CHANGED, f"size {recorded.size:,} → {now.size:,} bytes")
    if recorded.content_md5 and now.content_md5:
        if recorded.content_md5 == now.content_md5:
            return Comparison(Verdict.SAME, "same content MD5")
        return Comparison(Verdict.CHANGED, "its content MD5 differs (same size)")
    if recorded.etag and now.etag and _kind(recorded.etag) == _kind(now.etag):
        if recorded.etag == now.etag:
            return Comparison(Verdict.SAME, f"same {_kind(recorded.etag)} in the store")
        return Comparison(
            Verdict.CHANGED, f"{_kind(now.etag)} {_token(recorded.etag)} → {_token(now.etag)}"
        )
    if recorded.size is None or now.size is None:
        return Comparison(Verdict.UNKNOWN, "its size is unknown")
    if recorded.mtime_ns is not None and now.mtime_ns is not None:
        if recorded.mtime_ns == now.mtime_ns:
            return Comparison(Verdict.SAME, "same size and modification time")
        return Comparison(
            Verdict.CHANGED,
            f"modified {_iso(recorded.mtime_ns)} → {_iso(now.mtime_ns)} (same size)",
            content_would_settle=recorded.content_md5 is not None,
        )
    return Comparison(Verdict.UNKNOWN, "no modification time, ETag or checksum to compare")


def _kind(token: str) -> str:
    kind, sep, _ = token.partition(":")
    return kind if sep else "etag"


def _token(token: str) -> str:
    _, sep, value = token.partition(":")
    return value if sep else token


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    moment = datetime.fromtimestamp(ns / 1e9, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def file_md5(path: str | os.PathLike[str]) -> str:
    """The hex MD5 of a file's bytes as stored (``md5sum``), read in large blocks."""
    with Path(path).open("rb") as f:
        digest = hashlib.file_digest(f, lambda: hashlib.md5(usedforsecurity=False))
    return digest.hexdigest()
