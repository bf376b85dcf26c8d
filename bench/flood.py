"""Flood benchmark: one device floods the embedded broker; how late are everyone else's watermarks?

Separate processes: ``fleet broker`` (embedded), ``fleet hub``, and a flooder (a raw socket in
its own process writing PUBLISHes back to back, never waiting for a PUBACK; ``qos2`` writes each
PUBLISH followed by its PUBREL). This script runs ``--honest`` well-behaved devices (paho, one
telemetry message per ``--period`` each) and measures, for each of their messages, the time from
its publish to the hub's watermark covering it. Broker RSS is sampled from /proc every second:
before the flood (baseline), its peak during, and after the hub caught up and 10 s more.

The ``guess`` scenario measures login throttling instead: an honest device's first login
(CONNECT to CONNACK, one scrypt check) without and with 4 threads guessing one device's password.

Not a test. Run:  .venv/bin/python bench/flood.py [--seconds 30] [--scenarios qos1,qos2,guess]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, start_embedded, start_fleet, stop, table

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "broker"))  # the raw-packet encoders the tests use
from raw_mqtt import ack_packet, publish_packet, raw_session  # noqa: E402

from broker.registry import Registry  # noqa: E402
from protocol.codec import decode, encode  # noqa: E402
from protocol.models import Reading, Telemetry, Watermark  # noqa: E402
from protocol.topics import MessageClass  # noqa: E402


def telemetry(seq: int) -> bytes:
    return encode(Telemetry(boot=1, seq=seq, ts=int(time.time() * 1000),
                            readings=[Reading(metric="temperature", value=20.0)]))


def flooder_main(port: int, user: str, password: str, qos: int, seconds: float) -> None:
    """The flooder process: write as fast as the socket takes it; print how many PUBLISHes were written."""
    sent, reconnects, deadline = 0, 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sock, _, rc = raw_session(port, user, username=user, password=password, timeout=10)
        except OSError:
            reconnects += 1
            time.sleep(0.1)
            continue
        if rc != 0:
            sock.close()
            reconnects += 1
            time.sleep(0.5)
            continue
        sock.settimeout(None)
        stop_drain = threading.Event()

        def drain(s: socket.socket = sock) -> None:
            while not stop_drain.is_set():
                try:
                    r, _, _ = select.select([s], [], [], 0.2)
                    if r and not s.recv(65536):
                        return
                except (OSError, ValueError):
                    return

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        try:
            while time.monotonic() < deadline:
                chunk = bytearray()
                for seq in range(sent + 1, sent + 101):
                    pid = seq % 65535 + 1
                    chunk += publish_packet(f"d/{user}/t", telemetry(seq), qos=qos, packet_id=pid)
                    if qos == 2:
                        chunk += ack_packet("pubrel", pid)
                # blocking while the broker holds us back, but never past the end of the flood
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                sock.sendall(chunk)
                sent += 100
        except TimeoutError:
            pass  # the flood is over
        except OSError:
            reconnects += 1  # disconnected by the broker: come back, as an attacker would
        stop_drain.set()
        sock.close()
        reader.join(2)
    print(json.dumps({"written": sent, "reconnects": reconnects}), flush=True)


class Probe:
    """Honest devices (paho): telemetry every ``period`` s; lag = publish until the watermark covers it."""

    def __init__(self, port: int, creds: dict[str, str], period: float) -> None:
        import paho.mqtt.client as mqtt

        self.period = period
        self.lock = threading.Lock()
        self.sent: dict[str, dict[int, float]] = {d: {} for d in creds}
        self.covered: dict[str, int] = dict.fromkeys(creds, 0)
        self.lags: list[tuple[float, float]] = []  # (time sent, lag)
        self.clients = []
        for device_id, password in creds.items():
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv311)
            c.username_pw_set(device_id, password)
            c.on_message = self._on_message
            c.on_connect = lambda cl, u, f, rc, p, d=device_id: cl.subscribe(f"d/{d}/w", 1)
            c.connect("127.0.0.1", port, keepalive=60)
            c.loop_start()
            self.clients.append((device_id, c))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _on_message(self, client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        device_id = msg.topic.split("/")[1]
        mark = decode(MessageClass.WATERMARK, msg.payload)
        assert isinstance(mark, Watermark)
        now = time.monotonic()
        with self.lock:
            for seq in range(self.covered[device_id] + 1, mark.seq + 1):
                if seq in self.sent[device_id]:
                    sent = self.sent[device_id][seq]
                    self.lags.append((sent, now - sent))
            self.covered[device_id] = max(self.covered[device_id], mark.seq)

    def start(self) -> Probe:
        self._thread.start()
        return self

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            for device_id, c in self.clients:
                with self.lock:
                    self.sent[device_id][seq] = time.monotonic()
                c.publish(f"d/{device_id}/t", telemetry(seq), qos=1)
            self._stop.wait(self.period)

    def stop_publishing(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def close(self) -> None:
        for _, c in self.clients:
            c.disconnect()
            c.loop_stop()

    def pending(self, since: float = 0.0) -> float:
        """Age of the oldest message sent after ``since`` whose watermark has not come yet (0 when none)."""
        now = time.monotonic()
        with self.lock:
            oldest = [t for d, sent in self.sent.items() for s, t in sent.items() if s > self.covered[d] and t >= since]
        return now - min(oldest) if oldest else 0.0

    def all_covered(self) -> bool:
        with self.lock:
            return all(self.covered[d] >= len(sent) for d, sent in self.sent.items())


def wait_hub_up(log: Path, hub: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "hub up" in log.read_text(errors="replace"):
            return
        if hub.poll() is not None:
            raise RuntimeError(f"fleet hub exited with {hub.returncode} (see {log})")
        time.sleep(0.2)
    raise TimeoutError(f"fleet hub not up within {timeout:.0f} s (see {log})")


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return float("nan")


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def run_flood(qos: int, seconds: float, honest: int, period: float, workdir: Path) -> dict[str, object]:
    db, log = workdir / f"flood-qos{qos}.db", workdir / f"flood-qos{qos}.log"
    registry = Registry(db)
    creds = {f"honest-{i:03d}": registry.add(f"honest-{i:03d}") for i in range(honest)}
    flood_secret = registry.add("flooder")
    port, broker = start_embedded(db, log)
    hub = flooder = None
    probe: Probe | None = None
    try:
        hub = start_fleet(["--db", str(db), "hub", "--broker", f"mqtt://127.0.0.1:{port}", "--staleness-min", "5m"],
                          log)
        wait_hub_up(log, hub)  # the watermark counts from seq 1: the hub must hear the first message
        probe = Probe(port, creds, period).start()
        deadline = time.monotonic() + 60
        while not probe.lags and time.monotonic() < deadline:
            time.sleep(0.2)
        if not probe.lags:
            raise RuntimeError(f"no watermark from the hub within 60 s (see {log})")
        baseline_started = time.monotonic()  # the hub is up and publishing watermarks
        time.sleep(10)  # noqa: a baseline period, not a wait for an event
        rss_before = rss_mb(broker.pid)
        flood_started = time.monotonic()
        flooder = subprocess.Popen([sys.executable, __file__, "--flooder", str(port), "flooder", flood_secret,
                                    str(qos), str(seconds)], stdout=subprocess.PIPE, cwd=ROOT)
        rss_peak, worst_pending = rss_before, 0.0
        while flooder.poll() is None:
            time.sleep(1.0)
            rss_peak = max(rss_peak, rss_mb(broker.pid))
            pending = probe.pending(since=flood_started)
            worst_pending = max(worst_pending, pending)
            print(f"  qos{qos} {time.monotonic() - flood_started:5.1f}s  broker RSS {rss_mb(broker.pid):6.1f} MB  "
                  f"oldest uncovered {pending:5.2f} s  load {load()}", flush=True)
        out = json.loads((flooder.stdout.read() if flooder.stdout else b"{}") or b"{}")
        flood_ended = time.monotonic()
        caught_up = time.monotonic() + 120
        while time.monotonic() < caught_up and probe.pending() > 0:
            time.sleep(0.5)
        probe.stop_publishing()
        while time.monotonic() < caught_up and not probe.all_covered():
            time.sleep(0.5)
        time.sleep(10)  # noqa: let the broker settle before the "after" sample
        rss_after = rss_mb(broker.pid)
        # by the time each message was sent: during the flood, or in the baseline before it
        during = [lag for t, lag in probe.lags if flood_started <= t <= flood_ended]
        before = [lag for t, lag in probe.lags if baseline_started <= t < flood_started]
        return {"scenario": f"flood qos{qos}", "seconds": seconds, "written": out.get("written"),
                "reconnects": out.get("reconnects"), "honest": honest,
                "lag_before_p50_s": round(statistics.median(before), 2) if before else None,
                "lag_before_max_s": round(max(before), 2) if before else None,
                "worst_lag_s": round(max([*during, worst_pending]), 2),
                "p99_lag_s": round(statistics.quantiles(during, n=100)[98], 2) if len(during) > 2 else None,
                "rss_before_mb": round(rss_before, 1), "rss_peak_mb": round(rss_peak, 1),
                "rss_after_mb": round(rss_after, 1), "load": load()}
    finally:
        if probe is not None:
            probe.close()
        if flooder is not None and flooder.poll() is None:
            flooder.kill()
        stop(hub)
        stop(broker)


def first_login_ms(port: int, registry: Registry, device_id: str, chosen: bool = False) -> float:
    """CONNECT to CONNACK of a device's first login; ``chosen``: a typed secret (scrypt), else generated."""
    secret = registry.add(device_id, secret=f"typed secret of {device_id}" if chosen else None)
    started = time.perf_counter()
    sock, _, rc = raw_session(port, device_id, username=device_id, password=secret, timeout=15)
    elapsed = time.perf_counter() - started
    sock.close()
    if rc != 0:
        raise RuntimeError(f"honest login refused: {rc}")
    return elapsed * 1000


