"""``fleet send`` and ``fleet commands``: operator commands through the hub, and their history."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
from click_default_group import DefaultGroup
from rich.status import Status

from broker.credentials import ensure_local_principal
from broker.registry import Registry, Role
from cli.output import emit, fmt_time, json_option, stderr
from cli.params import DURATION
from hub.ops_client import OpsClient
from hub.storage import CommandStore
from protocol.models import CommandState
from protocol.ops import CommandUpdate

EXIT = {CommandState.SUCCEEDED: 0, CommandState.FAILED: 3, CommandState.REJECTED: 4, CommandState.EXPIRED: 5,
        CommandState.TIMED_OUT: 6}
"""Exit status of ``fleet send`` per final state; any other outcome (refused, not final in time) is below."""
NOT_FINAL = "timeout"
"""The row state of a command that reached no final state within ``--timeout`` (exits like ``timed_out``)."""


def parse_args(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` pairs to command arguments; numbers and true/false become typed values."""
    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--arg")
        value: Any = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for cast in (int, float):
                try:
                    value = cast(raw)
                    break
                except ValueError:
                    pass
        args[key] = value
    return args


def operator_password(db: Path, username: str, password_file: Path | None) -> str:
    """From --password-file, else $FLEET_OPERATOR_PASSWORD, else the local operator account of ``db``."""
    if password_file is not None:
        return password_file.read_text().strip()
    if os.environ.get("FLEET_OPERATOR_PASSWORD"):
        return os.environ["FLEET_OPERATOR_PASSWORD"]
    return ensure_local_principal(db, username, Role.OPERATOR)


