"""INPUTs → sources, opened, read in threads: so that nothing hangs and a stop always works.

``resolve_inputs`` turns the command line's INPUTs (files, directories, glob patterns, ``-``,
URLs) into an ordered list of :class:`~bulkload._inputs.source.Source`, failing early, before
anything is uploaded, on inputs that cannot be read.

Directories and ``**`` follow symbolic links to directories, and visit each real directory
once (by device and inode): a link back up the tree (``loop -> ..``) would otherwise make
the walk endless. Python's ``glob`` has no such guard, so the pattern is matched here, with
its rules: ``*``, ``?`` and ``[...]`` within one path component, ``**`` for zero or more
directories, and names starting with a dot matched only by a pattern that starts with one.

Only regular files are taken from a directory or a pattern: a FIFO, socket or device among
them is skipped with a warning (opening a FIFO blocks until something writes to it). Named
on the command line, it is read as a stream. A second path to the same file within one
directory or pattern (a symlinked file) is skipped with a warning; the same file named
twice on the command line is an error, since it would be uploaded twice.

Resolution checks ``stop`` between directories, and the loader runs it (and reading) in a
:class:`DaemonCall`, a thread it does not wait for after a stop, so a hung file system or
store cannot keep Ctrl-C from working. :func:`open_local` opens a FIFO without blocking;
:func:`check_unchanged` notices a file that changed while it was read.
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import io
import logging
import os
import re
import select
import socket
import stat
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .._errors import SourceError, option
from .remote import is_url, remote_sources
from .source import (
    JSONL_NAME,
    TABULAR_NAME,
    Source,
    Stop,
    check_format,
    compression_of,
    format_of,
)

log = logging.getLogger("bulkload")
T = TypeVar("T")


def _check_stop(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise Stop


def resolve_inputs(
    specs: Sequence[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    stop: threading.Event | None = None,
) -> list[Source]:
    """Expand INPUTs into sources, in the order given; directories and globs sorted.

    ``scheme://`` INPUTs (``s3://``, ``gs://``, ``https://`` …) are read through fsspec,
    with ``storage_options`` for its file system. Raises SourceError for a missing path,
    an unreadable file, a directory without JSONL files, a pattern matching nothing, ``-``
    given twice, or one file named twice (it would be uploaded twice); Stop once ``stop``
    is set.
    """

    if not specs:
        raise SourceError("no INPUT given; name files, directories, glob patterns or -")
    sources: list[Source] = []
    seen: dict[tuple[int, int], str] = {}  # (device, inode) -> display, to catch repeats
    urls: set[str] = set()
    stdin_seen = False
    for spec in specs:
        _check_stop(stop)
        if spec == "-":
            if stdin_seen:
                raise SourceError("standard input (-) can be given only once", path="-")
            stdin_seen = True
            sources.append(Source("-", None, None, None, None))
            continue
        if is_url(spec):
            for source in remote_sources(spec, storage_options):
                if source.url in urls:
                    raise SourceError(
                        f"{source.display} is named twice; it would be uploaded twice. "
                        "Name each object once.",
                        path=source.display,
                    )
                urls.add(source.url or "")
                sources.append(source)
            continue
        mine: dict[tuple[int, int], str] = {}  # the files this spec expanded to
        listed: dict[str, os.stat_result] = {}  # what the listing stat'ed: not again
        for display in _expand(spec, stop, listed):
            source, key = _stat_source(display, listed.pop(display, None))
            if key in mine:
                log.warning(
                    "%s is the same file as %s (a link); skipped, so that it is loaded once",
                    display,
                    mine[key],
                )
                continue
            if key in seen:
                first = seen[key]
                same = "is named twice" if first == display else f"and {first} are the same file"
                raise SourceError(
                    f"{display} {same}; it would be uploaded twice. Name each file once.",
                    path=display,
                )
            mine[key] = display
            sources.append(source)
        seen.update(mine)
    return sources


def _expand(
    spec: str, stop: threading.Event | None, listed: dict[str, os.stat_result]
) -> list[str]:
    """The file paths one INPUT stands for, as they will be displayed; ``listed`` gets the
    stat of those the listing stat'ed."""
    if os.path.isdir(spec):
        files = jsonl_files(spec, stop=stop, listed=listed)
        if not files:
            tabular = jsonl_files(spec, TABULAR_NAME, stop=stop)
            hint = (
                f"; it holds {len(tabular)} Parquet/CSV file(s): name them with a glob "
                f"such as '{os.path.join(spec, '**', '*' + os.path.splitext(tabular[0])[1])}'"
                if tabular
                else ""
            )
            raise SourceError(
                f"{spec}: no JSONL files in this directory (looked recursively for *.jsonl, "
                "*.ndjson and *.json, optionally .gz/.bz2/.xz/.zst; hidden files are "
                f"skipped){hint or '; name the files or a glob pattern instead'}",
                path=spec,
            )
        return files
    if os.path.lexists(spec):
        return [spec]  # named on the command line: read even if it is a FIFO or socket
    if not glob.has_magic(spec):
        raise SourceError(f"{spec}: no such file or directory", path=spec)
    found: dict[str, None] = {}  # ordered set: `data/**` reaches a file both ways
    for match in sorted(_glob(spec, stop)):
        if os.path.isdir(match):
            found.update(dict.fromkeys(jsonl_files(match, stop=stop, listed=listed)))
        elif _regular_or_dangling(match, listed):
            found.setdefault(match)
    if not found:
        raise SourceError(
            f"{spec}: the pattern matches no files (quote it so the shell does not expand it; "
            "use ** for subdirectories)",
            path=spec,
        )
    return list(found)


