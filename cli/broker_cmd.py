"""``fleet broker``: run the embedded MQTT broker (default), or export the registry for Mosquitto."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar

import click
from click_default_group import DefaultGroup

from amqtt.errors import BrokerError

from broker.config import BrokerSettings
from broker.mosquitto_export import acl_text, password_text, plan_export, write_private
from broker.server import EmbeddedBroker
from cli.output import stderr
from cli.runtime import run_service
from hub.storage.location import database_name, is_postgres

_DEFAULTS = BrokerSettings()
F = TypeVar("F", bound=Callable[..., Any])


def _setting(name: str, kind: click.ParamType, help_text: str) -> Callable[[F], F]:
    """A ``--name-with-dashes`` option for the BrokerSettings field ``name``; its default is the field's."""
    return click.option(f"--{name.replace('_', '-')}", name, type=kind, default=getattr(_DEFAULTS, name),
                        show_default=True, help=help_text)


def _quota(name: str, kind: click.ParamType, help_text: str) -> Callable[[F], F]:
    """A ``--device-<field>`` option for a field of the default device quota (``BrokerSettings.device_quota``)."""
    return click.option(f"--device-{name.replace('_', '-')}", f"device_{name}", type=kind,
                        default=getattr(_DEFAULTS.device_quota, name), show_default=True, help=help_text)


