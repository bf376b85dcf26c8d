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

COLUMNS = queries.READING_COLUMNS
CHUNK = 5_000


class ExportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"
    PARQUET = "parquet"


def count_readings(db: str | Path, since: float | None = None, until: float | None = None,
                   device_id: str | None = None) -> int:
    """How many readings an export with these bounds would write (for a progress bar)."""
    with reading(db) as conn:
        return queries.count_readings(conn, since, until, device_id)


def iter_readings(db: str | Path, since: float | None = None, until: float | None = None,
                  device_id: str | None = None, chunk: int = CHUNK) -> Iterator[list[tuple[Any, ...]]]:
    """Readings in chunks of ``chunk`` rows (tuples in :data:`COLUMNS` order), keyset-paginated."""
    with reading(db) as conn:
        yield from queries.iter_readings(conn, since, until, device_id, chunk)


def export_readings(db: str | Path, out: IO[bytes], fmt: ExportFormat, since: float | None = None,
                    until: float | None = None, device_id: str | None = None,
                    progress: Callable[[int], None] | None = None) -> int:
    """Write readings to the binary stream ``out``; returns how many were written."""
    chunks = iter_readings(db, since, until, device_id)
    if fmt is ExportFormat.PARQUET:
        return _parquet(chunks, out, progress)
    written = 0
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    try:
        writer = csv.writer(text, lineterminator="\n") if fmt is ExportFormat.CSV else None
        if writer:
            writer.writerow(COLUMNS)
        for rows in chunks:
            if writer:
                writer.writerows(rows)
            else:
                text.write("".join(json.dumps(dict(zip(COLUMNS, r))) + "\n" for r in rows))
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


def _parquet(chunks: Iterator[list[tuple[Any, ...]]], out: IO[bytes], progress: Callable[[int], None] | None) -> int:
    require_format(ExportFormat.PARQUET)
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("device_id", pa.string()), ("metric", pa.string()), ("value", pa.float64()),
                        ("ts", pa.float64()), ("received_at", pa.float64()), ("boot", pa.int64()),
                        ("seq", pa.int64()), ("idx", pa.int64()), ("skewed", pa.int64())])
    written = 0
    with pq.ParquetWriter(out, schema) as writer:
        for rows in chunks:
            columns = list(zip(*rows))
            writer.write_table(pa.table({name: list(col) for name, col in zip(COLUMNS, columns)}, schema=schema))
            written += len(rows)
            if progress:
                progress(len(rows))
    return written
