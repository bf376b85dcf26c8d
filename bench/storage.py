"""Storage figures: bytes per reading on disk, and `fleet readings DEV --since 1h` on 10 million readings.

1. Bytes per reading: a database filled through the hub's own write path (``HubStore``:
   ``insert_messages`` + ``insert_readings`` in transactions of 200 messages, as the writer does)
   with fleet-up-like data: each device reports one message per interval holding its profile's
   metrics (env: temperature, humidity, battery_v; power: power_w, energy_wh, voltage_v; gps: lat,
   lon, speed_kmh, heading_deg) at the resolutions the simulator uses, every 2 s (``fleet up``'s
   default rate of 0.5 samples/s). Measured as file size / readings after a checkpoint (tables,
   indexes and the per-minute/hour aggregates), with the split from ``dbstat``. Also with
   20-reading messages.
2. Query: the same write path fills 10 million readings (1,000 devices, 10 s apart), then the real
   library function behind ``fleet readings DEV --since 1h`` (``hub.queries.readings``: opens the
   file read-only, queries, closes) is timed for 30 random devices.

Run:  .venv/bin/python bench/storage.py [--readings 10000000] [--keep DIR]
Prints progress on stderr and one JSON line of figures on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.queries import readings  # noqa: E402
from hub.store import HubStore  # noqa: E402
from hub.storage import open_database  # noqa: E402
from hub.storage.queries import readings_plan, space_by_table, table_counts  # noqa: E402

PROFILES = {
    "env": (("temperature", 2, 21.0, 3.0), ("humidity", 1, 45.0, 10.0), ("battery_v", 3, 3.9, 0.2)),
    "power": (("power_w", 1, 800.0, 300.0), ("energy_wh", 3, 1000.0, 0.0), ("voltage_v", 1, 230.0, 1.5)),
    "gps": (("lat", 6, 52.5, 0.1), ("lon", 6, 13.4, 0.1), ("speed_kmh", 1, 50.0, 30.0), ("heading_deg", 1, 180.0, 90.0)),
}


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _value(rnd: random.Random, metric: str, decimals: int, mean: float, spread: float, energy: list[float],
           d: int) -> float:
    if metric == "energy_wh":
        energy[d] += rnd.random() * 0.3
        return round(energy[d], decimals)
    return round(rnd.gauss(mean, spread), decimals)


def fill(db: Path, devices: int, target: int, interval_s: float, readings_per_message: int = 1,
         device_major: bool = False, seed: int = 1) -> tuple[int, int]:
    """Write about ``target`` readings through the hub's store, ending now; returns (readings, messages).

    Time-major (the default) is how the hub writes: every device's next message, round after round.
    ``device_major`` writes each device's whole history in turn: the same rows, appended in key order,
    which is much faster (for the 10-million-reading query database).
    """
    rnd = random.Random(seed)
    store = HubStore(db)
    names = [f"dev-{i:05d}" for i in range(devices)]
    profile = [PROFILES[("env", "power", "gps")[i % 3]] for i in range(devices)]
    samples = [max(1, round(readings_per_message / len(p))) for p in profile]  # samples of all metrics per message
    per_round = sum(len(profile[d]) * samples[d] for d in range(devices))
    rounds = max(1, target // per_round)
    now = time.time()
    energy = [0.0] * devices
    state = {"readings": 0, "messages": 0}
    started = last_report = time.monotonic()

    def message(d: int, r: int) -> tuple[tuple, list[tuple]]:  # type: ignore[type-arg]
        span = interval_s * samples[d]
        base_ms = round((now - (rounds - r) * span + d * interval_s / devices) * 1000)
        rows = []
        for k in range(samples[d]):
            ts = (base_ms + round(k * interval_s * 1000)) / 1000.0
            for idx, (metric, decimals, mean, spread) in enumerate(profile[d]):
                rows.append((names[d], 1, r + 1, k * len(profile[d]) + idx, metric,
                             _value(rnd, metric, decimals, mean, spread, energy, d), ts, 0.0, 0))
        return (names[d], 1, r + 1, "t", base_ms, base_ms / 1000 + 0.05, False), rows

    order = ((d, r) for d in range(devices) for r in range(rounds)) if device_major else \
        ((d, r) for r in range(rounds) for d in range(devices))
    msgs: list[tuple] = []  # type: ignore[type-arg]
    rows: list[tuple] = []  # type: ignore[type-arg]
    batch = 2000 if device_major else 200
    for d, r in order:
        m, rs = message(d, r)
        msgs.append(m)
        rows += rs
        if len(msgs) >= batch:
            _commit(store, msgs, rows, state)
            msgs, rows = [], []
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                print(f"  filled {state['readings']:,} readings ({state['readings'] / (last_report - started):,.0f}/s)",
                      file=sys.stderr, flush=True)
    if msgs:
        _commit(store, msgs, rows, state)
    store.checkpoint()
    store.close()
    return state["readings"], state["messages"]


def _commit(store: HubStore, msgs: list, rows: list, state: dict[str, int]) -> None:  # type: ignore[type-arg]
    with store.transaction():
        stored = store.insert_messages(msgs)
        store.insert_readings(rows)
    state["readings"] += len(rows)
    state["messages"] += sum(stored)


def bytes_per_reading(db: Path, n: int) -> dict[str, float]:
    conn = open_database(db)
    try:
        split = {name: size / n for name, size in space_by_table(conn).items()}
        assert table_counts(conn)["samples"] == n
    finally:
        conn.close()
    return {"file": db.stat().st_size / n, **{k: round(v, 1) for k, v in split.items() if v >= 0.05}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readings", type=int, default=10_000_000, help="Readings in the query database.")
    ap.add_argument("--size-readings", type=int, default=1_000_000, help="Readings in the bytes-per-reading databases.")
    ap.add_argument("--interval", type=float, default=2.0, help="Seconds between samples in the size databases.")
    ap.add_argument("--no-query", action="store_true", help="Only the bytes per reading (skip the 10 M database).")
    ap.add_argument("--keep", type=Path, default=None, help="Build the databases in this folder and keep them.")
    args = ap.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        measure(args, args.keep)
        return
    # the 10 M database is 400 MB: gone with the run unless --keep asks for it
    with tempfile.TemporaryDirectory(prefix="fleet-bench-storage-") as tmp:
        measure(args, Path(tmp))


def measure(args: argparse.Namespace, folder: Path) -> None:
    """Build the databases in ``folder``, print the figures on stderr and one JSON line on stdout."""
    figures: dict[str, object] = {"load_before": load()}

    for label, per_message in (("single", 1), ("batch20", 20)):  # one sample of each metric, or ~20 readings
        db = folder / f"size-{label}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        print(f"bytes per reading, {label} messages: filling {args.size_readings:,} readings ...", file=sys.stderr)
        n, m = fill(db, 300, args.size_readings, args.interval, per_message)
        split = bytes_per_reading(db, n)
        print(f"  {n:,} readings in {m:,} messages: {split['file']:.1f} B/reading on disk; by table and index: "
              + ", ".join(f"{k} {v}" for k, v in split.items() if k != "file"), file=sys.stderr)
        figures[f"bytes_per_reading_{label}"] = round(split["file"], 1)
        figures[f"readings_per_message_{label}"] = round(n / m, 2)

    if args.no_query:
        print(json.dumps({"bench": "storage", **figures, "load_after": load()}))
        return
    db = folder / "query-10m.db"
    if not db.exists():
        print(f"query database: filling {args.readings:,} readings (1,000 devices, 10 s apart) ...", file=sys.stderr)
        t = time.monotonic()
        n, _ = fill(db, 1000, args.readings, 10.0, device_major=True)
        print(f"  filled {n:,} in {time.monotonic() - t:.0f} s; {db.stat().st_size / n:.1f} B/reading", file=sys.stderr)
    conn = open_database(db, readonly=True)
    n = table_counts(conn)["samples"]
    plan = readings_plan(conn, "dev-00001", since=time.time() - 3600)
    conn.close()
    rnd = random.Random(7)
    times, rows = [], []
    for _ in range(30):
        dev = f"dev-{rnd.randrange(1000):05d}"
        t = time.perf_counter()
        got = readings(db, dev, since=time.time() - 3600, limit=10_000)  # what `fleet readings DEV --since 1h` calls
        times.append((time.perf_counter() - t) * 1000)
        rows.append(len(got))
    times.sort()
    figures.update(query_db_readings=n, query_ms_median=round(statistics.median(times), 1),
                   query_ms_p95=round(times[int(len(times) * 0.95) - 1], 1), query_rows_median=statistics.median(rows),
                   query_plan=plan, load_after=load())
    print(f"fleet readings DEV --since 1h on {n:,} readings: median {figures['query_ms_median']} ms, "
          f"p95 {figures['query_ms_p95']} ms, {figures['query_rows_median']} rows; plan: {plan}", file=sys.stderr)
    print(figures["load_after"], file=sys.stderr)
    print(json.dumps({"bench": "storage", **figures}))


if __name__ == "__main__":
    main()
