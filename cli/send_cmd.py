"""``fleet send`` and ``fleet commands``: operator commands through the hub, and their history."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
from click_default_group import DefaultGroup
from rich.status import Status

from broker.credentials import ensure_local_principal
from broker.registry import Registry, Role
from cli.errors import CliError, ExitCode, NotFound
from cli.output import emit, fmt_time, json_option, output_format, safe, stderr
from cli.params import DURATION, Duration
from cli.database import existing_database, known_device
from hub.ops_client import NoAnswer, OpsClient
from hub.storage import CommandStore
from protocol.models import FINAL_COMMAND_STATES as FINAL_STATES
from protocol.models import CommandState
from protocol.ops import MAX_TTL_S, CommandUpdate, CreatedCommand, SendResponse, new_request_id


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


ANSWER_TIMEOUT_S = 5.0
"""How long ``fleet send`` waits for the hub to say it recorded the request."""


def state_exit(state: str) -> ExitCode:
    """The exit code for a command's final (or last known) state."""
    return _STATE_EXIT.get(state, ExitCode.ERROR)


def _until(ts: float | None) -> str:
    return fmt_time(ts) if ts else "its expiry"


@click.command("send")
@click.argument("words", nargs=-1, required=True, metavar="[DEVICE_ID] NAME")
@click.option("--arg", "arg_pairs", multiple=True, help="Command argument key=value; repeat for several.")
@click.option("--all", "to_all", is_flag=True, help="Send to every active device.")
@click.option("--group", default=None, help="Send to every active device of this group.")
@click.option("--ttl", type=Duration(max_s=MAX_TTL_S, positive=True), default="10m",
              help="The command expires this long after you issue it unless its device has acknowledged it.")
@click.option("--wait/--no-wait", default=True, help="Wait for the final state.")
@click.option("--timeout", type=DURATION, default="30s", help="How long --wait waits.")
@click.option("--request-id", default=None, metavar="ID",
              help="Name this request (default: a fresh id, shown when the hub does not answer). "
                   "Sending again with the same id never runs a command twice.")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (the default when piped).")
@click.pass_obj
def send_command(obj: dict, words: tuple[str, ...], arg_pairs: tuple[str, ...], to_all: bool,
                 group: str | None, ttl: float, wait: bool, timeout: float, request_id: str | None, broker: str,
                 username: str, cafile: str | None, password_file: Path | None, as_json: bool) -> None:
    """Send command NAME to DEVICE_ID (or --all / --group) through the hub.

    Safe to retry: the request carries its own id and an expiry fixed when you issue it; a copy
    that reaches the hub later than that is not executed, and one with an id the hub has seen
    creates no second command. Exit status: 0 succeeded (or queued for an online device, with
    --no-wait), 3 failed, 4 rejected, 5 expired, 6 timed out (the message names the state),
    7 device offline (queued until the expiry printed), 8 unknown device, 10 broker not
    reachable (nothing sent), 11 hub did not answer (the message says until when it may run).
    """
    if to_all and group is not None:
        raise click.UsageError("--all and --group contradict each other: give one of them")
    fan_out = to_all or group is not None
    if len(words) != (1 if fan_out else 2):
        raise click.UsageError("give either DEVICE_ID NAME, or NAME with --all or --group")
    device_id, name = (None, words[0]) if fan_out else words
    if fan_out:
        devices = [p.id for p in Registry(obj["db"]).list(Role.DEVICE, group) if p.active]
        if not devices:
            raise NotFound(f"no active devices{f' in group {group!r}' if group else ''}",
                           "`fleet devices list` shows groups")
    else:
        devices = [device_id]  # type: ignore[list-item]
    args = parse_args(arg_pairs)
    password = operator_password(obj["db"], username, password_file)
    fmt = output_format(as_json)
    req_id = request_id or new_request_id()
    expires_at = time.time() + ttl  # fixed now: the TTL counts from when the operator issues the command
    with OpsClient(broker, username, password, cafile) as ops:
        try:
            resp = ops.send(devices, name, args, ttl, answer_timeout=ANSWER_TIMEOUT_S, req_id=req_id,
                            expires_at=expires_at)
        except NoAnswer as exc:
            raise CliError(str(exc), ExitCode.HUB) from None
        if not resp.commands:
            _refused(resp, name)
        waiting = {c.id for c in resp.commands if c.online and c.state not in FINAL_STATES}
        if fmt == "table" and not fan_out:
            click.echo(resp.commands[0].id)  # the id first, for `fleet commands show`
        last = _follow(ops, waiting, timeout, show=fmt == "table" and not fan_out) if wait and waiting else {}
    rows = [_row(c, last.get(c.id), wait) for c in resp.commands]
    rows += [{"id": None, "device_id": r.device_id, "state": "refused", "detail": r.error, "result": {}}
             for r in resp.refused]
    codes = [_code(row, wait) for row in rows]
    if fmt != "table":
        emit(rows, "json")
    elif fan_out:
        emit(rows, "table", ["device_id", "id", "state", "detail", "result"], title=name,
             shrink=["result", "detail"])
    else:
        _say(rows[0], name, wait, timeout)
    sys.exit(max(codes))


