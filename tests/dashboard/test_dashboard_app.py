"""The dashboard app driven headless with Textual's Pilot, against a real broker, hub, simulated fleet and SQLite.

One stack (embedded broker, hub, 40 simulated devices, as ``fleet up`` runs them) serves the module;
each test opens its own dashboard on the stack's database, presses keys and reads the screen.
"""

from __future__ import annotations

import asyncio
import gc
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from dashboard_helpers import screen_ansi, screen_text, wait_screen
from textual.pilot import Pilot

from broker.registry import Registry
from broker.server import free_port
from cli.dashboard.app import DashboardApp, DeviceScreen, FleetScreen
from cli.dashboard.sender import local_sender
from cli.stack import Stack
from command_device import CommandDevice
from protocol import Alert, MessageClass, Status, encode, topic_for
from support import Creds, connect, wait_for

DEVICES = 40
HUB_S = 60.0
"""How long to wait for something the hub must do first (generous: the machine may be busy)."""
ESC_FW = "\x1b]0;PWNED\x07\x1b[2J"
ESC_ALERT = "\x1b[2J\x1b[1;1H ALL SYSTEMS NORMAL [bold]x[/]"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    db = tmp_path_factory.mktemp("dash") / "fleet.db"
    s = Stack(db, port=free_port(), devices=DEVICES, rate=1.0)
    s.provision()
    s.start()
    try:
        assert wait_for(lambda: _online(db) >= DEVICES, timeout=2 * HUB_S), "the simulated fleet did not come online"
        yield s
    finally:
        s.stop()
        gc.collect()  # amqtt's leftover writers: finalize them here, not inside a later test (see conftest)


