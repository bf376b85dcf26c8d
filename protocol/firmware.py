"""Firmware updates over MQTT: the four messages of the transfer (firmware_protocol.md section 12).

    hub -> device   d/<id>/o   FirmwareOffer    retained: "install this image" (job, version, size, SHA-256)
    device -> hub   d/<id>/g   FirmwareRequest  "send me ``length`` bytes at ``offset``" (the device picks the size)
    hub -> device   d/<id>/f   FirmwareChunk    the bytes, with their CRC-32 (or ``error`` and no bytes)
    device -> hub   d/<id>/u   FirmwareReport   the job's state on the device (downloading ... rolled_back)

The device drives the transfer: one request, one chunk, so it never holds more than one chunk
and never receives bytes it did not ask for. Progress needs no message of its own: the offset of
each request is what the device has confirmed. The codec is :mod:`protocol.codec` (the models are
registered there like every other message); this module holds the models, the limits of a chunk
and the checks both sides share (CRC-32, SHA-256).
"""

from __future__ import annotations

import hashlib
import zlib
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from protocol.models import U32, ShortText, Text, WireModel
from protocol.topics import MessageClass

MAX_CHUNK_CBOR = 4000
"""Largest ``length`` a device may ask for when it reads CBOR: chunk and its fields fit the 4096-byte payload limit."""
MAX_CHUNK_JSON = 2900
"""The same for a JSON device: base64 turns 2900 bytes into 3868 characters."""

JobId = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class FirmwareState(StrEnum):
    """What a device reports about a job (in this order in the binary form)."""

    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    APPLYING = "applying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


FIRMWARE_STATES = tuple(FirmwareState)
FINAL_FIRMWARE_STATES = frozenset({FirmwareState.SUCCEEDED, FirmwareState.FAILED, FirmwareState.ROLLED_BACK})


class FirmwareOffer(WireModel):
    """The image a device should run (retained on ``d/<id>/o``); an empty retained payload withdraws it."""

    job: JobId
    version: ShortText
    size: Annotated[int, Field(ge=1, le=2**32 - 1)]
    sha256: Sha256Hex


class FirmwareRequest(WireModel):
    """A device asks for ``length`` bytes of the job's image starting at ``offset``."""

    job: JobId
    offset: U32
    length: Annotated[int, Field(ge=1, le=MAX_CHUNK_CBOR)]


class FirmwareChunk(WireModel):
    """The answer to one request: ``data`` with its CRC-32, or ``error`` and no data."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    job: JobId
    offset: U32
    data: Annotated[bytes, Field(max_length=MAX_CHUNK_CBOR)] = b""
    crc: U32 = 0
    error: Text = ""

    @model_validator(mode="after")
    def _data_or_error(self) -> FirmwareChunk:
        if bool(self.data) == bool(self.error):
            raise ValueError("a chunk carries either data or an error")
        return self


class FirmwareReport(WireModel):
    """A device's state for a job: ``progress`` is bytes confirmed, ``detail`` the reason of a failure.

    ``boot`` is the boot the device sends it from (0: not given). It matters in ``applying``: the hub
    tells a rollback (the device came back on a later boot with the old version) from the boot it
    applied on, and its own view of the device's boot can be one behind after a power loss
    mid-download (the birth of that reboot and this report travel on different sessions)."""

    job: JobId
    state: Annotated[FirmwareState, Field(strict=False)]
    progress: U32 = 0
    detail: Text = ""
    boot: U32 = 0


FIRMWARE_MODELS: dict[MessageClass, type[WireModel]] = {
    MessageClass.FIRMWARE_OFFER: FirmwareOffer,
    MessageClass.FIRMWARE_REQUEST: FirmwareRequest,
    MessageClass.FIRMWARE_CHUNK: FirmwareChunk,
    MessageClass.FIRMWARE_REPORT: FirmwareReport,
}
"""The model of each firmware topic class (merged into ``protocol.codec.MODEL_FOR``)."""

FIRMWARE_SHORT_KEYS: dict[type[WireModel], dict[str, str]] = {
    FirmwareOffer: {"job": "j", "version": "v", "size": "z", "sha256": "h"},
    FirmwareRequest: {"job": "j", "offset": "o", "length": "n"},
    FirmwareChunk: {"job": "j", "offset": "o", "data": "d", "crc": "c", "error": "e"},
    FirmwareReport: {"job": "j", "state": "s", "progress": "p", "detail": "d", "boot": "b"},
}
"""One-letter CBOR keys (merged into ``protocol.codec.SHORT_KEYS``; the table in section 12.3)."""


def crc32(data: bytes) -> int:
    """CRC-32 (IEEE 802.3, the one of zlib, Ethernet and PNG) of ``data``."""
    return zlib.crc32(data) & 0xFFFFFFFF


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def chunk_for(job: str, image: bytes, offset: int, length: int, max_length: int) -> FirmwareChunk:
    """The answer to a request for ``length`` bytes at ``offset`` of ``image`` (capped at ``max_length``)."""
    if offset >= len(image):
        return FirmwareChunk(job=job, offset=offset, error=f"offset {offset} beyond the image ({len(image)} bytes)")
    data = image[offset:offset + min(length, max_length)]
    return FirmwareChunk(job=job, offset=offset, data=data, crc=crc32(data))


def max_chunk(encoding: str) -> int:
    """The largest chunk a device reading ``encoding`` ("json" or "cbor") can be sent."""
    return MAX_CHUNK_JSON if encoding == "json" else MAX_CHUNK_CBOR
