"""Export readings as a stream: CSV, JSON lines, or Parquet when pyarrow is installed.

Rows come from a server-side cursor in chunks, so memory stays flat however many readings
are exported. The readings' ``id`` is receive order, so the export walks the primary key.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from hub import store
from hub.errors import HubError

COLUMNS = ("device_id", "metric", "value", "ts", "received_at", "boot", "seq", "idx", "skewed")
CHUNK = 5_000


class ExportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"
    PARQUET = "parquet"


def count_readings(db: str | Path, since: float | None = None, until: float | None = None,
                   device_id: str | None = None) -> int:
    """How many readings an export with these bounds would write (for a progress bar)."""
    where, params = _where(since, until, device_id)
    conn = store.connect(db)
    try:
        if not store.has_table(conn, "readings"):
            return 0
        return int(conn.execute(f"SELECT COUNT(*) FROM readings {where}", params).fetchone()[0])
    finally:
        conn.close()


def iter_readings(db: str | Path, since: float | None = None, until: float | None = None,
                  device_id: str | None = None, chunk: int = CHUNK) -> Iterator[list[tuple[Any, ...]]]:
    """Readings in chunks of ``chunk`` rows (tuples in :data:`COLUMNS` order), keyset-paginated by id."""
    where, params = _where(since, until, device_id)
    conn = store.connect(db)
    try:
        if not store.has_table(conn, "readings"):
            return
        last_id = 0
        glue = "AND" if where else "WHERE"
        while True:
            rows = conn.execute(
                f"SELECT id, {', '.join(COLUMNS)} FROM readings {where} {glue} id > ? ORDER BY id LIMIT ?",
                [*params, last_id, chunk]).fetchall()
            if not rows:
                return
            last_id = rows[-1][0]
            yield [r[1:] for r in rows]
    finally:
        conn.close()


def _where(since: float | None, until: float | None, device_id: str | None) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if since is not None:
        clauses.append("ts >= ?")
        params.append(since)
    if until is not None:
        clauses.append("ts < ?")
        params.append(until)
    if device_id is not None:
        clauses.append("device_id = ?")
        params.append(device_id)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


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
