"""Device secrets: generation, and slow salted hashing (scrypt) for storage.

Hashing is deliberately slow (about 30-60 ms), so callers on an event loop must run
:func:`verify_secret` in a worker thread; :mod:`broker.auth` does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_N, _R, _P = 2**14, 8, 1
_SCHEME = "scrypt"


def new_secret() -> str:
    """A fresh random secret, URL-safe, 32 bytes of entropy."""
    return secrets.token_urlsafe(32)


def hash_secret(secret: str, *, n: int = _N) -> str:
    """A self-describing salted scrypt hash of ``secret``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=n, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"{_SCHEME}${n}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_secret(secret: str, stored: str) -> bool:
    """True when ``secret`` matches the ``stored`` hash. Slow by design; never call it on an event loop."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != _SCHEME:
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            secret.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)
