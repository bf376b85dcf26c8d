"""Scale-out benchmark: persisted readings/s with 1, 2 and 4 hub workers on one Mosquitto, on SQLite and on
PostgreSQL.

For each backend and worker count: a fresh database (a SQLite file, or a new database on a private
PostgreSQL server started in a temp folder, as the tests do), its registry holding 8 devices and the
hub, Mosquitto configured from ``fleet broker export-acl`` of that database (anonymous access off), and N
``fleet hub --worker-group bench`` processes (real subprocesses, own client id, own metrics port, own
working folder) sharing the telemetry through ``$share/bench/...``. The load is compiled: one
``bench/mqtt_blast`` process per device (bench/mqtt_blast.c, built with ``cc``) sending pre-encoded CBOR
messages of 20 readings at QoS 1 (the same generator as bench/ingest.py).

Measured per step: readings committed per second (the database's running total), and CPU seconds
(user + system, psutil) of each part: the workers (SQLite's work happens inside them), the PostgreSQL
server (postmaster and every backend), Mosquitto and the load generators. Because this machine has two
cores shared with other work, the figure that survives the noise is **CPU seconds per 100,000 readings**
per part; from it, the rate one more core would add to each part. The 1-minute load average is printed
next to every row. Not a test. Run:

    .venv/bin/python bench/workers.py [--workers 1,2,4] [--backends sqlite,postgresql] [--messages 16000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from common import ROOT, FLEET, free_port, raise_nofile, start_mosquitto, stop, table  # also puts the project on sys.path

sys.path.insert(0, str(ROOT / "tests"))
from ingest import DEVICES, build_blaster, check_publishers, write_load  # noqa: E402  (same directory)
from pgserver import PostgresServer, postgres_bin  # noqa: E402  (the tests' private server)

from broker.registry import Registry, Role, role_subject  # noqa: E402
from hub.storage import StorageError, open_database  # noqa: E402
from hub.storage.queries import readings_stored  # noqa: E402
from protocol.topics import MessageClass, topic_for  # noqa: E402

PER_MSG = 20
STEP_TIMEOUT_S = 240.0
PER_100K = 100_000


@dataclass
class Parts:
    """CPU seconds (user + system) so far of each part of a step."""

    workers: list[float]
    database: float
    mosquitto: float
    loadgen: float


def cpu_of(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def postgres_procs(server: PostgresServer) -> list[psutil.Process]:
    """The server's postmaster and its children (one backend per connection, plus its helpers)."""
    pid = int((server.data / "postmaster.pid").read_text().split()[0])
    master = psutil.Process(pid)
    return [master, *master.children(recursive=True)]


def counted(db: Path, conn: list[object]) -> int:
    """Readings committed so far (the store's running total), on one kept read-only connection."""
    try:
        if not conn:
            conn.append(open_database(db, readonly=True))
        return readings_stored(conn[0])  # type: ignore[arg-type]
    except StorageError:
        return 0


def start_worker(db: Path, port: int, n: int, home: Path, password: str) -> tuple[subprocess.Popen[bytes], int]:
    """``fleet hub --worker-group bench`` in its own working folder (as on its own machine)."""
    home.mkdir(parents=True, exist_ok=True)
    mport = free_port()
    log = (home / "hub.log").open("ab")
    proc = subprocess.Popen([*FLEET, "--db", str(db), "hub", "--broker", f"mqtt://127.0.0.1:{port}", "--no-register",
                             "--worker-group", "bench", "--client-id", f"hub-bench-{n}", "--metrics-port", str(mport),
                             "--queue-size", "20000"], stdout=log, stderr=log, cwd=home, preexec_fn=raise_nofile,
                            env={**os.environ, "FLEET_LOG_FORMAT": "text", "FLEET_LOG_LEVEL": "WARNING",
                                 "FLEET_HUB_PASSWORD": password})
    return proc, mport


