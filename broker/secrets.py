"""Secrets: generation, and salted hashing for storage, with the scheme chosen by who made the secret.

Two schemes, named in every stored hash (``<scheme>$...``), so each hash says how to verify it:

- ``hmac-sha256$<salt>$<digest>``: HMAC-SHA-256 of the secret keyed with a random 16-byte salt.
  Only for secrets the registry generated itself (:func:`new_secret`: 32 random bytes, 256 bits).
  A slow KDF exists to make guessing a *low-entropy* secret expensive; against 2^256 candidates
  brute force is infeasible at any hash speed (even 10^12 guesses/s would need ~10^57 years),
  so scrypt would add nothing but cost: about 250 ms of CPU per first login on the 2-core test
  machine, which capped an honest device's first login and the fleet's connect rate (issue 14).
  Verifying takes about 1 µs, so the broker checks it on the event loop.
- ``scrypt$N$r$p$<salt>$<digest>``: for every secret a person may have chosen (the operator's,
  a hub password from ``FLEET_HUB_PASSWORD``, a secret passed explicitly), where a KDF is what
  keeps an offline attack on a stolen database slow. Checked in a worker thread, never on the loop.

Nothing is migrated: existing scrypt hashes keep verifying as scrypt. They are not re-hashed to
HMAC on a successful login either, because the registry cannot tell whether that secret was
generated or typed; a device given a new generated secret (``Registry.add(id, replace=True)``,
``fleet broker export-acl --rotate``) gets the fast scheme.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from enum import Enum

_N, _R, _P = 2**14, 8, 1
_SALT_BYTES = 16
MIN_GENERATED_BYTES = 16
"""Entropy (bytes) a secret must be generated with to be stored with the fast scheme (128 bits)."""


class Scheme(str, Enum):
    """How a stored hash was made (its prefix up to the first ``$``)."""

    HMAC_SHA256 = "hmac-sha256"
    """Generated, high-entropy secrets: fast keyed hash."""
    SCRYPT = "scrypt"
    """Secrets a person may have chosen: slow KDF."""


def new_secret() -> str:
    """A fresh random secret, URL-safe, 32 bytes of entropy."""
    return secrets.token_urlsafe(32)


def hash_secret(secret: str, *, scheme: Scheme = Scheme.SCRYPT, n: int = _N) -> str:
    """A self-describing salted hash of ``secret``.

    The default is scrypt; pass ``scheme=Scheme.HMAC_SHA256`` only for a secret made by
    :func:`new_secret` (see the module docstring for why that is as safe).
    """
    salt = secrets.token_bytes(_SALT_BYTES)
    b64 = base64.b64encode
    if scheme is Scheme.HMAC_SHA256:
        if len(secret) * 6 // 8 < MIN_GENERATED_BYTES:  # a guard against a caller passing a short secret
            raise ValueError("the fast hash scheme is for generated secrets of at least 128 bits")
        digest = hmac.digest(salt, secret.encode(), "sha256")
        return f"{scheme.value}${b64(salt).decode()}${b64(digest).decode()}"
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=n, r=_R, p=_P, dklen=32)
    return f"{Scheme.SCRYPT.value}${n}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def scheme_of(stored: str) -> Scheme | None:
    """The scheme of a stored hash, or None when it is not one of ours."""
    try:
        return Scheme(stored.split("$", 1)[0])
    except ValueError:
        return None


def is_fast(stored: str) -> bool:
    """True when verifying ``stored`` costs microseconds (safe on an event loop)."""
    return scheme_of(stored) is Scheme.HMAC_SHA256


def verify_secret(secret: str, stored: str) -> bool:
    """True when ``secret`` matches the ``stored`` hash.

    Slow for scrypt hashes: call it on an event loop only when :func:`is_fast` says so.
    """
    try:
        scheme = scheme_of(stored)
        if scheme is Scheme.HMAC_SHA256:
            _, salt, digest = stored.split("$")
            expected = base64.b64decode(digest)
            got = hmac.digest(base64.b64decode(salt), secret.encode(), "sha256")
        elif scheme is Scheme.SCRYPT:
            _, n, r, p, salt, digest = stored.split("$")
            expected = base64.b64decode(digest)
            got = hashlib.scrypt(
                secret.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
            )
        else:
            return False
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)
