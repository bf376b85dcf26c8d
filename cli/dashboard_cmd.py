"""``fleet dashboard`` and ``fleet status``: watch the fleet live, or check its health once."""

from __future__ import annotations

import json
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import click

from cli.dashboard.app import run_dashboard
from cli.database import existing_database, probe_password
from cli.output import safe, stdout
from cli.send_cmd import connection_options
from hub.health import check_health


@click.command("dashboard")
@click.option("--refresh", type=click.FloatRange(0.1, 60), default=0.5, help="Seconds between refreshes.")
@connection_options
@click.pass_obj
def dashboard_command(obj: dict, refresh: float, broker: str, username: str, cafile: str | None,
                      password_file: Path | None) -> None:
    """Live view of the fleet; open a device and send it commands.

    Keys: arrows scroll, Enter opens a device, / filters, Esc clears or goes back, s changes the
    order, c sends a command (through the hub at --broker, like `fleet send`), q quits. When the
    output is not a terminal, prints the fleet view once.
    """
    from cli.dashboard.render import render_text  # Textual loads only when a screen is shown
    from hub.overview import OverviewLoader

    if not (sys.stdout.isatty() and sys.stdin.isatty()):
        loader = OverviewLoader(obj["db"])
        size = shutil.get_terminal_size((100, 40))
        click.echo(render_text(loader.load(), width=size.columns, height=size.lines), nl=False)
        loader.close()
        return
    from cli.dashboard.app import run_dashboard
    from cli.dashboard.sender import local_sender

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    run_dashboard(obj["db"], refresh, local_sender(obj["db"], broker, username, password_file, cafile), stop=stop)


@click.command("status")
@click.option("--broker", default="mqtt://127.0.0.1:1883", envvar="FLEET_BROKER_URL", help="Broker URL to probe.")
@click.option("--max-lag", type=float, default=10.0, help="Ingest lag (s) above which the hub counts as unhealthy.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def status_command(obj: dict, broker: str, max_lag: float, as_json: bool) -> None:
    """One-shot health summary; exits 1 when something is unhealthy (for scripts and probes)."""
    db = existing_database(obj["db"])
    health = check_health(db, broker, max_lag, "operator", probe_password(db))
    if as_json:
        click.echo(json.dumps(health.model_dump(), indent=2))
    else:
        mark = lambda ok: "[green]ok[/]" if ok else "[red]FAIL[/]"  # noqa: E731
        stdout.print(f"broker   {mark(health.broker_reachable)} {safe(health.broker)}: {safe(health.broker_detail)}")
        stdout.print(f"hub      {mark(health.hub_alive)} {health.hub_detail}")
        lag = "-" if health.ingest_lag_s is None else f"{health.ingest_lag_s:.2f}s"
        stdout.print(f"ingest   {mark(health.lag_ok)} lag {lag}")
        stdout.print(f"devices  {health.devices_online}/{health.devices_total} online")
        stdout.print(f"overall  {mark(health.healthy)} at {time.strftime('%H:%M:%S')}")
    sys.exit(0 if health.healthy else 1)
