"""``fleet hub``: run the hub service (telemetry ingest, presence, retention)."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import click
from pydantic import SecretStr

from cli.output import stderr
from cli.params import DURATION, Duration, format_duration
from cli.runtime import run_service
from broker.registry import Registry
from cli.errors import CliError, ExitCode
from hub.config import HubSettings
from hub.errors import HubError
from hub.health import probe_broker
from hub.rollout import RolloutSettings
from hub.service import Hub
from hub.storage.location import display_name


@click.command("hub")
@click.option("--broker", default="mqtt://127.0.0.1:1883", help="Broker URL: mqtt://host:port or mqtts://host:port.")
@click.option("--cafile", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="CA certificate (PEM) to verify an mqtts:// broker.")
@click.option("-u", "--username", default="hub", help="Login name, also the hub's registry id and client id.")
@click.option("--password-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="File holding the password (env FLEET_HUB_PASSWORD also works). "
                   "Default: <db>.hub-secret, created and registered on first start.")
@click.option("--client-id", default=None, help="MQTT client id (default: the username).")
@click.option("--retain-days", type=float, default=None, help="Delete readings older than this many days.")
@click.option("--staleness-min", "staleness_min_s", type=DURATION, default=5.0,
              help="A device silent for max(this, 2.5 x its interval) is marked offline.")
@click.option("--queue-size", type=int, default=5000, help="Messages held between the network and the writer.")
@click.option("--no-register", is_flag=True, help="Do not add or update the hub's login in the registry.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics.")
@click.option("--worker-group", default=None,
              help="Share the load with the other hubs of this group through $share/NAME/... subscriptions "
                   "(Mosquitto 2, EMQX; not the embedded broker). Needs --client-id, one per worker, kept across restarts.")
@click.option("--adopt-after", "adopt_after_s", type=DURATION, default=15.0,
              help="Worker group: take over the broker session of a peer silent this long, until it returns "
                   "(and its rollouts, when it was the worker driving them).")
@click.option("--rollout-device-timeout", "rollout_device_timeout", type=Duration(positive=True), default=None,
              help="A device of a rollout that makes no progress this long has failed "
                   f"(default: {format_duration(RolloutSettings().device_timeout_s)}).")
@click.option("--offline-hysteresis", "offline_hysteresis_s", type=DURATION,
              default=HubSettings.model_fields["offline_hysteresis_s"].default,
              help="A will takes effect only if no birth follows within this long (a quick reconnect is a flap).")
@click.option("--no-alarms", is_flag=True, help="Do not evaluate alarm rules (fleet rules) in this hub.")
@click.pass_obj
def hub_command(obj: dict, broker: str, cafile: Path | None, username: str, password_file: Path | None,
                client_id: str | None, retain_days: float | None, staleness_min_s: float, queue_size: int,
                no_register: bool, metrics_port: int | None, worker_group: str | None, adopt_after_s: float,
                rollout_device_timeout: float | None, offline_hysteresis_s: float, no_alarms: bool) -> None:
    """Run the hub until Ctrl-C or SIGTERM: persist telemetry, track presence, keep retention."""
    if worker_group is not None:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", worker_group):
            raise click.BadParameter("1-32 letters, digits, '-' or '_'", param_hint="--worker-group")
        if not client_id:
            raise click.UsageError(f"--worker-group needs --client-id, one per worker and the same across its "
                                   f"restarts (e.g. --client-id hub-{worker_group}-1)")
    password = os.environ.get("FLEET_HUB_PASSWORD")
    if password_file is not None:
        password = password_file.read_text().strip()
    settings = HubSettings(db=obj["db"], broker=broker, cafile=cafile, username=username or None,
                           password=SecretStr(password) if password else None, client_id=client_id,
                           retain_days=retain_days, staleness_min_s=staleness_min_s, queue_size=queue_size,
                           register_hub=not no_register, metrics_port=metrics_port, worker_group=worker_group,
                           adopt_after_s=adopt_after_s, offline_hysteresis_s=offline_hysteresis_s,
                           alarms=not no_alarms)
    Registry(settings.db)  # the database first: one that cannot be opened is the error, before any secret file is made
    rollout = RolloutSettings(**({} if rollout_device_timeout is None
                                 else {"device_timeout_s": rollout_device_timeout}))
    hub = Hub(settings, rollout_settings=rollout)

    async def main(stop: asyncio.Event) -> None:
        try:
            await asyncio.to_thread(hub.start)
        except HubError as exc:
            # say the first cause: a broker that is not there at all reads better than "could not subscribe"
            reachable, why = await asyncio.to_thread(probe_broker, settings.broker)
            if not reachable:
                raise CliError(f"broker not reachable: {why}", ExitCode.BROKER, "is the broker running? check --broker") from None
            raise exc from None
        stderr.print(f"[green]hub up[/]: {settings.broker} -> {display_name(settings.db)}"
                     + (f", retention {retain_days} days" if retain_days else "")
                     + (f", worker {settings.mqtt_client_id} of group {worker_group}" if worker_group else "")
                     + (f", metrics on http://127.0.0.1:{hub.metrics_port}/metrics" if hub.metrics_port else ""))
        try:
            await stop.wait()
        finally:
            stderr.print("stopping hub")
            await asyncio.to_thread(hub.stop)

    run_service(main)
