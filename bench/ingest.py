"""Ingest benchmark: the broker's raw delivery rate vs. the rate the hub persists, same load.

The load comes from compiled publishers, one process per device (8 devices), so the
generator is faster than anything it measures:

* JSON payloads: ``mosquitto_pub -l -q 1 -M 1000`` reading pre-written lines from a file;
* CBOR payloads: ``bench/mqtt_blast.c`` (compiled with ``cc`` at start), which reads
  length-prefixed payloads. ``mosquitto_pub -l`` cannot send CBOR: it measures each line
  with ``strlen()``, and every CBOR telemetry payload holds 0x00 bytes (the 64-bit ``ts``).

Each device logs in with its own registry secret (Mosquitto gets the password and ACL files
from ``fleet broker export-acl``, anonymous access off, unlimited in-flight and queues).

Phases, for each encoding: single-reading messages, 20-reading messages, and both again
with every device's clock skewed by a day (the hub flags them). For each load, one right
after the other (the speed of a shared VM drifts over minutes):

  raw  ``mosquitto_sub -C N -q 1`` (a C subscriber, hub role) counts N deliveries while the
       publishers run, with no hub running: the broker's delivery rate for this load.
  hub  a new ``fleet hub`` (a real subprocess) persists the same load; the rate is readings
       committed per second, read from the hub's own counters (``/metrics``). The hub is then
       stopped and its persistent session ended, so the next raw phase has the broker to itself.

Both phases also count the CPU time per message of the broker, the publishers and the
consumer (mosquitto_sub or the hub). On a machine whose cores the raw phase keeps busy, the
hub phase cannot go faster than the raw one times raw CPU / hub-phase CPU (the "ceiling"
column): a hub that spends more CPU per message than mosquitto_sub shares the same cores
with the broker and the publishers. (For the embedded broker the "broker" CPU is this
process's, which also runs the bench.)

Prints a progress line per second and two tables (raw msg/s, hub msg/s, ratio, readings/s,
hub peak RSS, the 1-minute load average at the end of each phase; CPU per message). Not a
test. Run:

    .venv/bin/python bench/ingest.py [--messages 40000] [--brokers mosquitto,embedded] [--encodings json,cbor]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
from common import start_fleet, start_mosquitto, stop  # also puts the project on sys.path

from broker.background import BackgroundBroker  # noqa: E402
from broker.config import BrokerSettings  # noqa: E402
from broker.registry import Registry, Role, role_subject  # noqa: E402
from broker.server import free_port  # noqa: E402
from protocol.codec import encode  # noqa: E402
from protocol.models import Reading, Telemetry  # noqa: E402
from protocol.topics import MessageClass, topic_for  # noqa: E402

HERE = Path(__file__).resolve().parent
DEVICES = 8
PHASE_TIMEOUT_S = 120.0
SKEW_S = 86_400
"""How far the skewed phases move every device's clock (the hub's threshold is 300 s)."""
MARKER_TOPIC = topic_for("bench-marker", MessageClass.TELEMETRY)
PHASES = (("1 reading/msg", 1, False), ("20 readings/msg", 20, False),
          ("1 reading/msg, skewed", 1, True), ("20 readings/msg, skewed", 20, True))


@dataclass
class Cpu:
    """CPU time (user + system) per message of one phase, by who spent it."""

    broker_us: float
    generator_us: float
    """The publishers (compiled clients, one per device)."""
    consumer_us: float
    """``mosquitto_sub`` in the raw phase, the hub in the hub phase."""

    @property
    def total_us(self) -> float:
        return self.broker_us + self.generator_us + self.consumer_us


class CpuMeter:
    """CPU time spent from now on by the broker and by this process's reaped children (the publishers)."""

    def __init__(self, fleet: Fleet) -> None:
        self.broker = psutil.Process(fleet.broker_pid)
        self.broker0 = sum(self.broker.cpu_times()[:2])
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.children0 = usage.ru_utime + usage.ru_stime

    def read(self, messages: int, consumer_s: float, exclude_children_s: float = 0.0) -> Cpu:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        children = usage.ru_utime + usage.ru_stime - self.children0 - exclude_children_s
        broker = sum(self.broker.cpu_times()[:2]) - self.broker0
        per = 1e6 / messages
        return Cpu(round(broker * per, 1), round(children * per, 1), round(consumer_s * per, 1))


