"""`make bench`: run every benchmark against the embedded broker and Mosquitto, write the report.

Each script runs --runs times (the simulator scale step once: it is long and its figures are
counts, not rates); the report takes the median of each figure and names the command that
produced it. The generated part of bench/README.md sits between the report markers; the
hand-written sections around it stay as they are.

Run:  make bench      or   .venv/bin/python bench/run_all.py [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
START, END = "<!-- report:start -->", "<!-- report:end -->"


def run_script(args: list[str], timeout: float) -> list[Any]:
    """Run a bench script; its progress goes to our stderr, every JSON line of its stdout is returned."""
    cmd = [sys.executable, str(HERE / args[0]), *args[1:]]
    print(f"$ {' '.join(['python', 'bench/' + args[0], *args[1:]])}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, timeout=timeout, cwd=HERE.parent)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} exited with {proc.returncode}")
    out = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith(("{", "[")):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def median_rows(runs: list[list[dict[str, Any]]], key: tuple[str, ...],
                each: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Group rows of several runs by ``key`` and take the median of every numeric field; the fields named in
    ``each`` also keep every run's value, in run order, as ``<field>_each`` (a median hides the spread)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    order: list[tuple[Any, ...]] = []
    for rows in runs:
        for row in rows:
            k = tuple(row.get(f) for f in key)
            if k not in groups:
                order.append(k)
            groups[k].append(row)
    out = []
    for k in order:
        rows = groups[k]
        merged = dict(rows[0])
        for field, value in rows[0].items():
            values = [r.get(field) for r in rows if isinstance(r.get(field), (int, float)) and not isinstance(r.get(field), bool)]
            if field not in key and values and len(values) == len(rows):
                merged[field] = round(statistics.median(values), 2)
        for field in each:
            merged[f"{field}_each"] = ", ".join(fmt(r.get(field)) for r in rows)
        merged["runs"] = len(rows)
        out.append(merged)
    return out


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) < 10 else f"{v:,.1f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "-" if v is None else str(v)


def md_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(title for _, title in columns) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"
    return "\n".join([head, rule, *("| " + " | ".join(fmt(r.get(f)) for f, _ in columns) + " |" for r in rows)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs of each rate benchmark (median reported)")
    ap.add_argument("--quick", action="store_true", help="smaller loads, for a smoke run")
    args = ap.parse_args()
    started = time.time()
    q = args.quick
    ingest_cmd = ["ingest.py", "--messages", "5000" if q else "100000", "--brokers", "mosquitto,embedded", "--json"]
    commands_cmd = ["commands.py", "--devices", "200" if q else "1000", "--commands", "200" if q else "1000", "--json"]
    overload_cmd = ["overload.py", "--seconds", "10" if q else "30"]
    storage_cmd = ["storage.py", "--readings", "1000000" if q else "10000000"]
    scale_cmd = ["sim_scale.py", "--sizes", "1000" if q else "1000,5000,10000", "--connect-bound", "120", "--hold", "5"]

    ingest = median_rows([run_script(ingest_cmd, 1800)[-1] for _ in range(args.runs)], ("broker", "encoding", "phase"),
                         each=("hub_of_raw",))
    commands = median_rows([run_script(commands_cmd, 1800)[-1] for _ in range(args.runs)], ("broker",))
    overload = median_rows([run_script(overload_cmd, 600) for _ in range(max(1, args.runs // 2))], ("broker",))
    storage = run_script(storage_cmd, 3600)[-1:]
    scale_lines = run_script(scale_cmd, 3600)
    wire = next((x["bytes_per_reading"] for x in scale_lines if isinstance(x, dict) and "bytes_per_reading" in x), {})
    scale = [x for x in scale_lines if isinstance(x, dict) and "broker" in x]

    for r in scale:
        n = r.get("connected") or 0
        r["sim_kb_per_device"] = round(r["sim_rss_mb"] * 1024 / n, 1) if n else None
        r["broker_kb_per_device"] = round(r["broker_rss_mb"] * 1024 / n, 1) if n and r.get("broker_rss_mb") else None

    py = f"{platform.python_implementation()} {platform.python_version()}"
    parts = [
        START,
        "## Report (generated by `make bench`)",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, {py}, "
        f"{subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, "
        f"in {(time.time() - started) / 60:.0f} min. Rates are medians of {args.runs} runs"
        f"{' (quick loads)' if q else ''}; each table names the command that produced it.",
        "",
        f"### Ingest: the hub's persisted rate vs. the broker's raw rate (C load generator)\n\n"
        f"`python bench/{' '.join(ingest_cmd)}`\n",
        md_table(ingest, [("broker", "broker"), ("encoding", "payload"), ("phase", "phase"),
                          ("raw_msg_per_s", "raw msg/s"), ("hub_msg_per_s", "hub msg/s"), ("hub_of_raw", "hub ÷ raw"),
                          ("hub_of_raw_each", "hub ÷ raw, each run"),
                          ("readings_per_s", "readings/s"), ("hub_rss_mb", "hub RSS MB"),
                          ("hub_cpu_us_per_msg", "hub CPU µs/msg"), ("raw_consumer_us", "mosquitto_sub CPU µs/msg"),
                          ("cpu_ceiling", "CPU ceiling"), ("load_1m", "load 1m"), ("runs", "runs")]),
        "",
        "CPU ceiling: the hub ÷ raw at which the hub phase keeps the machine's cores exactly as busy as the raw "
        "phase did (raw phase CPU per message ÷ hub phase CPU per message, broker and publishers included). "
        "Where the raw phase already uses every core, the hub cannot beat it: it shares the cores with the "
        "broker and the publishers and spends more CPU per message than mosquitto_sub.",
        "",
        f"### Commands: round trip and fan-out\n\n`python bench/{' '.join(commands_cmd)}`\n",
        md_table(commands, [("broker", "broker"), ("devices", "devices"), ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"),
                            ("p99_ms", "p99 ms"), ("failed", "failed"), ("fanout_s", "fan-out s"),
                            ("fanout_ok", "fan-out ok"), ("runs", "runs")]),
        "",
        f"### Connections: devices held, RSS per device\n\n`python bench/{' '.join(scale_cmd)}`\n",
        md_table(scale, [("broker", "broker"), ("devices", "devices"), ("connected", "connected"),
                         ("connect_s", "connect s"), ("sim_rss_mb", "sim RSS MB"),
                         ("sim_kb_per_device", "sim KB/device"), ("broker_rss_mb", "broker RSS MB"),
                         ("broker_kb_per_device", "broker KB/device")]),
        "",
        "### Bandwidth: MQTT bytes on the wire per reading (whole PUBLISH, env profile)\n",
        md_table([{"form": k, "bytes": v} for k, v in wire.items()], [("form", "form"), ("bytes", "bytes/reading")]),
        "",
        f"### Storage: bytes per reading on disk, `fleet readings DEV --since 1h`\n\n`python bench/{' '.join(storage_cmd)}`\n",
        md_table(storage, [("bytes_per_reading_single", "B/reading, fleet-up messages"),
                           ("bytes_per_reading_batch20", "B/reading, 20-reading messages"),
                           ("query_db_readings", "readings in db"), ("query_ms_median", "query p50 ms"),
                           ("query_ms_p95", "query p95 ms"), ("query_rows_median", "rows"), ("load_after", "load")]),
        "",
        f"### Hub RSS under sustained overload\n\n`python bench/{' '.join(overload_cmd)}`\n",
        md_table(overload, [("broker", "broker"), ("seconds", "s"), ("published_readings", "published"),
                            ("persisted_per_s", "persisted/s"), ("backlog_readings", "backlog at broker"),
                            ("hub_rss_first_third_mb", "RSS first third MB"),
                            ("hub_rss_last_third_mb", "RSS last third MB"), ("hub_rss_peak_mb", "peak MB")]),
        END,
    ]
    report = "\n".join(parts)
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    if START in text and END in text:
        text = text[: text.index(START)] + report + text[text.index(END) + len(END):]
    else:
        head, _, rest = text.partition("\n")
        text = f"{head}\n\n{report}\n{rest}"
    README.write_text(text)
    print(report)


if __name__ == "__main__":
    main()
