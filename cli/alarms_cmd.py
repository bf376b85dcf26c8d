"""``fleet rules`` and ``fleet alarms``: hub-side alarm rules, and the alarms they raise."""

from __future__ import annotations

import json
from typing import Any

import click

from cli.database import existing_database
from cli.errors import NotFound
from cli.output import emit, fmt_time, json_option, stderr
from cli.params import DURATION
from cli.send_cmd import parse_args
from hub.alarms import UnknownAlarm, ack_alarm, list_alarms, show_alarm
from hub.rules import RuleKind, UnknownRule, add_rule, list_rules, make_rule, remove_rule
from protocol.models import Severity
from protocol.text import inert


@click.group("rules")
def rules_group() -> None:
    """Alarm rules the hub evaluates on telemetry and presence."""


@rules_group.command("add")
@click.argument("name")
@click.option("--metric", default=None, help="The metric a threshold (or no-data) rule watches.")
@click.option("--above", type=float, default=None, help="Raise when the metric is above this ...")
@click.option("--below", type=float, default=None, help="... or below this.")
@click.option("--clear-below", type=float, default=None,
              help="An --above alarm clears only below this (hysteresis; default: the threshold).")
@click.option("--clear-above", type=float, default=None,
              help="A --below alarm clears only above this (hysteresis; default: the threshold).")
@click.option("--no-data", is_flag=True, help="Raise when a device sent no telemetry (of --metric) for --for.")
@click.option("--offline", is_flag=True, help="Raise when a device is offline for more than --for (sleeping is not offline).")
@click.option("--for", "for_s", type=DURATION, default=0.0,
              help="How long the condition must hold before an alarm is raised (e.g. 30s, 5m).")
@click.option("--severity", type=click.Choice([s.value for s in Severity]), default=Severity.WARNING.value)
@click.option("--group", default=None, help="Only the devices of this registry group.")
@click.option("--action", "action_command", default=None,
              help="Send this command to the device when an alarm is raised (through the hub's command bridge).")
@click.option("--action-arg", "action_pairs", multiple=True, help="An argument of the action, key=value; repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the stored rule as JSON.")
@click.pass_obj
def add(obj: dict, name: str, metric: str | None, above: float | None, below: float | None,
        clear_below: float | None, clear_above: float | None, no_data: bool, offline: bool, for_s: float,
        severity: str, group: str | None, action_command: str | None, action_pairs: tuple[str, ...],
        as_json: bool) -> None:
    """Add rule NAME: one of --above/--below (with --metric), --no-data or --offline.

    \b
    fleet rules add hot --metric temperature --above 40 --for 5m --clear-below 38 --severity critical
    fleet rules add quiet --no-data --for 10m --group cellar
    fleet rules add gone --offline --for 15m
    """
    kinds = [k for k, on in ((RuleKind.ABOVE, above is not None), (RuleKind.BELOW, below is not None),
                             (RuleKind.NO_DATA, no_data), (RuleKind.OFFLINE, offline)) if on]
    if len(kinds) != 1:
        raise click.UsageError("give exactly one of --above, --below, --no-data, --offline")
    kind = kinds[0]
    if clear_below is not None and kind is not RuleKind.ABOVE or clear_above is not None and kind is not RuleKind.BELOW:
        raise click.UsageError("--clear-below goes with --above, --clear-above with --below")
    rule = make_rule(name=name, kind=kind, metric=metric, threshold=above if above is not None else below,
                     clear=clear_below if clear_below is not None else clear_above, for_s=for_s, severity=severity,
                     group=group, action_command=action_command, action_args=parse_args(action_pairs))
    add_rule(existing_database(obj["db"]), rule)
    if as_json:
        click.echo(json.dumps(rule.model_dump(mode="json")))
        return
    stderr.print(f"[green]rule added[/] {rule.name}: {inert(rule.describe())}")


