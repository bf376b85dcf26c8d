"""Export readings as a stream: CSV, JSON lines, or Parquet when pyarrow is installed.

Rows come from :func:`hub.storage.queries.iter_readings` in chunks, so memory stays flat however
many readings are exported.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from hub.errors import HubError
from hub.storage import queries, reading
from hub.storage.rollups import Period

COLUMNS = queries.READING_COLUMNS
CHUNK = 5_000


class ExportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"
    PARQUET = "parquet"


def count_readings(db: str | Path, since: float | None = None, until: float | None = None,
                   device_id: str | None = None, every: Period | None = None) -> int:
    """How many rows an export with these bounds would write (for a progress bar); ``every``: aggregates."""
    with reading(db) as conn:
        if every is not None:
            return queries.count_rollups(conn, every, since, until, device_id)
        return queries.count_readings(conn, since, until, device_id)


def iter_readings(db: str | Path, since: float | None = None, until: float | None = None,
                  device_id: str | None = None, chunk: int = CHUNK) -> Iterator[list[tuple[Any, ...]]]:
    """Readings in chunks of ``chunk`` rows (tuples in :data:`COLUMNS` order), keyset-paginated."""
    with reading(db) as conn:
        yield from queries.iter_readings(conn, since, until, device_id, chunk)


def iter_rollups(db: str | Path, every: Period, since: float | None = None, until: float | None = None,
                 device_id: str | None = None, chunk: int = CHUNK) -> Iterator[list[tuple[Any, ...]]]:
    """Aggregates in chunks (tuples in :data:`hub.storage.queries.ROLLUP_COLUMNS` order)."""
    with reading(db) as conn:
        yield from queries.iter_rollups(conn, every, since, until, device_id, chunk)


def export_readings(db: str | Path, out: IO[bytes], fmt: ExportFormat, since: float | None = None,
                    until: float | None = None, device_id: str | None = None,
                    progress: Callable[[int], None] | None = None, every: Period | None = None) -> int:
    """Write readings (or, with ``every``, their per-minute or per-hour aggregates) to the binary stream ``out``;
    returns how many rows were written."""
    if every is not None:
        chunks, columns = iter_rollups(db, every, since, until, device_id), queries.ROLLUP_COLUMNS
    else:
        chunks, columns = iter_readings(db, since, until, device_id), COLUMNS
    if fmt is ExportFormat.PARQUET:
        return _parquet(chunks, out, progress, columns)
    written = 0
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    try:
        writer = csv.writer(text, lineterminator="\n") if fmt is ExportFormat.CSV else None
        if writer:
            writer.writerow(columns)
        for rows in chunks:
            if writer:
                writer.writerows(rows)
            else:
                text.write("".join(json.dumps(dict(zip(columns, r))) + "\n" for r in rows))
            written += len(rows)
            if progress:
                progress(len(rows))
        text.flush()
    finally:
        text.detach()
    return written


def require_format(fmt: ExportFormat) -> None:
    """Fail early, before any file is created, when ``fmt`` cannot be written here."""
    if fmt is ExportFormat.PARQUET:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise HubError("parquet export needs pyarrow: pip install pyarrow (or use --format csv|jsonl)") from None


_ARROW_TYPES = {"device_id": "string", "metric": "string", "boot": "int64", "seq": "int64", "idx": "int64",
                "skewed": "int64", "period": "int64", "count": "int64"}
"""Parquet column types; any column not named here is float64."""


def _parquet(chunks: Iterator[list[tuple[Any, ...]]], out: IO[bytes], progress: Callable[[int], None] | None,
             names: tuple[str, ...] = COLUMNS) -> int:
    require_format(ExportFormat.PARQUET)
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(name, getattr(pa, _ARROW_TYPES.get(name, "float64"))()) for name in names])
    written = 0
    with pq.ParquetWriter(out, schema) as writer:
        for rows in chunks:
            columns = list(zip(*rows))
            writer.write_table(pa.table({name: list(col) for name, col in zip(names, columns)}, schema=schema))
            written += len(rows)
            if progress:
                progress(len(rows))
    return written
