"""``fleet up``: the main job behind ``make run``.

Starts the embedded broker (and, as they land, the hub, a simulated fleet and the
dashboard) with zero configuration in the current folder.
"""

from __future__ import annotations

import asyncio

import click

from broker.config import BrokerSettings
from broker.server import EmbeddedBroker
from cli.output import stderr
from cli.runtime import run_service


@click.command("up")
@click.option("-h", "--host", default="127.0.0.1", help="Address the broker binds.")
@click.option("-p", "--port", default=1883, type=int, help="Broker MQTT port.")
@click.pass_obj
def up_command(obj: dict, host: str, port: int) -> None:
    """Start the whole system in this folder; Ctrl-C stops it cleanly."""
    settings = BrokerSettings(host=host, port=port, db=obj["db"])

    async def main(stop: asyncio.Event) -> None:
        async with EmbeddedBroker(settings) as broker:
            stderr.print(f"[green]fleet up[/]: broker on mqtt://{host}:{broker.port}, db {settings.db}. Ctrl-C stops.")
            await stop.wait()

    run_service(main)
