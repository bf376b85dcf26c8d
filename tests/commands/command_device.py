"""A minimal device for command tests, written from firmware_protocol.md with plain paho.

It acknowledges each command (``received``), executes it at most once per id, and reports
a result: ``ping`` succeeds, ``set_interval`` fails unless seconds > 0, anything else is
rejected. Options let a test hold back acknowledgements to force the hub's re-sends.
"""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt

from protocol import Command, CommandReply, MessageClass, Status, decode, encode, topic_for
from support import Creds


class CommandDevice:
    def __init__(self, port: int, creds: Creds, *, ignore_first: int = 0, encoding: str = "json") -> None:
        self.port = port
        self.creds = creds
        self.id = creds.username
        self.encoding = encoding
        self.received: list[str] = []  # every delivery, duplicates included
        self.executed: list[str] = []  # at most once per id
        self.ignore_first = ignore_first
        self._lock = threading.Lock()
        self.client: mqtt.Client | None = None
        self.subscribed = threading.Event()

    def connect(self) -> CommandDevice:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.id, clean_session=False,
                        protocol=mqtt.MQTTv311)
        c.username_pw_set(self.creds.username, self.creds.password)
        c.will_set(topic_for(self.id, MessageClass.STATUS), encode(Status(state="offline", boot=1)), qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *a: self.subscribed.set()
        c.on_message = self._on_message
        self.subscribed.clear()
        self.client = c  # before connecting: a queued command may arrive the moment the subscription is granted
        c.connect("127.0.0.1", self.port, keepalive=30)
        c.loop_start()
        if not self.subscribed.wait(10):
            raise TimeoutError(f"device {self.id} did not subscribe")
        return self

    def _on_connect(self, c, userdata, flags, rc, props):  # type: ignore[no-untyped-def]
        c.subscribe(topic_for(self.id, MessageClass.COMMAND), qos=1)
        birth = Status(state="online", boot=1, fw="test-1", caps=["ping", "set_interval"], enc=self.encoding, interval_s=30)
        c.publish(topic_for(self.id, MessageClass.STATUS), encode(birth), qos=1, retain=True)

    def _on_message(self, c, userdata, msg):  # type: ignore[no-untyped-def]
        cmd = decode(MessageClass.COMMAND, msg.payload)
        assert isinstance(cmd, Command)
        with self._lock:
            self.received.append(cmd.id)
            if self.ignore_first > 0:
                self.ignore_first -= 1
                return  # as if the radio dropped it: no ack, no execution
            duplicate = cmd.id in self.executed
            if not duplicate:
                self.executed.append(cmd.id)
        self.reply(CommandReply(id=cmd.id, state="received"))
        if duplicate:
            return
        if cmd.expires < time.time() * 1000:
            self.reply(CommandReply(id=cmd.id, state="rejected", detail="expired"))
        elif cmd.name == "ping":
            self.reply(CommandReply(id=cmd.id, state="succeeded", result={"pong": 1}))
        elif cmd.name == "set_interval":
            seconds = cmd.args.get("seconds")
            if isinstance(seconds, int) and seconds > 0:
                self.reply(CommandReply(id=cmd.id, state="succeeded"))
            else:
                self.reply(CommandReply(id=cmd.id, state="failed", detail="seconds must be a positive integer"))
        else:
            self.reply(CommandReply(id=cmd.id, state="rejected", detail=f"unknown command {cmd.name!r}"))

    def reply(self, reply: CommandReply, device_id: str | None = None, wait: bool = False) -> None:
        """Publish a reply; ``wait`` only from the test's thread (paho's own thread would deadlock)."""
        assert self.client is not None
        topic = topic_for(device_id or self.id, MessageClass.REPLY)
        info = self.client.publish(topic, encode(reply, self.encoding), qos=1)
        if wait:
            info.wait_for_publish(5)

    def disconnect(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None
