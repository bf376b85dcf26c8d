"""Sending a command from the dashboard: the same operator session over MQTT that ``fleet send`` uses.

The dashboard does not wait for the final state here: the command's state changes show on the
device screen as the hub records them in the database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.ops_client import OpsClient
from protocol.text import inert


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What the hub answered: the new command's id, or why it created none."""

    device_id: str
    name: str
    command_id: str | None
    error: str = ""

    @property
    def message(self) -> str:
        """One line for the operator."""
        if self.command_id:
            return f"{self.name} -> {self.device_id}: command {self.command_id} queued; watch its state under recent commands"
        return f"{self.name} -> {self.device_id} not sent: {inert(self.error)}"


@dataclass(frozen=True)
class CommandSender:
    """Sends one command per call through the hub (``password`` is resolved only when sending)."""

    broker: str
    username: str
    password: Callable[[], str]
    cafile: str | None = None
    ttl_s: float = 600.0
    answer_timeout_s: float = 5.0

    def send(self, device_id: str, name: str, args: dict[str, Any]) -> SendOutcome:
        """Ask the hub to create the command; raises :class:`hub.ops_client.HubUnreachable` when it cannot."""
        with OpsClient(self.broker, self.username, self.password(), self.cafile) as ops:
            resp = ops.send([device_id], name, args, self.ttl_s, answer_timeout=self.answer_timeout_s)
        if resp.commands:
            return SendOutcome(device_id, name, resp.commands[0].id)
        error = "; ".join(r.error for r in resp.refused) or resp.error or "the hub created no command"
        return SendOutcome(device_id, name, None, error)


def local_sender(db: Path, broker: str, username: str = "operator", password_file: Path | None = None,
                 cafile: str | None = None) -> CommandSender:
    """A sender that logs in like ``fleet send`` does: --password-file, $FLEET_OPERATOR_PASSWORD, or the
    local operator account of ``db`` (created on the first send, not when the dashboard opens)."""
    from cli.send_cmd import operator_password  # the one place that knows where operator passwords come from

    return CommandSender(broker, username, lambda: operator_password(db, username, password_file), cafile)
