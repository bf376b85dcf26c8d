"""``fleet broker``: run the embedded MQTT broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from broker.config import BrokerSettings
from broker.server import EmbeddedBroker
from cli.output import stderr
from cli.runtime import run_service


@click.command("broker")
@click.option("-h", "--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("-p", "--port", default=1883, show_default=True, type=int, help="MQTT TCP port.")
@click.option("--ws-port", type=int, default=None, help="Also listen for MQTT over WebSocket on this port.")
@click.option("--tls-port", type=int, default=None, help="Also listen for MQTT over TLS on this port.")
@click.option("--certfile", type=click.Path(dir_okay=False, path_type=Path), default=None, help="TLS certificate (PEM).")
@click.option("--keyfile", type=click.Path(dir_okay=False, path_type=Path), default=None, help="TLS private key (PEM).")
@click.option("--allow-anonymous", is_flag=True, default=False, help="Let clients in without credentials (demos only).")
@click.pass_obj
def broker_command(obj: dict, host: str, port: int, ws_port: int | None, tls_port: int | None,
                   certfile: Path | None, keyfile: Path | None, allow_anonymous: bool) -> None:
    """Run the embedded MQTT broker until Ctrl-C or SIGTERM."""
    settings = BrokerSettings(host=host, port=port, ws_port=ws_port, tls_port=tls_port, certfile=certfile,
                              keyfile=keyfile, db=obj["db"], allow_anonymous=allow_anonymous)

    async def main(stop: asyncio.Event) -> None:
        async with EmbeddedBroker(settings) as broker:
            stderr.print(f"[green]broker up[/] on mqtt://{settings.host}:{broker.port} (db {settings.db})"
                         + ("  [yellow]anonymous access ON[/]" if allow_anonymous else ""))
            await stop.wait()
            stderr.print("stopping broker")

    run_service(main)
