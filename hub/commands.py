"""The command bridge: operator -> hub -> device and back, tracked to a final state.

One thread owns the bridge (:meth:`CommandBridge.run`); paho's thread only posts events to
its inbox. Every state change is committed to SQLite before the hub acts on it, so a hub
restart resumes every command in flight (:meth:`CommandBridge.load`).

Delivery rules (firmware_protocol.md, "Commands"):

* A command is published (QoS 1) only while its device is online; otherwise it waits in
  state ``queued`` and goes out on the device's next birth, unless its TTL passes first
  (``expired``, never executed).
* A command ``sent`` but not acknowledged within ``ack_timeout_s`` is re-sent with the same
  id, with exponential backoff and at most ``max_attempts`` sends (amqtt does not redeliver
  unacknowledged QoS 1 after a reconnect: AMQTT_NOTES.md #4). Devices de-duplicate by id.
* A reply is accepted only from the device the command was sent to.

Several hub workers (``fleet hub --worker-group``): the worker that takes an operator request
(a shared subscription hands each request to one worker) creates the command with itself as
``owner``; only the owner publishes it, re-sends it and runs its timers. A device's reply may
reach any worker (telemetry and replies are shared too): that worker applies it to the row with
a conditional UPDATE (``... AND state IN (<the state it read>)``), so no transition is lost or
applied twice. Every tick the owner re-reads its commands and the presence of their devices
from the database (:meth:`CommandBridge.sync`), and its own moves are conditional as well: a
re-send never goes out once another worker has recorded the device's acknowledgement.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hub.metrics import COMMAND_BUCKETS, Buckets
from hub.storage import CommandRecord, CommandStore, PresenceStore, transaction
from protocol import Command, CommandReply, CommandState, MessageClass, encode, topic_for
from protocol.errors import FleetError
from hub.watermark_holds import WatermarkHolds
from protocol.limits import LIMITS
from protocol.ops import (
    HOLD_OPS,
    CommandUpdate,
    CreatedCommand,
    HoldRequest,
    HoldResponse,
    RefusedDevice,
    SendRequest,
    SendResponse,
    request_command_id,
    request_op,
    response_topic,
    updates_topic,
)

log = logging.getLogger("fleet.hub.commands")

_BATCH = 250
"""Commands of one operator request created per transaction (the ingest writer waits for each)."""

Publish = Callable[[str, bytes, int, bool], None]
"""(topic, payload, qos, retain) -> None; thread-safe (paho's publish is)."""


class CommandSettings(BaseModel):
    """Timeouts and bounds of command delivery."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default_ttl_s: float = Field(600.0, gt=0, le=LIMITS.max_command_ttl_s)
    ack_timeout_s: float = Field(5.0, gt=0)
    """A sent command with no ``received`` reply within this is re-sent (doubling each time)."""
    max_attempts: int = Field(5, ge=1)
    backoff: float = Field(2.0, ge=1.0)
    result_timeout_s: float = Field(120.0, gt=0)
    """A delivered command with no result within this ends ``timed_out``."""
    tick_s: float = Field(0.2, gt=0)


EXPIRED_DETAIL = "expired"
"""The ``detail`` of a device's ``rejected`` reply that means the command arrived after its expiry."""


class CommandError(FleetError):
    """A command request that cannot be accepted (unknown device, bad arguments, expired request)."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class DeviceLink:
    online: bool
    encoding: str = "json"


class CommandBridge:
    """Creates, delivers, retries and settles commands; one owner thread."""

    def __init__(self, store: CommandStore, publish: Publish, known_device: Callable[[str], bool],
                 settings: CommandSettings | None = None, owner: str | None = None,
                 holds: WatermarkHolds | None = None, may_hold: Callable[[str], bool] | None = None,
                 check_args: Callable[[str, str, dict[str, Any]], str | None] | None = None) -> None:
        self.store = store
        self.check_args = check_args or (lambda device_id, name, args: None)
        """Why a command does not fit its device's description (firmware_protocol.md 13.5), or None."""
        self.holds = holds or WatermarkHolds()
        self.may_hold = may_hold or (lambda operator: False)
        """Whether login ``operator`` may hold watermarks (hub or operator role, active)."""
        self.publish = publish
        self.known_device = known_device
        self.settings = settings or CommandSettings()
        self.owner = owner
        self.links: dict[str, DeviceLink] = {}
        self.active: dict[str, CommandRecord] = {}
        self.inbox: queue.Queue[tuple[Any, ...]] = queue.Queue(maxsize=100_000)
        self.counters: dict[str, int] = {"forged_replies": 0, "bad_requests": 0, "resends": 0, "checker_replies": 0}
        self.latency = Buckets(COMMAND_BUCKETS)
        """Seconds from creation to a final state, per command."""
        self._held: list[tuple[str, bytes, int, bool]] | None = None
        """Publishes held back until the open batch commits (:meth:`_batch`); None outside a batch."""

    # ------------------------------------------------------------ thread plumbing

    def post(self, *event: Any) -> None:
        """Hand an event to the bridge thread (called from paho's thread)."""
        self.inbox.put(event)

    def run(self, stop: threading.Event) -> None:
        """The bridge thread: handle events, and tick timers every ``tick_s``."""
        self.load()
        next_tick = 0.0
        while not stop.is_set():
            timeout = max(0.0, next_tick - time.monotonic())
            try:
                event = self.inbox.get(timeout=timeout)
            except queue.Empty:
                event = None
            try:
                if event is not None:
                    self.handle(event)
                if time.monotonic() >= next_tick:
                    self.tick()
                    next_tick = time.monotonic() + self.settings.tick_s
            except Exception:  # the bridge must outlive any one bad event; the error is logged with its trace
                log.exception("command bridge event failed event=%s", event[0] if event else "tick")

    def handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "reply":  # already decoded and committed by ingest
            self.on_reply(event[1], event[2])
        elif kind == "request":
            self.on_request_payload(event[1], event[2])
        elif kind == "presence":
            self.on_presence(event[1], event[2])
        elif kind == "call":
            fn, done = event[1], event[2]
            try:
                done.put((True, fn()))
            except Exception as exc:  # handed back to the caller, which re-raises it
                done.put((False, exc))

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run ``fn`` on the bridge thread and return its result (for in-process callers)."""
        done: queue.Queue[tuple[bool, Any]] = queue.Queue(1)
        self.post("call", fn, done)
        ok, value = done.get(timeout=timeout)
        if not ok:
            raise value
        return value

    # ------------------------------------------------------------ state

    def load(self) -> None:
        """Reload every unfinished command from SQLite (after a restart); a worker claims unowned ones first."""
        self.active = {}
        for rec in self.store.active():
            if self.owner is not None and rec.owner != self.owner:
                if rec.owner is not None or not self.store.claim(rec.id, self.owner):
                    continue  # another worker's command
                rec.owner = self.owner
            self.active[rec.id] = rec
        if self.active:
            log.info("resumed commands count=%d", len(self.active))

    def seed_presence(self, links: dict[str, DeviceLink]) -> None:
        self.links.update(links)

    def submit(self, device_id: str, name: str, args: dict[str, Any] | None = None, ttl_s: float | None = None,
               operator: str | None = None, now: float | None = None, command_id: str | None = None,
               expires_at: float | None = None) -> CommandRecord:
        """Record a command for ``device_id`` (committed first), then deliver it if the device is online.

        ``expires_at`` (absolute) wins over ``ttl_s``; with ``command_id`` an existing command of
        that id is returned as it is instead of a second one being created.
        """
        if command_id is not None:
            existing = self.store.get(command_id)
            if existing is not None:
                return existing
        if not self.known_device(device_id):
            raise CommandError(f"unknown device {device_id!r}", "unknown_device")
        try:  # validate against the wire model before anything is stored
            Command(id="c0", name=name, args=args or {}, expires=1)
        except ValidationError as exc:
            raise CommandError(f"bad command {name!r}: {exc.errors(include_url=False)[0]['msg']}", "bad_command") from None
        why = self.check_args(device_id, name, args or {})
        if why:  # refused before it leaves the hub: the device described this command's arguments
            raise CommandError(f"bad argument for device {device_id!r} (from its description): {why}", "bad_argument")
        now = time.time() if now is None else now
        ttl = expires_at - now if expires_at is not None else ttl_s or self.settings.default_ttl_s
        if ttl <= 0:
            raise CommandError(f"request reached the hub {-ttl:.1f}s after its expiry; not executed", "expired")
        if ttl > LIMITS.max_command_ttl_s:
            raise CommandError(f"command TTL {ttl:g} s is outside 0..{LIMITS.max_command_ttl_s} s (devices remember "
                               f"command ids for at most that long)", "bad_command")
        # at-most-once with bounded device memory (firmware_protocol.md 6): a device remembers the last
        # LIMITS.remembered_commands ids, so no more than that may be unexpired for it at any time
        if self.store.count_unexpired(device_id, now) >= LIMITS.remembered_commands:
            raise CommandError(f"device {device_id!r} already has {LIMITS.remembered_commands} unexpired commands; "
                               f"wait until one expires (or send with a shorter --ttl)", "busy")
        try:
            rec = self.store.create(device_id, name, args or {}, ttl, operator=operator, owner=self.owner, now=now,
                                    command_id=command_id)
        except sqlite3.IntegrityError:  # another worker took a copy of the same request first
            existing = self.store.get(command_id) if command_id else None
            if existing is None:
                raise
            return existing
        self.active[rec.id] = rec
        self._notify(rec)
        self._dispatch(rec, now)
        return rec

    def on_request_payload(self, operator: str, payload: bytes) -> None:
        """An operator's request from ``fleet/ops/<operator>/req``."""
        if request_op(payload) in HOLD_OPS:
            self.on_hold_request(operator, payload)
            return
        try:
            req = SendRequest.model_validate_json(payload)
        except ValidationError as exc:
            self.counters["bad_requests"] += 1
            log.warning("bad operator request operator=%s error=%s", operator, exc.errors(include_url=False)[0]["msg"])
            resp = SendResponse(req_id="?", ok=False, error="bad request: " + exc.errors(include_url=False)[0]["msg"])
            self.publish(response_topic(operator), resp.model_dump_json().encode(), 1, False)
            return
        created: list[CreatedCommand] = []
        refused: list[RefusedDevice] = []
        now = time.time()
        for start in range(0, len(req.devices), _BATCH):
            with self._batch():
                for device_id in req.devices[start:start + _BATCH]:
                    command_id = request_command_id(operator, req.req_id, device_id)
                    try:
                        rec = self.submit(device_id, req.name, dict(req.args), req.ttl_s, operator=operator, now=now,
                                          command_id=command_id, expires_at=req.expires_at)
                    except CommandError as exc:
                        refused.append(RefusedDevice(device_id=device_id, error=str(exc), reason=exc.reason))
                        continue
                    link = self.links.get(device_id)
                    created.append(CreatedCommand(id=rec.id, device_id=device_id, state=rec.state.value,
                                                  expires_at=rec.expires_at, online=bool(link and link.online),
                                                  repeated=rec.created_at != now))
        if refused and not created and all(r.reason == "expired" for r in refused):
            log.info("operator request expired before it reached the hub operator=%s req_id=%s late_s=%.1f",
                     operator, req.req_id, now - (req.expires_at or now))
        resp = SendResponse(req_id=req.req_id, ok=bool(created), commands=created, refused=refused,
                            error="" if created else refused[0].error if refused else "no command created")
        self.publish(response_topic(operator), resp.model_dump_json().encode(), 1, False)

    @contextmanager
    def _batch(self) -> Iterator[None]:
        """Many submits in one transaction; their publishes go out once it has committed.

        Each command's create and "sent" used to be a commit of their own: 2,000 commits for a
        ``ping`` to 1,000 devices, most of the hub's time in the fan-out. The rule stays "commit, then
        publish": nothing is published before the batch's commit, and on a rollback nothing is.
        """
        self._held = held = []
        before = set(self.active)
        try:
            with transaction(self.store.conn):
                yield
        except BaseException:
            for cid in set(self.active) - before:  # rolled back: these commands do not exist
                del self.active[cid]
            raise
        finally:
            self._held = None
        for message in held:
            self.publish(*message)

    def _send(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """Publish now, or when the open batch commits."""
        if self._held is not None:
            self._held.append((topic, payload, qos, retain))
        else:
            self.publish(topic, payload, qos, retain)

    def on_hold_request(self, operator: str, payload: bytes) -> None:
        """Hold, renew or release a device's watermarks for ``fleet device-check`` (:class:`HoldRequest`)."""
        try:
            req = HoldRequest.model_validate_json(payload)
        except ValidationError as exc:
            self.counters["bad_requests"] += 1
            error = exc.errors(include_url=False)[0]["msg"]
            log.warning("bad operator request operator=%s error=%s", operator, error)
            resp = HoldResponse(req_id="?", ok=False, error="bad request: " + error)
        else:
            if not self.may_hold(operator):
                resp = HoldResponse(req_id=req.req_id, ok=False, device_id=req.device_id,
                                    error=f"login {operator!r} may not hold watermarks (hub or operator role only)")
            elif req.op == "release_watermarks":
                released = self.holds.release(req.device_id)
                log.info("watermark hold released operator=%s device_id=%s", operator, req.device_id)
                resp = HoldResponse(req_id=req.req_id, ok=released, device_id=req.device_id,
                                    error="" if released else "no hold to release (its lease may have run out)")
            elif not self.known_device(req.device_id):
                resp = HoldResponse(req_id=req.req_id, ok=False, device_id=req.device_id,
                                    error=f"unknown device {req.device_id!r}")
            else:
                renewal = self.holds.held(req.device_id)
                until = self.holds.hold(req.device_id, req.lease_s)
                if not renewal:  # once per hold, not per renewal
                    log.info("watermark hold operator=%s device_id=%s lease_s=%g", operator, req.device_id, req.lease_s)
                resp = HoldResponse(req_id=req.req_id, ok=True, device_id=req.device_id, held_until=until)
        self.publish(response_topic(operator), resp.model_dump_json().encode(), 1, False)

    def on_reply(self, device_id: str, reply: CommandReply, now: float | None = None) -> CommandRecord | None:
        for _ in range(3):  # a conditional move lost to another worker is retried on the row as it is now
            rec = self._apply_reply(device_id, reply, time.time() if now is None else now)
            if rec is not False:
                return rec
        log.warning("reply not applied, the command kept moving command_id=%s device_id=%s", reply.id, device_id)
        return None

    def _apply_reply(self, device_id: str, reply: CommandReply, now: float) -> CommandRecord | None | bool:
        # in a worker group the database is the truth: another worker may have moved the command
        rec = self.store.get(reply.id) if self.owner is not None else (self.active.get(reply.id) or self.store.get(reply.id))
        if rec is None and self.holds.checker_reply(device_id, reply.id):
            self.counters["checker_replies"] += 1  # `fleet device-check` published it, not the bridge
            return None
        if rec is None or rec.device_id != device_id:
            self.counters["forged_replies"] += 1
            log.warning("reply for a command not sent to this device device_id=%s command_id=%s", device_id, reply.id)
            return None
        if rec.final:
            return rec  # late or repeated reply; the first final state stands
        now = max(now, rec.updated_at)  # another worker's clock may be a little ahead: history stays in order
        if reply.state is CommandState.RECEIVED:
            if rec.state in (CommandState.QUEUED, CommandState.SENT):
                if not self._move(rec, CommandState.DELIVERED, now, next_attempt_at=now + self.settings.result_timeout_s):
                    return False
                if rec.id in self.active:
                    self.active[rec.id] = rec  # the owner keeps the fresh record (result timer)
            return rec
        state = {
            CommandState.SUCCEEDED: CommandState.SUCCEEDED,
            CommandState.FAILED: CommandState.FAILED,
            # firmware_protocol.md 6: a device's "rejected: expired" is the hub's own expired state
            CommandState.REJECTED: CommandState.EXPIRED if reply.detail == EXPIRED_DETAIL else CommandState.REJECTED,
        }[reply.state]
        if not self._move(rec, state, now, detail=reply.detail, result=dict(reply.result)):
            return False
        return rec

    def on_presence(self, device_id: str, online: bool, encoding: str | None = None, now: float | None = None) -> None:
        """A device came online (birth) or went offline; on birth, deliver what waits for it."""
        link = self.links.setdefault(device_id, DeviceLink(online))
        link.online = online
        if encoding:
            link.encoding = encoding
        elif online:
            link.encoding = self._stored_encoding(device_id) or link.encoding
        if not online:
            return
        now = time.time() if now is None else now
        for rec in list(self.active.values()):
            if rec.device_id == device_id and rec.state in (CommandState.QUEUED, CommandState.SENT):
                self._dispatch(rec, now, force=True)

    def sync(self) -> None:
        """Worker group: take the database's version of this worker's commands and of their devices' presence.

        Another worker may have applied a device's reply (the command moved on or finished) or
        stored a birth the owner never saw (the device is online: deliver what waits for it).
        """
        if not self.active:
            return
        for row in self.store.get_many(list(self.active)):
            mine = self.active.get(row.id)
            if mine is None:
                continue
            if row.final or row.owner not in (None, self.owner):
                self.active.pop(row.id, None)
            elif (row.state, row.updated_at) != (mine.state, mine.updated_at):
                self.active[row.id] = row
        devices = sorted({rec.device_id for rec in self.active.values()})
        for row in PresenceStore(self.store.conn).links(devices):
            online = row.state == "online"
            link = self.links.get(row.device_id)
            if link is None or link.online != online:
                self.on_presence(row.device_id, online, row.enc)

    def tick(self, now: float | None = None) -> None:
        """Expire, retry and time out commands whose timers ran out."""
        if self.owner is not None:
            self.sync()
        now = time.time() if now is None else now
        for rec in list(self.active.values()):
            if rec.state in (CommandState.QUEUED, CommandState.SENT) and now >= rec.expires_at:
                self._move(rec, CommandState.EXPIRED, now, detail="ttl passed before the device acknowledged")
            elif rec.state is CommandState.DELIVERED and rec.next_attempt_at and now >= rec.next_attempt_at:
                self._move(rec, CommandState.TIMED_OUT, now, detail="no result from the device")
            elif rec.state is CommandState.QUEUED:
                self._dispatch(rec, now)
            elif rec.state is CommandState.SENT and rec.next_attempt_at and now >= rec.next_attempt_at:
                if rec.attempts >= self.settings.max_attempts:
                    self._move(rec, CommandState.TIMED_OUT, now, detail=f"no acknowledgement after {rec.attempts} sends")
                else:
                    self._dispatch(rec, now)

    # ------------------------------------------------------------ internals

    def _stored_encoding(self, device_id: str) -> str | None:
        """The encoding the device asked for in its last birth, as the hub stored it."""
        return PresenceStore(self.store.conn).stored_encoding(device_id)

    def _dispatch(self, rec: CommandRecord, now: float, force: bool = False) -> None:
        link = self.links.get(rec.device_id)
        if link is None or not link.online:
            return
        if rec.state is CommandState.SENT and not force and rec.next_attempt_at and now < rec.next_attempt_at:
            return
        if rec.state is CommandState.SENT:
            self.counters["resends"] += 1
        attempts = rec.attempts + 1
        wait = self.settings.ack_timeout_s * self.settings.backoff ** (attempts - 1)
        command = Command(id=rec.id, name=rec.name, args=rec.args, expires=int(rec.expires_at * 1000))
        # commit "sent" first: a crash after this line re-sends the same id, which devices de-duplicate;
        # the move is conditional, so nothing goes out once another worker recorded the acknowledgement
        if not self._move(rec, CommandState.SENT, now, attempts=attempts, next_attempt_at=now + wait,
                          detail="" if attempts == 1 else f"attempt {attempts}"):
            return
        self._send(topic_for(rec.device_id, MessageClass.COMMAND), encode(command, link.encoding), 1, False)

    def _move(self, rec: CommandRecord, state: CommandState, now: float, **kwargs: Any) -> bool:
        """Commit ``rec``'s move to ``state`` if the row is still where ``rec`` says; False (and the row's
        current version taken in) when another worker moved it first."""
        if not self.store.transition(rec, state, now=now, expect=(rec.state,), **kwargs):
            current = self.store.get(rec.id)
            if current is None or current.final or rec.id not in self.active:
                self.active.pop(rec.id, None)
            else:
                self.active[rec.id] = current
            log.info("command moved by another worker command_id=%s device_id=%s state=%s",
                     rec.id, rec.device_id, current.state.value if current else "gone")
            return False
        if rec.final:
            self.active.pop(rec.id, None)
            self.latency.observe(max(0.0, now - rec.created_at))
        log.info("command state command_id=%s device_id=%s state=%s", rec.id, rec.device_id, state.value)
        self._notify(rec)
        return True

    def _notify(self, rec: CommandRecord) -> None:
        if not rec.operator:
            return
        update = CommandUpdate(id=rec.id, device_id=rec.device_id, name=rec.name, state=rec.state.value,
                               ts=rec.updated_at, final=rec.final, detail=rec.detail, result=rec.result)
        self._send(updates_topic(rec.operator), update.model_dump_json().encode(), 1, False)