@dataclass
class Result:
    broker: str
    encoding: str
    phase: str
    messages: int
    readings: int
    raw_msg_per_s: float
    hub_msg_per_s: float
    readings_per_s: float
    hub_rss_mb: float
    hub_cpu_us_per_msg: float
    """The hub's CPU time (user + system, all threads) per message: steadier than rates on a busy machine."""
    skewed_counted: int
    load_1m: float
    raw_cpu: Cpu
    """Where the machine's CPU went in the raw phase, per message."""
    hub_side_cpu: Cpu
    """The same in the hub phase (``consumer_us`` is the hub)."""
    messages_per_commit: float
    """The hub's mean batch: a small one means per-batch work (commit, watermarks) is paid often."""

    @property
    def ratio(self) -> float:
        return self.hub_msg_per_s / self.raw_msg_per_s if self.raw_msg_per_s else 0.0

    @property
    def cpu_ceiling(self) -> float:
        """The hub/raw ratio at which the hub phase needs the machine exactly as busy as the raw phase was:
        broker, publishers and consumer share the same cores, so when the raw phase keeps them busy a hub
        that costs more CPU per message than mosquitto_sub cannot reach 1.0 on this machine."""
        hub_total = self.hub_side_cpu.total_us
        return self.raw_cpu.total_us / hub_total if hub_total else 0.0


@dataclass
class Fleet:
    """The broker and the logins of one run."""

    name: str
    port: int
    db: Path
    secrets: dict[str, str]
    sub_secret: str
    hub_secret: str
    broker_pid: int
    """The broker's process (this one for the embedded broker, which runs in a thread here)."""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def build_blaster(workdir: Path) -> Path:
    exe = workdir / "mqtt_blast"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("bench/ingest.py: no C compiler (cc) to build bench/mqtt_blast.c; install gcc or "
                         "run with --encodings json")
    subprocess.run([cc, "-O2", "-o", str(exe), str(HERE / "mqtt_blast.c")], check=True)
    return exe


# ---------------------------------------------------------------------- load


def write_load(workdir: Path, encoding: str, boot: int, per_device: int, per_msg: int, skewed: bool) -> dict[str, Path]:
    """One payload file per device: JSON lines (mosquitto_pub -l) or length-prefixed CBOR (mqtt_blast)."""
    ts = int((time.time() - (SKEW_S if skewed else 0)) * 1000)
    files = {}
    for i in range(DEVICES):
        dev = f"bench-{i}"
        path = workdir / f"{dev}.{encoding}"
        with path.open("wb") as out:
            for seq in range(1, per_device + 1):
                msg = Telemetry(boot=boot, seq=seq, ts=ts + seq, readings=[
                    Reading(dt=k, metric="temperature", value=20.0 + (seq + k) % 50 / 4) for k in range(per_msg)])
                data = encode(msg, encoding)
                out.write(data + b"\n" if encoding == "json" else struct.pack(">I", len(data)) + data)
        files[dev] = path
    return files


def start_publishers(fleet: Fleet, files: dict[str, Path], encoding: str, blaster: Path | None) -> list[subprocess.Popen[bytes]]:
    procs = []
    for dev, path in files.items():
        topic = topic_for(dev, MessageClass.TELEMETRY)
        if encoding == "json":
            cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(fleet.port), "-i", dev, "-u", dev,
                   "-P", fleet.secrets[dev], "-t", topic, "-q", "1", "-M", "1000", "-l"]
            procs.append(subprocess.Popen(cmd, stdin=path.open("rb"), stderr=subprocess.PIPE))
        else:
            assert blaster is not None
            cmd = [str(blaster), "127.0.0.1", str(fleet.port), dev, dev, topic, str(path), "1000"]
            procs.append(subprocess.Popen(cmd, stderr=subprocess.PIPE,
                                          env={**os.environ, "MQTT_BLAST_PASSWORD": fleet.secrets[dev]}))
    return procs


