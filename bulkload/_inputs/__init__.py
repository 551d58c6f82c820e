"""① INPUT specs → sources → blocks of whole lines (the first stage of a load).

::

    source.py    Source, Chunk, LongLines, Stop; a file's kind from its name (the leaf)
    resolve.py   files, directories, globs, stdin, FIFOs, URLs → Sources; nothing hangs
    remote.py    s3:// gs:// https:// … through fsspec: list, open, reopen
    read.py      Source → Chunks: open, decompress, sniff, cut whole lines, set long ones aside
    tabular.py   Parquet and CSV rows → JSON lines; database values → their JSON form
"""

from .read import check_plain_file, copy_aside, iter_chunks, line_too_long, read_small_file
from .remote import is_url, reopen
from .resolve import check_unchanged, open_local, resolve_inputs
from .source import Chunk, LongLines, Source, Stop, compression_of, format_of
from .tabular import record_line, table_rows

__all__ = [
    "Chunk",
    "LongLines",
    "Source",
    "Stop",
    "check_plain_file",
    "check_unchanged",
    "compression_of",
    "copy_aside",
    "format_of",
    "is_url",
    "iter_chunks",
    "line_too_long",
    "open_local",
    "read_small_file",
    "record_line",
    "reopen",
    "resolve_inputs",
    "table_rows",
]
