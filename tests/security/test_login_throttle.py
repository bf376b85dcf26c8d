"""Password guessing backs off per device id and per source address; honest devices still log in at once.

The latency figure is printed (bench/flood.py measures it with the broker in its own process);
the assertions check the mechanism: guesses during a back-off cost no hash, and honest logins
(first-time, so each needs a hash) are not queued behind the guesses.
"""

from __future__ import annotations

import statistics
import threading
import time

from raw_mqtt import raw_session

from broker.background import BackgroundBroker
from broker.registry import Registry
from support import add_device


def _on_loop(fn):  # type: ignore[no-untyped-def]
    async def run():  # type: ignore[no-untyped-def]
        return fn()
    return run


def counters(broker: BackgroundBroker) -> dict[str, float]:
    return broker.call(_on_loop(broker.broker.counters))  # type: ignore[union-attr]


def wait_throttled(broker: BackgroundBroker, above: float, timeout: float = 20.0) -> bool:
    """Wait until the broker has refused a login without checking it (a back-off is in force)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if counters(broker)["logins_throttled"] > above:
            return True
        time.sleep(0.05)
    return False


def first_login_s(port: int, registry: Registry, device_id: str) -> float:
    creds = add_device(registry, device_id)
    started = time.perf_counter()
    sock, _, rc = raw_session(port, device_id, username=device_id, password=creds.password)
    elapsed = time.perf_counter() - started
    sock.close()
    assert rc == 0
    return elapsed


class Guesser:
    """Threads sending wrong-password CONNECTs back to back for the ids ``ids`` (round robin)."""

    def __init__(self, port: int, ids: list[str], threads: int = 4, source: str | None = None) -> None:
        self.port, self.ids, self.source = port, ids, source
        self.answers = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def start(self) -> Guesser:
        for t in self._threads:
            t.start()
        return self

    def _run(self, offset: int) -> None:
        n = offset
        while not self._stop.is_set():
            user = self.ids[n % len(self.ids)]
            try:
                sock, _, rc = raw_session(self.port, user, username=user, password=f"guess-{n}", timeout=10,
                                          source=self.source)
                sock.close()
                assert rc == 5
                self.answers += 1
            except OSError:
                pass
            n += len(self._threads)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)


def test_guessing_one_device_id_backs_off_and_honest_first_logins_stay_fast(embedded_broker, registry):
    port = embedded_broker.port
    registry.add("victim", secret="a secret a person chose")  # scrypt: guesses cost real hash work
    baseline = [first_login_s(port, registry, f"calm-{i}") for i in range(5)]
    before = counters(embedded_broker)
    guesser = Guesser(port, ["victim"]).start()
    assert wait_throttled(embedded_broker, before["logins_throttled"]), "the guessed id never backed off"
    under_attack = [first_login_s(port, registry, f"honest-{i}") for i in range(10)]
    guesser.stop()
    after = counters(embedded_broker)
    throttled = after["logins_throttled"] - before["logins_throttled"]
    checked_failures = (after["logins_refused"] - before["logins_refused"]) - throttled
    print(f"login under guessing: {guesser.answers} guesses answered; hashes spent on them {checked_failures:.0f}; "
          f"honest first login median {statistics.median(baseline) * 1000:.0f} ms -> "
          f"{statistics.median(under_attack) * 1000:.0f} ms (max {max(under_attack) * 1000:.0f} ms)")
    assert throttled > 0 and checked_failures <= 6, "guesses during the back-off must not be hashed"
    # not queued behind guesses: an honest login costs one hash, as without the attack
    assert statistics.median(under_attack) < max(0.1, 3 * statistics.median(baseline))


def test_a_device_that_logged_in_before_is_not_locked_out_by_guessing(embedded_broker, registry):
    port = embedded_broker.port
    creds = add_device(registry, "owner")
    sock, _, rc = raw_session(port, "owner", username="owner", password=creds.password)
    sock.close()
    assert rc == 0
    guesser = Guesser(port, ["owner"], threads=2).start()
    assert wait_throttled(embedded_broker, 0), "the guessed id never backed off"
    sock, _, rc = raw_session(port, "owner", username="owner", password=creds.password)
    sock.close()
    guesser.stop()
    assert rc == 0, "the owner's known secret must pass during a back-off of its id"


def test_guessing_across_many_ids_backs_off_the_source_address(embedded_broker, registry):
    port = embedded_broker.port
    targets = [add_device(registry, f"target-{i}").username for i in range(40)]
    guesser = Guesser(port, targets, threads=4, source="127.0.0.2").start()
    wait_throttled(embedded_broker, 0, timeout=30)
    honest = [first_login_s(port, registry, f"elsewhere-{i}") for i in range(5)]  # from 127.0.0.1
    guesser.stop()
    c = counters(embedded_broker)
    checked_failures = c["logins_refused"] - c["logins_throttled"]
    print(f"address back-off: {guesser.answers} guesses over 40 ids, {checked_failures:.0f} hashed; "
          f"honest first login from another address median {statistics.median(honest) * 1000:.0f} ms")
    assert c["logins_throttled"] > 0, "the guessing address never backed off"
    assert checked_failures <= 40, "an address past its free failures must not get more hashes"