def connected_workers(db: Path) -> int:
    try:
        conn = open_database(db, readonly=True)
    except StorageError:
        return 0
    try:
        return int(conn.execute("SELECT COUNT(*) FROM hub_status WHERE connected = 1").fetchone()[0])
    finally:
        conn.close()


def step(backend: str, workers: int, messages: int, workdir: Path, blaster: Path,
         server: PostgresServer | None) -> dict[str, object]:
    here = workdir / f"{backend}-{workers}"
    here.mkdir()
    db = Path(server.new_database()) if server is not None else here / "fleet.db"
    registry = Registry(db)
    secrets = {f"bench-{i}": registry.add(f"bench-{i}", Role.DEVICE) for i in range(DEVICES)}
    registry.set_quota(role_subject(Role.DEVICE), msgs_per_s=0, bytes_per_s=0)
    hub_password = registry.add("hub", Role.HUB)
    registry.conn.close()
    kept = here / "kept.json"
    kept.write_text(json.dumps(secrets | {"hub": hub_password}))
    out = here / "mq"
    subprocess.run([*FLEET, "--db", str(db), "broker", "export-acl", "--out-dir", str(out), "--secrets", str(kept)],
                   check=True, cwd=here, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port, mosq = start_mosquitto(here, f"allow_anonymous false\nuser root\npassword_file {out / 'mosquitto.passwd'}\n"
                                       f"acl_file {out / 'mosquitto.acl'}\n")
    per_device = messages // DEVICES
    files = write_load(here, "cbor", 1, per_device, PER_MSG, False)
    target = per_device * DEVICES * PER_MSG
    hubs: list[subprocess.Popen[bytes]] = []
    pubs: list[subprocess.Popen[bytes]] = []
    reader: list[object] = []
    try:
        for n in range(1, workers + 1):
            hubs.append(start_worker(db, port, n, here / f"machine-{n}", hub_password)[0])
        deadline = time.monotonic() + 60
        while connected_workers(db) < workers:
            if time.monotonic() > deadline or any(p.poll() is not None for p in hubs):
                raise RuntimeError(f"workers did not start; see {here}/machine-*/hub.log")
            time.sleep(0.2)
        hub_ps = [psutil.Process(p.pid) for p in hubs]
        db_ps = postgres_procs(server) if server is not None else []
        mosq_ps = [psutil.Process(mosq.pid)]

        def parts(pub_ps: list[psutil.Process]) -> Parts:
            return Parts([cpu_of([p]) for p in hub_ps], cpu_of(db_ps), cpu_of(mosq_ps), cpu_of(pub_ps))

        base_count = counted(db, reader)
        before = parts([])
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        for dev, path in files.items():
            cmd = [str(blaster), "127.0.0.1", str(port), dev, dev, topic_for(dev, MessageClass.TELEMETRY), str(path),
                   "1000"]
            pubs.append(subprocess.Popen(cmd, stderr=subprocess.PIPE,
                                         env={**os.environ, "MQTT_BLAST_PASSWORD": secrets[dev]}))
        done, next_print = 0, start + 1
        while done < target:
            if time.perf_counter() - start > STEP_TIMEOUT_S:
                raise RuntimeError(f"{backend} x{workers}: {done}/{target} readings in {STEP_TIMEOUT_S:.0f} s")
            check_publishers(pubs)
            time.sleep(0.1)
            if db_ps:  # backends started after the first look (reconnects) count too
                db_ps[:] = postgres_procs(server)  # type: ignore[arg-type]
            done = counted(db, reader) - base_count
            if time.perf_counter() >= next_print:
                next_print += 1
                el = time.perf_counter() - start
                print(f"  {backend} x{workers} {done:>9}/{target} {el:6.1f} s {done / el:>9,.0f} readings/s",
                      file=sys.stderr, flush=True)
        wall = time.perf_counter() - start
        after = parts([])
        for p in pubs:  # reaped, so their CPU time shows in RUSAGE_CHILDREN (the hubs and Mosquitto still run)
            p.wait(STEP_TIMEOUT_S)
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        load = os.getloadavg()[0]
        per = lambda cpu: cpu * PER_100K / done  # noqa: E731
        worker_cpu = [a - b for a, b in zip(after.workers, before.workers)]
        db_cpu = after.database - before.database
        mosq_cpu = after.mosquitto - before.mosquitto
        gen_cpu = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
        # per 100k readings: one more core given to a part adds this many readings/s to what it can carry
        rate_per_core = lambda cpu: f"{PER_100K / per(cpu):,.0f}" if cpu > 0 else "-"  # noqa: E731
        return {
            "backend": backend, "workers": workers, "readings": done, "seconds": f"{wall:.1f}",
            "readings/s": f"{done / wall:,.0f}",
            "CPU/worker": "/".join(f"{c / wall:.2f}" for c in worker_cpu),
            "CPU db": f"{db_cpu / wall:.2f}" if server is not None else "(in workers)",
            "CPU mosq": f"{mosq_cpu / wall:.2f}", "CPU gen": f"{gen_cpu / wall:.2f}",
            "cpu-s/100k workers": f"{per(sum(worker_cpu)):.2f}",
            "cpu-s/100k db": f"{per(db_cpu):.2f}" if server is not None else "-",
            "cpu-s/100k mosq": f"{per(mosq_cpu):.2f}", "cpu-s/100k gen": f"{per(gen_cpu):.2f}",
            "rdg/s per core: workers": rate_per_core(sum(worker_cpu)),
            "db": rate_per_core(db_cpu) if server is not None else "-",
            "mosq": rate_per_core(mosq_cpu),
            "load 1m": f"{load:.1f}",
        }
    finally:
        for p in pubs:
            stop(p)
        for p in hubs:
            stop(p)
        stop(mosq)
        for c in reader:
            c.close()  # type: ignore[attr-defined]


COLUMNS = ["backend", "workers", "readings", "seconds", "readings/s", "CPU/worker", "CPU db", "CPU mosq", "CPU gen",
           "cpu-s/100k workers", "cpu-s/100k db", "cpu-s/100k mosq", "cpu-s/100k gen", "rdg/s per core: workers", "db", "mosq",
           "load 1m"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2,4", help="Worker counts to measure, comma-separated.")
    ap.add_argument("--backends", default="sqlite,postgresql", help="sqlite, postgresql or both.")
    ap.add_argument("--messages", type=int, default=16000, help=f"Messages per step ({PER_MSG} readings each).")
    ap.add_argument("--synchronous-commit", default="on", choices=["on", "off"],
                    help="PostgreSQL's synchronous_commit (off: a commit does not wait for its WAL flush; like "
                         "SQLite's synchronous=NORMAL in WAL mode, a crash of the OS may lose the last commits).")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-workers-") as tmp:
        workdir = Path(tmp)
        blaster = build_blaster(workdir)
        server: PostgresServer | None = None
        try:
            for backend in args.backends.split(","):
                if backend == "postgresql" and server is None:
                    bindir = postgres_bin()
                    if bindir is None:
                        raise SystemExit("bench/workers.py: no PostgreSQL binaries (apt-get install postgresql)")
                    server = PostgresServer(bindir).start(
                        durable=True, extra_conf=f"synchronous_commit = {args.synchronous_commit}\n")
                for n in (int(x) for x in args.workers.split(",")):
                    rows.append(step(backend, n, args.messages, workdir, blaster,
                                     server if backend == "postgresql" else None))
                    if backend == "postgresql":
                        rows[-1]["backend"] = f"postgresql (sync commit {args.synchronous_commit})"
                    print(rows[-1], file=sys.stderr, flush=True)
        finally:
            if server is not None:
                server.stop()
    print(table(rows, COLUMNS))


if __name__ == "__main__":
    main()