_STATE_EXIT = {"succeeded": ExitCode.OK, "failed": ExitCode.FAILED, "rejected": ExitCode.REJECTED,
               "expired": ExitCode.EXPIRED, "timed_out": ExitCode.TIMED_OUT, "refused": ExitCode.NOT_FOUND}


def _refused(resp: SendResponse, name: str) -> None:
    """No command was created: one line saying why, and the exit code for it."""
    first = resp.refused[0] if resp.refused else None
    reason = first.reason if first else ""
    code = {"unknown_device": ExitCode.NOT_FOUND, "expired": ExitCode.EXPIRED}.get(reason, ExitCode.ERROR)
    more = f" (and {len(resp.refused) - 1} more devices)" if len(resp.refused) > 1 else ""
    raise CliError(f"{first.error if first else resp.error}{more}; no command {name!r} was queued", code)


def _row(c: CreatedCommand, update: CommandUpdate | None, wait: bool) -> dict[str, Any]:
    state = update.state if update else c.state
    detail = update.detail if update else ""
    if update is None and not c.online and c.state not in FINAL_STATES:
        detail = f"device offline; queued until {_until(c.expires_at)}"
    return {"id": c.id, "device_id": c.device_id, "state": state, "detail": detail,
            "result": update.result if update else {}, "expires_at": c.expires_at, "online": c.online,
            "repeated": c.repeated, "final": state in FINAL_STATES}


def _code(row: dict[str, Any], wait: bool) -> int:
    if row["state"] in _STATE_EXIT:
        return _STATE_EXIT[row["state"]]
    if row["online"] is False:
        return ExitCode.QUEUED_OFFLINE
    return ExitCode.TIMED_OUT if wait else ExitCode.OK


def _say(row: dict[str, Any], name: str, wait: bool, timeout: float) -> None:
    """The single-device outcome in words on stderr (the id is already on stdout)."""
    head = f"{safe(row['device_id'])} {safe(name)}"
    if row["state"] in FINAL_STATES:
        result = f" {safe(row['result'])}" if row["result"] else ""
        again = " (this request id had run before)" if row["repeated"] else ""
        stderr.print(f"{head}: [bold]{row['state']}[/] {safe(row['detail'])}{result}{again}".rstrip())
    elif row["online"] is False:
        stderr.print(f"{head}: device offline; queued until {_until(row['expires_at'])} (command {row['id']})")
    elif wait:
        stderr.print(f"{head}: still [bold]{row['state']}[/] after {timeout:g}s; the hub keeps it until "
                     f"{_until(row['expires_at'])}: `fleet commands show {row['id']}` follows it")
    else:
        stderr.print(f"{head}: [bold]{row['state']}[/] (command {row['id']})")