def connection_options(fn: Any) -> Any:
    """The broker options every operator command takes (mosquitto-style names)."""
    fn = click.option("--password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                      help="File holding the operator password (else $FLEET_OPERATOR_PASSWORD, else a local account).")(fn)
    fn = click.option("--cafile", type=click.Path(exists=True, dir_okay=False), default=None,
                      help="CA certificate for mqtts:// brokers.")(fn)
    fn = click.option("-u", "--username", default="operator", envvar="FLEET_OPERATOR", help="Operator login.")(fn)
    fn = click.option("--broker", default="mqtt://127.0.0.1:1883", envvar="FLEET_BROKER_URL",
                      help="Broker URL the hub listens on.")(fn)
    return fn


@click.command("send")
@click.argument("words", nargs=-1, required=True, metavar="[DEVICE_ID] NAME")
@click.option("--arg", "arg_pairs", multiple=True, help="Command argument key=value; repeat for several.")
@click.option("--all", "to_all", is_flag=True, help="Send to every active device.")
@click.option("--group", default=None, help="Send to every active device of this group.")
@click.option("--ttl", type=DURATION, default="10m", help="Expire the command if not delivered within this.")
@click.option("--wait/--no-wait", default=True, help="Wait for the final state.")
@click.option("--timeout", type=DURATION, default="30s", help="How long --wait waits.")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def send_command(obj: dict, words: tuple[str, ...], arg_pairs: tuple[str, ...], to_all: bool,
                 group: str | None, ttl: float, wait: bool, timeout: float, broker: str, username: str,
                 cafile: str | None, password_file: Path | None, as_json: bool) -> None:
    """Send command NAME to DEVICE_ID (or --all / --group) through the hub.

    Exit status: 0 succeeded (or sent, with --no-wait), 1 error (unknown device, hub not
    reachable), 3 failed, 4 rejected, 5 expired, 6 timed out.
    """
    fan_out = to_all or group is not None
    if len(words) != (1 if fan_out else 2):
        raise click.UsageError("give either DEVICE_ID NAME, or NAME with --all or --group")
    device_id, name = (None, words[0]) if fan_out else words
    if fan_out:
        devices = [p.id for p in Registry(obj["db"]).list(Role.DEVICE, group) if p.active]
        if not devices:
            raise click.ClickException(f"no active devices{f' in group {group!r}' if group else ''}")
    else:
        devices = [device_id]  # type: ignore[list-item]
    args = parse_args(arg_pairs)
    password = operator_password(obj["db"], username, password_file)
    with OpsClient(broker, username, password, cafile) as ops:
        resp = ops.send(devices, name, args, ttl)
        for refused in resp.refused:
            stderr.print(f"[red]refused[/] {refused.device_id}: {refused.error}")
        if not resp.commands:
            raise click.ClickException(resp.error or "the hub created no command")
        ids = {c.id for c in resp.commands}
        if not wait:
            if as_json:
                emit([c.model_dump() for c in resp.commands], "json")
            else:
                for c in resp.commands:
                    click.echo(c.id)
            sys.exit(1 if resp.refused else 0)
        last = _follow(ops, resp.commands[0].id if len(ids) == 1 else None, ids, timeout, as_json)
    rows = []
    for c in resp.commands:
        u = last.get(c.id)
        rows.append({"id": c.id, "device_id": c.device_id, "state": u.state if u else NOT_FINAL,
                     "detail": (u.detail if u else "") or "", "result": u.result if u else {}})
    rows += [{"id": None, "device_id": r.device_id, "state": "refused", "detail": r.error, "result": {}}
             for r in resp.refused]
    if as_json or len(rows) > 1:
        emit(rows, "json" if as_json else "table", ["device_id", "id", "state", "detail", "result"], title=f"{name}")
    else:
        row = rows[0]
        stderr.print(f"{row['device_id']} {name}: [bold]{row['state']}[/] {row['detail']} "
                     f"{row['result'] if row['result'] else ''}".rstrip())
    codes = [EXIT.get(r["state"], EXIT[CommandState.TIMED_OUT] if r["state"] == NOT_FINAL else 1) for r in rows]
    sys.exit(max(codes) if codes else 1)


def _follow(ops: OpsClient, single: str | None, ids: set[str], timeout: float, quiet: bool) -> dict[str, CommandUpdate]:
    if single and not quiet:
        click.echo(single)
    done: dict[str, CommandState] = {}
    status = Status(f"waiting for {len(ids)} command(s)", console=stderr)

    def on_update(u: CommandUpdate) -> None:
        done[u.id] = u.state
        finals = sum(1 for s in done.values() if s.final)
        if single and not quiet:
            stderr.print(f"  {fmt_time(u.ts)} {u.state} {u.detail}".rstrip())
        status.update(f"{finals}/{len(ids)} final; latest {u.device_id}: {u.state}")

    if stderr.is_terminal and not single:
        with status:
            return ops.updates(ids, timeout, on_update)
    return ops.updates(ids, timeout, on_update)


@click.group("commands", cls=DefaultGroup, default="list", default_if_no_args=True)
def commands_group() -> None:
    """Command history: `fleet commands [DEVICE]` lists, `fleet commands show ID` details one."""


@commands_group.command("list")
@click.argument("device_id", required=False)
@click.option("--state", default=None, type=click.Choice([s.value for s in CommandState]),
              help="Only commands in this state.")
@click.option("--limit", default=100, show_default=True, help="At most this many, newest first.")
@json_option
@click.pass_obj
def list_commands(obj: dict, device_id: str | None, state: str | None, limit: int, fmt: str) -> None:
    """List commands, newest first."""
    rows = [r.public() for r in CommandStore(obj["db"], readonly=True).list(device_id, state, limit)]
    if fmt == "table":
        for row in rows:
            row["created_at"] = fmt_time(row["created_at"])
            row["updated_at"] = fmt_time(row["updated_at"])
    emit(rows, fmt, ["id", "device_id", "name", "state", "attempts", "created_at", "updated_at", "detail"],
         title="commands")


@commands_group.command("show")
@click.argument("command_id")
@json_option
@click.pass_obj
def show_command(obj: dict, command_id: str, fmt: str) -> None:
    """One command with its full state history."""
    store = CommandStore(obj["db"], readonly=True)
    rec = store.get(command_id)
    if rec is None:
        raise click.ClickException(f"no command {command_id!r}")
    data = rec.public() | {"history": store.history(command_id)}
    if fmt != "table":
        emit([data], fmt) if fmt == "nl" else click.echo(__import__("json").dumps(data, indent=2, default=str))
        return
    stderr.print(f"[bold]{rec.id}[/] {rec.name} {rec.args} -> {rec.device_id}: [bold]{rec.state.value}[/] {rec.detail}")
    emit([{"state": h["state"], "at": fmt_time(h["ts"]), "detail": h["detail"]} for h in data["history"]], "table",
         ["state", "at", "detail"], title="history")
