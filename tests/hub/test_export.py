"""`fleet export` streams readings from a real database file in chunks, in each format."""

from __future__ import annotations

import csv
import io
import json
import time

from click.testing import CliRunner

from broker.registry import Registry
from cli.main import cli
from hub.export import iter_readings
from hub.store import HubStore


def register(db) -> None:
    """`fleet export --device` refuses an unknown device; register them before the clock is read (hashing is slow)."""
    registry = Registry(db)
    for dev in ("dev-a", "dev-b"):
        registry.add(dev)


def fill(db, n: int, now: float) -> None:
    store = HubStore(db)
    # 10 s apart, half a step off the minute: `--since 100s` read a few seconds later still cuts between two readings
    rows = [("dev-a" if i % 2 else "dev-b", 1, i, 0, "temperature", float(i % 50), now - (n - i) * 10 + 5, now, 0)
            for i in range(n)]
    with store.transaction():
        store.insert_readings(rows)
    store.close()


def test_export_csv_jsonl_filters_and_chunks(db_path, tmp_path):
    register(db_path)
    now = time.time()
    fill(db_path, 12_000, now)
    runner = CliRunner()
    out = tmp_path / "all.csv"
    res = runner.invoke(cli, ["--db", str(db_path), "export", "-o", str(out)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 12_000 and rows[0]["metric"] == "temperature"
    assert "exported 12000 readings" in res.stderr

    # the CLI reads the clock itself, somewhere between t0 and t1: a reading newer than t1 - 100 s must be
    # in, one older than t0 - 100 s must not (on a loaded machine the first export alone can take 15 s)
    t0 = time.time()
    res = runner.invoke(cli, ["--db", str(db_path), "export", "--format", "jsonl", "--since", "100s", "--device", "dev-a"])
    t1 = time.time()
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in io.StringIO(res.stdout)]
    got = [round(x["ts"], 1) for x in lines]  # stored in milliseconds
    dev_a = [round(now - (12_000 - i) * 10 + 5, 1) for i in range(1, 12_000, 2)]
    must = [ts for ts in dev_a if ts >= t1 - 100 + 0.1]  # 0.1: readings are stored in ms, compared rounded
    may = [ts for ts in dev_a if ts >= t0 - 100 - 0.1]
    assert all(x["device_id"] == "dev-a" for x in lines)
    # dev-a's readings 5, 25, 45, 65 and 85 s old when filled: the export may come seconds later
    assert must and set(must) <= set(got) <= set(may) and len(got) == len(set(got)), (must, got, may)

    chunks = list(iter_readings(db_path, chunk=5000))
    assert [len(c) for c in chunks] == [5000, 5000, 2000]


def test_parquet_without_pyarrow_is_one_line_and_creates_no_file(db_path, tmp_path):
    fill(db_path, 10, time.time())
    target = tmp_path / "x.parquet"
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        res = CliRunner().invoke(cli, ["--db", str(db_path), "export", "--format", "parquet", "-o", str(target)])
        assert res.exit_code == 1
        assert res.stderr.startswith("Error: parquet export needs pyarrow") and len(res.stderr.splitlines()) == 1
        assert not target.exists()
    else:
        res = CliRunner().invoke(cli, ["--db", str(db_path), "export", "--format", "parquet", "-o", str(target)])
        assert res.exit_code == 0 and target.stat().st_size > 0
