"""Alarm rules in the ingest path: the hub's persisted rate with 100 rules active vs. none, same hub, same load.

Uses bench/ingest.py's machinery (compiled publishers, 8 devices, the broker's raw rate by
``mosquitto_sub -C N`` in the same run, ``fleet hub`` as a real subprocess read through
``/metrics``). Every reading of the load is ``temperature`` (20.0 .. 32.25, a saw-tooth), so
every reading meets every rule: the worst case for rules indexed by metric. Modes, run in
turns (A B C A B C ...) so that a change of machine load hits all of them alike:

  none      no rules
  quiet     100 rules on temperature (50 above 40..89, 50 below 10..-39) that never fire
  firing    98 of those, plus ``hot`` (above 32, clears below 25) and ``cold`` (below 20.5, clears
            above 25) that fire on every saw-tooth of every device: about one alarm transition
            per 25 readings (each re-raise within the flap window is a flap of the same alarm)

Prints a line per second while measuring, then a table (hub msg/s, CPU us per message, ratio to
``none`` in the same round, 1-minute load average). Not a test. Run:

    .venv/bin/python bench/rules.py [--messages 20000] [--rounds 3] [--broker mosquitto] [--encoding json]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
from common import stop  # also puts the project on sys.path
from ingest import DEVICES, build_blaster, hub_phase, log, make_fleet, raw_phase, start_hub, write_load

from broker.background import BackgroundBroker  # noqa: E402
from hub.rules import Rule, RuleKind, add_rule, list_rules, make_rule, remove_rule  # noqa: E402

QUIET = ([make_rule(name=f"warm-{i}", kind=RuleKind.ABOVE, metric="temperature", threshold=40 + i) for i in range(50)]
         + [make_rule(name=f"cold-{i}", kind=RuleKind.BELOW, metric="temperature", threshold=10 - i)
            for i in range(50)])
FIRING = [*QUIET[:49], *QUIET[50:99],
          make_rule(name="hot", kind=RuleKind.ABOVE, metric="temperature", threshold=32, clear=25),
          make_rule(name="cold", kind=RuleKind.BELOW, metric="temperature", threshold=20.5, clear=25)]
MODES: dict[str, list[Rule]] = {"none": [], "quiet": QUIET, "firing": FIRING}


def rules_loaded(metrics_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
        found = re.search(r"^fleet_alarm_rules (\S+)$", resp.read().decode(), re.M)
    return int(float(found.group(1))) if found else -1


def set_rules(db: Path, rules: list[Rule], metrics_port: int) -> None:
    """Replace the stored rules and wait until the running hub evaluates exactly these."""
    for row in list_rules(db):
        remove_rule(db, row["name"])
    for rule in rules:
        add_rule(db, rule)
    deadline = time.monotonic() + 30
    while rules_loaded(metrics_port) != len(rules):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the hub did not load {len(rules)} rules within 30 s")
        time.sleep(0.1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20_000, help="single-reading messages per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--broker", default="mosquitto", choices=["mosquitto", "embedded"])
    ap.add_argument("--encoding", default="json", choices=["json", "cbor"])
    ap.add_argument("--modes", default="none,quiet,firing")
    ap.add_argument("--profile", type=Path, default=None,
                    help="record the hub with py-spy during the last round (raw collapsed stacks) to PROFILE-<mode>.txt")
    args = ap.parse_args()
    modes = args.modes.split(",")
    log(f"uptime load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    per_device = args.messages // DEVICES
    total = per_device * DEVICES
    table: list[tuple[int, str, float, float, float, float]] = []  # round, mode, msg/s, cpu us, raw, load
    with tempfile.TemporaryDirectory(prefix="fleet-bench-rules-") as tmp:
        workdir = Path(tmp)
        blaster = build_blaster(workdir) if args.encoding == "cbor" else None
        fleet, broker = make_fleet(args.broker, workdir)
        proc = None
        try:
            files = write_load(workdir, args.encoding, 1, per_device, 1, False)
            raw = raw_phase(fleet, workdir, files, args.encoding, blaster, total, "1 reading/msg")
            proc, metrics_port = start_hub(fleet, workdir)
            hub = psutil.Process(proc.pid)
            boot = 10
            for rnd in range(1, args.rounds + 1):
                for mode in modes:
                    set_rules(fleet.db, MODES[mode], metrics_port)
                    boot += 1  # a fresh boot per measurement: nothing is a duplicate of an earlier one
                    files = write_load(workdir, args.encoding, boot, per_device, 1, False)
                    spy = None
                    if args.profile is not None and rnd == args.rounds:
                        spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid",
                                                str(proc.pid), "--rate", "250", "--format", "raw", "--threads",
                                                "-o", str(args.profile.with_name(f"{args.profile.name}-{mode}.txt"))],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    rate, _, cpu_us, _ = hub_phase(fleet, hub, metrics_port, files, args.encoding, blaster, total, 1,
                                                   f"round {rnd} {mode}")
                    if spy is not None:
                        spy.send_signal(signal.SIGINT)
                        spy.wait(30)
                    table.append((rnd, mode, rate, cpu_us, raw, os.getloadavg()[0]))
        finally:
            if proc is not None:
                stop(proc)
            if isinstance(broker, BackgroundBroker):
                broker.stop()
            else:
                stop(broker)  # type: ignore[arg-type]
    print(f"\n{args.broker} broker, {args.encoding}, {total} messages of 1 reading per measurement; "
          f"broker raw rate {raw:.0f} msg/s")
    print(f"{'round':>5} {'mode':<8} {'hub msg/s':>10} {'CPU us/msg':>11} {'vs none':>8} {'load 1m':>8}")
    base = {rnd: rate for rnd, mode, rate, *_ in table if mode == "none"}
    ratios: dict[str, list[float]] = {}
    for rnd, mode, rate, cpu_us, _, load in table:
        ratio = rate / base[rnd] if base.get(rnd) else float("nan")
        ratios.setdefault(mode, []).append(ratio)
        print(f"{rnd:>5} {mode:<8} {rate:>10.0f} {cpu_us:>11.1f} {ratio:>8.2f} {load:>8.2f}")
    for mode, values in ratios.items():
        rates = [r for _, m, r, *_ in table if m == mode]
        cpus = [c for _, m, _, c, *_ in table if m == mode]
        print(f"median {mode:<8} {statistics.median(rates):>10.0f} {statistics.median(cpus):>11.1f} "
              f"{statistics.median(values):>8.2f}")
    print(f"uptime load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
