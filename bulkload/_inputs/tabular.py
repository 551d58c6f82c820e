"""Parquet and CSV inputs, and records from a cursor → the JSON lines JSONL inputs give.

``record_line`` maps the values of ``Loader.load_records`` (rows of a database cursor) as
Parquet values are mapped: ``Decimal`` to a string with every digit, ``bytes`` to base64,
``datetime`` to ISO 8601 with zone (naive is UTC, written ``Z``), ``date``/``time``/``UUID``
to their text; a value with no JSON form (a set, ``Decimal('NaN')``) is a reject that names
its field.

Each row becomes one JSON object on one line; a block (:class:`Chunk`) holds a batch of
rows, and its line numbers are row numbers (1-based data rows: a CSV header is not
counted). Validation, sharding and upload then treat the rows exactly as JSONL lines.

Memory is bounded: Parquet is read one record batch at a time (the reader holds at most
one row group's column chunks), CSV is parsed row by row from the decompressed stream.

Type mapping (Parquet; README "Parquet and CSV"):

=====================  ===============================================================
Arrow / Parquet type   JSON
=====================  ===============================================================
int8..int64, uint*     number, every digit (64-bit exact)
float, double, half    number; NaN and ±infinity become null (JSON has neither)
decimal                string with every digit and the column's scale: ``"12.3400"``
string, bool, null     string, true/false, null
binary                 base64 string
date                   ``"YYYY-MM-DD"``
timestamp              ISO 8601 with zone: ``"2024-03-01T12:00:00.123456+01:00"``; offset
                       zero and naive timestamps (taken as UTC) are written ``Z``;
                       fractional digits as the column's unit (none, 3, 6 or 9)
time                   ``"HH:MM:SS[.fff…]"``
duration               ISO 8601 duration in seconds: ``"PT90.5S"``, ``"-PT0.000000001S"``
list, struct           array, object (recursively mapped)
map                    object; keys become strings (JSON keys are strings)
dictionary, extension  as their value or storage type
=====================  ===============================================================

CSV has no types: every value is the string as written (an empty field is ``""``), so
ids such as ``00123`` and long numbers keep every character. The first row is the header.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from .._errors import SourceError
from .._rejects import Rejects
from .source import Chunk, Source

if TYPE_CHECKING:
    import pyarrow as pa


#: Batch sizes in rows: a Parquet batch is sized from the file's own bytes per row to give
#: about one block of JSON; the floor keeps per-batch overhead small for wide rows, the
#: cap bounds the Python objects alive at once for narrow ones.
_MIN_BATCH_ROWS = 64
_MAX_BATCH_ROWS = 65_536
_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE
#: A rejected row keeps its place in the block as a blank line, so that the rows after it
#: keep their numbers; the reader turns it back into the reject (``Chunk.rejects``).
_PLACEHOLDER = b"\n"


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError:  # pragma: no cover - depends on the environment
        raise SourceError(
            "reading Parquet needs pyarrow: pip install 'bulkload[parquet]'"
        ) from None
    return pyarrow


# -- Parquet ---------------------------------------------------------------------------------


def parquet_chunks(source: Source, raw: BinaryIO, block_size: int) -> Iterator[Chunk]:
    """Stream a Parquet file as blocks of JSON lines, one line per row."""

    pa = _pyarrow()
    import pyarrow.parquet as pq

    where = source.display
    try:
        pf = pq.ParquetFile(raw)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(
            f"{where}: not a readable Parquet file ({exc}); check the file or its suffix",
            path=where,
        ) from exc
    _check_names(where, pf.schema_arrow.names)
    meta = pf.metadata
    per_row = max(1, sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)))
    per_row = per_row // max(1, meta.num_rows) + 8 * meta.num_columns  # JSON adds the keys
    rows = min(_MAX_BATCH_ROWS, max(_MIN_BATCH_ROWS, block_size // max(1, per_row)))
    row = 1
    offset = 0
    try:
        for batch in pf.iter_batches(batch_size=rows):
            data, rejects = _batch_lines(batch, row)
            yield Chunk(data, row, offset, rejects)
            row += batch.num_rows
            offset += len(data)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(
            f"{where}: cannot read rows after row {row - 1:,}: {exc}; check the file",
            path=where,
            line_no=row,
        ) from exc


def _check_names(where: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise SourceError(
                f"{where}: column {name!r} appears twice; a JSON object needs unique keys",
                path=where,
            )
        seen.add(name)


def _batch_lines(batch: pa.RecordBatch, first_row: int) -> tuple[bytes, Rejects | None]:
    names = batch.schema.names
    columns = [jsonable(col) for col in batch.columns]
    try:
        # Column by column, then zipped into rows: half the cost of RecordBatch.to_pylist.
        # maps_as_pydicts takes a per-value path (~10x slower): only where there are maps.
        values = [
            col.to_pylist(maps_as_pydicts="strict") if _has_map(col.type) else col.to_pylist()
            for col in columns
        ]
    except KeyError:
        return _rows_one_by_one(names, columns, first_row)
    dumps, option = orjson.dumps, _JSON_OPTIONS
    if not values:  # no columns at all: every row is an empty object
        return b"{}\n" * batch.num_rows, None
    return b"".join(
        [
            dumps(dict(zip(names, row, strict=True)), option=option)
            for row in zip(*values, strict=True)
        ]
    ), None


def _rows_one_by_one(
    names: list[str], columns: list[pa.Array], first_row: int
) -> tuple[bytes, Rejects | None]:
    """The slow path for a batch in which a map repeats a key: reject just those rows."""
    lines: list[bytes] = []
    rejects = Rejects()
    for i in range(len(columns[0])):
        row = {name: col.slice(i, 1) for name, col in zip(names, columns, strict=True)}
        try:
            doc = {k: v.to_pylist(maps_as_pydicts="strict")[0] for k, v in row.items()}
            lines.append(orjson.dumps(doc, option=_JSON_OPTIONS))
        except KeyError as exc:
            doc = {k: v.to_pylist()[0] for k, v in row.items()}  # maps as [key, value] pairs
            raw = orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)
            found = re.search(r"duplicate key was (.+?)\)", str(exc.args[0] if exc.args else ""))
            key = f" {found.group(1)}" if found else ""
            rejects.add(first_row + i, f"a map repeats the key{key}", raw)
            lines.append(_PLACEHOLDER)
    return b"".join(lines), rejects


def _has_map(t: pa.DataType) -> bool:
    pa = _pyarrow()
    types = pa.types
    if types.is_map(t):
        return True
    if types.is_struct(t):
        return any(_has_map(t.field(i).type) for i in range(t.num_fields))
    if types.is_list(t) or types.is_large_list(t):
        return _has_map(t.value_type)
    return False


def _needs_mapping(t: pa.DataType) -> bool:
    """Whether values of ``t`` need converting before they are JSON (see module doc)."""
    pa = _pyarrow()
    types = pa.types
    if types.is_struct(t):
        return any(_needs_mapping(t.field(i).type) for i in range(t.num_fields))
    if types.is_list(t) or types.is_large_list(t):
        return _needs_mapping(t.value_type)
    if types.is_map(t):
        return _needs_mapping(t.key_type) or _needs_mapping(t.item_type)
    simple = (
        types.is_integer(t) or types.is_float32(t) or types.is_float64(t) or types.is_boolean(t)
        or types.is_string(t) or types.is_large_string(t) or types.is_null(t)
    )  # fmt: skip
    return not simple


def jsonable(arr: pa.Array) -> pa.Array:
    """``arr`` with every value of a type JSON lacks converted as the module doc says."""
    pa = _pyarrow()
    import pyarrow.compute as pc

    t = arr.type
    types = pa.types
    if not _needs_mapping(t):
        return arr
    if isinstance(t, pa.ExtensionType):
        return jsonable(arr.storage)
    if types.is_dictionary(t):
        return jsonable(arr.dictionary_decode())
    if types.is_string_view(t):
        return arr.cast(pa.string())
    if types.is_float16(t):
        return arr.cast(pa.float32())
    if types.is_timestamp(t):
        if t.tz is None:
            text = pc.strftime(arr, format="%Y-%m-%dT%H:%M:%S")
            return pc.binary_join_element_wise(text, "Z", "")
        text = pc.strftime(arr, format="%Y-%m-%dT%H:%M:%S%z")
        text = pc.replace_substring_regex(text, pattern=r"\+0000$", replacement="Z")
        return pc.replace_substring_regex(text, pattern=r"([+-]\d\d)(\d\d)$", replacement=r"\1:\2")
    if types.is_date(t) or types.is_time(t) or types.is_decimal(t):
        return arr.cast(pa.string())
    if types.is_duration(t):
        return pa.array(
            [_duration(v, t.unit) for v in arr.cast(pa.int64()).to_pylist()], pa.string()
        )
    if (
        types.is_binary(t)
        or types.is_large_binary(t)
        or types.is_fixed_size_binary(t)
        or types.is_binary_view(t)
    ):
        return pa.array(
            [None if b is None else base64.b64encode(b).decode("ascii") for b in arr.to_pylist()],
            pa.string(),
        )
    if types.is_fixed_size_list(t) or types.is_list_view(t) or types.is_large_list_view(t):
        return jsonable(arr.cast(pa.list_(t.value_type)))
    if types.is_list(t) or types.is_large_list(t):
        cls = pa.ListArray if types.is_list(t) else pa.LargeListArray
        offsets, values = _rebased(arr, arr.values)
        return cls.from_arrays(offsets, jsonable(values), mask=_nulls(arr))
    if types.is_struct(t):
        children = [jsonable(c) for c in arr.flatten()]
        fields = [pa.field(t.field(i).name, c.type) for i, c in enumerate(children)]
        return pa.StructArray.from_arrays(children, fields=fields, mask=_nulls(arr))
    if types.is_map(t):
        offsets, keys = _rebased(arr, arr.keys)
        items = _rebased(arr, arr.items)[1]
        return pa.MapArray.from_arrays(offsets, jsonable(keys), jsonable(items), mask=_nulls(arr))
    if types.is_run_end_encoded(t):
        return jsonable(pc.run_end_decode(arr))
    raise SourceError(f"a column has Arrow type {t}, which bulkload does not map to JSON")


def _nulls(arr: pa.Array) -> pa.Array | None:
    return arr.is_null() if arr.null_count else None


def _rebased(arr: pa.Array, values: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Offsets from 0 and the values they index, for a list or map array that may be a
    slice of a larger one (Arrow rebuilds lists with a null mask only from such offsets)."""
    pa = _pyarrow()
    import pyarrow.compute as pc

    offsets = arr.offsets
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    rebased = pc.subtract(offsets, pa.scalar(start, offsets.type))
    return rebased, values.slice(start, end - start)