def _online(db: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT COUNT(*) FROM devices WHERE state = 'online'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def drive(stack: Stack, size: tuple[int, int], scenario: Callable[[Pilot, DashboardApp], Awaitable[None]]) -> None:  # type: ignore[type-arg]
    """Run ``scenario`` against a dashboard of ``stack`` in a headless terminal of ``size``."""
    app = DashboardApp(stack.db, refresh_s=0.3, sender=local_sender(stack.db, stack.broker_url))

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await wait_screen(pilot, lambda t: "hub up" in t and " online, " in t, timeout=HUB_S)
            await scenario(pilot, app)

    asyncio.run(main())


def assert_no_device_escapes(screen: str) -> None:
    """None of the device's sequences reach the terminal (Textual's own cursor moves and colours may)."""
    assert "\x1b]0;PWNED" not in screen, "title change"
    assert "\x07" not in screen, "bell"
    assert "\x1b[2J" not in screen, "clear screen"
    assert "\x1b[1;1H ALL SYSTEMS" not in screen, "cursor home before the fake message"


def rows_of(text: str) -> list[str]:
    return text.rstrip("\n").split("\n")


async def type_filter(pilot: Pilot, text: str) -> None:  # type: ignore[type-arg]
    await pilot.press("slash", *text, "enter")


def test_header_columns_and_whole_fleet_by_scrolling_at_80x24(stack):
    async def scenario(pilot: Pilot, app: DashboardApp) -> None:  # type: ignore[type-arg]
        text = await wait_screen(pilot, lambda t: "problems first" in t)
        assert f"{DEVICES} devices: {DEVICES} online, 0 offline" in text
        for label in ("device", "status", "last seen", "problems", "latest readings", "Filter (/):"):
            assert label in text, label
        assert all(len(r) <= 80 for r in rows_of(text)) and len(rows_of(text)) <= 24
        await pilot.press("s")  # problems first -> by device id
        text = await wait_screen(pilot, lambda t: "by device id" in t)
        assert "sim-00001" in text and f"sim-{DEVICES:05d}" not in text, "40 devices cannot all fit in 24 rows"
        await pilot.press("end")
        # rows are filled in as they scroll into view: the last one shows its status and readings
        text = await wait_screen(pilot, lambda t: re.search(rf"sim-{DEVICES:05d} +online +\d+s ago", t) is not None)
        assert "sim-00001 " not in text
        assert all(re.search(r"sim-\d{5} +online", r) for r in rows_of(text) if re.match(r" ?sim-\d{5}", r))
        await pilot.press("home", "pagedown")
        await wait_screen(pilot, lambda t: "sim-00001 " not in t and f"sim-{DEVICES:05d}" not in t)

    drive(stack, (80, 24), scenario)


def test_filter_is_visible_narrows_the_table_and_esc_clears_it(stack):
    async def scenario(pilot: Pilot, app: DashboardApp) -> None:  # type: ignore[type-arg]
        await type_filter(pilot, "sim-0001")
        text = await wait_screen(pilot, lambda t: "matching 'sim-0001'" in t)
        assert "10 of " in text and "devices matching 'sim-0001'" in text
        listed = {r.split()[0] for r in rows_of(text) if r.strip().startswith("sim-")}
        assert listed and all(d.startswith("sim-0001") for d in listed), listed
        await pilot.press("escape")
        await wait_screen(pilot, lambda t: "devices, problems first" in t and "matching" not in t)

    drive(stack, (80, 24), scenario)


@pytest.mark.parametrize("size", [(80, 24), (200, 50)])
def test_enter_opens_a_device_with_metrics_units_history_and_presence(stack, size):
    width, height = size

    async def scenario(pilot: Pilot, app: DashboardApp) -> None:  # type: ignore[type-arg]
        await pilot.press("s")
        await wait_screen(pilot, lambda t: "by device id" in t)
        await pilot.press("home", "down", "down", "enter")  # the third row: sim-00003
        text = await wait_screen(pilot, lambda t: "sim-00003  online since" in t and "presence" in t)
        assert isinstance(app.screen, DeviceScreen)
        assert all(len(r) <= width for r in rows_of(text)) and len(rows_of(text)) <= height
        assert "metrics" in text and "low..high, last hour" in text
        assert any(unit in text for unit in (" °C", " W", " km/h", " %", " V")), text
        assert any(ch in text for ch in "▁▂▃▄▅▆▇█"), "a chart of the last hour"
        assert "-60m" in text and "now" in text
        assert "recent commands" in text and "alerts" in text and "birth, boot" in text
        if width >= 200:
            assert "firmware sim-" in text
        await pilot.press("escape")
        text = await wait_screen(pilot, lambda t: "Filter (/):" in t)
        assert isinstance(app.screen, FleetScreen)
        if width >= 200:
            assert "firmware" in text and "group" in text

    drive(stack, size, scenario)


def test_send_from_the_device_view_and_watch_the_state_change(stack):
    creds = Creds("dev-cmd", Registry(stack.db).add("dev-cmd"))
    device = CommandDevice(int(stack.broker_url.rsplit(":", 1)[1]), creds)

    async def scenario(pilot: Pilot, app: DashboardApp) -> None:  # type: ignore[type-arg]
        await type_filter(pilot, "dev-cmd")
        await wait_screen(pilot, lambda t: "1 of " in t and "devices matching 'dev-cmd'" in t)
        await pilot.press("enter")
        await wait_screen(pilot, lambda t: "dev-cmd" in t and "recent commands" in t and "no commands yet" in t)
        await pilot.press("c")
        await wait_screen(pilot, lambda t: "Send a command to dev-cmd" in t)
        await pilot.press(*"ping", "enter")
        # the device is not connected yet: the hub keeps the command queued
        text = await wait_screen(pilot, lambda t: " ping " in t and "queued" in t and "Send a command" not in t,
                                 timeout=HUB_S)
        assert isinstance(app.screen, DeviceScreen)
        await asyncio.to_thread(device.connect)
        text = await wait_screen(pilot, lambda t: "succeeded" in t, timeout=HUB_S)
        assert '{"pong": 1}' in text
        assert device.executed and len(device.executed) == 1
        assert [o.command_id for o in app.sent] == device.executed  # the operator was told the command's id

    try:
        drive(stack, (80, 24), scenario)
    finally:
        device.disconnect()


def test_send_form_refuses_bad_input_and_esc_cancels(stack):
    async def scenario(pilot: Pilot, app: DashboardApp) -> None:  # type: ignore[type-arg]
        await pilot.press("c")
        await wait_screen(pilot, lambda t: "Send a command to" in t)
        await pilot.press(*"ping", "tab", *"novalue", "enter")
        await wait_screen(pilot, lambda t: "is not key=value" in t)
        await pilot.press("escape")
        await wait_screen(pilot, lambda t: "Send a command" not in t and "Filter (/):" in t)
        # a name the protocol refuses (over 32 characters) is said in one line, the dashboard stays up
        await pilot.press("c")
        await wait_screen(pilot, lambda t: "Send a command to" in t)
        await pilot.press(*("x" * 40), "enter")
        await wait_screen(pilot, lambda t: bool(app.sent), timeout=HUB_S)
        assert app.sent[-1].command_id is None and "not sent: name: String should have at most 32" in app.sent[-1].message
        assert app.is_running

    drive(stack, (80, 24), scenario)


def test_device_text_is_inert_on_every_screen(stack):
    secret = Registry(stack.db).add("dev-evil")
    port = int(stack.broker_url.rsplit(":", 1)[1])
    client = connect(port, Creds("dev-evil", secret))
    try:
        birth = Status(state="online", boot=1, fw=ESC_FW, interval_s=30)
        client.publish(topic_for("dev-evil", MessageClass.STATUS), encode(birth), qos=1, retain=True).wait_for_publish(10)
        alert = Alert(boot=1, seq=1, ts=int(time.time() * 1000), code="tamper", severity="critical", message=ESC_ALERT)
        client.publish(topic_for("dev-evil", MessageClass.ALERT), encode(alert), qos=1).wait_for_publish(10)

        async def scenario(pilot: Pilot, app: DashboardApp) -> None:  # type: ignore[type-arg]
            text = await wait_screen(pilot, lambda t: "ALL SYSTEMS NORMAL" in t and "dev-evil" in t, timeout=HUB_S)
            assert "\\x1b[2J\\x1b[1;1H ALL SYSTEMS NORMAL [bold]x[/]" in text
            await type_filter(pilot, "dev-evil")
            text = await wait_screen(pilot, lambda t: "\\x1b]0;PWNE" in t)  # the firmware column
            for screen in (text, screen_ansi(app)):
                assert_no_device_escapes(screen)
            await pilot.press("enter")
            text = await wait_screen(pilot, lambda t: "firmware \\x1b]0;PWNED" in t and "ALL SYSTEMS" in t)
            assert "1 critical alert" in text
            assert_no_device_escapes(screen_ansi(app))

        drive(stack, (200, 50), scenario)
    finally:
        client.loop_stop()
        client.disconnect()
