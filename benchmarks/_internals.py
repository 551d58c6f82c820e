"""The only place where the benchmarks reach into bulkload's private modules.

The ceilings and the work floor run bulkload's own reading, validation and decoding code,
so that they move with it; every such import is here and nowhere else: when a path changes, this file is the one to edit
(and until then only the rows that use these names fail, as errors in the table).
"""

from __future__ import annotations

from bulkload._inputs import Chunk, Source, iter_chunks, resolve_inputs
from bulkload._inputs.decompress import GZIP_BACKEND, GZIP_BACKENDS, STEP, open_stream
from bulkload._validate import ChunkResult, ValidateOptions, validate_chunk
from bulkload._validate.worker import RangeResult, validate_ranges

__all__ = [
    "GZIP_BACKEND",
    "GZIP_BACKENDS",
    "STEP",
    "Chunk",
    "ChunkResult",
    "RangeResult",
    "Source",
    "ValidateOptions",
    "iter_chunks",
    "open_stream",
    "resolve_inputs",
    "validate_chunk",
    "validate_ranges",
]
