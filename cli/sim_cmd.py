"""``fleet sim``: run a simulated fleet against a broker (the library is :mod:`device_sim`)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from rich.console import Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from broker.url import parse_broker_url
from cli.errors import CliError, ExitCode
from cli.output import stderr, stdout
from cli.runtime import run_service
from cli.params import Duration
from device_sim.faults import FaultKind, OtaFault, parse_fault, parse_ota_fault
from device_sim.fleet import Fleet, SimSummary, device_id, provision
from device_sim.ota import OFFLINE_FOR_S, OtaPlan, ota_plan
from device_sim.settings import Behaviour, SimSettings
from device_sim.signals import Profile
from hub.health import probe_broker
from protocol.errors import FleetError

PROFILES = [p.value for p in Profile]


def per_profile(option: str, text: str | None) -> dict[Profile, str]:
    """``VALUE`` (every profile) or ``env=VALUE,gps=VALUE`` -> {profile: value}."""
    if text is None:
        return {}
    if "=" not in text:
        return {p: text for p in Profile}
    out: dict[Profile, str] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            out[Profile(name.strip())] = value.strip()
        except ValueError:
            raise FleetError(f"--{option} {text!r}: {name!r} is not a profile ({', '.join(PROFILES)})") from None
    return out


def behaviours(encoding: str | None, batch: str | None, deadband: str | None) -> dict[Profile, Behaviour]:
    """The per-profile behaviour from the three flags."""
    enc, bat, dead = per_profile("encoding", encoding), per_profile("batch", batch), per_profile("deadband", deadband)
    out: dict[Profile, Behaviour] = {}
    for p in Profile:
        fields: dict[str, Any] = {}
        try:
            if p in enc:
                fields["encoding"] = enc[p]
            if p in bat:
                fields["batch"] = int(bat[p])
            if p in dead:
                fields["deadband"] = float(dead[p])
            out[p] = Behaviour(**fields)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError too
            detail = str(exc).splitlines()
            raise FleetError(f"profile {p.value}: {' '.join(detail[1:3]) if len(detail) > 1 else detail[0]}") from None
    return out


def render(summary: SimSummary, target: int) -> Table:
    """The live status table (pure: summary in, renderable out)."""
    table = Table(title="fleet sim", show_header=False, expand=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("devices connected", f"{summary.connected_at_end} / {target}")
    table.add_row("connects / reconnects", f"{summary.connects} / {summary.reconnects}")
    table.add_row("messages / readings", f"{summary.messages} / {summary.readings}")
    table.add_row("messages/s", f"{summary.messages_per_s:.1f}")
    table.add_row("pubacks / watermarked", f"{summary.pubacks} / {summary.watermarked}")
    table.add_row("errors / refused logins", f"[{'red' if summary.errors or summary.refused else 'green'}]"
                  f"{summary.errors} / {summary.refused}")
    if summary.faults:
        table.add_row("faults", ", ".join(f"{k}={v}" for k, v in sorted(summary.faults.items())))
    if summary.commands:
        table.add_row("commands", ", ".join(f"{k}={v}" for k, v in sorted(summary.commands.items())))
    if summary.ota:
        table.add_row("firmware", ", ".join(f"{k}={v}" for k, v in sorted(summary.ota.items())))
    return table


def _ota_default(name: str) -> str:
    """An OtaPlan default for help texts: the plan holds the one default, the CLI does not repeat it."""
    return str(OtaPlan.__dataclass_fields__[name].default)


@click.command("sim")
@click.option("--devices", "-n", type=click.IntRange(1, 100_000), default=10, help="How many devices to simulate.")
@click.option("--broker", default="mqtt://127.0.0.1:1883", help="Broker URL, mqtt://host:port.")
@click.option("--profile", type=click.Choice([*PROFILES, "mixed"]), default="mixed",
              help="Device profile; mixed cycles env, power, gps.")
@click.option("--rate", type=click.FloatRange(0.0001, 1000), default=1.0, help="Samples per second per device.")
@click.option("--duration", type=click.FloatRange(0.1), default=None, help="Stop after this many seconds (default: until Ctrl-C).")
@click.option("--seed", type=int, default=1, help="Seed for reproducible readings and fault choice.")
@click.option("--encoding", default=None, help="json or cbor, for all profiles or per profile: env=cbor,gps=json.")
@click.option("--batch", default=None, help="Samples per message (1..64), for all or per profile: power=10.")
@click.option("--deadband", default=None, help="Report-by-exception threshold (0 = off), for all or per profile.")
@click.option("--heartbeat", type=click.IntRange(1, 86_400), default=60, help="Send at least this often (seconds).")
@click.option("--sleep", "sleep_s", type=click.IntRange(0, 604_800), default=0,
              help="Sleepy devices: declare this wake period (seconds) and sleep between short wakes (0: never sleep).")
@click.option("--fault", "faults", multiple=True, metavar="KIND=FRACTION",
              help=f"Inject a fault in a fraction of the fleet (repeatable). Kinds: {', '.join(k.value for k in FaultKind)}.")
@click.option("--ledger", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="SQLite file recording every message and its acknowledgement.")
@click.option("--prefix", default="sim", help="Device ids are PREFIX-00001 ...")
@click.option("--connect-concurrency", type=click.IntRange(1), default=64, help="CONNECTs in flight at once.")
@click.option("--alerts", is_flag=True, help="Send alerts when readings cross their profile's thresholds.")
@click.option("--ota-fault", "ota_fault", multiple=True, metavar="KIND=FRACTION",
              help="Firmware-update fault in a fraction of the fleet (repeatable). Kinds: "
                   f"{', '.join(k.value for k in OtaFault)}.")
@click.option("--ota-offline-for", type=Duration(positive=True), default=None,
              help=f"How long 'offline' devices stay away before connecting (default: {OFFLINE_FOR_S:g}s).")
@click.option("--ota-slow-delay", type=Duration(positive=True), default=None,
              help=f"Wait before each chunk request of a 'slow-download' device (default: {_ota_default('slow_s')}s).")
@click.option("--ota-chunk-size", type=click.IntRange(64), default=None,
              help=f"Bytes asked for per chunk request, capped by the protocol (default: {_ota_default('chunk_size')}).")
@click.option("--ota-slot-size", type=click.IntRange(1), default=None,
              help=f"Bytes of the download slot; a larger image is refused (default: {_ota_default('slot_bytes')}).")
@click.option("--ota-stall", type=Duration(positive=True), default=None,
              help=f"Ask for a chunk again after this long without an answer (default: {_ota_default('stall_s')}s).")
@click.option("--json", "as_json", is_flag=True, help="Print the final summary as JSON on stdout.")
@click.pass_context
def sim_command(ctx: click.Context, devices: int, broker: str, profile: str, rate: float, duration: float | None,
                seed: int, encoding: str | None, batch: str | None, deadband: str | None, heartbeat: int, sleep_s: int,
                faults: tuple[str, ...], ledger: Path | None, prefix: str, connect_concurrency: int,
                alerts: bool, ota_fault: tuple[str, ...], ota_offline_for: float | None,
                ota_slow_delay: float | None, ota_chunk_size: int | None, ota_slot_size: int | None,
                ota_stall: float | None, as_json: bool) -> None:
    """Simulate DEVICES devices on one event loop against a broker, with faults on demand.

    Devices are provisioned in the registry (--db) on first use; their secrets are kept in
    <db>.sim-creds.json (mode 0600) so reruns reuse them.
    """
    addr = parse_broker_url(broker)
    if addr.tls:
        raise FleetError(f"broker URL {broker!r}: the simulator speaks plain MQTT over TCP only (mqtt://)")
    host, port = addr.host, addr.port
    fault_map: dict[FaultKind, float] = dict(parse_fault(f) for f in faults)
    settings = SimSettings(
        devices=devices, prefix=prefix, host=host, port=port, profile=profile,  # type: ignore[arg-type]
        rate=rate, duration=duration, seed=seed, behaviour=behaviours(encoding, batch, deadband),
        heartbeat_s=heartbeat, faults=fault_map, ledger=ledger, connect_concurrency=connect_concurrency,
        alerts=alerts, sleep_s=sleep_s)
    db: Path = ctx.obj["db"]
    fleet_ids = [device_id(prefix, settings.first_index + i) for i in range(devices)]
    given = {"offline_s": ota_offline_for if ota_offline_for is not None else OFFLINE_FOR_S,
             "slow_s": ota_slow_delay, "chunk_size": ota_chunk_size, "slot_bytes": ota_slot_size,
             "stall_s": ota_stall}
    ota = ota_plan(fleet_ids, dict(parse_ota_fault(f) for f in ota_fault), seed,
                   **{k: v for k, v in given.items() if v is not None})

    with Progress(TextColumn("provisioning"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=stderr, transient=True, disable=not stderr.is_terminal) as progress:
        task = progress.add_task("provision", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        creds = provision(db, fleet_ids, progress=on_progress)

    # one clean MQTT login with the first device's credentials: an unreachable broker or one that
    # does not know these devices is one line and exit 10 here, not a run of failed reconnects
    first = fleet_ids[0]
    reachable, why = probe_broker(broker, first, creds.devices[first].secret, client_id=first)
    if not reachable or why.startswith("up;"):
        raise CliError(f"devices cannot log in to {broker}: {why}", ExitCode.BROKER,
                       "is the broker running, and does it use this --db's registry?")
    result: list[SimSummary] = []

    async def main(stop: asyncio.Event) -> None:
        fleet = Fleet(settings, creds, ota=ota)
        with Live(render(fleet.summary(), devices), console=stderr, refresh_per_second=2,
                  transient=not stderr.is_terminal) as live:
            result.append(await fleet.run(stop, on_tick=lambda s: live.update(Group(render(s, devices)))))

    run_service(main)
    summary = result[0]
    if as_json:
        click.echo(json.dumps(asdict(summary), indent=2))
    else:
        stdout.print(render(summary, devices))
    if devices and summary.connects == 0:
        raise CliError(f"no device could connect to {broker} ({summary.errors} errors, {summary.refused} logins "
                       f"refused)", ExitCode.BROKER, "is the broker running?")