def _regular_or_dangling(path: str, listed: dict[str, os.stat_result] | None = None) -> bool:
    """Whether a path found by a scan is taken: a regular file (its stat into ``listed``),
    or a dangling link (which then fails with "no such file", as a file removed since the
    listing does)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return True  # unreadable: _stat_source says why
    mode = st.st_mode
    if stat.S_ISREG(mode):
        if listed is not None:
            listed[path] = st
        return True
    log.warning(
        "%s is not a regular file (%s); skipped. Name it on the command line to read it "
        "as a stream",
        path,
        _kind(mode),
    )
    return False


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"


def _fail(exc: OSError) -> None:
    raise SourceError(
        f"cannot read directory {exc.filename}: {exc.strerror}; check its permissions",
        path=str(exc.filename),
    ) from exc


def _walk(top: str, stop: threading.Event | None) -> Iterator[tuple[str, list[os.DirEntry[str]]]]:
    """Every directory under ``top`` (links followed, each real one once, hidden ones
    skipped) with its entries that are not directories."""
    visited: set[tuple[int, int]] = set()
    pending = [top]
    while pending:
        _check_stop(stop)
        directory = pending.pop()
        try:
            st = os.stat(directory)
            if (st.st_dev, st.st_ino) in visited:
                continue
            visited.add((st.st_dev, st.st_ino))
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            _fail(exc)
        files: list[os.DirEntry[str]] = []
        subdirs: list[os.DirEntry[str]] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            (subdirs if is_dir else files).append(entry)
        yield directory, files
        pending.extend(reversed([e.path for e in subdirs]))


def jsonl_files(
    directory: str,
    names: re.Pattern[str] = JSONL_NAME,
    *,
    stop: threading.Event | None = None,
    listed: dict[str, os.stat_result] | None = None,
) -> list[str]:
    """JSONL files (or others, by ``names``) under ``directory``, recursively, sorted by
    path; hidden ones skipped, and so are FIFOs, sockets and devices (with a warning).
    ``listed`` gets each file's stat, which the listing takes anyway."""
    found: list[tuple[tuple[str, ...], str]] = []
    for root, files in _walk(directory, stop):
        rel = os.path.relpath(root, directory)
        parts = () if rel == os.curdir else tuple(rel.split(os.sep))
        for entry in files:
            if names.search(entry.name) and _regular_or_dangling(entry.path, listed):
                # Sort by path components, so that "a/b/x" and "a-c/y" order by directory.
                found.append(((*parts, entry.name), os.path.join(directory, *parts, entry.name)))
    found.sort()
    return [path for _, path in found]


def _glob(pattern: str, stop: threading.Event | None) -> list[str]:
    """``glob.glob(pattern, recursive=True)``, except that ``**`` visits each real
    directory once (a symlink loop ends) and ``stop`` is obeyed."""
    head, tail = os.path.splitdrive(pattern)
    parts = tail.split(os.sep)
    root = head + (os.sep if parts[0] == "" else "")
    if parts[0] == "":
        parts = parts[1:]
    bases = [root]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        _check_stop(stop)
        matched: list[str] = []
        for base in bases:
            if part == "**":
                matched += _below(base, stop, files=last)
            elif glob.has_magic(part):
                matched += [os.path.join(base, name) for name in _names(base, part, dirs=not last)]
            elif part == "":  # a trailing separator: directories only
                matched += [base] if os.path.isdir(base or os.curdir) else []
            else:
                path = os.path.join(base, part)
                if os.path.lexists(path) and (last or os.path.isdir(path)):
                    matched.append(path)
        bases = list(dict.fromkeys(matched))
    return bases


def _names(base: str, part: str, *, dirs: bool) -> list[str]:
    """Names in ``base`` matching the pattern component ``part``, as glob matches them."""
    try:
        with os.scandir(base or os.curdir) as it:
            entries = list(it)
    except OSError:
        return []
    hidden_ok = part.startswith(".")
    names = []
    for entry in entries:
        if entry.name.startswith(".") and not hidden_ok:
            continue
        if not fnmatch.fnmatch(entry.name, part):
            continue
        if dirs:
            try:
                if not entry.is_dir():
                    continue
            except OSError:
                continue
        names.append(entry.name)
    return names