def check_publishers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() not in (None, 0):
            err = p.stderr.read().decode(errors="replace").strip() if p.stderr else ""
            raise RuntimeError(f"load generator {p.args[0]} exited with {p.returncode}: {err}")


def finish_publishers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        try:
            p.wait(PHASE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    check_publishers(procs)


def progress(label: str, done: int, total: int, start: float) -> None:
    el = time.perf_counter() - start
    log(f"  {label:<40} {done:>8}/{total:<8} {el:6.1f} s  {done / el if el else 0:>9.0f}/s  "
        f"load {os.getloadavg()[0]:.2f}")


# ---------------------------------------------------------------------- raw phase


def pub_cmd(fleet: Fleet, *args: str) -> list[str]:
    return ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(fleet.port), "-i", "bench-sub-pub", "-u", "bench-sub",
            "-P", fleet.sub_secret, *args]


def raw_phase(fleet: Fleet, workdir: Path, files: dict[str, Path], encoding: str, blaster: Path | None,
              total: int, label: str) -> tuple[float, Cpu]:
    """Messages per second ``mosquitto_sub -C N`` receives while the publishers send ``files``, and the CPU
    per message of broker, publishers and subscriber.

    The subscription is known to be live when a marker comes back. The marker is a plain message
    published every 0.2 s until the subscriber shows it, not one retained message: the embedded
    broker retains nothing on ``t`` topics (only ``s``, ``w``, ``o``). The few extra markers end
    ``-C`` a handful of messages early, out of tens of thousands.
    """
    out = workdir / "raw-sub.out"
    with out.open("wb") as fh:
        sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(fleet.port), "-i", "bench-sub",
                                "-u", "bench-sub", "-P", fleet.sub_secret, "-t", "d/+/t", "-q", "1",
                                "-C", str(total + 1), "-F", "%t"], stdout=fh, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not out.read_bytes().startswith(MARKER_TOPIC.encode()):
            if time.monotonic() > deadline or sub.poll() is not None:
                raise RuntimeError("mosquitto_sub did not receive a marker within 30 s")
            subprocess.run(pub_cmd(fleet, "-t", MARKER_TOPIC, "-q", "1", "-m", "marker"), check=True)
            time.sleep(0.2)
        sub_ps = psutil.Process(sub.pid)
        sub0 = sub_cpu = sum(sub_ps.cpu_times()[:2])
        meter = CpuMeter(fleet)
        start = time.perf_counter()
        procs = start_publishers(fleet, files, encoding, blaster)
        next_print = start + 1
        while sub.poll() is None:
            if time.perf_counter() - start > PHASE_TIMEOUT_S:
                raise RuntimeError(f"raw phase: mosquitto_sub did not get {total} messages in {PHASE_TIMEOUT_S:.0f} s")
            check_publishers(procs)
            try:  # the last reading before it exits; once reaped, its whole CPU time counts as a child's
                sub_cpu = sum(sub_ps.cpu_times()[:2])
            except psutil.Error:
                pass
            time.sleep(0.005)
            if time.perf_counter() >= next_print:
                next_print += 1
                progress(f"{fleet.name} {encoding} raw {label}", out.stat().st_size // len("d/bench-0/t\n"),
                         total, start)
        seconds = time.perf_counter() - start
        finish_publishers(procs)
        cpu = meter.read(total, sub_cpu - sub0, exclude_children_s=sub_cpu)
    finally:
        stop(sub)
    return total / seconds, cpu


# ---------------------------------------------------------------------- hub phase