@rules_group.command("list")
@json_option
@click.pass_obj
def list_(obj: dict, fmt: str) -> None:
    """List the alarm rules."""
    rows = list_rules(existing_database(obj["db"]))
    if fmt == "table":
        for row in rows:
            row["created_at"] = fmt_time(row["created_at"])
            row["action"] = (row["action_command"] + (" " + json.dumps(row["action_args"]) if row["action_args"]
                                                      else "")) if row["action_command"] else None
    emit(rows, fmt, ["name", "condition", "severity", "group", "action", "created_at"], title="alarm rules",
         shrink=["created_at", "action", "group"], whole=("name",))


@rules_group.command("remove")
@click.argument("name")
@click.pass_obj
def remove(obj: dict, name: str) -> None:
    """Remove rule NAME; its open alarms are cleared."""
    try:
        cleared = remove_rule(existing_database(obj["db"]), name)
    except UnknownRule as exc:
        raise NotFound(str(exc), "`fleet rules list` shows the rules") from None
    stderr.print(f"[yellow]rule removed[/] {name}" + (f"; {cleared} open alarm(s) cleared" if cleared else ""))


ALARM_COLUMNS = ["id", "state", "severity", "rule", "device_id", "value", "raised_at", "acked_at", "cleared_at",
                 "flaps", "detail"]


def _table_times(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, **{k: fmt_time(row[k]) if row.get(k) else None for k in ("raised_at", "acked_at", "cleared_at")}}


@click.group("alarms", invoke_without_command=True)
@click.option("--active", is_flag=True, help="Only alarms not cleared (active or acknowledged).")
@click.option("--device", "device_id", default=None, help="Only this device's alarms.")
@click.option("--limit", type=click.IntRange(1), default=1000, help="At most this many, newest first.")
@json_option
@click.pass_context
def alarms_group(ctx: click.Context, active: bool, device_id: str | None, limit: int, fmt: str) -> None:
    """List alarms raised by the hub's rules, newest first (ack and show: see below)."""
    if ctx.invoked_subcommand is not None:
        return
    rows = list_alarms(existing_database(ctx.obj["db"]), active=active, device_id=device_id, limit=limit)
    if fmt == "table":
        rows = [_table_times(r) for r in rows]
    emit(rows, fmt, ALARM_COLUMNS, title="alarms", shrink=["detail", "acked_at", "cleared_at", "flaps", "value"])


@alarms_group.command("ack")
@click.argument("alarm_id", type=int)
@click.option("-u", "--username", default="operator", envvar="FLEET_OPERATOR", help="Who acknowledges (recorded).")
@click.option("--json", "as_json", is_flag=True, help="Print the alarm as JSON.")
@click.pass_obj
def ack(obj: dict, alarm_id: int, username: str, as_json: bool) -> None:
    """Acknowledge alarm ALARM_ID (it stays until its condition clears)."""
    try:
        row = ack_alarm(existing_database(obj["db"]), alarm_id, username)
    except UnknownAlarm as exc:
        raise NotFound(str(exc), "`fleet alarms` lists them") from None
    if as_json:
        click.echo(json.dumps(row))
        return
    stderr.print(f"alarm {alarm_id} ({inert(row['rule'])} on {inert(row['device_id'])}): [bold]{row['state']}[/]")


@alarms_group.command("show")
@click.argument("alarm_id", type=int)
@json_option
@click.pass_obj
def show(obj: dict, alarm_id: int, fmt: str) -> None:
    """One alarm with its history: raised, acknowledged, cleared, raised again (flaps), actions."""
    try:
        data = show_alarm(existing_database(obj["db"]), alarm_id)
    except UnknownAlarm as exc:
        raise NotFound(str(exc), "`fleet alarms` lists them") from None
    if fmt != "table":
        click.echo(json.dumps(data, default=str) if fmt == "nl" else json.dumps(data, indent=2, default=str))
        return
    emit([_table_times(data)], "table", ALARM_COLUMNS, title=f"alarm {alarm_id}")
    emit([{"state": h["state"], "at": fmt_time(h["ts"]), "value": h["value"], "detail": h["detail"]}
          for h in data["history"]], "table", ["state", "at", "value", "detail"], title="history")
