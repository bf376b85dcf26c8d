"""A minimal device written from ``firmware_protocol.md`` alone (section 11, "Device checklist").

It imports nothing of this project (no ``protocol``, ``device_sim``, ``hub``, ``broker`` or
``cli``; ``test_independence.py`` checks that): only paho-mqtt, cbor2 and the standard library.
So when ``fleet device-check`` passes it, the document, not the shared code, is what was tested.

It can also break rules on purpose (:class:`Fault`), so that the checker can be shown to fail it
on the right section.

Threads: paho's network thread only posts events to a queue; one device thread owns all state
(buffer, seq, command ring) and does every publish and timer, like a firmware main loop.
"""

from __future__ import annotations

import hashlib
import json
import queue
import random
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import cbor2
import paho.mqtt.client as mqtt

# ---------------------------------------------------------------- the wire (sections 8.2 to 8.5)

METRIC_IDS = {"temperature": 1, "humidity": 2, "battery_v": 3, "rssi_dbm": 9}
KEYS = {  # section 8.3: one-letter CBOR keys
    "telemetry": {"boot": "b", "seq": "q", "ts": "t", "readings": "r", "dropped": "d"},
    "status": {"state": "s", "boot": "b", "fw": "f", "caps": "c", "enc": "e", "interval_s": "i", "boot_ts": "t",
               "desc": "h", "cfg": "k"},
    "reply": {"id": "i", "state": "s", "detail": "d", "result": "r"},
    "command": {"id": "i", "name": "n", "args": "a", "expires": "x"},
    "watermark": {"boot": "b", "seq": "q", "next": "n", "max": "m", "ts": "t"},
    "config_set": {"version": "v", "set": "s"},  # section 13.2
    "config_report": {"version": "v", "applied": "a", "refused": "r"},
    "description": {"metrics": "m", "commands": "c", "config": "k"},
}
ENUMS = {"state": {"offline": 0, "online": 1}, "enc": {"json": 0, "cbor": 1}}
REPLY_STATES = {"received": 0, "succeeded": 1, "failed": 2, "rejected": 3}
UPTIME_BELOW = 10**12
MAX_PAYLOAD = 4096
RING_SLOTS = 32
MAX_R2_RESENDS = 3


def encode(kind: str, fields: dict[str, Any], form: str) -> bytes:
    """One message in JSON (full names) or CBOR (one-letter keys, enumerations as numbers)."""
    fields = {k: v for k, v in fields.items() if v not in (None, "", [], {}) and not (k in ("dropped", "boot_ts", "cfg")
                                                                                        and v == 0)}
    if form == "json":
        return json.dumps(fields, separators=(",", ":")).encode()
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if kind == "reply" and name == "state":
            value = REPLY_STATES[value]
        elif kind == "status" and name in ENUMS:
            value = ENUMS[name][value]
        elif name == "readings":
            value = [[r.get("dt", 0), METRIC_IDS[r["metric"]], r["value"]] for r in value]
        out[KEYS[kind][name]] = value
    return cbor2.dumps(out)


