"""``fleet up``: the main job behind ``make run``: broker, hub, simulated fleet and dashboard.

Works with zero configuration in an empty folder: the database, credentials and secrets are
created on first start and reused afterwards. Ctrl-C (or q in the dashboard) stops it all.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from cli.output import stderr
from cli.runtime import setup_logging
from cli.stack import Stack


@click.command("up")
@click.option("-h", "--host", default="127.0.0.1", help="Address the broker binds.")
@click.option("-p", "--port", default=1883, type=int, help="Broker MQTT port.")
@click.option("-n", "--devices", default=50, type=click.IntRange(0, 100_000), help="Simulated devices to run.")
@click.option("--no-sim", is_flag=True, help="No simulated devices: real devices only.")
@click.option("--rate", type=click.FloatRange(0.001, 100), default=0.5, help="Readings per second per simulated device.")
@click.option("--seed", type=int, default=1, help="Seed of the simulated readings.")
@click.option("--dashboard/--no-dashboard", default=None,
              help="Show the live dashboard (default: when the terminal is interactive).")
@click.pass_obj
def up_command(obj: dict, host: str, port: int, devices: int, no_sim: bool, rate: float, seed: int,
               dashboard: bool | None) -> None:
    """Start the whole system in this folder; Ctrl-C stops it cleanly."""
    db: Path = obj["db"]
    show = sys.stdin.isatty() and sys.stdout.isatty() if dashboard is None else dashboard
    if show:  # log lines would tear the full-screen dashboard: send them to a file
        log_file = f"{db}.log"
        setup_logging(logging.getLevelName(logging.getLogger().level), log_file)
        stderr.print(f"logs go to {log_file}")
    stack = Stack(db, host, port, 0 if no_sim else devices, rate, seed)
    with Progress(TextColumn("provisioning devices"), BarColumn(), MofNCompleteColumn(), console=stderr,
                  transient=True, disable=not stderr.is_terminal) as progress:
        task = progress.add_task("provision", total=None)
        stack.provision(lambda done, total: progress.update(task, completed=done, total=total))

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stack.start()
    except BaseException:
        stack.stop()
        raise
    try:
        stderr.print(f"[green]fleet up[/]: broker {stack.broker_url}, hub on {db}, {stack.devices} simulated devices. "
                     f"In another terminal: fleet send, fleet readings, fleet devices list. Ctrl-C stops.")
        if show:
            from cli.dashboard.app import run_dashboard  # Textual loads only when a screen is shown
            from cli.dashboard.sender import local_sender

            run_dashboard(db, sender=local_sender(db, stack.broker_url), stop=stop)
        else:
            _status_lines(stack, stop)
    finally:
        stderr.print("stopping: devices, hub (flushing its last batch), broker ...")
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stderr.print("[green]stopped[/]")


def _status_lines(stack: Stack, stop: threading.Event) -> None:
    """Without a dashboard: one status line every few seconds on stderr."""
    while not stop.wait(5.0):
        hub = stack.hub.stats if stack.hub else {}
        sim = stack.sim_summary()
        line = f"{time.strftime('%H:%M:%S')} hub messages={hub.get('messages', 0)} readings={hub.get('readings', 0)}"
        if sim:
            line += f" | sim connected={sim.connected_at_end}/{sim.devices} sent={sim.messages}"
        stderr.print(line)
