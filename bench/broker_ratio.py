"""Broker throughput: the embedded broker's delivery rate as a share of Mosquitto's, same run.

The load is bench/ingest.py's raw phase, reused as is: 8 devices, each a compiled publisher
process (``mosquitto_pub -l -q 1 -M 1000`` for JSON, ``bench/mqtt_blast.c`` for CBOR) logging in
with its registry secret, and one ``mosquitto_sub -C N -q 1 -t d/+/t`` (hub role) that counts the
deliveries. No hub. Mosquitto 2 (password and ACL files from ``fleet broker export-acl``) and the
embedded broker (its own process, registry logins, device quotas lifted: the load generators are
not devices) are measured alternately, ``--rounds`` times, so both see the same machine load;
the ratio is embedded / Mosquitto per round and over the medians.

    .venv/bin/python bench/broker_ratio.py                  # --messages 40000 --rounds 2 --encoding json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
from ingest import (  # also puts the project on sys.path
    Fleet,
    build_blaster,
    make_fleet,
    raw_phase,
    write_load,
)
from common import start_embedded_process, stop


def embedded_fleet(workdir: Path) -> tuple[Fleet, subprocess.Popen[bytes]]:
    """The registry of bench/ingest.py's fleet, served by the embedded broker in its own process."""
    fleet, background = make_fleet("embedded", workdir)  # writes the registry; its in-process broker is not used
    background.stop()  # type: ignore[attr-defined]
    fleet.port, proc = start_embedded_process(fleet.db)
    return fleet, proc


def measure(name: str, workdir: Path, messages: int, encoding: str, blaster: Path | None, boot: int) -> dict[str, object]:
    sub = workdir / name
    sub.mkdir(exist_ok=True)
    fleet, proc = embedded_fleet(sub) if name == "embedded" else make_fleet(name, sub)
    try:
        files = write_load(sub, encoding, boot, messages // 8, 1, False)
        cpu0 = sum(psutil.Process(proc.pid).cpu_times()[:2])  # type: ignore[union-attr]
        rate = raw_phase(fleet, sub, files, encoding, blaster, (messages // 8) * 8, "ratio")
        cpu = sum(psutil.Process(proc.pid).cpu_times()[:2]) - cpu0  # type: ignore[union-attr]
    finally:
        stop(proc)  # type: ignore[arg-type]
    return {"broker": name, "msg_per_s": round(rate), "broker_cpu_us_per_msg": round(cpu * 1e6 / messages, 1),
            "load": " ".join(f"{x:.1f}" for x in os.getloadavg())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=40_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--encoding", default="json", choices=["json", "cbor"])
    args = ap.parse_args()
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="broker-ratio-") as tmp:
        blaster = build_blaster(Path(tmp)) if args.encoding == "cbor" else None
        for r in range(args.rounds):
            for name in ("mosquitto", "embedded"):
                workdir = Path(tmp) / f"r{r}"
                workdir.mkdir(exist_ok=True)
                results.append({"round": r, **measure(name, workdir, args.messages, args.encoding, blaster, 100 + r)})
                print(json.dumps(results[-1]), flush=True)
                time.sleep(1)
    rates = {n: [float(x["msg_per_s"]) for x in results if x["broker"] == n] for n in ("mosquitto", "embedded")}
    per_round = [e / m for m, e in zip(rates["mosquitto"], rates["embedded"])]
    print(json.dumps({"ratio_per_round": [round(x, 3) for x in per_round],
                      "ratio_of_medians": round(statistics.median(rates["embedded"]) / statistics.median(rates["mosquitto"]), 3)}))


if __name__ == "__main__":
    main()
