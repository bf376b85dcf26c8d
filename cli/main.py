"""The ``fleet`` command: a thin layer over the library packages."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from cli.alarms_cmd import alarms_group, rules_group
from cli.broker_cmd import broker_command
from cli.config import config_path, load_default_map
from cli.config_cmd import config_group
from cli.device_check_cmd import device_check_command
from cli.devices_cmd import devices_group
from cli.dashboard_cmd import dashboard_command, status_command
from cli.errors import CliError, ExitCode, to_cli_error
from cli.export_cmd import export_command
from cli.firmware_cmd import firmware_group, rollout_group
from cli.runtime import raise_nofile, setup_logging, tune_gc
from cli.sim_cmd import sim_command
from cli.send_cmd import commands_group, send_command
from cli.up_cmd import up_command
from cli.hub_cmd import hub_command
from cli.readings_cmd import deadletters_command, readings_command
from protocol.errors import FleetError

CONTEXT = {"help_option_names": ["--help"], "auto_envvar_prefix": "FLEET", "show_default": True}


class FleetGroup(click.Group):
    """The ``fleet`` group: every failure it can name is one line on stderr with its own exit code.

    :func:`cli.errors.to_cli_error` names the failure; usage errors are folded to one line too
    (click prints usage plus a hint on several). Works the same from the console script and
    from click's ``CliRunner`` in tests.
    """

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (FleetError, sqlite3.Error, OSError) as exc:
            db = ctx.obj.get("db") if isinstance(ctx.obj, dict) else None
            error = to_cli_error(exc, db)
            if error is None:
                raise
            raise error from None

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
            click.echo(f"Error: {' '.join(exc.format_message().split())}{hint}", err=True)
            sys.exit(ExitCode.USAGE)
        except CliError as exc:
            click.echo(exc.one_line(), err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=FleetGroup, context_settings=CONTEXT)
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=Path("fleet.db"),
              help="The fleet database file (registry, readings, commands).")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TOML config file (default ./fleet.toml if present; env FLEET_CONFIG).")
@click.option("--log-level", default="INFO", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.version_option(package_name="fleet-hub")
@click.pass_context
def cli(ctx: click.Context, db: Path, config: Path | None, log_level: str) -> None:
    """Fleet hub: an MQTT messaging hub for fleets of IoT devices."""
    setup_logging(log_level)
    ctx.obj = {"db": db}


cli.add_command(broker_command)
cli.add_command(devices_group)
cli.add_command(up_command)
cli.add_command(send_command)
cli.add_command(commands_group)
cli.add_command(dashboard_command)
cli.add_command(status_command)
cli.add_command(export_command)
cli.add_command(sim_command)
cli.add_command(hub_command)
cli.add_command(readings_command)
cli.add_command(deadletters_command)
cli.add_command(firmware_group)
cli.add_command(rollout_group)
cli.add_command(device_check_command)
cli.add_command(config_group)
cli.add_command(rules_group)
cli.add_command(alarms_group)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: errors become one line on stderr and a non-zero exit."""
    args = sys.argv[1:] if argv is None else argv
    tune_gc()  # this process is a `fleet` program; `fleet broker` may hold 10,000 connections
    raise_nofile()  # ... each on its own socket
    try:
        default_map = load_default_map(config_path(args))
        cli.main(args=args, prog_name="fleet", default_map=default_map)
    except FleetError as exc:  # the config file, read before click runs
        click.echo(f"Error: {' '.join(str(exc).split())}", err=True)
        sys.exit(ExitCode.ERROR)