def decode(kind: str, payload: bytes, forms: tuple[str, ...] = ("json", "cbor")) -> dict[str, Any] | None:
    """A command or watermark as a dict of full field names; None when it does not decode."""
    if not payload:
        return None
    form = "json" if payload[:1] == b"{" else "cbor"
    if form not in forms:
        return None
    try:
        data = json.loads(payload) if form == "json" else cbor2.loads(payload)
    except (ValueError, cbor2.CBORDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    if form == "cbor":
        names = {short: name for name, short in KEYS[kind].items()}
        if not all(k in names for k in data):
            return None
        data = {names[k]: v for k, v in data.items()}
    return data


def valid_command(cmd: dict[str, Any]) -> bool:
    text = lambda v: isinstance(v, str) and 1 <= len(v) <= 32  # noqa: E731
    return (text(cmd.get("id")) and text(cmd.get("name")) and isinstance(cmd.get("expires"), int)
            and isinstance(cmd.get("args", {}), dict) and set(cmd) <= {"id", "name", "args", "expires"})


# ---------------------------------------------------------------- the device

class Fault(Enum):
    """Rules the device can break on purpose."""

    RUN_DUPLICATES = "runs a redelivered command again"
    IGNORE_TTL = "runs expired commands"
    NO_RESEND_AFTER_SESSION_LOSS = "never re-sends after a reconnect without a session"
    TIMED_RESEND = "re-sends unconfirmed messages on a timer"
    IGNORE_REBIRTH = "answers rebirth but does not re-announce"
    CRASH_ON_MALFORMED = "drops its connection on a command it cannot decode"
    HANG_ON_MALFORMED = "stops handling commands after one it cannot decode (stays connected)"
    WRONG_ENCODING = "asks for CBOR but understands only JSON"
    NO_KEEP = "drops a message as soon as the broker acknowledges it"
    RESEND_ALL_ON_HOLE = "re-sends its whole buffer on a watermark with a hole"
    NEVER_GIVE_UP = "re-sends a missing message forever"
    SILENT = "sends only every sample_s, even when that is longer than interval_s"
    NO_CONFIG_TOPIC = "never subscribes to d/<id>/k, though it describes configuration keys"
    APPLY_OLD_CONFIG = "applies an older configuration version over the one in force"
    ACCEPT_ANY_KEY = "reports every configuration key as applied, even one it does not have"
    WRONG_DESC_HASH = "names a hash in its birth that is not its description's"


@dataclass
class Slot:
    """One buffered message (section 5.2): its bytes, how often R2 re-sent it, and its mark."""

    seq: int
    topic: str
    payload: bytes
    r2_resends: int = 0
    mark: int = 0
    mid: int | None = None
    acked: bool = False


# section 13: what this device describes (a constant of the firmware build, 13.5) and the keys it can be set
CONFIG_KEYS = {"report_s": ("int", 1, 3600), "label": ("text", 0, 64)}
DESCRIPTION = {"metrics": {"temperature": "C -40..85"},
               "commands": {"rebirth": {}, "ping": {}, "set_interval": {"seconds": "int 1..86400"}, "describe": {}},
               "config": ["report_s", "int 1..3600", "label", "text"]}


def description_bytes(form: str) -> bytes:
    return encode("description", DESCRIPTION, form)


def description_hash(payload: bytes) -> str:
    """13.5: the first 8 bytes of the SHA-256 of exactly the bytes sent, as 16 lower-case hex digits."""
    return hashlib.sha256(payload).hexdigest()[:16]


@dataclass
class DeviceConfig:
    host: str
    port: int
    device_id: str
    secret: str
    boot: int = 1
    enc: str = "json"
    interval_s: int = 60
    sample_s: float = 0.5
    """How often the device samples and sends telemetry (it must be at most interval_s)."""
    buffer_slots: int = 128
    has_clock: bool = True
    faults: frozenset[Fault] = field(default_factory=frozenset)
    timed_resend_s: float = 1.0
    cfg_version: int = 0
    """The configuration version in force at power-up (kept in flash, section 13.3)."""


class MinimalDevice:
    """One device: start(), then stop(). Everything happens on its own thread."""

    def __init__(self, config: DeviceConfig) -> None:
        self.cfg = config
        self.id = config.device_id
        self.boot = config.boot
        self.interval_s = config.interval_s
        self.seq = 0
        self.buffer: list[Slot] = []
        self.wm_seq = 0  # seq of the latest watermark of this boot
        self.ring: OrderedDict[str, tuple[str, str]] = OrderedDict()  # command id -> (final state, detail)
        self.boot_ts = 0
        self.powered_up = time.monotonic()
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.connected = False
        self.hung = False  # Fault.HANG_ON_MALFORMED struck
        self.resend_due: float | None = None
        self.session_present = False
        self.next_sample = 0.0
        self.next_timed_resend = 0.0
        self.cfg_version = config.cfg_version  # 13.3: the configuration version in force (kept in flash)
        self.config_values: dict[str, Any] = {"report_s": 60, "label": ""}
        self.desc_published = ""  # 13.5: the hash stored as published (flash)
        self.desc = description_bytes(config.enc)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"device-{self.id}", daemon=True)
        self.client = self._make_client()

    # ------------------------------------------------------------ lifecycle

    def _make_client(self) -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.id, clean_session=False,
                        protocol=mqtt.MQTTv311)
        c.username_pw_set(self.id, self.cfg.secret)
        c.will_set(self._topic("s"), self._status("offline"), qos=1, retain=True)
        c.reconnect_delay_set(0.2, 2.0)
        c.on_connect = lambda cl, u, flags, rc, p: self.events.put(("connack", flags.session_present, rc))
        c.on_subscribe = lambda cl, u, mid, rcs, p: self.events.put(("suback", rcs))
        c.on_message = lambda cl, u, m: self.events.put(("message", m.topic, bytes(m.payload), bool(m.retain)))
        c.on_publish = lambda cl, u, mid, rc, p: self.events.put(("puback", mid))
        c.on_disconnect = lambda cl, u, flags, rc, p: self.events.put(("disconnect",))
        return c

    def start(self) -> MinimalDevice:
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=60)
        self.client.loop_start()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Orderly shutdown (checklist 8): offline status, wait for its PUBACK, then DISCONNECT."""
        self._stop.set()
        self._thread.join(10)
        if self.connected:
            info = self.client.publish(self._topic("s"), self._status("offline"), qos=1, retain=True)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:  # else the link is down already: the broker sends the will
                info.wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()

    def _topic(self, cls: str) -> str:
        return f"d/{self.id}/{cls}"

    # ------------------------------------------------------------ the main loop

    def _main(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            timers = [self.next_sample, self.resend_due or now + 1, self.next_timed_resend or now + 1]
            try:
                event = self.events.get(timeout=max(0.0, min(timers) - now))
            except queue.Empty:
                event = None
            if event is not None:
                self._handle(event)
            now = time.monotonic()
            if now >= self.next_sample:
                self._sample()
                period = self.cfg.sample_s if Fault.SILENT in self.cfg.faults else min(self.cfg.sample_s, self.interval_s)
                self.next_sample = now + period
            if self.resend_due is not None and now >= self.resend_due:
                self._resend_after_connect()
            if Fault.TIMED_RESEND in self.cfg.faults and self.connected and now >= self.next_timed_resend:
                self.next_timed_resend = now + self.cfg.timed_resend_s
                for slot in list(self.buffer):
                    self._send(slot)

    def _handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "connack":
            rc = event[2]
            if getattr(rc, "is_failure", True):
                return
            self.session_present = bool(event[1])
            topics = [(self._topic("c"), 1), (self._topic("w"), 1)]  # checklist 3, every time
            if Fault.NO_CONFIG_TOPIC not in self.cfg.faults:
                topics.append((self._topic("k"), 1))  # checklist 9
            self.client.subscribe(topics)
        elif kind == "suback":
            self.connected = True
            if self.desc_published != description_hash(self.desc):  # 13.5: once per description, before the birth
                self._describe()
            self._birth()
            # re-send (R1) once the retained watermark is applied, or after a second at most (2.2 step 5)
            self.resend_due = time.monotonic() + 1.0
        elif kind == "message":
            topic, payload, retained = event[1], event[2], event[3]
            if topic.endswith("/w"):
                self._on_watermark(payload, retained)
            elif topic.endswith("/c"):
                self._on_command(payload)
            elif topic.endswith("/k"):
                self._on_config(payload)
        elif kind == "puback":
            for slot in self.buffer:
                if slot.mid == event[1]:
                    slot.acked = True
            if Fault.NO_KEEP in self.cfg.faults:
                self.buffer = [s for s in self.buffer if not s.acked]
        elif kind == "disconnect":
            self.connected = False
            self.resend_due = None

    # ------------------------------------------------------------ sending

    def _status(self, state: str) -> bytes:
        fields: dict[str, Any] = {"state": state, "boot": self.boot}
        if state == "online":
            named = description_hash(self.desc)
            if Fault.WRONG_DESC_HASH in self.cfg.faults:
                named = hashlib.sha256(b"another build").hexdigest()[:16]
            fields |= {"fw": "minimal-1", "caps": ["rebirth", "ping", "set_interval", "describe"], "enc": self.cfg.enc,
                       "interval_s": self.interval_s, "boot_ts": self.boot_ts, "desc": named, "cfg": self.cfg_version}
        return encode("status", fields, self.cfg.enc)

    def _birth(self) -> None:
        self.client.publish(self._topic("s"), self._status("online"), qos=1, retain=True)

    def _describe(self) -> None:
        """13.5: the description, retained; the hash counts as published once it is queued (QoS 1, before the birth)."""
        self.client.publish(self._topic("x"), self.desc, qos=1, retain=True)
        self.desc_published = description_hash(self.desc)

    def _now_ms(self) -> int:
        if self.cfg.has_clock:
            return int(time.time() * 1000)
        uptime = int((time.monotonic() - self.powered_up) * 1000) + 1
        return self.boot_ts + uptime if self.boot_ts else uptime

    def _released(self) -> int:
        return self.buffer[0].seq - 1 if self.buffer else self.seq

    def _sample(self) -> None:
        """Checklist 4: next seq, encode (with dropped when needed), keep it, publish it."""
        released = self._released()  # before the new message: it cannot be "given up" in its own header
        self.seq += 1
        fields: dict[str, Any] = {"boot": self.boot, "seq": self.seq, "ts": self._now_ms(),
                                  "readings": [{"metric": "temperature", "value": round(random.uniform(18, 24), 2)}]}
        if released > self.wm_seq:
            fields["dropped"] = released
        payload = encode("telemetry", fields, self.cfg.enc)
        assert len(payload) <= MAX_PAYLOAD
        if len(self.buffer) >= self.cfg.buffer_slots:
            self.buffer.pop(0)  # full: give up the oldest (section 5.4)
        slot = Slot(self.seq, self._topic("t"), payload)
        self.buffer.append(slot)
        if self.connected:
            self._send(slot)  # else it waits in the buffer for the reconnect (R1)

    def _send(self, slot: Slot) -> None:
        slot.mark = self.seq
        slot.acked = False
        info = self.client.publish(slot.topic, slot.payload, qos=1)
        slot.mid = info.mid

    def _resend_after_connect(self) -> None:
        """R1: with a session, what never got a PUBACK; without one, the whole buffer (oldest first)."""
        self.resend_due = None
        if Fault.NO_RESEND_AFTER_SESSION_LOSS in self.cfg.faults:
            return
        for slot in list(self.buffer):
            if not self.session_present or not slot.acked:
                self._send(slot)

    # ------------------------------------------------------------ receiving

    def _on_watermark(self, payload: bytes, retained: bool) -> None:
        forms = ("json",) if Fault.WRONG_ENCODING in self.cfg.faults else ("json", "cbor")
        wm = decode("watermark", payload, forms)
        if wm is None or not isinstance(wm.get("boot"), int) or not isinstance(wm.get("seq"), int):
            return
        if not retained and not self.cfg.has_clock and not self.boot_ts and isinstance(wm.get("ts"), int) and wm["ts"]:
            # section 4.4: learn the time from a live watermark, then tell the hub the time of power-up
            self.boot_ts = wm["ts"] - int((time.monotonic() - self.powered_up) * 1000)
            self._birth()
        if wm["boot"] == self.boot:
            self.wm_seq = max(self.wm_seq, wm["seq"])
            self.buffer = [s for s in self.buffer if s.seq > wm["seq"]]
            nxt, top = wm.get("next", 0), wm.get("max", 0)
            if nxt:
                self._resend_holes(nxt, top)
        if self.resend_due is not None:
            self._resend_after_connect()

    def _resend_holes(self, nxt: int, top: int) -> None:
        """R2: re-send what the hub lacks below ``next`` if its last send predates ``max``; give up after 3 R2 re-sends."""
        for slot in list(self.buffer):
            if Fault.RESEND_ALL_ON_HOLE in self.cfg.faults:
                self._send(slot)
                continue
            if slot.seq >= nxt:
                break
            if slot.mark >= top:
                continue
            if slot.r2_resends >= MAX_R2_RESENDS and Fault.NEVER_GIVE_UP not in self.cfg.faults:
                if slot is self.buffer[0]:
                    self.buffer.pop(0)
                continue
            slot.r2_resends += 1
            self._send(slot)

    def _reply(self, cmd_id: str, state: str, detail: str = "", result: dict[str, Any] | None = None) -> None:
        fields = {"id": cmd_id, "state": state, "detail": detail, "result": result or {}}
        self.client.publish(self._topic("r"), encode("reply", fields, self.cfg.enc), qos=1)

    def _on_command(self, payload: bytes) -> None:
        """Checklist 6."""
        forms = ("json",) if Fault.WRONG_ENCODING in self.cfg.faults else ("json", "cbor")
        if self.hung:
            return
        cmd = decode("command", payload, forms)
        if cmd is None or not valid_command(cmd):
            self.hung = Fault.HANG_ON_MALFORMED in self.cfg.faults
            if Fault.CRASH_ON_MALFORMED in self.cfg.faults:
                sock = self.client.socket()
                if isinstance(sock, socket.socket):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)  # a crash: no DISCONNECT, so the broker publishes the will
                    except OSError:  # the link is already gone (the broker closed it first): crashed either way
                        pass
            return  # no usable id to answer
        cmd_id = cmd["id"]
        if cmd_id in self.ring and Fault.RUN_DUPLICATES not in self.cfg.faults:
            state, detail = self.ring[cmd_id]
            self._reply(cmd_id, state, detail)
            return
        self._reply(cmd_id, "received")
        expired = self._now_ms() > cmd["expires"] if (self.cfg.has_clock or self.boot_ts) else False
        if expired and Fault.IGNORE_TTL not in self.cfg.faults:
            state, detail, result = "rejected", "expired", {}
        else:
            state, detail, result = self._execute(cmd["name"], cmd.get("args", {}))
        self._reply(cmd_id, state, detail, result)
        self.ring[cmd_id] = (state, detail)
        while len(self.ring) > RING_SLOTS:
            self.ring.popitem(last=False)

    def _execute(self, name: str, args: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
        if name == "rebirth":
            if Fault.IGNORE_REBIRTH not in self.cfg.faults:
                self._birth()
                for slot in list(self.buffer):  # R3
                    self._send(slot)
            return "succeeded", "", {}
        if name == "ping":
            return "succeeded", "", {"uptime_s": int(time.monotonic() - self.powered_up)}
        if name == "describe":
            self._describe()
            return "succeeded", "", {}
        if name == "set_interval":
            seconds = args.get("seconds")
            if set(args) != {"seconds"} or not isinstance(seconds, int) or isinstance(seconds, bool) \
                    or not 1 <= seconds <= 86400:
                return "rejected", "seconds: must be an integer 1..86400", {}
            self.interval_s = seconds
            self._birth()
            return "succeeded", "", {"seconds": seconds}
        return "rejected", "unknown command", {}

    # ------------------------------------------------------------ configuration (section 13.3)

    def _on_config(self, payload: bytes) -> None:
        msg = decode("config_set", payload)
        if msg is None or not isinstance(msg.get("version"), int) or not isinstance(msg.get("set"), list) \
                or len(msg["set"]) % 2:
            return  # rule 3: no version to answer
        version, pairs = msg["version"], msg["set"]
        if version < self.cfg_version and Fault.APPLY_OLD_CONFIG not in self.cfg.faults:
            self._config_report({"version": self.cfg_version})  # rule 1: the newer version wins
            return
        applied: list[Any] = []
        refused: list[Any] = []
        names = DESCRIPTION["config"][0::2]
        for key, value in zip(pairs[0::2], pairs[1::2]):
            name = names[key] if isinstance(key, int) and not isinstance(key, bool) and 0 <= key < len(names) else key
            why = self._config_refusal(name, value)
            if why and Fault.ACCEPT_ANY_KEY not in self.cfg.faults:
                refused += [key, why]
            else:
                self.config_values[name] = value
                applied += [key, value]
        self.cfg_version = version  # rule 2, with the values (flash)
        self._config_report({"version": version, "applied": applied, "refused": refused})

    @staticmethod
    def _config_refusal(name: Any, value: Any) -> str:
        spec = CONFIG_KEYS.get(name) if isinstance(name, str) else None
        if spec is None:
            return "unknown key"
        kind, low, high = spec
        if kind == "int":
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                return f"must be an integer {low}..{high}"
        elif not isinstance(value, str) or len(value) > high:
            return f"must be text of at most {high} characters"
        return ""

    def _config_report(self, fields: dict[str, Any]) -> None:
        self.client.publish(self._topic("n"), encode("config_report", fields, self.cfg.enc), qos=1)
