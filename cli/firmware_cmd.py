"""``fleet firmware`` (images) and ``fleet rollout`` (staged rollouts): flags in, library call, output out."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from cli.output import emit, fmt_time, json_option, stderr, stdout
from hub.firmware import (
    RolloutStatus,
    abort_rollout,
    add_image,
    list_images,
    parse_bandwidth,
    parse_percent,
    parse_stages,
    pause_rollout,
    resume_rollout,
    rollout_status,
    start_rollout,
)

STATE_STYLE = {"running": "green", "paused": "yellow", "aborted": "red", "completed": "bold green"}


@click.group("firmware")
def firmware_group() -> None:
    """Firmware images kept in the fleet database, for rollouts."""


@firmware_group.command("add")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--version", "version", required=True, help="The version devices report in their birth's fw field.")
@click.option("--for-model", "model", default="", help="Only for devices tagged model=M (default: any).")
@click.pass_obj
def add(obj: dict, file: Path, version: str, model: str) -> None:
    """Store FILE as firmware VERSION, with its size and SHA-256."""
    row = add_image(obj["db"], file, version, model)
    stderr.print(f"[green]added[/] firmware [bold]{row.version}[/]{' for ' + row.model if row.model else ''}: "
                 f"{row.size} bytes, sha256 {row.sha256}")


@firmware_group.command("list")
@json_option
@click.pass_obj
def list_(obj: dict, fmt: str) -> None:
    """Stored firmware images."""
    rows = list_images(obj["db"])
    if fmt == "table":
        rows = [{**r, "added_at": fmt_time(r["added_at"]), "sha256": r["sha256"][:16] + "..."} for r in rows]
    emit(rows, fmt, ["id", "version", "model", "size", "sha256", "added_at"], title="firmware")


@click.group("rollout")
def rollout_group() -> None:
    """Staged firmware rollouts, driven by the running hub."""


@rollout_group.command("start")
@click.argument("version")
@click.option("--group", "group", required=True, help="The registry group to update.")
@click.option("--stages", default="1%,10%,50%,100%", help="Cumulative share of the group per stage.")
@click.option("--max-failure-rate", default="5%", help="Pause the rollout when (failed+rolled back)/finished passes this.")
@click.option("--max-concurrent", type=click.IntRange(1), default=50, help="Devices downloading at once.")
@click.option("--bandwidth", default="50kB/s", help="Fleet-wide cap on chunk bytes per second (B, kB, MB, KiB, MiB).")
@click.pass_obj
def start(obj: dict, version: str, group: str, stages: str, max_failure_rate: str, max_concurrent: int,
          bandwidth: str) -> None:
    """Start a staged rollout of VERSION to GROUP (the hub picks it up within a second)."""
    rid = start_rollout(obj["db"], version, group, parse_stages(stages), parse_percent(max_failure_rate),
                        max_concurrent, parse_bandwidth(bandwidth))
    click.echo(rid)
    stderr.print(f"[green]rollout {rid}[/] of {version} to group {group} started; follow it with `fleet rollout status {rid}`")


def render(statuses: list[RolloutStatus]) -> RenderableType:
    """Progress bars per rollout and per stage: a pure function of the status (testable as text)."""
    if not statuses:
        return Text("no active rollouts (fleet rollout status --all lists finished ones)")
    parts: list[RenderableType] = []
    for s in statuses:
        style = STATE_STYLE.get(s.state, "")
        head = Text.assemble((f"rollout {s.id}", "bold"), f"  {s.version} -> group {s.group}  ", (s.state, style),
                             f"  stage {min(s.stage + 1, len(s.stages))}/{len(s.stages)}")
        if s.reason:
            head.append(f"  ({s.reason})", style="yellow" if s.state == "paused" else "dim")
        table = Table.grid(padding=(0, 1))
        table.add_column(width=18)
        table.add_column(width=40)
        table.add_column()
        total = max(1, s.devices * s.image_size)
        table.add_row("bytes", ProgressBar(total=total, completed=s.progress_bytes, width=40),
                      f"{s.progress_bytes / total:6.1%}  served {s.bytes_served / 1e6:.1f} MB")
        for k, share in enumerate(s.stages):
            size = s.stage_sizes[k]
            table.add_row(f"stage {k + 1} ({share:.0%})", ProgressBar(total=max(1, size), completed=s.stage_done[k], width=40),
                          f"{s.stage_done[k]}/{size} finished")
        counts = "  ".join(f"{k} {v}" for k, v in sorted(s.counts.items()))
        rate = f"failure rate {s.failure_rate:.1%} (max {s.max_failure_rate:.0%})"
        lines: list[RenderableType] = [head, table, Text(f"{counts}   {rate}")]
        for f in s.failures[:5]:
            lines.append(Text(f"  {f['device']}: {f['state']} {f['detail']}", style="red"))
        if len(s.failures) > 5:
            lines.append(Text(f"  ... {len(s.failures) - 5} more (--json lists all)", style="red"))
        parts.append(Group(*lines, Text("")))
    return Group(*parts)


@rollout_group.command("status")
@click.argument("rollout_id", type=int, required=False)
@click.option("--all", "all_", is_flag=True, help="Also finished (completed, aborted) rollouts.")
@click.option("--watch", is_flag=True, help="Keep redrawing every second until Ctrl-C.")
@json_option
@click.pass_obj
def status(obj: dict, rollout_id: int | None, all_: bool, watch: bool, fmt: str) -> None:
    """Progress of the active rollouts (or ROLLOUT_ID): bars per stage, counts per state, failures."""
    statuses = rollout_status(obj["db"], rollout_id, all_=all_)
    if fmt != "table":
        emit([s.as_dict() for s in statuses], fmt)
        return
    if not watch:
        stdout.print(render(statuses))
        return
    with Live(render(statuses), console=stdout, refresh_per_second=2) as live:
        try:
            while True:
                time.sleep(1.0)
                live.update(render(rollout_status(obj["db"], rollout_id, all_=all_)))
        except KeyboardInterrupt:
            pass


def _decision(verb: str, fn: object) -> click.Command:
    @click.command(verb)
    @click.argument("rollout_id", type=int, required=False)
    @click.pass_obj
    def command(obj: dict, rollout_id: int | None) -> None:
        rid = fn(obj["db"], rollout_id)  # type: ignore[operator]
        stderr.print(f"rollout {rid}: {verb} requested; the hub applies it within a second")

    command.help = {"pause": "Pause a running rollout (the only one, or ROLLOUT_ID): no new device is offered the image.",
                    "resume": "Resume a paused rollout (also one that paused itself on its failure rate).",
                    "abort": "Abort a rollout: the hub withdraws its offers and refuses further chunks."}[verb]
    return command


rollout_group.add_command(_decision("pause", pause_rollout))
rollout_group.add_command(_decision("resume", resume_rollout))
rollout_group.add_command(_decision("abort", abort_rollout))
