"""``fleet export``: stream readings to a file or stdout, with a progress bar on stderr."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cli.database import existing_database, known_device
from cli.output import stderr
from cli.params import DURATION
from hub.export import ExportFormat, count_readings, export_readings, require_format
from hub.storage.rollups import Period


@click.command("export")
@click.option("--since", type=DURATION, default=None, help="Only readings newer than this (e.g. 2h, 7d).")
@click.option("--until", type=DURATION, default=None, help="Only readings older than this (e.g. 1h ago: 1h).")
@click.option("--device", "device_id", default=None, help="Only this device.")
@click.option("--format", "fmt", type=click.Choice([f.value for f in ExportFormat]), default="csv",
              help="csv, jsonl, or parquet (needs pyarrow).")
@click.option("--every", type=click.Choice([p.label for p in Period]), default=None,
              help="Per-minute or per-hour aggregates (count, min, max, mean, last) instead of readings.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write here instead of stdout.")
@click.pass_obj
def export_command(obj: dict, since: float | None, until: float | None, device_id: str | None, fmt: str,
                   every: str | None, output: Path | None) -> None:
    """Export readings in receive order without loading them all in memory."""
    require_format(ExportFormat(fmt))
    db = existing_database(obj["db"])
    if device_id is not None:
        known_device(db, device_id)
    now = time.time()
    lo = now - since if since is not None else None
    hi = now - until if until is not None else None
    period = Period.from_label(every) if every else None
    total = count_readings(db, lo, hi, device_id, period)
    out = output.open("wb") if output else sys.stdout.buffer
    try:
        with Progress(TextColumn("exporting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=stderr, transient=True, disable=not stderr.is_terminal) as progress:
            task = progress.add_task("export", total=total)
            written = export_readings(db, out, ExportFormat(fmt), lo, hi, device_id,
                                      progress=lambda n: progress.advance(task, n), every=period)
    finally:
        if output:
            out.close()
    stderr.print(f"exported {written} {'aggregates' if period else 'readings'}" + (f" to {output}" if output else ""))
