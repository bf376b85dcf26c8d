"""A well-behaved device that keeps publishing while a test attacks the broker or the hub."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from protocol.codec import encode
from protocol.models import Reading, Telemetry
from support import Creds, connect


class GoodDevice:
    """Publishes telemetry seq 1, 2, ... at QoS 1 every ``period_s`` from a thread; records PUBACK times."""

    def __init__(self, port: int, creds: Creds, period_s: float = 0.02) -> None:
        self.device_id = creds.username
        self.client: mqtt.Client = connect(port, creds, clean=False)
        self.period_s = period_s
        self.sent = 0
        self.round_trips: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"good-{self.device_id}", daemon=True)

    def start(self) -> GoodDevice:
        self._thread.start()
        return self

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            msg = Telemetry(boot=1, seq=seq, ts=int(time.time() * 1000),
                            readings=[Reading(metric="temperature", value=20.0 + seq % 10)])
            started = time.perf_counter()
            info = self.client.publish(f"d/{self.device_id}/t", encode(msg), qos=1)
            info.wait_for_publish(10)
            if info.is_published():
                self.round_trips.append(time.perf_counter() - started)
            self.sent = seq
            self._stop.wait(self.period_s)

    def stop(self) -> int:
        """Stop publishing; returns the number of messages sent."""
        self._stop.set()
        self._thread.join(15)
        self.client.disconnect()
        self.client.loop_stop()
        return self.sent


def stored_seqs(db: Path, device_id: str) -> set[int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute("SELECT seq FROM messages WHERE device_id = ?", (device_id,))}
    except sqlite3.OperationalError:
        return set()
    finally:
        conn.close()


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")