def run_guess(seconds: float, workdir: Path) -> dict[str, object]:
    db, log = workdir / "guess.db", workdir / "guess.log"
    registry = Registry(db)
    registry.add("victim", secret="victim secret chosen by a person")  # scrypt: guesses keep the hash threads busy
    port, broker = start_embedded(db, log)
    stop_guessing = threading.Event()
    answered = [0]

    def guess(offset: int) -> None:
        n = offset
        while not stop_guessing.is_set():
            try:
                sock, _, _ = raw_session(port, "victim", username="victim", password=f"guess-{n}", timeout=10)
                sock.close()
                answered[0] += 1
            except OSError:
                pass
            n += 4

    try:
        scrypt_baseline = [first_login_ms(port, registry, f"typed-{i}", chosen=True) for i in range(5)]
        baseline = [first_login_ms(port, registry, f"calm-{i}") for i in range(10)]
        threads = [threading.Thread(target=guess, args=(i,), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(1)  # noqa: the guessing is under way
        under, deadline, i = [], time.monotonic() + seconds, 0
        while time.monotonic() < deadline:
            under.append(first_login_ms(port, registry, f"honest-{i}"))
            i += 1
            time.sleep(0.2)
        stop_guessing.set()
        for t in threads:
            t.join(15)
        return {"scenario": "password guessing", "seconds": seconds, "guesses_answered": answered[0],
                "scrypt_first_login_ms_p50_before": round(statistics.median(scrypt_baseline)),
                "honest_first_login_ms_p50_before": round(statistics.median(baseline)),
                "honest_first_login_ms_p50_during": round(statistics.median(under)),
                "honest_first_login_ms_max_during": round(max(under)), "logins": len(under), "load": load()}
    finally:
        stop_guessing.set()
        stop(broker)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--flooder":
        _, _, port, user, password, qos, seconds = sys.argv
        flooder_main(int(port), user, password, int(qos), float(seconds))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--honest", type=int, default=20, help="well-behaved devices measuring their lag")
    parser.add_argument("--period", type=float, default=1.0, help="seconds between an honest device's messages")
    parser.add_argument("--scenarios", default="qos1,qos2,guess")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="flood-bench-") as tmp:
        for scenario in args.scenarios.split(","):
            print(f"scenario {scenario} (load {load()})", flush=True)
            if scenario == "guess":
                results.append(run_guess(min(args.seconds, 15.0), Path(tmp)))
            else:
                results.append(run_flood(int(scenario[-1]), args.seconds, args.honest, args.period, Path(tmp)))
            print(json.dumps(results[-1]), flush=True)
    print()
    floods = [r for r in results if r["scenario"].startswith("flood")]
    if floods:
        print(table(floods, ["scenario", "seconds", "written", "reconnects", "honest", "lag_before_p50_s", "lag_before_max_s",
                             "worst_lag_s", "p99_lag_s",
                             "rss_before_mb", "rss_peak_mb", "rss_after_mb", "load"]))
    guesses = [r for r in results if r["scenario"] == "password guessing"]
    if guesses:
        print(table(guesses, ["scenario", "seconds", "guesses_answered", "scrypt_first_login_ms_p50_before",
                              "honest_first_login_ms_p50_before",
                              "honest_first_login_ms_p50_during", "honest_first_login_ms_max_during", "logins",
                              "load"]))


if __name__ == "__main__":
    main()
