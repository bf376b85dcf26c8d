"""Reading values packed losslessly into small integers.

Sensor values are decimals of a fixed resolution (21.53 °C, 48.2 %, 3.917 V) but a REAL costs
8 bytes on disk. A value that is exactly ``m / 10**k`` for some ``k`` in 0..6 (the division gives
back the very same double) is stored as the integer ``m * 8 + k``, which SQLite keeps in 1 to 4
bytes for usual magnitudes; any other value stays a REAL. Readers tell the two apart by type:
an integer is packed, a float is the value itself. The column has no declared type, so SQLite
never converts one into the other.
"""

from __future__ import annotations

_SCALES = tuple(10**k for k in range(7))
_FLOAT_SCALES = tuple(float(x) for x in _SCALES)
_MAX_PACKED = 2**50  # beyond this an integer takes 8 bytes anyway; keep the REAL
_CACHE: dict[float, int | float] = {}
_CACHE_MAX = 1 << 16


def pack(value: float) -> int | float:
    """``value`` as stored: a packed integer when that is exact, else the float itself."""
    # sensors repeat their values (a quantized ADC, a slow signal): most calls are one dict look-up
    stored = _CACHE.get(value)
    if stored is not None:
        return stored
    stored = _pack(value)
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[value] = stored
    return stored


def _pack(value: float) -> int | float:
    for k, scale in enumerate(_FLOAT_SCALES):
        scaled = value * scale
        if abs(scaled) >= _MAX_PACKED:
            break
        m = round(scaled)
        if m / scale == value:  # m < 2**50 converts exactly, so this is the correctly rounded m / 10**k
            return m * 8 + k
    return float(value)


def unpack(stored: int | float) -> float:
    """The reading value of a stored one (exactly the double that was packed)."""
    if isinstance(stored, int):
        return (stored >> 3) / _SCALES[stored & 7]
    return stored


SQL_UNPACK = ("(CASE WHEN typeof({col}) = 'integer' THEN ({col} >> 3) * 1.0 / "
              "(CASE {col} & 7 WHEN 0 THEN 1 WHEN 1 THEN 10 WHEN 2 THEN 100 WHEN 3 THEN 1000 WHEN 4 THEN 10000"
              " WHEN 5 THEN 100000 ELSE 1000000 END) ELSE {col} END)")
"""The same as :func:`unpack` in SQL, for the compatibility views."""
