"""The scenarios of ``fleet device-check``: drive one live device through the contract and judge it.

Each scenario publishes on the device's ``c`` (commands) and ``w`` (watermarks) as the hub would,
watches what comes back on ``s``, ``t``, ``a`` and ``r``, and turns that into results naming the
section of ``firmware_protocol.md`` they check. Nothing here knows how a device is built: only the
document's rules, observed from outside.

Two facts shape the order:

* **Is a hub answering the device?** A running hub answers every birth and every message with a
  watermark. Before anything else the checker asks it to hold them for this device
  (:mod:`.hub_hold`, a renewed lease): the hub keeps storing everything, and the checker's
  stand-in (:mod:`.standin`) answers the device instead, as it does when no hub runs, so the
  section 5 scenarios can withhold it. At the end the hold is released and the hub publishes
  the device's current watermark. A hub that does not grant the hold (an older one) but answers
  the rebirth's birth with a watermark gets the section 5 scenarios skipped, with that reason.
* **Commands carry the id prefix** ``chk-`` (:data:`protocol.ops.CHECKER_COMMAND_PREFIX`): a hub
  holding the device counts their replies as the checker's instead of warning about them.
* **To see that something did not happen, wait for a marker after it.** The marker is a command
  with a name no device knows: every device must answer it ``received`` then ``rejected``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hub.config import HubSettings
from hub.conformance.hub_hold import HubHold
from hub.conformance.link import DeviceLink, Seen
from hub.conformance.report import Evidence, Outcome, Report, Result
from hub.conformance.settings import CheckSettings
from hub.conformance.standin import StandInHub
from hub.presence import wake_window
from protocol import (Alert, Command, CommandReply, CommandState, MessageClass, ProtocolError, Status, StatusState,
                      Telemetry, decode)
from protocol.config import ConfigReport, ConfigSet, Description, description_hash
from protocol.limits import LIMITS
from protocol.models import Watermark
from protocol.ops import CHECKER_COMMAND_PREFIX
from protocol.topics import DEVICE_PUBLISHES
from protocol.text import inert

UPTIME_BELOW = 10**12
"""A device ``ts`` below this is an uptime stamp (section 4.4)."""
MARKER_NAME = "chk_no_such_command"
MAX_RESENDS = LIMITS.max_resends
"""Section 5.3 R2: a missing message is re-sent by R2 at most this often, then given up."""
FINAL = {CommandState.SUCCEEDED, CommandState.FAILED, CommandState.REJECTED}
PROBE_KEY = "chk_no_such_key"
"""The configuration key the checker sets (section 13.3): no device has it, so every device must refuse it."""
_HUB = HubSettings.model_fields
SLEEP_GRACE = _HUB["sleep_grace"].default
STALENESS_MIN_S = _HUB["staleness_min_s"].default
"""The hub's defaults of the two settings of its missed-wake window (section 4.5)."""
WAKE_GAP_S = 1.0
"""A live birth after at least this long without a message from the device starts a wake (a rebirth within a wake
follows the command or watermark that caused it at once)."""


class Abort(Exception):
    """The remaining scenarios cannot run (the device is gone, or does not answer commands)."""


SCENARIO_IDS = {
    "check_birth": ("2", "birth"), "check_encoding": ("8.1", "encoding"), "check_rebirth": ("6 rebirth", "rebirth"),
    "check_duplicate": ("6 at most once", "duplicate-command"), "check_expiry": ("6 expiry", "command-expiry"),
    "check_malformed": ("6 bad commands", "malformed-command"),
    "check_withheld_watermark": ("5.3 no timers", "withheld-watermark"),
    "check_hole": ("5.3 R2", "hole-watermark"),
    "check_give_up": ("5.3 R2 / 5.4", "give-up"),
    "check_session_loss": ("2.2 / 5.3 R1", "session-loss"),
    "check_sleep": ("4.5", "sleep"), "check_description": ("13.5", "description"),
    "check_config": ("13.3", "configuration"),
}


def run_check(settings: CheckSettings, on_result: Callable[[Result], None] | None = None) -> Report:
    """Run every scenario against ``settings.device_id``; ``on_result`` sees each result as it is made."""
    link = DeviceLink(settings.broker, settings.username, settings.password.get_secret_value(),
                      settings.device_id, settings.cafile, connect_timeout=settings.timeout_s)
    with link:
        return DeviceChecker(link, settings, on_result).run()


class Scenario:
    """The evidence being gathered for one result: lines relative to the scenario's start."""

    def __init__(self, section: str, check: str, t0: float | None = None) -> None:
        self.section = section
        self.check = check
        self.t0 = time.monotonic() if t0 is None else t0
        self.lines: list[Evidence] = []

    def note(self, what: str, at: float | None = None) -> None:
        self.lines.append(Evidence(round((at if at is not None else time.monotonic()) - self.t0, 3), what))

    def saw(self, seen: Seen) -> None:
        self.note(seen.describe(), seen.at)

    def result(self, outcome: Outcome, summary: str) -> Result:
        return Result(self.section, self.check, outcome, summary, tuple(sorted(self.lines, key=lambda e: e.at)),
                      round(time.monotonic() - self.t0, 3))


