"""``fleet device-check``: run the device conformance scenarios against one live device."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from rich.table import Table
from rich.text import Text

from broker.credentials import ensure_local_principal
from broker.registry import Role
from cli.output import stderr, stdout
from cli.params import DURATION
from hub.conformance import CheckSettings, Outcome, Report, Result, run_check

DEFAULTS = CheckSettings.model_fields
STYLE = {Outcome.PASS: "green", Outcome.FAIL: "bold red", Outcome.WARN: "yellow", Outcome.SKIP: "dim"}


def checker_password(db: Path, username: str, password_file: Path | None) -> str:
    """From --password-file, else $FLEET_CHECKER_PASSWORD, else a local hub-role account of ``db``."""
    if password_file is not None:
        return password_file.read_text().strip()
    if os.environ.get("FLEET_CHECKER_PASSWORD"):
        return os.environ["FLEET_CHECKER_PASSWORD"]
    return ensure_local_principal(db, username, Role.HUB)


@click.command("device-check")
@click.argument("device_id")
@click.option("--broker", default="mqtt://127.0.0.1:1883", envvar="FLEET_BROKER_URL", help="Broker URL.")
@click.option("-u", "--username", default=DEFAULTS["username"].default, envvar="FLEET_CHECKER",
              help="The checker's login; it needs the hub role.")
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="File holding the checker's password (else $FLEET_CHECKER_PASSWORD, else a local "
                   "hub-role account in --db is used, created when missing).")
@click.option("--cafile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CA certificate for mqtts:// brokers.")
@click.option("--timeout", type=DURATION, default=DEFAULTS["timeout_s"].default,
              help="How long to wait for each thing the device must do (raise it on a slow link).")
@click.option("--hold", type=DURATION, default=DEFAULTS["hold_s"].default,
              help="How long watermarks are withheld while watching for timed re-sends.")
@click.option("--messages", type=int, default=DEFAULTS["messages"].default,
              help="New messages the device must send while watermarks are withheld.")
@click.option("--hub-answer", type=DURATION, default=DEFAULTS["hub_answer_s"].default,
              help="How long to wait for a running hub's watermark after a birth.")
@click.option("--hold-lease", type=DURATION, default=DEFAULTS["hold_lease_s"].default,
              help="With a hub running: the lease of the checker's hold on its watermarks (renewed; at most 300 s).")
@click.option("--max-sleep", type=DURATION, default=DEFAULTS["max_sleep_s"].default,
              help="Watch a sleepy device's wake cycle when its sleep_s is at most this "
                   "(the run lasts up to 2.5 x sleep_s).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (also when piped).")
@click.pass_obj
def device_check_command(obj: dict, device_id: str, broker: str, username: str, password_file: Path | None,
                         cafile: str | None, timeout: float, hold: float, messages: int, hub_answer: float,
                         hold_lease: float, max_sleep: float, as_json: bool) -> None:
    """Check that the connected device DEVICE_ID follows firmware_protocol.md.

    Like the Sparkplug TCK, the checker plays the hub's side for this one device: with the hub
    role it publishes commands (d/ID/c) and watermarks (d/ID/w) and judges what comes back, and
    prints PASS/FAIL per section of the document with the evidence (what was sent, what came
    back, when). Scenarios: birth, rebirth request, command forms, duplicate delivery, expiry,
    malformed commands, withheld and late watermarks (no timed re-sends, R3, release), a
    watermark with a hole (R2), session loss (the device's broker session is dropped: reconnect,
    subscribe before birth, R1), and over the whole run strict payloads and seq order. A device
    whose birth names a description: its hash, and `describe` (13.5); one that takes configuration
    (cfg above 0, or described keys): a ConfigSet of the version in force with a key no device has
    must be refused with a reason, an older version answered with no keys (13.3). A sleepy device
    (sleep_s in its birth): one wake cycle (4.5), then the run ends; check the rest with sleeping off.

    The hub may run: the checker then asks it to hold this device's watermarks (a lease it
    renews; the hub keeps storing everything, publishes the current watermark on release, and
    releases by itself if the checker dies) and answers the device with watermarks itself, so
    every scenario runs. Its commands use ids starting chk-, which a hub holding the device
    counts as the checker's instead of warning. A hub too old to grant the hold gets the
    watermark scenarios SKIPPED. With the hub stopped, what the device sends waits in the hub's
    persistent session until it is back. Use a test bench: the checker never reboots the device,
    but sends it rebirth requests and drops its session once.

    Exit status: 0 every check passed (warnings allowed), 1 a check failed or the check could
    not run, 2 nothing failed but something was skipped.
    """
    password = checker_password(obj["db"], username, password_file)
    try:
        settings = CheckSettings(device_id=device_id, broker=broker, username=username, password=password,
                                 cafile=cafile, timeout_s=timeout, hold_s=hold, messages=messages,
                                 hub_answer_s=hub_answer, hold_lease_s=hold_lease, max_sleep_s=max_sleep)
    except ValidationError as exc:  # one readable line: which setting, and why
        err = exc.errors(include_url=False)[0]
        raise click.BadParameter(err["msg"], param_hint=f"{'.'.join(map(str, err['loc']))}") from None
    fmt_json = as_json or not sys.stdout.isatty()
    report = run_check(settings, on_result=None if fmt_json else _progress)
    if fmt_json:
        click.echo(json.dumps(report.public(), indent=2))
    else:
        _print(report)
    sys.exit(report.exit_code())


def _progress(result: Result) -> None:
    stderr.print(f"[{STYLE[result.outcome]}]{result.outcome.value.upper():4}[/] §{result.section} {result.check}")


def _print(report: Report) -> None:
    table = Table(title=f"device-check {report.device_id}")
    for col in ("section", "check", "result", "summary"):
        table.add_column(col)
    for r in report.results:
        table.add_row(f"§{r.section}", r.check, Text(r.outcome.value.upper(), style=STYLE[r.outcome]),
                      Text(r.summary))  # Text: device-supplied text is never read as markup
    stdout.print(table)
    for note in report.notes:
        stdout.print(Text("note: ", style="dim") + Text(note), highlight=False)
    for r in report.results:
        if r.outcome in (Outcome.FAIL, Outcome.WARN) and r.evidence:
            stdout.print(f"\n[bold]{r.check}[/] (§{r.section}) evidence:")
            for line in r.evidence:
                stdout.print("  " + line.line(), markup=False, highlight=False)
    verdict: dict[int, Any] = {0: "[green]PASS[/]", 1: "[bold red]FAIL[/]", 2: "[yellow]INCOMPLETE[/] (skipped checks)"}
    stdout.print(f"\n{report.device_id}: {verdict[report.exit_code()]}", highlight=False)