_UNIT_DIGITS = {"s": 0, "ms": 3, "us": 6, "ns": 9}


def _duration(value: int | None, unit: str) -> str | None:
    if value is None:
        return None
    digits = _UNIT_DIGITS[unit]
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), 10**digits)
    text = f"{whole}.{frac:0{digits}d}".rstrip("0").rstrip(".") if digits else str(whole)
    return f"{sign}PT{text}S"


# -- CSV -----------------------------------------------------------------------------------


class _RawReader(io.RawIOBase):
    """A decoder that has only ``readinto`` (see _sources), as a raw stream for io."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return int(self._stream.readinto(memoryview(buffer).cast("B")) or 0)


def csv_chunks(
    source: Source, stream: Any, block_size: int, max_field: int | None
) -> Iterator[Chunk]:
    """Parse a CSV stream (already decompressed) into blocks of JSON lines.

    A row with more or fewer fields than the header, broken quoting or invalid UTF-8 is
    rejected with its raw text (its place kept as a blank line); a blank row is blank.
    """

    where = source.display
    text = io.TextIOWrapper(
        io.BufferedReader(_RawReader(stream), 1 << 20),
        encoding="utf-8-sig",  # drops a BOM at the start
        errors="surrogateescape",  # bad bytes survive to the reject, exactly
        newline="",  # the csv module handles \r\n and newlines inside quotes
    )
    consumed: list[str] = []

    def lines() -> Iterator[str]:
        for line in text:
            consumed.append(line)
            yield line

    # The csv module's field limit is process-wide; raise it to what a record may hold.
    limit = max(max_field or 0, 128 << 20)
    if csv.field_size_limit() < limit:
        csv.field_size_limit(limit)
    reader = csv.reader(lines(), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise SourceError(f"{where}: cannot read the CSV header: {exc}", path=where) from exc
    except UnicodeError as exc:  # pragma: no cover - surrogateescape does not raise
        raise SourceError(f"{where}: {exc}", path=where) from exc
    if header is None:
        return
    if any(name == "" for name in header):
        raise SourceError(
            f"{where}: the header (first row) has an empty column name; bulkload reads the "
            "first row of a CSV file as its column names",
            path=where,
        )
    _check_names(where, header)
    consumed.clear()
    width = len(header)
    row = 1  # the row number of the next row (data rows, from 1; the header not counted)
    first = 1
    offset = 0
    pieces: list[bytes] = []
    size = 0
    rejects = Rejects()
    while True:
        error = None
        try:
            fields = next(reader, None)
        except csv.Error as exc:
            fields, error = [], f"not valid CSV: {exc}"
        if fields is None:
            break
        raw = "".join(consumed)
        consumed.clear()
        line = _PLACEHOLDER
        if error is None and fields and len(fields) != width:
            error = f"the row has {len(fields)} fields, the header has {width}"
        if error is None and fields:
            try:
                line = orjson.dumps(dict(zip(header, fields, strict=True)), option=_JSON_OPTIONS)
            except orjson.JSONEncodeError:
                error = "invalid UTF-8"
        if error is not None:
            body = raw.encode("utf-8", "surrogateescape").rstrip(b"\r\n")
            rejects.add(row, error, body)
        pieces.append(line)
        size += len(line)
        row += 1
        # Rejected rows count at their raw size: a file of bad rows must not pile up a
        # block's worth of placeholders (one byte each) before it is handed on.
        if size + rejects.nbytes >= block_size:
            data = b"".join(pieces)
            yield Chunk(data, first, offset, rejects or None)
            offset += len(data)
            pieces, size, rejects, first = [], 0, Rejects(), row
    if pieces:
        yield Chunk(b"".join(pieces), first, offset, rejects or None)


def table_rows(table: pa.Table) -> Iterator[dict[str, Any]]:
    """The rows of an Arrow table as JSON-ready dicts, mapped as Parquet rows are (for
    ``bulkload.dask`` data frames)."""
    for batch in table.to_batches(max_chunksize=_MAX_BATCH_ROWS):
        names = batch.schema.names
        columns = [jsonable(col) for col in batch.columns]
        values = [
            col.to_pylist(maps_as_pydicts="lossy") if _has_map(col.type) else col.to_pylist()
            for col in columns
        ]
        if not values:
            yield from ({} for _ in range(batch.num_rows))
            continue
        for row in zip(*values, strict=True):
            yield dict(zip(names, row, strict=True))


# -- rows from a database cursor (Loader.load_records) ----------------------------------------

#: As Parquet rows are mapped: naive datetimes are UTC and UTC is written Z; keys that
#: are not strings become strings.
_RECORD_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def _record_default(value: Any) -> Any:
    """The JSON form of the types orjson leaves to us (see README, "Input and line rules")."""
    if isinstance(value, Decimal) and value.is_finite():
        return format(value, "f")  # every digit and the scale, never an exponent: "12.3400"
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON")


def record_line(record: Any) -> tuple[bytes, str | None]:
    """One record as a JSON line (with its ``\\n``), or a placeholder blank line and why it
    has no JSON form, naming the field: ``"price: Decimal('NaN') is not JSON"``."""
    try:
        return orjson.dumps(record, default=_record_default, option=_RECORD_OPTIONS) + b"\n", None
    except TypeError:  # orjson.JSONEncodeError included
        pass
    fault = _fault(record, "")
    if fault is not None:
        return _PLACEHOLDER, fault
    # Only integers beyond 64 bits are left, which orjson refuses and JSON allows: the
    # stdlib writes every digit.
    text = json.dumps(_plain(record), ensure_ascii=False, separators=(",", ":"))
    return text.encode() + b"\n", None


def _fault(value: Any, path: str) -> str | None:
    """The first value under ``value`` that has no JSON form, as ``path: why``."""
    if isinstance(value, dict):
        for key, item in value.items():
            found = _fault(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _fault(item, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    where = path or "the record"
    if isinstance(value, set | frozenset):
        return f"{where}: {type(value).__name__} is not JSON; pass a list"
    if isinstance(value, Decimal) and not value.is_finite():
        return f"{where}: {value!r} is not JSON"
    if isinstance(value, int) and not isinstance(value, bool):
        return None  # beyond 64 bits: written by the stdlib
    try:
        orjson.dumps(value, default=_record_default, option=_RECORD_OPTIONS)
    except TypeError as exc:
        return f"{where}: {exc}"
    return None


def _plain(value: Any) -> Any:
    """``value`` with everything but containers and integers in its JSON form already."""
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return orjson.loads(orjson.dumps(value, default=_record_default, option=_RECORD_OPTIONS))