def hub_counters(metrics_port: int) -> dict[str, float]:
    """The hub's counters from its /metrics page (readings, skewed, count: batches committed, last_commit: when
    the last one was, Unix time)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    found = dict(re.findall(r"^fleet_hub_(readings|skewed)_total (\S+)$", text, re.M))
    found.update(re.findall(r"^fleet_hub_batch_commit_seconds_(count) (\S+)$", text, re.M))
    found.update(re.findall(r"^fleet_hub_(last_commit)_timestamp_seconds (\S+)$", text, re.M))
    return {k: float(v) for k, v in found.items()}


def start_hub(fleet: Fleet, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    metrics_port = free_port()
    proc = start_fleet(["--db", str(fleet.db), "hub", "--broker", f"mqtt://127.0.0.1:{fleet.port}", "--no-register",
                        "--metrics-port", str(metrics_port)], workdir / f"hub-{fleet.name}.log",
                       {"FLEET_LOG_FORMAT": "text", "FLEET_LOG_LEVEL": "INFO"})
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the hub exited with {proc.returncode}; see {workdir / f'hub-{fleet.name}.log'}")
        try:
            hub_counters(metrics_port)
            return proc, metrics_port
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("the hub did not serve /metrics within 30 s") from None
            time.sleep(0.1)


def hub_phase(fleet: Fleet, hub: psutil.Process, metrics_port: int, files: dict[str, Path], encoding: str,
              blaster: Path | None, messages: int, per_msg: int, label: str) -> tuple[float, float, Cpu, int, float]:
    """(msg/s, peak RSS MB, CPU per message, skewed messages counted, messages per commit) while the hub
    persists ``files``."""
    base = hub_counters(metrics_port)
    cpu0 = sum(hub.cpu_times()[:2])
    meter = CpuMeter(fleet)
    target = messages * per_msg
    peak = hub.memory_info().rss
    start, start_wall = time.perf_counter(), time.time()
    procs = start_publishers(fleet, files, encoding, blaster)
    next_print = start + 1
    done = 0
    now = hub_counters(metrics_port)
    while done < target:
        if time.perf_counter() - start > PHASE_TIMEOUT_S:
            raise RuntimeError(f"hub phase: {done}/{target} readings persisted in {PHASE_TIMEOUT_S:.0f} s")
        check_publishers(procs)
        # each /metrics scrape costs the hub CPU: look rarely (the phase's end is the hub's own last-commit time,
        # so how soon this loop notices it changes no figure)
        time.sleep(0.25)
        now = hub_counters(metrics_port)
        done = int(now["readings"] - base["readings"])
        peak = max(peak, hub.memory_info().rss)
        if time.perf_counter() >= next_print:
            next_print += 1
            progress(f"{fleet.name} {encoding} hub {label}", done, target, start)
    # until the commit that stored the last reading, by the hub's own clock: the polling above would add up to
    # one interval plus a scrape (20-30 ms, 1 % of a phase) that the raw phase, polled every 5 ms, does not pay
    # (read once more: the scrape that saw the last reading may have come between that commit and its timestamp)
    last_commit = hub_counters(metrics_port).get("last_commit", 0.0)
    seconds = last_commit - start_wall if last_commit > start_wall else time.perf_counter() - start
    hub_s = sum(hub.cpu_times()[:2]) - cpu0
    finish_publishers(procs)
    commits = now.get("count", 0) - base.get("count", 0)
    return (messages / seconds, peak / 2**20, meter.read(messages, hub_s), int(now.get("skewed", 0) - base.get("skewed", 0)),
            messages / commits if commits else 0.0)


# ---------------------------------------------------------------------- brokers


def make_fleet(name: str, workdir: Path) -> tuple[Fleet, object]:
    """Registry with 8 devices, the hub and a raw subscriber (hub role); the broker guards logins with it."""
    db = workdir / f"{name}.db"
    registry = Registry(db)
    secrets = {f"bench-{i}": registry.add(f"bench-{i}", Role.DEVICE) for i in range(DEVICES)}
    # load generators, not devices: the embedded broker's per-device quota would measure itself
    registry.set_quota(role_subject(Role.DEVICE), msgs_per_s=0, bytes_per_s=0)
    sub_secret = registry.add("bench-sub", Role.HUB)
    hub_secret = registry.add("hub", Role.HUB)
    db.with_name(db.name + ".hub-secret").write_text(hub_secret + "\n")
    if name == "embedded":
        background = BackgroundBroker(BrokerSettings(port=free_port(), db=db)).start()
        return Fleet(name, background.port, db, secrets, sub_secret, hub_secret, os.getpid()), background
    kept = workdir / "kept.json"
    kept.write_text(json.dumps(secrets | {"bench-sub": sub_secret}))
    out = workdir / "mq"
    subprocess.run([sys.executable, "-c", "from cli.main import main; main()", "--db", str(db), "broker",
                    "export-acl", "--out-dir", str(out), "--secrets", str(kept)], check=True, cwd=HERE.parent,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # `user root`: as root mosquitto drops to user "mosquitto" before reading the 0600 password file
    port, proc = start_mosquitto(workdir, f"allow_anonymous false\nuser root\npassword_file {out / 'mosquitto.passwd'}\n"
                                          f"acl_file {out / 'mosquitto.acl'}\n")
    return Fleet(name, port, db, secrets, sub_secret, hub_secret, proc.pid), proc


def stop_spy(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)


def forget_hub_session(fleet: Fleet) -> None:
    """End the stopped hub's persistent session: a clean-session login with its client id. Otherwise the
    broker would queue the next raw phase's messages for it, and the next hub would start with them."""
    subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(fleet.port), "-i", "hub", "-u", "hub",
                    "-P", fleet.hub_secret, "-t", "d/+/t", "-E"], check=True, timeout=30,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def bench_broker(name: str, workdir: Path, messages: int, encodings: list[str], blaster: Path | None,
                 profile: Path | None = None, only: str = "") -> list[Result]:
    fleet, broker = make_fleet(name, workdir)
    log(f"[{name}] broker on port {fleet.port}")
    loads = []  # (encoding, label, per_msg, skewed, messages per device, boot)
    for e, encoding in enumerate(encodings):
        for p, (label, per_msg, skewed) in enumerate(PHASES):
            if only not in label:
                continue
            per_device = max(1, (messages if per_msg == 1 else messages // 4) // DEVICES)
            loads.append((encoding, label, per_msg, skewed, per_device, 10 + e * 10 + p))
    results: list[Result] = []
    proc: subprocess.Popen[bytes] | None = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        # each load's raw phase right before its hub phase: the machine's speed drifts over minutes (a shared
        # VM), and a ratio of two rates taken apart would measure the drift. The hub is not running (and has
        # no session) during a raw phase, so mosquitto_sub is the only subscriber then.
        for encoding, label, per_msg, skewed, per_device, boot in loads:
            files = write_load(workdir, encoding, boot, per_device, per_msg, skewed)
            total = per_device * DEVICES
            raw, raw_cpu = raw_phase(fleet, workdir, files, encoding, blaster, total, label)
            files = write_load(workdir, encoding, boot, per_device, per_msg, skewed)  # fresh timestamps
            proc, metrics_port = start_hub(fleet, workdir)
            hub = psutil.Process(proc.pid)
            if profile is not None:  # py-spy needs root (ptrace); it samples every thread of the hub
                spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid",
                                        str(proc.pid), "--rate", "250", "--format", "raw", "--threads", "--gil", "-o",
                                        str(profile.with_name(f"{profile.name}-{name}-{encoding}-{boot}.txt"))],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rate, rss, cpu, skew_count, per_commit = hub_phase(fleet, hub, metrics_port, files, encoding, blaster, total, per_msg,
                                                   label)
            results.append(Result(name, encoding, label, total, total * per_msg, round(raw, 1), round(rate, 1),
                                  round(rate * per_msg, 1), round(rss, 1), cpu.consumer_us, skew_count,
                                  os.getloadavg()[0], raw_cpu, cpu, round(per_commit, 1)))
            stop_spy(spy)
            spy = None
            stop(proc)
            proc = None
            forget_hub_session(fleet)
    finally:
        stop_spy(spy)
        if proc is not None:
            stop(proc)
        if isinstance(broker, BackgroundBroker):
            broker.stop()
        else:
            stop(broker)  # type: ignore[arg-type]
    hub_log = workdir / f"hub-{name}.log"  # read after the hub stopped: it logs the last skew summary then
    skew_lines = [line.strip() for line in hub_log.open(errors="replace") if "skew" in line]
    log(f"[{name}] hub log lines mentioning skew: {len(skew_lines)}" + "".join(f"\n    {x[:160]}" for x in skew_lines[:3]))
    return results


def flat(r: Result) -> dict[str, object]:
    """One result as a flat JSON object (run_all.py takes the median of each numeric field)."""
    row = {k: v for k, v in asdict(r).items() if k not in ("raw_cpu", "hub_side_cpu")}
    for prefix, cpu in (("raw", r.raw_cpu), ("hub_phase", r.hub_side_cpu)):
        row |= {f"{prefix}_broker_us": cpu.broker_us, f"{prefix}_publishers_us": cpu.generator_us,
                f"{prefix}_consumer_us": cpu.consumer_us}
    return row | {"hub_of_raw": round(r.ratio, 2), "cpu_ceiling": round(r.cpu_ceiling, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=40_000,
                    help="single-reading messages per phase (20-reading phases send a quarter as many)")
    ap.add_argument("--brokers", default="mosquitto", help="mosquitto, embedded, or both comma-separated")
    ap.add_argument("--encodings", default="json,cbor")
    ap.add_argument("--phases", default="", help="only phases whose name holds this text (e.g. 'skewed')")
    ap.add_argument("--profile", type=Path, default=None,
                    help="record each hub phase with py-spy (raw collapsed stacks) to PROFILE-<broker>-<encoding>-<boot>.txt")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures (for run_all.py)")
    args = ap.parse_args()
    encodings = args.encodings.split(",")
    results: list[Result] = []
    log(f"uptime load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        blaster = build_blaster(Path(tmp)) if "cbor" in encodings else None
        for name in args.brokers.split(","):
            results.extend(bench_broker(name, Path(tmp), args.messages, encodings, blaster, args.profile, args.phases))
    print(f"\n{'broker':<10} {'enc':<5} {'phase':<24} {'messages':>9} {'raw msg/s':>10} {'hub msg/s':>10} "
          f"{'hub/raw':>8} {'readings/s':>11} {'hub RSS MB':>11} {'CPU us/msg':>11} {'skewed':>8} {'msg/commit':>10} {'load 1m':>8}")
    for r in results:
        print(f"{r.broker:<10} {r.encoding:<5} {r.phase:<24} {r.messages:>9} {r.raw_msg_per_s:>10.0f} "
              f"{r.hub_msg_per_s:>10.0f} {r.ratio:>8.2f} {r.readings_per_s:>11.0f} {r.hub_rss_mb:>11.0f} "
              f"{r.hub_cpu_us_per_msg:>11.1f} "
              f"{r.skewed_counted:>8} {r.messages_per_commit:>10.0f} {r.load_1m:>8.2f}")
    print(f"\nCPU per message (us, user + system) by who spent it; 'ceiling' is the hub/raw the machine's cores "
          f"allow when every phase keeps them busy: raw total / hub-phase total")
    print(f"{'broker':<10} {'enc':<5} {'phase':<24} {'raw: broker':>11} {'publishers':>11} {'sub':>6} "
          f"{'hub: broker':>11} {'publishers':>11} {'hub':>6} {'ceiling':>8}")
    for r in results:
        a, b = r.raw_cpu, r.hub_side_cpu
        print(f"{r.broker:<10} {r.encoding:<5} {r.phase:<24} {a.broker_us:>11.1f} {a.generator_us:>11.1f} "
              f"{a.consumer_us:>6.1f} {b.broker_us:>11.1f} {b.generator_us:>11.1f} {b.consumer_us:>6.1f} "
              f"{r.cpu_ceiling:>8.2f}")
    print(f"uptime load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        print(json.dumps([flat(r) for r in results]))


if __name__ == "__main__":
    main()
