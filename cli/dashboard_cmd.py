"""``fleet dashboard`` and ``fleet status``: watch the fleet live, or check its health once."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

import click

from cli.dashboard.app import run_dashboard
from cli.database import existing_database, probe_password
from cli.output import safe, stdout
from hub.health import check_health


@click.command("dashboard")
@click.option("--refresh", type=float, default=0.5, help="Seconds between refreshes.")
@click.pass_obj
def dashboard_command(obj: dict, refresh: float) -> None:
    """Live view of the fleet (keys: s sort, / filter, c clear filter, q quit)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    run_dashboard(str(obj["db"]), refresh, stop=stop)


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