def _below(base: str, stop: threading.Event | None, *, files: bool) -> list[str]:
    """What ``**`` matches under ``base``: ``base`` itself and every directory below (and
    with ``files``, every file), hidden ones skipped, each real directory visited once."""
    out = [base]
    for directory, entries in _walk(base or os.curdir, stop):
        if directory != (base or os.curdir):
            out.append(directory if base else os.path.relpath(directory))
        if files:
            out += [e.path if base else os.path.relpath(e.path) for e in entries]
    return out


def _stat_source(
    display: str, listed: os.stat_result | None = None
) -> tuple[Source, tuple[int, int]]:
    """The Source of a local path, from its stat (``listed``: the listing's, taken a moment
    ago; a file changed since is caught when it is read, as one changed later is)."""
    try:
        st = listed or os.stat(display)
    except FileNotFoundError as exc:  # a dangling symlink, or removed since the listing
        raise SourceError(f"{display}: no such file", path=display) from exc
    except OSError as exc:
        raise SourceError(f"{display}: cannot read it: {exc.strerror}", path=display) from exc
    if not os.access(display, os.R_OK):
        raise SourceError(
            f"{display}: permission denied; check the file's permissions (chmod +r)",
            path=display,
        )
    regular = stat.S_ISREG(st.st_mode)
    source = Source(
        display=display,
        path=Path(display),
        compression=compression_of(display),
        # A FIFO such as <(zcat x.gz) has no meaningful size.
        size=st.st_size if regular else None,
        mtime_ns=st.st_mtime_ns if regular else None,
        format=format_of(display),
    )
    check_format(source)
    return source, (st.st_dev, st.st_ino)


#: How often a FIFO without a writer yet is looked at again, and ``stop`` checked.
_FIFO_POLL_MS = 100


def open_local(source: Source, stop: threading.Event | None) -> io.BufferedReader:
    """Open a local input without ever blocking in ``open``: a FIFO is opened with
    O_NONBLOCK (a plain open waits for a writer, and no signal handler can end that wait),
    waited on while ``stop`` is watched, then made blocking; a socket is connected to."""
    assert source.path is not None
    where = source.display
    try:
        fd = os.open(source.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a Unix socket: connect and read what it sends
            return _connect(source)
        raise SourceError(f"{where}: cannot open it: {exc.strerror}", path=where) from exc
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            poller = select.poll()
            poller.register(fd, select.POLLIN)  # POLLHUP too: a writer came and went
            # Before a writer has ever opened it, a read would return EOF at once: wait.
            while not poller.poll(_FIFO_POLL_MS):
                if stop is not None and stop.is_set():
                    raise Stop
        os.set_blocking(fd, True)
        return open(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _connect(source: Source) -> io.BufferedReader:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(source.path))
        # The file keeps the connection open; the socket object itself is not needed.
        return sock.makefile("rb")
    except OSError as exc:
        where = source.display
        raise SourceError(f"{where}: cannot read the socket: {exc.strerror}", path=where) from exc
    finally:
        sock.close()


def check_unchanged(
    source: Source, now: os.stat_result | None = None, *, by_name: bool = True
) -> None:
    """After a local regular file was read to its end (``now``: its fstat, else it is
    stat'ed by name): SourceError if it is not the file the run planned for. A file cut
    short while it was read just ends early, and its missing lines would go unnoticed.

    ``by_name=False`` (with ``now``): trust the open file's fstat alone, for a file whose
    bytes were all read at once and are not read again; the name is not stat'ed to see
    whether it was removed or replaced since, which does not matter then."""
    if source.path is None or source.size is None:
        return  # stdin, a pipe, a remote object
    where = source.display
    again = f"rerun with {option('--restart', 'restart=True')} to load it as it is now"
    named = None
    if by_name or now is None:
        try:
            named = os.stat(source.path)
        except FileNotFoundError:
            named = None
        if now is None and named is None:
            raise SourceError(
                f"{where} was removed during the load; restore it and rerun", path=where
            )
    st = now or named
    assert st is not None
    if st.st_size < source.size:
        problem = f"shrank from {source.size:,} to {st.st_size:,} bytes during the load"
    elif st.st_size > source.size:
        problem = f"grew from {source.size:,} to {st.st_size:,} bytes during the load"
    elif st.st_mtime_ns != source.mtime_ns:
        problem = "was modified during the load (same size, new modification time)"
    elif not by_name:
        return
    elif named is None:
        problem, again = "was removed during the load", "restore it and rerun"
    elif (named.st_dev, named.st_ino) != (st.st_dev, st.st_ino):
        problem = "was replaced by another file during the load"
    else:
        return
    raise SourceError(f"{where} {problem}; {again}", path=where)
