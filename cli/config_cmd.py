"""``fleet config``: desired and reported device configuration (firmware_protocol.md 13); flags in, library call, output out."""

from __future__ import annotations

from typing import Any

import click

from cli.database import existing_database, known_device
from cli.send_cmd import parse_args
from cli.output import emit, fmt_time, json_option, safe, stderr
from hub.device_config import out_of_sync, resolve_targets, set_config, show_config


def _brief(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in values.items()) or "-"


@click.group("config", invoke_without_command=True)
@json_option
@click.pass_context
def config_group(ctx: click.Context, fmt: str) -> None:
    """Device configuration. Without a subcommand: the devices whose configuration is not in sync."""
    if ctx.invoked_subcommand is not None:
        return
    db = existing_database(ctx.obj["db"])
    rows = out_of_sync(db)
    if fmt == "table":
        rows = [{**r, "pending": _brief(r["pending"]), "refused": _brief(r["refused"])} for r in rows]
    emit(rows, fmt, ["device_id", "version", "reported_version", "pending", "refused"], title="not in sync",
         shrink=["refused", "pending"])


@config_group.command("set")
@click.argument("words", nargs=-1, required=True, metavar="[DEVICE] KEY=VALUE...")
@click.option("--group", "group", default=None, help="Every active device of this registry group.")
@click.option("--all", "everything", is_flag=True, help="Every active device.")
@json_option
@click.pass_obj
def set_(obj: dict, words: tuple[str, ...], group: str | None, everything: bool, fmt: str) -> None:
    """Set KEY=VALUE ... on DEVICE (or --group G, or --all); the hub sends each device only what it lacks.

    VALUE is an integer, a number or true/false when it reads as one, else text (as `fleet send --arg`). A value
    that does not fit a described device's config keys is refused before anything is stored.
    """
    target, assignments = (None, words) if group or everything else (words[0], words[1:])
    if not assignments:
        raise click.UsageError("give at least one KEY=VALUE")
    values = parse_args(assignments)
    db = existing_database(obj["db"])
    if target is not None:
        known_device(db, target)  # unknown: exit 8, as fleet send
    devices = resolve_targets(db, target, group, everything)
    versions = set_config(db, devices, values)
    rows = [{"device_id": d, "version": v, "set": values} for d, v in versions.items()]
    if fmt == "table":
        stderr.print(f"[green]configuration stored[/] for {len(rows)} device(s): {safe(_brief(values))}; "
                     "the hub sends it now to online devices, and to the others when they come back")
        rows = [{**r, "set": _brief(r["set"])} for r in rows]
    emit(rows, fmt, ["device_id", "version", "set"], title="config set")


@config_group.command("show")
@click.argument("device_id")
@json_option
@click.pass_obj
def show(obj: dict, device_id: str, fmt: str) -> None:
    """Desired, reported, pending difference, version and when applied, for DEVICE_ID."""
    db = existing_database(obj["db"])
    known_device(db, device_id)
    view = show_config(db, device_id)
    if fmt != "table":
        emit([view], fmt)
        return
    stderr.print(f"[bold]{safe(device_id)}[/] version {view['version']}, reported {view['reported_version']}"
                 f" ({fmt_time(view['reported_at'])}); {'[green]in sync[/]' if view['in_sync'] else '[yellow]pending[/]'}"
                 + (f", [red]{len(view['refused'])} refused[/]" if view["refused"] else ""))
    rows = [{**k, "applied_at": fmt_time(k["applied_at"]) if k["applied_at"] else None} for k in view["keys"]]
    emit(rows, fmt, ["key", "desired", "reported", "pending", "refused", "set_version", "applied_version", "applied_at"],
         title=f"config of {device_id}", shrink=["applied_at", "applied_version", "set_version", "pending", "refused"],
         whole=("key",))


__all__ = ["config_group"]
