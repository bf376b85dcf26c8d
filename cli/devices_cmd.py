"""``fleet devices``: the device registry (add, list, revoke)."""

from __future__ import annotations

import click

from broker.registry import Registry, Role
from cli.database import existing_database, known_device
from cli.output import emit, fmt_time, json_option, safe, stderr
from hub.queries import devices_with_presence


@click.group("devices")
def devices_group() -> None:
    """Manage devices and service accounts in the registry."""


@devices_group.command("add")
@click.argument("device_id")
@click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.DEVICE.value, show_default=True,
              help="device, hub (the hub service) or operator (CLI and tools).")
@click.option("--group", default=None, help="Group name, for sending commands to many devices.")
@click.option("--tag", "tags", multiple=True, help="A tag; repeat for several.")
@click.option("--json", "as_json", is_flag=True, help="Print the id and secret as JSON.")
@click.pass_obj
def add(obj: dict, device_id: str, role: str, group: str | None, tags: tuple[str, ...], as_json: bool) -> None:
    """Register DEVICE_ID and print its secret (shown once, stored only as a hash)."""
    secret = Registry(obj["db"]).add(device_id, Role(role), group=group, tags=tags)
    if as_json:
        emit([{"id": device_id, "role": role, "secret": secret}], "json")
        return
    click.echo(secret)
    stderr.print(f"[green]added[/] {role} [bold]{safe(device_id)}[/]; the line above is its secret, shown only once")


@devices_group.command("list")
@click.option("--role", type=click.Choice([r.value for r in Role]), default=None, help="Only this role.")
@click.option("--group", default=None, help="Only this group.")
@json_option
@click.pass_obj
def list_(obj: dict, role: str | None, group: str | None, fmt: str) -> None:
    """List registered devices and accounts, with presence (online/offline, last seen, fw, boot, resets) from the hub."""
    db = existing_database(obj["db"])
    rows = devices_with_presence(db, [p.public() for p in Registry(db, readonly=True).list(Role(role) if role else None, group)])
    if fmt == "table":
        for row in rows:
            row["created_at"] = fmt_time(row["created_at"])  # type: ignore[arg-type]
            row["revoked_at"] = fmt_time(row["revoked_at"]) if row["revoked_at"] else None  # type: ignore[arg-type]
            row["last_seen"] = fmt_time(row["last_seen"]) if row["last_seen"] else None  # type: ignore[arg-type]
            row["tags"] = ",".join(row["tags"]) or None  # type: ignore[arg-type]
    emit(rows, fmt, ["id", "role", "group", "tags", "state", "last_seen", "fw", "boot", "resets", "created_at",
                     "revoked_at"],
         title="registry", shrink=["revoked_at", "created_at", "tags", "boot", "resets", "group", "role", "fw",
                                   "last_seen"])


@devices_group.command("revoke")
@click.argument("device_id")
@click.pass_obj
def revoke(obj: dict, device_id: str) -> None:
    """Revoke DEVICE_ID: its logins are refused from now on."""
    db = existing_database(obj["db"])
    known_device(db, device_id)
    Registry(db).revoke(device_id)
    stderr.print(f"[yellow]revoked[/] {safe(device_id)}")
