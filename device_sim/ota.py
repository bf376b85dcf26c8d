"""A simulated device's firmware updater (firmware_protocol.md section 12), with faults on demand.

Each :class:`~device_sim.device.SimDevice` has one :class:`OtaAgent`. The agent keeps what a real
device keeps in flash across a power loss (the running version, the download slot, the confirmed
offset, the job, the jobs it refused) and what it keeps in RAM (the request in flight), and it
speaks only the four firmware messages through :mod:`protocol`.

Faults (per device, from :class:`OtaPlan`):

==============  ===========================================================================
corrupt-chunk   one chunk arrives with a flipped byte: its CRC-32 fails, it is fetched again
power-loss      the power goes at 40 % of the download: socket dropped, reboot, and the
                download resumes from the last confirmed chunk
bad-image       the new image fails its self-test after the reboot: the boot loader goes back
                to the old one, the birth shows the old version, the device reports rolled_back
offline         the device stays offline until :meth:`OtaAgent.release`, or ``offline_s``
                after it first tried to connect (a device that misses the whole first stage)
refuse          the device declines every offer, reporting ``failed`` with its reason (a
                device whose battery is too low to risk a flash write)
slow-download   the device waits ``slow_s`` before each chunk request (a slow or congested
                link): its download takes longer and holds a ``max_concurrent`` place
==============  ===========================================================================

``fleet sim --ota-fault KIND=FRACTION`` spreads them over the fleet (:func:`ota_plan`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from device_sim.faults import OtaFault, assign_faults
from device_sim.mqtt import MqttError
from protocol import MessageClass, decode, encode, topic_for
from protocol.firmware import (
    FirmwareChunk,
    FirmwareOffer,
    FirmwareReport,
    FirmwareRequest,
    FirmwareState,
    crc32,
    max_chunk,
    sha256_hex,
)

if TYPE_CHECKING:
    from device_sim.device import SimDevice

log = logging.getLogger("fleet.sim.ota")


OFFLINE_FOR_S = 60.0
"""``fleet sim --ota-offline-for``'s default: from the command line an ``offline`` device must come
back by itself (a library caller, such as a test, may instead release it when it wants)."""


@dataclass(frozen=True)
class OtaPlan:
    """Firmware behaviour of a simulated fleet: chunk size, slot size, timers, faults per device id."""

    chunk_size: int = 4000
    """What the devices ask for per request (capped by the protocol's limit for their encoding)."""
    slot_bytes: int = 1024 * 1024
    """The download slot (the B partition); a larger image is refused with a reason."""
    stall_s: float = 60.0
    """No answer to a request for this long: ask again (the hub may have restarted)."""
    max_chunk_retries: int = 3
    offline_s: float | None = None
    """An ``offline`` device comes online this long after its first try (None: when released)."""
    slow_s: float = 1.0
    """A ``slow-download`` device waits this long before each chunk request."""
    faults: dict[str, frozenset[OtaFault]] = field(default_factory=dict)


def ota_plan(device_ids: list[str], fractions: dict[OtaFault, float], seed: int, **settings: float | int) -> OtaPlan:
    """A plan whose faults cover ``fractions`` of ``device_ids``, chosen reproducibly from ``seed``
    (as ``--fault`` chooses); ``settings`` are the other :class:`OtaPlan` fields that were given."""
    by_index = assign_faults(fractions, len(device_ids), seed)
    return OtaPlan(faults={device_ids[i]: kinds for i, kinds in by_index.items()}, **settings)  # type: ignore[arg-type]


def publish_wire_bytes(topic: str, payload: bytes, qos: int) -> int:
    """Bytes of a PUBLISH on the wire (fixed header, remaining length, topic, packet id, payload)."""
    body = 2 + len(topic.encode()) + (2 if qos else 0) + len(payload)
    length_bytes = 1 if body < 128 else 2 if body < 16384 else 3 if body < 2097152 else 4
    return 1 + length_bytes + body


PUBACK_BYTES = 4


@dataclass
class OtaCounters:
    """What one device's updates cost and met with (summed by the benchmark)."""

    wire_bytes: int = 0
    chunks: int = 0
    refetched: int = 0
    resumed_at: list[int] = field(default_factory=list)
    rolled_back: int = 0
    refused: list[str] = field(default_factory=list)


class OtaAgent:
    """One device's firmware updater; the device calls :meth:`on_message`, :meth:`on_online` and reads :attr:`version`."""

    def __init__(self, device: SimDevice, plan: OtaPlan, version: str) -> None:
        self.device = device
        self.plan = plan
        self.faults = plan.faults.get(device.device_id, frozenset())
        self.topic_o = topic_for(device.device_id, MessageClass.FIRMWARE_OFFER)
        self.topic_f = topic_for(device.device_id, MessageClass.FIRMWARE_CHUNK)
        self.topic_g = topic_for(device.device_id, MessageClass.FIRMWARE_REQUEST)
        self.topic_u = topic_for(device.device_id, MessageClass.FIRMWARE_REPORT)
        self.counters = OtaCounters()
        # "flash": survives a reboot or a power loss
        self._running = version
        self.offer: FirmwareOffer | None = None
        self.slot = bytearray()
        self.confirmed = 0
        self.refused_jobs: set[str] = set()
        self._applying: tuple[FirmwareOffer, int] | None = None
        """(offer, boot) once the new image is written and the device reboots into it."""
        self._report_after_boot: FirmwareReport | None = None
        # RAM
        self._outstanding: int | None = None
        self._stall: asyncio.TimerHandle | None = None
        self._retries = 0
        self._corrupted = False
        self._power_lost = False
        self._released = asyncio.Event()
        if OtaFault.OFFLINE not in self.faults:
            self._released.set()

    @property
    def subscriptions(self) -> list[tuple[str, int]]:
        """The device's firmware topics, both at QoS 1."""
        return [(self.topic_o, 1), (self.topic_f, 1)]

    @property
    def version(self) -> str:
        """The firmware the device runs; after the reboot into a new image, the boot loader's verdict."""
        if self._applying is not None and self.device.boot > self._applying[1]:
            offer, _ = self._applying
            self._applying = None
            if OtaFault.BAD_IMAGE in self.faults:
                self.counters.rolled_back += 1
                self.refused_jobs.add(offer.job)  # its offer may still be retained: never install it again
                self._report_after_boot = FirmwareReport(job=offer.job, state=FirmwareState.ROLLED_BACK,
                                                         detail=f"self-test of {offer.version} failed; back on {self._running}")
            else:
                self._running = offer.version
            self._forget_job()
        return self._running

    @property
    def running(self) -> str:
        """The version the device last booted (no side effect, for counting)."""
        return self._running

    # ------------------------------------------------------------------ hooks from the device

    async def may_connect(self) -> None:
        """Before each connect: the request in flight is gone with the old link; the offline fault holds the device back."""
        self._outstanding = None
        if not self._released.is_set() and self.plan.offline_s is not None:
            try:
                async with asyncio.timeout(self.plan.offline_s):  # not wait_for: see mqtt.py
                    await self._released.wait()
            except TimeoutError:
                self._released.set()
        await self._released.wait()

    def release(self) -> None:
        """End the offline fault: the device connects."""
        self._released.set()

    def on_online(self) -> None:
        """After the birth: report what the reboot showed; a download in progress resumes when the retained offer arrives."""
        _ = self.version
        if self._report_after_boot is not None:
            self._send(self.topic_u, self._report_after_boot)
            self._report_after_boot = None

    def handles(self, topic: str) -> bool:
        """True for the firmware topics."""
        return topic in (self.topic_o, self.topic_f)

    def on_message(self, topic: str, payload: bytes) -> None:
        """An offer or a chunk (raises ProtocolError for a payload that does not decode)."""
        self.counters.wire_bytes += publish_wire_bytes(topic, payload, 1) + PUBACK_BYTES
        if topic == self.topic_o:
            if not payload:
                self._withdrawn()
                return
            offer = decode(MessageClass.FIRMWARE_OFFER, payload)
            assert isinstance(offer, FirmwareOffer)
            self._on_offer(offer)
        else:
            chunk = decode(MessageClass.FIRMWARE_CHUNK, payload)
            assert isinstance(chunk, FirmwareChunk)
            self._on_chunk(chunk)

    # ------------------------------------------------------------------ the transfer

    def _on_offer(self, offer: FirmwareOffer) -> None:
        if offer.version == self.version or offer.job in self.refused_jobs:
            return
        if self._applying is not None:
            return  # rebooting into it
        if OtaFault.REFUSE in self.faults:
            self._refuse(offer, "declined by the device: battery too low for a flash write")
            return
        if offer.size > self.plan.slot_bytes:
            self._refuse(offer, f"image of {offer.size} bytes does not fit the {self.plan.slot_bytes}-byte slot")
            return
        if self.offer is None or self.offer.job != offer.job or self.offer.sha256 != offer.sha256:
            self.offer, self.slot, self.confirmed = offer, bytearray(), 0
            self._report(FirmwareState.DOWNLOADING, 0)
        else:
            self.counters.resumed_at.append(self.confirmed)
        if self._outstanding is None:
            self._request()

    def _withdrawn(self) -> None:
        if self.offer is not None and self._applying is None:
            log.info("offer withdrawn device_id=%s job=%s at=%s", self.device.device_id, self.offer.job, self.confirmed)
            self._forget_job()

    def _on_chunk(self, chunk: FirmwareChunk) -> None:
        offer = self.offer
        if offer is None or chunk.job != offer.job or chunk.offset != self._outstanding:
            return  # a late duplicate of an answer already handled
        self._outstanding = None
        if self._stall is not None:
            self._stall.cancel()
        if chunk.error:
            self._refuse(offer, f"hub refused chunk at {chunk.offset}: {chunk.error}"[:256], report=chunk.error != "aborted")
            return
        data = chunk.data
        if OtaFault.CORRUPT_CHUNK in self.faults and not self._corrupted and chunk.offset >= 2 * len(data):
            self._corrupted = True
            data = bytes([data[0] ^ 0xFF]) + data[1:]  # a bit error the transport did not catch
        if crc32(data) != chunk.crc:
            self._retries += 1
            self.counters.refetched += 1
            if self._retries > self.plan.max_chunk_retries:
                self._refuse(offer, f"chunk at {chunk.offset} failed its CRC-32 {self._retries} times")
                return
            self._request()
            return
        self._retries = 0
        self.slot[chunk.offset:chunk.offset + len(data)] = data
        self.confirmed = chunk.offset + len(data)
        self.counters.chunks += 1
        if (OtaFault.POWER_LOSS in self.faults and not self._power_lost and self.confirmed >= 0.4 * offer.size
                and self.confirmed < offer.size):
            self._power_lost = True
            self._lose_power()
            return
        if self.confirmed < offer.size:
            self._request()
            return
        self._report(FirmwareState.VERIFYING, self.confirmed)
        digest = sha256_hex(bytes(self.slot))
        if digest != offer.sha256:
            self._refuse(offer, f"sha256 mismatch: got {digest[:16]}..., offer says {offer.sha256[:16]}...")
            return
        self._report(FirmwareState.APPLYING, self.confirmed)
        self._applying = (offer, self.device.boot)
        self.device._reboot_pending = True
        self.device._goodbye()  # offline status, DISCONNECT; the run loop reboots into the new image

    def _request(self) -> None:
        offer = self.offer
        assert offer is not None
        n = min(self.plan.chunk_size, max_chunk(self.device.encoding), offer.size - self.confirmed)
        self._outstanding = self.confirmed
        if self._stall is not None:
            self._stall.cancel()
        request = FirmwareRequest(job=offer.job, offset=self.confirmed, length=n)
        loop = asyncio.get_running_loop()
        if OtaFault.SLOW_DOWNLOAD in self.faults:
            self._stall = loop.call_later(self.plan.slow_s, self._send_request, request)
        else:
            self._send_request(request)

    def _send_request(self, request: FirmwareRequest) -> None:
        if self.offer is None or self.offer.job != request.job or self._outstanding != request.offset:
            return  # the job or the link changed while a slow device waited
        self._send(self.topic_g, request)
        self._stall = asyncio.get_running_loop().call_later(self.plan.stall_s, self._stalled, request.offset)

    def _stalled(self, offset: int) -> None:
        if self._outstanding == offset and self.offer is not None and self.device.client is not None:
            log.info("chunk request stalled device_id=%s offset=%s: asking again", self.device.device_id, offset)
            self._request()

    def _lose_power(self) -> None:
        log.info("power loss device_id=%s confirmed=%s", self.device.device_id, self.confirmed)
        self._outstanding = None
        client = self.device.client
        if client is not None:
            client.abort()
        self.device._reboot_pending = True

    def _refuse(self, offer: FirmwareOffer, why: str, report: bool = True) -> None:
        self.refused_jobs.add(offer.job)
        self.counters.refused.append(why)
        if report:
            # the offer refused may not be the job in progress (a slot too small, a declined offer)
            self._send(self.topic_u, FirmwareReport(job=offer.job, state=FirmwareState.FAILED,
                                                    progress=self.confirmed if self.offer is offer else 0,
                                                    detail=why))
        if self.offer is offer or self.offer is None:
            self._forget_job()

    def _forget_job(self) -> None:
        self.offer, self.slot, self.confirmed, self._outstanding, self._retries = None, bytearray(), 0, None, 0
        if self._stall is not None:
            self._stall.cancel()

    def _report(self, state: FirmwareState, progress: int, detail: str = "") -> None:
        assert self.offer is not None
        self._send(self.topic_u, FirmwareReport(job=self.offer.job, state=state, progress=progress, detail=detail,
                                                boot=self.device.boot))

    def _send(self, topic: str, message: FirmwareRequest | FirmwareReport) -> None:
        client = self.device.client
        if client is None or not client.is_connected:
            return
        payload = encode(message, self.device.encoding)
        self.counters.wire_bytes += publish_wire_bytes(topic, payload, 1) + PUBACK_BYTES
        try:
            client.publish(topic, payload, qos=1)
        except MqttError:
            pass  # the link dropped: a report is lost, a request is made again after the reconnect