class DeviceChecker:
    """One run against one device (use :func:`run_check`)."""

    def __init__(self, link: DeviceLink, settings: CheckSettings,
                 on_result: Callable[[Result], None] | None = None) -> None:
        self.link = link
        self.s = settings
        self.report = Report(settings.device_id)
        self.on_result = on_result
        self.birth: Status | None = None
        self.hub_running = False
        self.standin: StandInHub | None = None
        self.hub_hold: HubHold | None = None
        self.started = time.monotonic()
        self.sent_ids: set[str] = set()
        self.session_drops: list[float] = []
        self.seq_from = 0
        """Log index from which fresh seqs are judged (after the first rebirth's re-sends)."""

    # ------------------------------------------------------------ the run

    def run(self) -> Report:
        scenarios = [self.check_birth, self.check_sleep, self.check_encoding, self.check_rebirth, self.check_duplicate,
                     self.check_expiry, self.check_malformed, self.check_description, self.check_config,
                     self.check_withheld_watermark, self.check_hole, self.check_give_up, self.check_session_loss]
        self.hold_hub()
        try:
            for i, scenario in enumerate(scenarios):
                try:
                    scenario()
                except Abort as stop:
                    for rest in scenarios[i + 1:]:
                        section, check = SCENARIO_IDS[rest.__name__]
                        self.add(Result(section, check, Outcome.SKIP, f"not run: {stop}"))
                    break
        finally:
            if self.standin is not None:
                self.standin.stop()
            if self.hub_hold is not None:
                released = self.hub_hold.release()
                self.report.notes.append("hold released: the hub published the device's current watermark" if released
                                         else "the hub did not confirm the release: its lease runs out within "
                                              f"{self.s.hold_lease_s:g}s and it then publishes the current watermark")
        self.check_whole_run()
        return self.report

    def hold_hub(self) -> None:
        """Ask a running hub to hold this device's watermarks for the run (renewed lease); note what happened."""
        self.hub_hold, why = HubHold.acquire(self.s.broker, self.s.username, self.s.password.get_secret_value(),
                                             self.s.cafile, self.s.device_id, self.s.hold_lease_s, self.s.hub_answer_s)
        if self.hub_hold is not None:
            self.hub_running = True
            self.report.notes.append(f"a hub is running: it holds its watermarks for this device during the check "
                                     f"(lease {self.s.hold_lease_s:g}s, renewed) and stores everything as usual; "
                                     "the checker's stand-in answers the device meanwhile")
        else:
            self.report.notes.append(f"no watermark hold: {why}")

    def add(self, result: Result) -> None:
        self.report.results.append(result)
        if self.on_result is not None:
            self.on_result(result)

    @property
    def form(self) -> str:
        return self.birth.enc if self.birth is not None else "json"

    @property
    def boot(self) -> int:
        return self.birth.boot if self.birth is not None else 0

    @property
    def message_wait(self) -> float:
        """How long to wait for the device's next message: its heartbeat period at the latest."""
        interval = self.birth.interval_s if self.birth is not None else 60
        return max(self.s.timeout_s, interval * 1.5)

    # ------------------------------------------------------------ helpers

    def command(self, name: str, *, args: dict | None = None, expires_in_s: float | None = None,
                cmd_id: str | None = None, form: str | None = None) -> tuple[str, bytes, int]:
        """Publish a command; returns (id, payload, log index before it went out)."""
        cmd_id = cmd_id or f"{CHECKER_COMMAND_PREFIX}{secrets.token_hex(4)}"
        self.sent_ids.add(cmd_id)
        expires = int((time.time() + (expires_in_s if expires_in_s is not None else 600.0)) * 1000)
        start = self.link.mark()
        payload = self.link.send(Command(id=cmd_id, name=name, args=args or {}, expires=expires), form or self.form)
        return cmd_id, payload, start

    def replies(self, cmd_id: str, start: int, end: int | None = None) -> list[Seen]:
        seen = self.link.since(start)
        if end is not None:
            seen = seen[: max(0, end - start)]
        return [s for s in seen if s.cls is MessageClass.REPLY and isinstance(s.message, CommandReply)
                and s.message.id == cmd_id]

    def wait_final(self, cmd_id: str, start: int, timeout: float | None = None) -> Seen | None:
        return self.link.wait_for(lambda s: s.cls is MessageClass.REPLY and isinstance(s.message, CommandReply)
                                  and s.message.id == cmd_id and s.message.state in FINAL,
                                  start, timeout or self.s.timeout_s)

    def marker(self, sc: Scenario) -> Seen | None:
        """Send the marker command and wait for its final reply: everything sent before it has been handled."""
        cmd_id, _, start = self.command(MARKER_NAME)
        sc.note(f"-> c marker {cmd_id} ({MARKER_NAME}, which no device knows)")
        final = self.wait_final(cmd_id, start)
        if final is not None:
            sc.saw(final)
        return final

    def births(self, start: int, end: int | None = None) -> list[Seen]:
        seen = self.link.since(start)
        if end is not None:
            seen = seen[: max(0, end - start)]
        return [s for s in seen if s.cls is MessageClass.STATUS and not s.retained and isinstance(s.message, Status)]

    def sequenced(self, start: int, end: int | None = None) -> list[tuple[int, Seen]]:
        """(seq, message) of the current boot's live telemetry and alerts from ``start``."""
        seen = self.link.since(start)
        if end is not None:
            seen = seen[: max(0, end - start)]
        return [(s.message.seq, s) for s in seen if not s.retained and isinstance(s.message, (Telemetry, Alert))
                and s.message.boot == self.boot]

    @contextmanager
    def held(self, sc: Scenario) -> Iterator[int]:
        """Withhold watermarks (the hub is "down"); yields the seq the last watermark covered."""
        assert self.standin is not None
        covered = self.standin.hold()
        sc.note(f"watermarks withheld (the last one covered seq {covered})")
        try:
            yield covered
        finally:
            mark = self.standin.resume()
            sc.note(f"-> w watermark released: {mark.model_dump_json(exclude_defaults=True)}")

    def skip_without_standin(self, section: str, check: str) -> bool:
        if self.standin is not None:
            return False
        why = ("a hub is answering this device with watermarks (seen after its birth) and did not grant the "
               "checker a hold on them, so they cannot be withheld; update or stop `fleet hub` to run this scenario")
        self.add(Result(section, check, Outcome.SKIP, why))
        return True

    # ------------------------------------------------------------ scenarios

    def check_birth(self) -> None:
        """Section 2: a retained online birth with the fields the hub needs; the device must be online."""
        sc = Scenario("2", "birth")
        status = self.link.wait_for(lambda s: s.cls is MessageClass.STATUS, 0, self.s.timeout_s)
        if status is None:
            self.add(sc.result(Outcome.FAIL, f"no retained status on d/{self.s.device_id}/s within "
                                             f"{self.s.timeout_s:g}s: has the device ever connected?"))
            raise Abort("the device has no retained status")
        sc.saw(status)
        msg = status.message
        if not isinstance(msg, Status):
            self.add(sc.result(Outcome.FAIL, f"the retained status does not decode: {status.error}"))
            raise Abort("the device's status does not decode")
        if msg.state is not StatusState.ONLINE:
            self.add(sc.result(Outcome.FAIL, "the device is offline (its retained status is its last will): "
                                             "connect it and run the check again"))
            raise Abort("the device is offline")
        self.birth = msg
        problems = []
        if not status.retained:  # it was published while the checker subscribed: ask the broker for its copy
            copy = self.link.retained(MessageClass.STATUS, self.s.timeout_s)
            sc.note(f"retained copy on a fresh subscription: {'the same bytes' if copy == status.payload else copy!r}")
            if copy != status.payload:
                problems.append("the birth was not retained")
        if "rebirth" not in msg.caps:
            problems.append("caps does not list `rebirth`, which every device must support (section 6)")
        self.report.notes.append(f"device boot {msg.boot}, fw {inert(msg.fw)!r}, enc {msg.enc}, interval_s {msg.interval_s}, "
                                 f"caps {inert(str(list(msg.caps)))}")
        if problems:
            self.add(sc.result(Outcome.FAIL, "; ".join(problems)))
        else:
            self.add(sc.result(Outcome.PASS, f"retained online birth of boot {msg.boot}, enc {msg.enc}, "
                                             f"caps include rebirth"))

    def check_rebirth(self) -> None:
        """Section 6 `rebirth`: received, a new birth of the same boot, succeeded; and is a hub running?"""
        sc = Scenario("6 rebirth", "rebirth")
        cmd_id, payload, start = self.command("rebirth")
        sc.note(f"-> c rebirth {cmd_id} ({self.form}, {len(payload)} bytes)")
        final = self.wait_final(cmd_id, start)
        birth = self.link.wait_for(lambda s: s.cls is MessageClass.STATUS and not s.retained, start,
                                   0.0 if final is None else self.s.timeout_s)
        for seen in self.replies(cmd_id, start):
            sc.saw(seen)
        if birth is not None:
            sc.saw(birth)
        problems = self._reply_problems(cmd_id, start, expect=CommandState.SUCCEEDED)
        if birth is None:
            problems.append("no new birth")
        elif not isinstance(birth.message, Status) or birth.message.state is not StatusState.ONLINE:
            problems.append("the new status is not an online birth")
        elif birth.message.boot != self.boot:
            problems.append(f"the new birth has boot {birth.message.boot}, not {self.boot} (a rebirth is not a reboot)")
        else:
            self.birth = birth.message
        # a running hub answers the birth with a watermark of its own, normally within a second
        start_w = birth.index if birth is not None else start
        foreign = self.link.wait_for(lambda s: s.cls is MessageClass.WATERMARK and not s.mine and not s.retained,
                                     start_w, self.s.hub_answer_s)
        if foreign is not None:
            sc.saw(foreign)
            self.hub_running = True
            self.report.notes.append("a hub answered the device's birth with a watermark: the section 5 scenarios "
                                     "that withhold watermarks are skipped")
        else:
            if self.hub_hold is None:
                self.report.notes.append(f"no hub answered the birth within {self.s.hub_answer_s:g}s: the checker "
                                         "stands in for it (watermarks on d/<id>/w)")
            floor = self._retained_floor()
            self.standin = StandInHub(self.link, self.boot, self.form, floor)
            self.standin.start(start)
            self.standin.resume()
        self.add(sc.result(Outcome.FAIL if problems else Outcome.PASS,
                           "; ".join(problems) or "received, a new birth of the same boot, succeeded"))

    def check_encoding(self) -> None:
        """Sections 3 and 8.1: commands in the birth's `enc` are handled; the other form should be too."""
        sc = Scenario("8.1", "encoding")
        name = "ping" if self.birth is not None and "ping" in self.birth.caps else MARKER_NAME
        cmd_id, payload, start = self.command(name)
        sc.note(f"-> c {name} {cmd_id} in {self.form} (the form of enc in its birth), {len(payload)} bytes")
        final = self.wait_final(cmd_id, start)
        for seen in self.replies(cmd_id, start):
            sc.saw(seen)
        if final is None:
            self.add(sc.result(Outcome.FAIL, f"no final reply within {self.s.timeout_s:g}s to a {self.form} command, "
                                             f"the form its birth asks for (enc: {self.form})"))
            raise Abort(f"the device does not answer commands in {self.form}, the form its birth asks for")
        other = "json" if self.form == "cbor" else "cbor"
        cmd2, payload2, start2 = self.command(name, form=other)
        sc.note(f"-> c {name} {cmd2} in {other} (a device should accept both forms), {len(payload2)} bytes")
        final2 = self.wait_final(cmd2, start2)
        for seen in self.replies(cmd2, start2):
            sc.saw(seen)
        if final2 is None:
            self.add(sc.result(Outcome.WARN, f"handles {self.form} commands; no reply to a {other} command "
                                             "(section 8.1: should accept both forms)"))
        else:
            self.add(sc.result(Outcome.PASS, f"answers commands in {self.form} (its enc) and in {other}"))

    def check_duplicate(self) -> None:
        """Section 6, at most once: the same command id twice runs once; the repeat gets the final state again."""
        sc = Scenario("6 at most once", "duplicate-command")
        self.seq_from = self.link.mark()  # the first rebirth's re-sends are over: judge fresh seqs from here
        cmd_id, payload, start = self.command("rebirth")
        sc.note(f"-> c rebirth {cmd_id} (first delivery; running it publishes a birth)")
        first = self.wait_final(cmd_id, start)
        if first is None:
            for seen in self.replies(cmd_id, start):
                sc.saw(seen)
            self.add(sc.result(Outcome.FAIL, f"no final reply to the first delivery within {self.s.timeout_s:g}s"))
            return
        for seen in self.replies(cmd_id, start):
            sc.saw(seen)
        assert isinstance(first.message, CommandReply)
        if first.message.state is CommandState.SUCCEEDED:  # its birth is part of the first run, not the repeat's
            self.link.wait_for(lambda s: s.cls is MessageClass.STATUS and not s.retained, start, self.s.timeout_s)
        dup_start = self.link.mark()
        self.link.publish(MessageClass.COMMAND, payload)
        sc.note(f"-> c rebirth {cmd_id} again, the same bytes (a redelivery)")
        again = self.wait_final(cmd_id, dup_start)
        marker = self.marker(sc)
        end = marker.index if marker is not None else None
        replies = self.replies(cmd_id, dup_start, end)
        for seen in replies:
            sc.saw(seen)
        births = self.births(dup_start, end)
        for seen in births:
            sc.saw(seen)
        problems = []
        if again is None:
            problems.append("no reply to the repeated command (it must be answered with its remembered final state)")
        elif isinstance(again.message, CommandReply) and again.message.state is not first.message.state:
            problems.append(f"the repeat was answered {again.message.state.value}, the first {first.message.state.value}")
        if any(isinstance(s.message, CommandReply) and s.message.state is CommandState.RECEIVED for s in replies):
            problems.append("the repeat got a new `received`: it was executed again")
        if births:
            problems.append(f"{len(births)} birth(s) after the repeat: the rebirth ran again")
        if marker is None:
            problems.append("no answer to the marker command after the repeat")
        self.add(sc.result(Outcome.FAIL if problems else Outcome.PASS, "; ".join(problems) or
                           f"executed once; the repeat was answered {first.message.state.value} again, with no "
                           "new receipt and no new birth"))

    def check_expiry(self) -> None:
        """Section 6, expiry: a command whose `expires` has passed is answered received, rejected "expired"."""
        sc = Scenario("6 expiry", "command-expiry")
        if self._clockless():
            self.add(sc.result(Outcome.SKIP, "the device stamps uptime and has published no boot_ts: without the "
                                             "time it treats every command as unexpired (section 4.4)"))
            return
        cmd_id, _, start = self.command("rebirth", expires_in_s=-self.s.expired_by_s)
        sc.note(f"-> c rebirth {cmd_id} that expired {self.s.expired_by_s:g}s ago")
        final = self.wait_final(cmd_id, start)
        marker = self.marker(sc)
        end = marker.index if marker is not None else None
        for seen in self.replies(cmd_id, start, end) + self.births(start, end):
            sc.saw(seen)
        problems = self._reply_problems(cmd_id, start, expect=CommandState.REJECTED, detail="expired", end=end)
        if self.births(start, end):
            problems.append("a birth followed: the expired rebirth was executed")
        if final is None:
            problems.append(f"no final reply within {self.s.timeout_s:g}s")
        self.add(sc.result(Outcome.FAIL if problems else Outcome.PASS,
                           "; ".join(problems) or "received, then rejected \"expired\"; not executed"))

    def check_malformed(self) -> None:
        """Sections 6 and 7: undecodable commands are dropped, unknown ones rejected; the device stays up."""
        sc = Scenario("6 bad commands", "malformed-command")
        start = self.link.mark()
        bad = [(b"\xff\xfe\x00not a command", "bytes that are neither JSON nor CBOR"),
               (b'{"id":"chk-trunc","name":"rebi', "truncated JSON"),
               (b"\xa1\x61\x6e\x67rebirth" if self.form == "cbor" else b'{"name":"rebirth"}', "a command with no id"),
               (b"", "an empty payload")]
        for payload, what in bad:
            self.link.publish(MessageClass.COMMAND, payload)
            sc.note(f"-> c {what} ({len(payload)} bytes)")
        unknown_id, _, unknown_start = self.command("chk_unknown_command")
        sc.note(f"-> c chk_unknown_command {unknown_id} (a well-formed command no device knows)")
        problems = self._reply_problems(unknown_id, unknown_start, expect=CommandState.REJECTED, wait=True)
        for seen in self.replies(unknown_id, unknown_start):
            sc.saw(seen)
        if self.birth is not None and "set_interval" in self.birth.caps:
            bad_id, _, bad_start = self.command("set_interval", args={"seconds": "soon"})
            sc.note(f"-> c set_interval {bad_id} with seconds=\"soon\" (bad argument)")
            problems += [f"bad argument: {p}" for p in
                         self._reply_problems(bad_id, bad_start, expect=CommandState.REJECTED, wait=True)]
            for seen in self.replies(bad_id, bad_start):
                sc.saw(seen)
        marker = self.marker(sc)
        end = marker.index if marker is not None else None
        statuses = [s for s in self.link.since(start)[: None if end is None else end - start]
                    if s.cls is MessageClass.STATUS]
        for seen in statuses:
            sc.saw(seen)
        stray = [s for s in self.link.since(start)[: None if end is None else end - start]
                 if s.cls is MessageClass.REPLY and not (isinstance(s.message, CommandReply)
                                                         and s.message.id in self.sent_ids)]
        for seen in stray:
            sc.saw(seen)
        if marker is None:
            problems.append("no answer to a well-formed command after the malformed ones: the device stopped "
                            "handling commands")
        if statuses:
            problems.append("the device published a status (will or new birth) during the malformed commands: "
                            "it disconnected or restarted")
        if stray:
            problems.append(f"{len(stray)} reply(ies) to malformed commands (they have no usable id: drop them)")
        self.add(sc.result(Outcome.FAIL if problems else Outcome.PASS, "; ".join(problems) or
                           "malformed commands dropped without a reply, the unknown one rejected, the device "
                           "stayed connected"))
        # A device that crashed on a malformed command gets it again on every reconnect (the broker redelivers
        # what it did not acknowledge), so it keeps crashing; one that stopped answering cannot be tested on.
        # Either way every later scenario would only wait out its timeouts.
        if statuses:
            raise Abort("the device disconnected or restarted on malformed commands, which the broker redelivers "
                        "on every reconnect")
        if marker is None:
            raise Abort("the device stopped answering commands after the malformed ones")

    def check_withheld_watermark(self) -> None:
        """Section 5.2/5.3: while no watermark comes the device keeps its messages and never re-sends them on a
        timer; a rebirth (R3) re-sends what it keeps; a watermark releases them."""
        section, check = "5.3 no timers", "withheld-watermark"
        if self.skip_without_standin(section, check):
            return
        sc = Scenario(section, check)
        problems: list[str] = []
        with self.held(sc) as covered:
            start = self.link.mark()
            t_hold = time.monotonic()
            want = self.s.messages
            if not self.link.wait_until(lambda seen: len(self._new_seqs(seen, covered)) >= want, start,
                                        self.message_wait * want):
                got = self._new_seqs(self.link.since(start), covered)
                self.add(sc.result(Outcome.FAIL, f"only {len(got)} new message(s) in "
                                                 f"{self.message_wait * want:g}s while watermarks were withheld; "
                                                 f"need {want} (is it sending at its interval_s?)"))
                return
            # watch the rest of the hold window for a second send of any withheld seq
            rest = max(0.0, self.s.hold_s - (time.monotonic() - t_hold))
            repeated = self.link.wait_until(lambda seen: bool(self._repeats(seen)), start, rest)
            window = self.link.since(start)
            held = sorted(self._new_seqs(window, covered))
            sc.note(f"<- {len(held)} new message(s) while withheld, seqs {_span(held)}")
            if repeated:
                for seq, count in sorted(self._repeats(window).items()):
                    problems.append(f"seq {seq} sent {count} times while no watermark came (no timed re-sends, 5.3)")
            sc.note(f"watched {time.monotonic() - t_hold:.1f}s for timed re-sends")
            # R3: a rebirth re-sends every buffered message, so the withheld ones must come again
            cmd_id, _, rb_start = self.command("rebirth")
            sc.note(f"-> c rebirth {cmd_id} (R3: re-send every buffered message)")
            ok = self.link.wait_until(lambda seen: set(held) <= {q for q, _ in self.sequenced(rb_start)}, rb_start,
                                      self.s.timeout_s)
            resent = sorted({q for q, _ in self.sequenced(rb_start)})
            sc.note(f"<- re-sent after the rebirth: seqs {_span(resent)}")
            if not ok:
                missing = sorted(set(held) - set(resent))
                problems.append(f"after the rebirth, withheld seqs {_span(missing)} were not re-sent: the device did "
                                "not keep them until a watermark covered them (5.2)")
            stale = [q for q in resent if q <= covered]
            if stale:
                problems.append(f"re-sent seqs {_span(stale)} that a watermark had already covered")
            self.wait_final(cmd_id, rb_start)
        # released: a second rebirth must re-send nothing the release covered
        released = self.standin.covered() if self.standin else 0
        cmd_id, _, rb2 = self.command("rebirth")
        sc.note(f"-> c rebirth {cmd_id} after the watermark released seq {released}")
        self.wait_final(cmd_id, rb2)
        marker = self.marker(sc)
        end = marker.index if marker is not None else None
        again = sorted({q for q, _ in self.sequenced(rb2, end) if q <= released})
        resent_after = sorted({q for q, _ in self.sequenced(rb2, end)})
        sc.note(f"<- sent after the second rebirth: seqs {_span(resent_after)}")
        if again:
            problems.append(f"re-sent seqs {_span(again)} after a watermark covered them: it did not release them (5.2)")
        self.add(sc.result(Outcome.FAIL if problems else Outcome.PASS, "; ".join(problems) or
                           f"kept {len(held)} message(s) without re-sending them for {self.s.hold_s:g}s, re-sent "
                           "them on a rebirth, released them on the watermark"))

    def check_hole(self) -> None:
        """Section 5.3 R2: a watermark with a hole gets the missing message re-sent once, nothing else; the same
        hole again, before the device has made anything newer than `max`, gets nothing (the copy is on its way)."""
        section, check = "5.3 R2", "hole-watermark"
        if self.skip_without_standin(section, check):
            return
        sc = Scenario(section, check)
        problems: list[str] = []
        with self.held(sc) as covered:
            start = self.link.mark()
            if not self.link.wait_until(lambda seen: len(self._new_seqs(seen, covered)) >= 3, start,
                                        self.message_wait * 3):
                self.add(sc.result(Outcome.FAIL, f"fewer than 3 new messages in {self.message_wait * 3:g}s"))
                return
            held = sorted(self._new_seqs(self.link.since(start), covered))
            lost, top = covered + 1, held[-1]
            hole = Watermark(boot=self.boot, seq=covered, next=lost + 1, max=top, ts=int(time.time() * 1000))
            for attempt in ("first", "same again"):
                w_start = self.link.mark()
                self.link.send(hole, self.form, retain=True)
                sc.note(f"-> w hole ({attempt}): {hole.model_dump_json(exclude_defaults=True)} "
                        f"(seq {lost} missing, {lost + 1}..{top} held)")
                marker = self.marker(sc)
                end = marker.index if marker is not None else None
                sent = [q for q, _ in self.sequenced(w_start, end)]
                sc.note(f"<- sent after it: seqs {_span(sorted(sent))}")
                wrong = sorted({q for q in sent if covered < q <= top and q != lost})
                if wrong:
                    problems.append(f"re-sent seqs {_span(wrong)}, which the hub holds (at or above next)")
                if attempt == "first" and sent.count(lost) != 1:
                    problems.append(f"seq {lost}, the hole, was sent {sent.count(lost)} times (R2: once)")
                if attempt == "same again" and sent.count(lost):
                    problems.append(f"seq {lost} sent again on a repeated hole although nothing newer than max was "
                                    "dealt with since its last send (R2: leave it, its copy may be on its way)")
                if marker is None:
                    problems.append("no answer to the marker command")
                    break
        problems = list(dict.fromkeys(problems))
        self.add(sc.result(Outcome.FAIL if problems else Outcome.PASS, "; ".join(problems) or
                           f"re-sent only seq {lost} on the hole, and not again on the same hole"))

    def check_give_up(self) -> None:
        """Sections 5.3 R2 and 5.4: a message the hub keeps missing is re-sent by R2 at most 3 times, then given
        up and declared with `dropped` in the next message, so the watermark can move on."""
        section, check = "5.3 R2 / 5.4", "give-up"
        if self.skip_without_standin(section, check):
            return
        sc = Scenario(section, check)
        problems: list[str] = []
        with self.held(sc) as covered:
            lost = covered + 1
            start = self.link.mark()
            declared: Seen | None = None
            for round_no in range(1, MAX_RESENDS + 2):
                # the hub may claim only what the device made after its last send of `lost`
                made = max([q for q, _ in self.sequenced(start)], default=covered)
                if not self.link.wait_until(lambda seen: any(q > max(made, lost + 1) for q, _ in
                                                             self.sequenced(start)), start, self.message_wait):
                    problems.append(f"no new message in {self.message_wait:g}s")
                    break
                top = max(q for q, _ in self.sequenced(start))
                hole = Watermark(boot=self.boot, seq=covered, next=lost + 1, max=top, ts=int(time.time() * 1000))
                w_start = self.link.mark()
                self.link.send(hole, self.form, retain=True)
                sc.note(f"-> w hole {round_no}: {hole.model_dump_json(exclude_defaults=True)} (seq {lost} still missing)")
                marker = self.marker(sc)
                if marker is None:
                    problems.append("no answer to the marker command")
                    break
                again = sum(1 for q, _ in self.sequenced(w_start, marker.index) if q == lost)
                sc.note(f"<- seq {lost} sent {again} time(s) after hole {round_no}")
                if round_no <= MAX_RESENDS and again != 1:
                    problems.append(f"hole {round_no}: seq {lost} sent {again} times (R2: once; R2 has re-sent it "
                                    f"{round_no - 1} time(s))")
                if round_no > MAX_RESENDS and again:
                    problems.append(f"seq {lost} re-sent a {round_no}th time: after 3 R2 re-sends the oldest message "
                                    "is given up (R2)")
            if not problems:
                declared = self.link.wait_for(lambda s: isinstance(s.message, (Telemetry, Alert))
                                              and not s.retained and s.message.boot == self.boot
                                              and s.message.dropped >= lost, w_start, self.message_wait)
                if declared is None:
                    problems.append(f"no message declared dropped >= {lost} within {self.message_wait:g}s after "
                                    "it gave the message up (5.4)")
                else:
                    sc.saw(declared)
        problems = list(dict.fromkeys(problems))
        self.add(sc.result(Outcome.FAIL if problems else Outcome.PASS, "; ".join(problems) or
                           f"seq {lost} re-sent on 3 holes, given up on the 4th and declared in `dropped`"))

    def check_session_loss(self) -> None:
        """Sections 2.2 and 5.3 R1: after the broker loses its session the device reconnects, subscribes before
        its birth, keeps its boot, and re-sends every message no watermark covers."""
        sc = Scenario("2.2 / 5.3 R1", "session-loss")
        problems: list[str] = []
        held: list[int] = []
        covered = 0
        if self.standin is not None:
            covered = self.standin.hold()
            sc.note(f"watermarks withheld (the last one covered seq {covered})")
            start = self.link.mark()
            want = self.s.messages
            if not self.link.wait_until(lambda seen: len(self._new_seqs(seen, covered)) >= want, start,
                                        self.message_wait * want):
                problems.append(f"fewer than {want} new messages in {self.message_wait * want:g}s")
            held = sorted(self._new_seqs(self.link.since(start), covered))
            sc.note(f"<- unconfirmed messages before the session loss: seqs {_span(held)}")
        drop_start = self.link.mark()
        self.session_drops.append(time.monotonic())
        self.link.drop_device_session()
        sc.note("broker session of the device dropped (its connection closed, subscriptions forgotten)")
        birth = self.link.wait_for(lambda s: s.cls is MessageClass.STATUS and not s.retained
                                   and isinstance(s.message, Status) and s.message.state is StatusState.ONLINE,
                                   drop_start, self.s.timeout_s + 60.0)
        if birth is None:
            if self.standin is not None:
                self.standin.resume()
            self.add(sc.result(Outcome.FAIL, f"no new birth within {self.s.timeout_s + 60:g}s of the session loss: "
                                             "the device did not reconnect"))
            raise Abort("the device did not reconnect")
        sc.saw(birth)
        assert isinstance(birth.message, Status)
        if birth.message.boot != self.boot:
            problems.append(f"came back with boot {birth.message.boot}, not {self.boot}: a reconnect is not a reboot")
        self.birth = birth.message
        # subscribed before the birth? a command published the moment the birth is seen must reach it
        probe, _, probe_start = self.command(MARKER_NAME)
        sc.note(f"-> c marker {probe} published as soon as the birth arrived")
        answer = self.wait_final(probe, probe_start)
        if answer is None:
            problems.append("no answer to a command published right after its birth: it did not subscribe to "
                            "d/<id>/c before the birth (2.2 steps 2-3)")
        else:
            sc.saw(answer)
        if self.standin is not None:
            want = set(held)
            ok = self.link.wait_until(lambda seen: want <= {q for q, _ in self.sequenced(drop_start)},
                                      drop_start, self.s.timeout_s)
            resent = sorted({q for q, _ in self.sequenced(drop_start)})
            sc.note(f"<- sent after the reconnect: seqs {_span(resent)}")
            if not ok:
                problems.append(f"seqs {_span(sorted(want - set(resent)))} that no watermark covered were not "
                                "re-sent after a reconnect without a session (R1)")
            mark = self.standin.resume()
            sc.note(f"-> w watermark released: {mark.model_dump_json(exclude_defaults=True)}")
            stale = [q for q in resent if q <= covered]
            if stale and not problems:
                self.add(sc.result(Outcome.WARN, f"re-sent seqs {_span(stale)} that the retained watermark covered: "
                                                 "apply the watermark that arrives after the SUBACK first (2.2 step 5)"))
                return
        else:
            sc.note("re-sends not checked: a running hub covers the device's buffer at once")
        self.add(sc.result(Outcome.FAIL if problems else Outcome.PASS, "; ".join(problems) or
                           "reconnected with the same boot, subscribed before its birth" +
                           (f", re-sent the {len(held)} unconfirmed message(s)" if self.standin else "")))

    def check_sleep(self) -> None:
        """Section 4.5, for a device whose birth declares ``sleep_s``: it wakes (a live birth after a silence) no
        later than ``sleep_s`` after its last message, keeps its boot, declares ``sleep_s`` again, and answers at
        its wake a command sent while it slept. The other scenarios need the device connected throughout: the
        run ends here for a sleepy device."""
        assert self.birth is not None
        sleep_s = self.birth.sleep_s
        if not sleep_s:
            return
        why = (f"the device sleeps between wakes (sleep_s {sleep_s}); the other scenarios need it connected "
               "throughout: check them with sleeping turned off")
        sc = Scenario("4.5", "sleep")
        if sleep_s > self.s.max_sleep_s:
            self.add(sc.result(Outcome.SKIP, f"sleep_s {sleep_s} is longer than the checker watches a wake cycle "
                                             f"({self.s.max_sleep_s:g}s, --max-sleep)"))
            raise Abort(why)
        window = wake_window(sleep_s, SLEEP_GRACE, STALENESS_MIN_S)  # the hub's, with its default settings
        slack = max(0.5, 0.05 * sleep_s)  # scheduling and the network, not the rule
        name = "ping" if "ping" in self.birth.caps else MARKER_NAME
        cmd_id, _, start = self.command(name, expires_in_s=2 * window + self.s.timeout_s + 600.0)
        sc.note(f"-> c {name} {cmd_id} (its TTL outlasts the next wake: it waits in the session while the device "
                "sleeps)")
        # the device may be asleep now (then its first wake shows no silence we watched whole) or awake: wait
        # for a wake whose silence before it was watched from its start
        deadline = time.monotonic() + 2 * window + self.s.timeout_s
        wake: Seen | None = None
        silence = 0.0
        pos = start
        while wake is None:
            birth = self.link.wait_for(lambda s: s.cls is MessageClass.STATUS and not s.retained
                                       and isinstance(s.message, Status) and s.message.state is StatusState.ONLINE,
                                       pos, deadline - time.monotonic())
            if birth is None:
                break
            pos = birth.index + 1
            before = [s for s in self.link.since(0)[:birth.index] if s.cls in DEVICE_PUBLISHES and not s.retained]
            if not before or birth.at - before[-1].at < WAKE_GAP_S:
                continue  # a rebirth within a wake, or the first wake when the device was asleep at the start
            wake, silence = birth, birth.at - before[-1].at
            sc.note(f"<- last message before the sleep ({before[-1].cls.value})", before[-1].at)
            sc.saw(birth)
        final = self.wait_final(cmd_id, start, max(0.0, deadline - time.monotonic()) + self.s.timeout_s) \
            if wake is not None else None
        for seen in self.replies(cmd_id, start):
            sc.saw(seen)
        if wake is None:
            self.add(sc.result(Outcome.FAIL, f"no wake within {2 * window + self.s.timeout_s:g}s: the hub marks a "
                                             f"device silent for {window:g}s offline (missed_wake)"))
            raise Abort(why)
        assert isinstance(wake.message, Status)
        problems: list[str] = []
        if silence > window:
            problems.append(f"woke {silence:.1f}s after its last message, beyond sleep_s {sleep_s}: the hub marked it "
                            f"offline (missed_wake) after {window:g}s")
        if wake.message.boot < self.boot:
            problems.append(f"woke with boot {wake.message.boot}, below {self.boot} (4.1)")
        elif wake.message.boot > self.boot:
            self.report.notes.append(f"boot went from {self.boot} to {wake.message.boot} across the sleep: the device "
                                     "loses its RAM while asleep (4.1 allows it; 4.5: better keep boot and seq)")
        if not wake.message.sleep_s:
            problems.append("the birth of the wake does not declare sleep_s (4.5: every birth)")
        if final is None:
            problems.append(f"no final reply to the command sent while it slept within {self.s.timeout_s:g}s of its "
                            "wake (its session keeps it: 4.5, section 6)")
        self.birth = wake.message
        if problems:
            self.add(sc.result(Outcome.FAIL, "; ".join(problems)))
        elif silence > sleep_s + slack:
            self.add(sc.result(Outcome.WARN, f"woke {silence:.1f}s after its last message, later than sleep_s "
                                             f"{sleep_s} but within the hub's grace ({window:g}s): choose sleep_s "
                                             "with margin"))
        else:
            self.add(sc.result(Outcome.PASS, f"woke {silence:.1f}s after its last message (sleep_s {sleep_s}), same "
                                             "boot, sleep_s declared again, the command sent meanwhile answered"))
        raise Abort(why)

    def check_description(self) -> None:
        """Section 13.5, for a device whose birth names a description: the retained description on ``x`` decodes and
        its hash is the one named; a device listing ``describe`` publishes it again on request."""
        assert self.birth is not None
        named = self.birth.desc
        if not named:
            self.report.notes.append("description (13.5) not checked: the birth names none (desc is optional)")
            return
        sc = Scenario("13.5", "description")
        kept = self.link.wait_for(lambda s: s.cls is MessageClass.DESCRIPTION and s.retained, 0, 0.0)
        payload = kept.payload if kept is not None else self.link.retained(MessageClass.DESCRIPTION, self.s.timeout_s)
        problems = self._description_problems(named, payload, "the retained description")
        if kept is not None:
            sc.saw(kept)
        else:
            sc.note(f"retained on d/{self.s.device_id}/x: {'nothing' if payload is None else f'{len(payload)} bytes'}")
        if "describe" in self.birth.caps:
            cmd_id, _, start = self.command("describe")
            sc.note(f"-> c describe {cmd_id}")
            self.wait_final(cmd_id, start)
            for seen in self.replies(cmd_id, start):
                sc.saw(seen)
            problems += self._reply_problems(cmd_id, start, expect=CommandState.SUCCEEDED)
            again = self.link.wait_for(lambda s: s.cls is MessageClass.DESCRIPTION and not s.retained, start,
                                       self.s.timeout_s)
            if again is None:
                problems.append("`describe` did not publish the description again")
            else:
                sc.saw(again)
                problems += self._description_problems(named, again.payload, "the description sent on `describe`")
        problems = list(dict.fromkeys(problems))
        self.add(sc.result(Outcome.FAIL if problems else Outcome.PASS, "; ".join(problems) or
                           f"the retained description decodes and hashes to {named}, the hash its birth names"
                           + (", and `describe` sends it again" if "describe" in self.birth.caps else "")))

    def check_config(self) -> None:
        """Section 13.3, for a device that takes configuration: a ConfigSet of the version in force with a key no
        device has is answered by a report of that version refusing the key with a reason (and changes nothing);
        an older version is answered with the version in force and no keys."""
        assert self.birth is not None
        cfg = self.birth.cfg
        described = self._description()
        keys = described.config_keys() if described is not None else []
        if not cfg and not keys:
            self.report.notes.append("configuration (13) not checked: cfg is 0 and no description lists a "
                                     "configuration key (a device that takes none); `fleet config set` one key first "
                                     "to have it checked")
            return
        sc = Scenario("13.3", "configuration")
        problems: list[str] = []
        version = max(cfg, 1)  # the version in force: applying it again changes nothing (13.3 rule 2)
        report = self._config_round(sc, version, problems, "the version in force")
        if report is not None:
            applied = [k for k, _ in report.applied_pairs() if k == PROBE_KEY]
            refused = dict(report.refused_pairs())
            if report.version != version:
                problems.append(f"the report has version {report.version}, not {version}")
            if applied:
                problems.append(f"reported {PROBE_KEY!r}, a key it does not have, as applied")
            elif not refused.get(PROBE_KEY):
                problems.append(f"did not refuse {PROBE_KEY!r}, a key it does not have, with a reason")
        if report is not None and version >= 2:
            older = self._config_round(sc, version - 1, problems, "an older version")
            if older is not None and (older.version != version or older.applied or older.refused):
                problems.append(f"answered version {version - 1} with version {older.version} and keys "
                                f"{older.applied + older.refused}: an older version must change nothing and be "
                                f"answered with the version in force ({version}) and no keys (13.3 rule 1)")
        elif report is not None:
            sc.note(f"rule 1 (an older version) not tried: the version in force is {version}, below 2")
        self.add(sc.result(Outcome.FAIL if problems else Outcome.PASS, "; ".join(problems) or
                           f"refused {PROBE_KEY!r} with a reason in a report of version {version}"
                           + (f"; answered version {version - 1} with {version} and no keys" if version >= 2 else "")))

    def _config_round(self, sc: Scenario, version: int, problems: list[str], what: str) -> ConfigReport | None:
        """Send a ConfigSet of ``version`` setting the probe key; the report that answers it, None after a timeout."""
        start = self.link.mark()
        payload = self.link.send(ConfigSet(version=version, set=[PROBE_KEY, True]), self.form)
        sc.note(f"-> k ConfigSet version {version} ({what}) setting {PROBE_KEY!r} ({len(payload)} bytes)")
        seen = self.link.wait_for(lambda s: s.cls is MessageClass.CONFIG_REPORT, start, self.s.timeout_s)
        if seen is None:
            problems.append(f"no ConfigReport on d/<id>/n within {self.s.timeout_s:g}s of a ConfigSet of {what} "
                            "(subscribe to d/<id>/k with c and w: 13.1)")
            return None
        sc.saw(seen)
        if not isinstance(seen.message, ConfigReport):
            problems.append(f"the ConfigReport does not decode: {seen.error}")
            return None
        return seen.message

    def _description(self) -> Description | None:
        """The retained description the birth names, when it decodes and has that hash."""
        if self.birth is None or not self.birth.desc:
            return None
        for seen in self.link.since(0):
            if seen.cls is MessageClass.DESCRIPTION and isinstance(seen.message, Description) \
                    and description_hash(seen.payload) == self.birth.desc:
                return seen.message
        return None

    @staticmethod
    def _description_problems(named: str, payload: bytes | None, what: str) -> list[str]:
        if payload is None:
            return [f"no retained description on d/<id>/x, though the birth names {named} (13.5: publish it, retained, "
                    "before the birth)"]
        try:
            decode(MessageClass.DESCRIPTION, payload)
        except ProtocolError as exc:
            return [f"{what} does not decode: {exc.reason.value}: {inert(str(exc))}"]
        got = description_hash(payload)
        if got != named:
            return [f"{what} hashes to {got}, not {named}, the hash its birth names (13.5: the first 8 bytes of the "
                    "SHA-256 of exactly the bytes sent)"]
        return []

    def check_whole_run(self) -> None:
        """Sections 4.2 and 8 over everything the device sent during the run."""
        everything = self.link.since(0)
        uplink = [s for s in everything if s.cls in (MessageClass.TELEMETRY, MessageClass.ALERT, MessageClass.STATUS,
                                                   MessageClass.REPLY) and not s.retained]
        sc = Scenario("8", "payloads", self.started)
        bad = [s for s in uplink if s.message is None]
        for seen in bad[:10]:
            sc.saw(seen)
        self.add(sc.result(Outcome.FAIL if bad else Outcome.PASS,
                           f"{len(bad)} of {len(uplink)} payloads refused by the strict decoder (the hub dead-letters "
                           "them)" if bad else f"all {len(uplink)} payloads decode strictly (section 8)"))
        if self.birth is None:
            return
        self.check_heartbeat(uplink)
        sc = Scenario("4.2", "seq", self.started)
        other_boot = [s for s in uplink if isinstance(s.message, (Telemetry, Alert)) and s.message.boot != self.boot]
        problems = []
        if other_boot:
            sc.saw(other_boot[0])
            problems.append(f"{len(other_boot)} message(s) of another boot than the birth's {self.boot}")
        # a fresh message (seq above every one seen so far) must be the next seq; re-sends are older seqs
        top: int | None = None
        jumps: list[int] = []
        fresh = 0
        for seq, _ in self.sequenced(self.seq_from):
            if top is None or seq > top:
                if top is not None and seq != top + 1:
                    jumps.extend(range(top + 1, seq))
                top = seq
                fresh += 1
        sc.note(f"{fresh} new message(s), up to seq {top}" if top is not None else "no telemetry or alert")
        if jumps:
            problems.append(f"seqs {_span(jumps)} were skipped: seq grows by exactly one per message")
        outcome = Outcome.FAIL if problems else Outcome.PASS if top is not None else Outcome.SKIP
        self.add(sc.result(outcome, "; ".join(problems) or
                           ("one boot, each new message the next seq" if top is not None
                            else "the device sent no telemetry or alert during the run")))

    def check_heartbeat(self, uplink: list[Seen]) -> None:
        """Section 4.3: never silent for longer than `interval_s` while online (judged when the run is long enough)."""
        if self.birth is None or not uplink:
            return
        if self.birth.sleep_s:  # its silences are sleeps, judged by check_sleep against sleep_s
            return
        interval = self.birth.interval_s
        uplink = [s for s in uplink if s.cls is not MessageClass.REPLY]  # replies do not count (4.3)
        if not uplink:
            return
        span = uplink[-1].at - self.started
        if span < 2 * interval:
            self.report.notes.append(f"heartbeat (4.3) not judged: the run lasted {span:.0f}s, under twice the "
                                     f"device's interval_s of {interval}s")
            return
        sc = Scenario("4.3", "heartbeat", self.started)
        slack = max(0.5, 0.1 * interval)  # scheduling and the network, not the rule
        times = [self.started] + [s.at for s in uplink]
        gaps = [(b - a, a) for a, b in zip(times, times[1:])
                if not any(a <= t <= b for t in self.session_drops)]  # the checker cut the link then
        worst = max(gaps, default=(0.0, 0.0))
        sc.note(f"longest silence {worst[0]:.1f}s (interval_s {interval}s)", worst[1])
        if worst[0] > interval + slack:
            self.add(sc.result(Outcome.FAIL, f"silent for {worst[0]:.1f}s while online, more than interval_s "
                                             f"{interval}s: the hub marks it stale after 2.5 x interval_s"))
        else:
            self.add(sc.result(Outcome.PASS, f"never silent longer than interval_s ({worst[0]:.1f}s of {interval}s)"))

    # ------------------------------------------------------------ rule helpers

    def _reply_problems(self, cmd_id: str, start: int, *, expect: CommandState, detail: str | None = None,
                        end: int | None = None, wait: bool = False) -> list[str]:
        """What is wrong with the replies to ``cmd_id``: received first, then exactly ``expect``."""
        if wait:
            self.wait_final(cmd_id, start)
        replies = [s.message for s in self.replies(cmd_id, start, end) if isinstance(s.message, CommandReply)]
        states = [r.state for r in replies]
        problems = []
        if not states:
            return [f"no reply within {self.s.timeout_s:g}s"]
        if states[0] is not CommandState.RECEIVED:
            problems.append(f"the first reply was {states[0].value}, not received")
        finals = [r for r in replies if r.state in FINAL]
        if not finals:
            problems.append("no final reply")
        elif finals[0].state is not expect:
            problems.append(f"answered {finals[0].state.value} {finals[0].detail!r}, expected {expect.value}")
        elif detail is not None and finals[0].detail != detail:
            problems.append(f"detail {finals[0].detail!r}, expected {detail!r}")
        if len(finals) > 1:
            problems.append(f"{len(finals)} final replies to one delivery")
        return problems

    def _new_seqs(self, seen: list[Seen], covered: int) -> set[int]:
        return {s.message.seq for s in seen if not s.retained and isinstance(s.message, (Telemetry, Alert))
                and s.message.boot == self.boot and s.message.seq > covered}

    def _repeats(self, seen: list[Seen]) -> dict[int, int]:
        counts: dict[int, int] = {}
        for s in seen:
            if not s.retained and isinstance(s.message, (Telemetry, Alert)) and s.message.boot == self.boot:
                counts[s.message.seq] = counts.get(s.message.seq, 0) + 1
        return {q: n for q, n in counts.items() if n > 1}

    def _clockless(self) -> bool:
        """True when the device stamps uptime and has not published the time of its power-up."""
        births = [s.message for s in self.link.since(0) if isinstance(s.message, Status)
                  and s.message.state is StatusState.ONLINE and s.message.boot == self.boot]
        if births and births[-1].boot_ts:
            return False
        stamps = [s.message.ts for s in self.link.since(0) if isinstance(s.message, (Telemetry, Alert))]
        return bool(stamps) and stamps[-1] < UPTIME_BELOW

    def _retained_floor(self) -> int:
        for s in self.link.since(0):
            if s.cls is MessageClass.WATERMARK and s.retained and isinstance(s.message, Watermark) \
                    and s.message.boot == self.boot:
                return s.message.seq
        return 0


def _span(seqs: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"`` (at most 8 runs shown)."""
    if not seqs:
        return "none"
    runs: list[tuple[int, int]] = []
    for q in sorted(seqs):
        if runs and q == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], q)
        else:
            runs.append((q, q))
    text = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in runs[:8])
    return text + (f" (+{len(runs) - 8} more runs)" if len(runs) > 8 else "")

