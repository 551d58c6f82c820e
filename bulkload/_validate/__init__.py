"""② Blocks of lines → records and rejects, by the contract's line rules and the server's.

Pure and picklable, and light to import: worker processes start by importing ``worker``
(no aiohttp; a test checks).

::

    rules.py        the line rules: the fast path per block, the careful path per line,
                    --id-field/--coerce-id edits
    serverjson.py   the server's JSON rules (numbers, depth, Unicode) certified per block
    jsonscan.py     the second opinion: an iterative RFC 8259 scanner that words errors
    worker.py       what a worker process runs: byte ranges, whole blocks, a shard's MD5
    duplicates.py   --check-duplicates: an external hash partition of ids
    schema.py       --schema: a record against the user's JSON Schema (jsonschema-rs)
    reasons.py      rejects grouped by the shape of their reason, for the summary
"""

from .duplicates import DuplicateFinder
from .reasons import ReasonCount, ReasonCounter
from .rules import ChunkResult, ValidateOptions, validate_chunk
from .schema import SchemaCheck
from .worker import (
    FileChangedError,
    LineTooLongError,
    RangeResult,
    md5_pieces,
    validate_block,
    validate_ranges,
)

__all__ = [
    "ChunkResult",
    "DuplicateFinder",
    "FileChangedError",
    "LineTooLongError",
    "RangeResult",
    "ReasonCount",
    "ReasonCounter",
    "SchemaCheck",
    "ValidateOptions",
    "md5_pieces",
    "validate_block",
    "validate_chunk",
    "validate_ranges",
]
