"""``fleet broker``: run the embedded MQTT broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from broker.config import BrokerSettings
from broker.server import EmbeddedBroker
from cli.output import stderr
from cli.runtime import run_service

_DEFAULTS = BrokerSettings()


@click.command("broker")
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
@click.pass_obj
def broker_command(obj: dict, host: str, port: int, ws_port: int | None, tls_port: int | None,
                   certfile: Path | None, keyfile: Path | None, allow_anonymous: bool, max_payload_bytes: int,
                   keepalive_grace: float, max_queued_messages: int) -> None:
    """Run the embedded MQTT broker until Ctrl-C or SIGTERM."""
    settings = BrokerSettings(host=host, port=port, ws_port=ws_port, tls_port=tls_port, certfile=certfile,
                              keyfile=keyfile, db=obj["db"], allow_anonymous=allow_anonymous,
                              max_payload_bytes=max_payload_bytes, keepalive_grace=keepalive_grace,
                              max_queued_messages=max_queued_messages)

    async def main(stop: asyncio.Event) -> None:
        async with EmbeddedBroker(settings) as broker:
            stderr.print(f"[green]broker up[/] on mqtt://{settings.host}:{broker.port} (db {settings.db})"
                         + ("  [yellow]anonymous access ON[/]" if allow_anonymous else ""))
            await stop.wait()
            stderr.print("stopping broker")

    run_service(main)
