"""``fleet readings`` and ``fleet deadletters``: what the hub stored."""

from __future__ import annotations

import csv
import sys
import time

import click

from cli.database import existing_database, known_device
from cli.output import emit, fmt_time, json_option
from cli.params import DURATION
from hub.queries import deadletters, readings, rollups
from hub.storage.rollups import Period
from protocol.errors import Reason


@click.command("readings")
@click.argument("device_id")
@click.option("--metric", default=None, help="Only this metric.")
@click.option("--since", type=DURATION, default=None, help="Only readings newer than this (e.g. 10m, 2h, 7d).")
@click.option("--limit", type=click.IntRange(min=1), default=10_000, help="At most this many rows.")
@click.option("--every", type=click.Choice([p.label for p in Period]), default=None,
              help="Per-minute or per-hour aggregates (count, min, max, mean, last); kept after retention.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
@json_option
@click.pass_obj
def readings_command(obj: dict, device_id: str, metric: str | None, since: float | None, limit: int,
                     every: str | None, as_csv: bool, fmt: str) -> None:
    """Readings of DEVICE_ID in time order (device time), or their aggregates with --every."""
    db = existing_database(obj["db"])
    known_device(db, device_id)
    lo = time.time() - since if since else None
    if every:
        rows = rollups(db, device_id, Period.from_label(every), metric=metric, since=lo, limit=limit)
        columns = ["start", "metric", "count", "min", "max", "mean", "last"]
        time_columns = ["start"]
        shrink = ["count", "last"]
    else:
        rows = readings(db, device_id, metric=metric, since=lo, limit=limit)
        columns = ["ts", "metric", "value", "boot", "seq", "received_at", "skewed"]
        time_columns = ["ts", "received_at"]
        shrink = ["skewed", "seq", "boot", "received_at"]
    if as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return
    if fmt == "table":
        rows = [{**r, **{c: fmt_time(r[c]) for c in time_columns}} for r in rows]
    emit(rows, fmt, columns, title=f"readings of {device_id}", shrink=shrink)


@click.command("deadletters")
@click.option("--reason", type=click.Choice([r.value for r in Reason]), default=None, help="Only this reason.")
@click.option("--limit", type=click.IntRange(min=1), default=100, help="At most this many, newest first.")
@json_option
@click.pass_obj
def deadletters_command(obj: dict, reason: str | None, limit: int, fmt: str) -> None:
    """Messages the hub refused, with their reason and raw payload (hex)."""
    rows = deadletters(existing_database(obj["db"]), reason=reason, limit=limit)
    if fmt == "table":
        rows = [{**r, "received_at": fmt_time(r["received_at"]), "payload_hex": r["payload_hex"][:32]} for r in rows]
    emit(rows, fmt, ["received_at", "device_id", "topic", "reason", "detail", "size", "payload_hex"],
         title="dead letters", shrink=["payload_hex", "size", "topic", "detail", "received_at"])