def _follow(ops: OpsClient, ids: set[str], timeout: float, show: bool) -> dict[str, CommandUpdate]:
    """Follow ``ids`` to their final states; with ``show``, one line per change (single device on a terminal)."""
    done: dict[str, str] = {}
    status = Status(f"waiting for {len(ids)} command(s)", console=stderr)

    def on_update(u: CommandUpdate) -> None:
        done[u.id] = u.state
        finals = sum(1 for s in done.values() if s in FINAL_STATES)
        if show:
            stderr.print(f"  {fmt_time(u.ts)} {u.state} {safe(u.detail)}".rstrip())
        status.update(f"{finals}/{len(ids)} final; latest {u.device_id}: {u.state}")

    if stderr.is_terminal and not show:
        with status:
            return ops.updates(ids, timeout, on_update)
    return ops.updates(ids, timeout, on_update)


@click.group("commands", cls=DefaultGroup, default="list", default_if_no_args=True)
def commands_group() -> None:
    """Command history: `fleet commands [DEVICE]` lists, `fleet commands show ID` details one."""


@commands_group.command("list")
@click.argument("device_id", required=False)
@click.option("--state", type=click.Choice([st.value for st in CommandState if st is not CommandState.RECEIVED]), default=None,
              help="Only commands in this state.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="At most this many, newest first.")
@json_option
@click.pass_obj
def list_commands(obj: dict, device_id: str | None, state: str | None, limit: int, fmt: str) -> None:
    """List commands, newest first (ids in full: `fleet commands show` takes any unique prefix)."""
    db = existing_database(obj["db"])
    if device_id is not None:
        known_device(db, device_id)
    rows = [r.public() for r in CommandStore(db, readonly=True).list(device_id, state, limit)]
    if fmt == "table":
        for row in rows:
            row["created_at"] = fmt_time(row["created_at"])
            row["updated_at"] = fmt_time(row["updated_at"])
    emit(rows, fmt, ["id", "device_id", "name", "state", "attempts", "created_at", "updated_at", "detail"],
         title="commands", shrink=["attempts", "updated_at", "detail", "created_at", "name"])


def resolve_command_id(store: CommandStore, text: str) -> str:
    """The one command id that starts with ``text`` (like git); NotFound when none or several do."""
    found = store.ids_with_prefix(text, limit=6)
    if text in found:
        return text
    if not found:
        raise NotFound(f"no command {text!r}", "`fleet commands` lists the ids")
    if len(found) > 1:
        more = ", ..." if len(found) > 5 else ""
        raise NotFound(f"command id prefix {text!r} is ambiguous: {', '.join(found[:5])}{more}",
                       "give more characters")
    return found[0]


@commands_group.command("show")
@click.argument("command_id")
@json_option
@click.pass_obj
def show_command(obj: dict, command_id: str, fmt: str) -> None:
    """One command with its full state history; COMMAND_ID may be any unique prefix of the id."""
    store = CommandStore(existing_database(obj["db"]), readonly=True)
    rec = store.get(resolve_command_id(store, command_id))
    assert rec is not None  # the id was just read from the same table
    data = rec.public() | {"history": store.history(rec.id)}
    if fmt != "table":
        click.echo(json.dumps(data, default=str)) if fmt == "nl" else click.echo(json.dumps(data, indent=2, default=str))
        return
    stderr.print(f"[bold]{rec.id}[/] {safe(rec.name)} {safe(rec.args)} -> {safe(rec.device_id)}: "
                 f"[bold]{rec.state.value}[/] {safe(rec.detail)}{' ' + safe(rec.result) if rec.result else ''}")
    emit([{"state": h["state"], "at": fmt_time(h["ts"]), "detail": h["detail"]} for h in data["history"]], "table",
         ["state", "at", "detail"], title="history")