class _BrokerRun(click.Command):
    """``fleet broker run`` reads the ``[broker]`` TOML table and ``FLEET_BROKER_*``, as plain ``fleet broker`` did."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        if parent is not None and parent.default_map and "default_map" not in extra:
            extra["default_map"] = {k: v for k, v in parent.default_map.items() if not isinstance(v, dict)}
        extra.setdefault("auto_envvar_prefix", "FLEET_BROKER")
        return super().make_context(info_name, args, parent, **extra)


@click.group("broker", cls=DefaultGroup, default="run", default_if_no_args=True)
def broker_command() -> None:
    """Run the embedded MQTT broker (plain `fleet broker [OPTIONS]`), or export the registry for Mosquitto."""


@broker_command.command("run", cls=_BrokerRun)
@click.option("-h", "--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("-p", "--port", default=1883, show_default=True, type=int, help="MQTT TCP port.")
@click.option("--ws-port", type=int, default=None, help="Also listen for MQTT over WebSocket on this port.")
@click.option("--tls-port", type=int, default=None, help="Also listen for MQTT over TLS on this port.")
@click.option("--certfile", type=click.Path(dir_okay=False, path_type=Path), default=None, help="TLS certificate (PEM).")
@click.option("--keyfile", type=click.Path(dir_okay=False, path_type=Path), default=None, help="TLS private key (PEM).")
@click.option("--allow-anonymous", is_flag=True, default=False, help="Let clients in without credentials (demos only).")
@click.option("--max-payload-bytes", type=click.IntRange(min=64), default=_DEFAULTS.max_payload_bytes,
              show_default=True, help="Drop (and log) any PUBLISH with a bigger payload.")
@click.option("--keepalive-grace", type=click.FloatRange(min=1.0), default=_DEFAULTS.keepalive_grace,
              show_default=True, help="Disconnect a client silent for keepalive x this factor; its will fires.")
@click.option("--max-queued-messages", type=click.IntRange(min=1), default=_DEFAULTS.max_queued_messages,
              show_default=True, help="Messages queued per offline persistent session (oldest dropped beyond).")
@_setting("max_connections", click.IntRange(min=-1), "Connections a listener accepts at once (-1: no limit).")
@_setting("max_service_payload_bytes", click.IntRange(min=64), "Payload limit for the hub and operators.")
@_setting("max_packet_bytes", click.IntRange(min=1024), "Close a connection announcing a bigger packet, unread.")
@_setting("connect_timeout", click.FloatRange(min=0, min_open=True), "Seconds a new connection has to send CONNECT.")
@_setting("max_inflight_in", click.IntRange(min=1), "QoS 2 messages a client may have awaiting PUBREL.")
@_setting("max_inflight_out", click.IntRange(min=1, max=65_000),
          "QoS 1/2 deliveries one client may have unacknowledged; the rest wait, in order.")
@_setting("revocation_check_s", click.FloatRange(min=0, min_open=True),
          "How often the registry is read for revoked principals (their connections are closed).")
@_setting("login_free_failures", click.IntRange(min=1), "Failed logins per device id before it backs off.")
@_setting("address_free_failures", click.IntRange(min=1), "Failed logins per source address before it backs off.")
@_setting("login_backoff_max_s", click.FloatRange(min=0, min_open=True), "Longest login back-off.")
@_setting("log_summary_s", click.FloatRange(min=0, min_open=True),
          "Repeated denials and refusals are logged once per this many seconds per client, then counted.")
@_quota("msgs_per_s", click.FloatRange(min=0), "Device quota: packets per second (0: unlimited).")
@_quota("burst_msgs", click.FloatRange(min=1), "Device quota: packets a quiet device may send at once.")
@_quota("bytes_per_s", click.FloatRange(min=0), "Device quota: bytes per second (0: unlimited).")
@_quota("burst_bytes", click.FloatRange(min=1024), "Device quota: bytes a quiet device may send at once.")
@_quota("hard_limit_s", click.FloatRange(min=0, min_open=True),
        "Device quota: a device held back this long without a break is disconnected.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve Prometheus metrics (logins, denials, quota hits, connections) on 127.0.0.1 at this port.")
@click.pass_obj
def run_command(obj: dict, host: str, port: int, ws_port: int | None, tls_port: int | None,
                certfile: Path | None, keyfile: Path | None, allow_anonymous: bool, max_payload_bytes: int,
                keepalive_grace: float, max_queued_messages: int, metrics_port: int | None, **tuning: Any) -> None:
    """Run the embedded MQTT broker until Ctrl-C or SIGTERM (single hub worker: no shared subscriptions)."""
    quota = {k.removeprefix("device_"): v for k, v in tuning.items() if k.startswith("device_")}
    settings = BrokerSettings(host=host, port=port, ws_port=ws_port, tls_port=tls_port, certfile=certfile,
                              keyfile=keyfile, db=obj["db"], allow_anonymous=allow_anonymous,
                              max_payload_bytes=max_payload_bytes, keepalive_grace=keepalive_grace,
                              max_queued_messages=max_queued_messages, metrics_port=metrics_port,
                              device_quota=_DEFAULTS.device_quota.model_copy(update=quota),
                              **{k: v for k, v in tuning.items() if not k.startswith("device_")})

    async def main(stop: asyncio.Event) -> None:
        try:
            broker = EmbeddedBroker(settings)
            await broker.start()
        except BrokerError as exc:  # amqtt wraps the bind error; ours is the one line (port in use, ...)
            if isinstance(exc.__cause__, OSError):
                raise exc.__cause__ from None
            raise
        try:
            stderr.print(f"[green]broker up[/] on mqtt://{settings.host}:{broker.port} (db {settings.db})"
                         + ("  [yellow]anonymous access ON[/]" if allow_anonymous else ""))
            await stop.wait()
            stderr.print("stopping broker")
        finally:
            await broker.stop()

    run_service(main)


@broker_command.command("export-acl")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write mosquitto.passwd and mosquitto.acl into this folder.")
@click.option("--password-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write Mosquitto's password file (mode 0600).")
@click.option("--acl-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write Mosquitto's ACL file.")
@click.option("--secrets", "secrets_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="JSON with plaintext secrets you kept: {id: secret} or the list `fleet devices add --json` prints.")
@click.option("--rotate", is_flag=True,
              help="Issue a new secret to every active principal whose secret is not known here, and print "
                   "them once on stdout as JSON (the old secrets stop working on the embedded broker too).")
@click.pass_obj
def export_acl_command(obj: dict, out_dir: Path | None, password_file: Path | None, acl_file: Path | None,
                       secrets_file: Path | None, rotate: bool) -> None:
    """Generate Mosquitto's password file and ACL file from the registry.

    The registry keeps only salted hashes of secrets, which Mosquitto cannot check, so each
    principal's plaintext secret must be known to export it: read from the files kept next to
    the database (<db>.<id>-secret for the hub and the CLI's operator, <db>.sim-creds.json for
    simulated devices), from --secrets, or newly issued with --rotate. Every secret is verified
    against the registry before it is written; unknown ones are left out and named on stderr.
    Secrets are never logged. Revoked principals are left out (they cannot log in).

    Use the files in mosquitto.conf with `password_file`, `acl_file` and `allow_anonymous false`,
    and regenerate them (then `kill -HUP` mosquitto) after adding or revoking devices.
    """
    if out_dir is not None:
        password_file = password_file or out_dir / "mosquitto.passwd"
        acl_file = acl_file or out_dir / "mosquitto.acl"
    if password_file is None or acl_file is None:
        raise click.UsageError("give --out-dir, or both --password-file and --acl-file")
    db: Path = obj["db"]
    if not is_postgres(db) and not db.exists():
        raise click.ClickException(f"database {db} not found (give --db)")
    plan = plan_export(db, extra=secrets_file, rotate=rotate)
    write_private(password_file, password_text(plan.secrets))
    write_private(acl_file, acl_text(plan.principals, source=database_name(db)), mode=0o644)
    if plan.rotated:
        click.echo(json.dumps([{"id": pid, "secret": s} for pid, s in sorted(plan.rotated.items())], indent=1))
    stderr.print(f"[green]exported[/] {len(plan.secrets)} logins to {password_file} and the ACL to {acl_file}"
                 + (f"; [yellow]{len(plan.rotated)} new secrets printed above, shown only once[/]" if plan.rotated else ""))
    if plan.mismatched:
        stderr.print(f"[yellow]kept secret does not match the registry[/] for: {', '.join(plan.mismatched)}"
                     + (" (rotated)" if rotate else " (left out; use --rotate or --secrets)"))
    if plan.unknown:
        stderr.print(f"[yellow]left out, no known secret[/] ({len(plan.unknown)}): {', '.join(plan.unknown[:20])}"
                     + (" ..." if len(plan.unknown) > 20 else "") + " (use --secrets or --rotate)")
