"""The alarm engine as a pure state machine on an explicit clock: thresholds, hysteresis, flaps, presence rules."""

from __future__ import annotations

import pytest

from hub.alarm_engine import AlarmEngine, DeviceState
from hub.rules import RuleError, RuleKind, make_rule


def engine(*rules, flap_window_s: float = 300.0) -> AlarmEngine:  # type: ignore[no-untyped-def]
    e = AlarmEngine(flap_window_s)
    e.set_rules(rules)
    return e


def feed(e: AlarmEngine, device: str, metric: str, values: list[tuple[float, float]]) -> list[str]:
    """(time, value) readings of one device; the transitions they caused, as 'what@time'."""
    for ts, v in values:
        e.on_reading(device, metric, v, ts)
    return [f"{t.what}@{t.ts:g}" for t in e.take()]


HOT = make_rule(name="hot", kind=RuleKind.ABOVE, metric="temperature", threshold=40, clear=38, for_s=5)


def test_an_alarm_needs_the_condition_to_hold_for_its_duration() -> None:
    e = engine(HOT)
    assert feed(e, "d1", "temperature", [(0, 41), (3, 42), (4, 39)]) == []  # dipped below 40 before 5 s
    assert feed(e, "d1", "temperature", [(10, 41), (14, 41)]) == []
    assert feed(e, "d1", "temperature", [(15, 41.5)]) == ["raise@15"]


def test_a_pending_condition_raises_on_the_clock_without_a_new_reading() -> None:
    e = engine(HOT)
    feed(e, "d1", "temperature", [(0, 45)])
    e.tick(4.9)
    assert e.take() == []
    e.tick(5.0)
    assert [(t.what, t.device_id, t.value) for t in e.take()] == [("raise", "d1", 45)]


def test_hysteresis_a_value_between_clear_and_threshold_neither_raises_nor_clears() -> None:
    e = engine(make_rule(name="hot", kind=RuleKind.ABOVE, metric="temperature", threshold=40, clear=38))
    assert feed(e, "d1", "temperature", [(0, 41)]) == ["raise@0"]
    assert feed(e, "d1", "temperature", [(1, 39.9), (2, 38.5), (3, 40.5), (4, 38.0)]) == []
    assert feed(e, "d1", "temperature", [(5, 37.9)]) == ["clear@5"]


def test_a_value_hovering_at_the_threshold_folds_into_one_alarm_with_flaps() -> None:
    e = engine(make_rule(name="hot", kind=RuleKind.ABOVE, metric="temperature", threshold=40), flap_window_s=60)
    values = [(float(i), 40.5 if i % 2 == 0 else 39.5) for i in range(20)]  # crosses 19 times
    got = feed(e, "d1", "temperature", values)
    assert got[0] == "raise@0" and got.count("raise@0") == 1
    assert sum(1 for g in got if g.startswith("raise")) == 1
    assert sum(1 for g in got if g.startswith("reopen")) == 9
    assert e.counters.flaps == 9 and e.counters.raised == 1
    # outside the flap window a new occurrence is a new alarm
    e.take()
    assert feed(e, "d1", "temperature", [(200, 41)]) == ["raise@200"]


def test_below_rules_and_their_clear_threshold() -> None:
    e = engine(make_rule(name="flat", kind=RuleKind.BELOW, metric="battery_v", threshold=3.4, clear=3.5))
    assert feed(e, "d1", "battery_v", [(0, 3.45), (1, 3.39)]) == ["raise@1"]
    assert feed(e, "d1", "battery_v", [(2, 3.45), (3, 3.51)]) == ["clear@3"]


def test_devices_are_watched_apart_and_group_rules_see_only_their_group() -> None:
    e = engine(make_rule(name="cellar-hot", kind=RuleKind.ABOVE, metric="temperature", threshold=20, group="cellar"))
    e.groups = {"c1": "cellar", "a1": "attic"}
    assert feed(e, "a1", "temperature", [(0, 30)]) == []
    assert feed(e, "c1", "temperature", [(0, 30)]) == ["raise@0"]
    assert feed(e, "x1", "temperature", [(0, 30)]) == []  # no group


def test_readings_of_metrics_without_rules_cost_nothing() -> None:
    e = engine(HOT)
    e.on_readings([("d1", 1, 1, 0, "humidity", 99.0, 0.0, 0.0, 0)] * 100)
    assert e.counters.evaluations == 0 and e.watches == {}
    e.on_readings([("d1", 1, 1, 0, "temperature", 20.0, 0.0, 0.0, 0)] * 100)
    assert e.counters.evaluations == 100 and not e.watches.get("hot")  # a good value creates no state


def dev(device_id: str, state: str, since: float, last_data: float | None = None, group: str | None = None,
        sleep_s: int = 0) -> DeviceState:
    return DeviceState(device_id, state, "x", since, last_data, sleep_s, group, last_data)


def test_offline_rule_fires_after_its_duration_and_never_for_a_sleeping_device() -> None:
    e = engine(make_rule(name="gone", kind=RuleKind.OFFLINE, for_s=900))
    e.tick(1000, [dev("d1", "offline", 200), dev("s1", "sleeping", 0, sleep_s=3600)])
    assert e.take() == []
    e.tick(1100, [dev("d1", "offline", 200), dev("s1", "sleeping", 0, sleep_s=3600)])
    assert [(t.what, t.device_id) for t in e.take()] == [("raise", "d1")]
    e.tick(1200, [dev("d1", "online", 1150)])
    assert [(t.what, t.device_id) for t in e.take()] == [("clear", "d1")]


def test_no_data_rule_counts_from_the_last_telemetry_and_spares_sleeping_devices() -> None:
    e = engine(make_rule(name="quiet", kind=RuleKind.NO_DATA, for_s=600))
    devices = [dev("d1", "online", 0, last_data=100), dev("s1", "sleeping", 0, last_data=0, sleep_s=3600)]
    e.tick(650, devices)
    assert e.take() == []
    e.tick(700, devices)
    assert [(t.what, t.device_id) for t in e.take()] == [("raise", "d1")]
    e.tick(710, [dev("d1", "online", 0, last_data=705)])
    assert [t.what for t in e.take()] == ["clear"]


def test_a_changed_rule_forgets_the_old_rules_state() -> None:
    e = engine(HOT)
    feed(e, "d1", "temperature", [(0, 45)])
    assert e.pending
    e.set_rules([make_rule(name="hot", kind=RuleKind.ABOVE, metric="temperature", threshold=50)])
    assert not e.pending and "hot" not in e.watches


@pytest.mark.parametrize("fields, says", [
    ({"kind": "above", "threshold": 40}, "needs a metric"),
    ({"kind": "above", "metric": "temperature", "threshold": 40, "clear": 41}, "clear threshold"),
    ({"kind": "offline", "threshold": 3}, "takes no threshold"),
    ({"kind": "offline", "action_args": {"a": 1}}, "need an action command"),
    ({"kind": "offline", "action_command": "x" * 40}, "action_command"),
    ({"kind": "offline", "name": "bad name!"}, "name"),
])
def test_bad_rules_are_refused_in_one_line(fields: dict, says: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(RuleError) as err:
        make_rule(**({"name": "r"} | fields))
    assert says in str(err.value) and "\n" not in str(err.value)
