"""Short-lived access tokens: HS256 JWTs signed with a key both servers read from one file.

They are never stored: the resource server checks the signature, expiry and audience, and
asks whether the token's `grant_id` (the refresh-token family in authstore) was revoked.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import jwt

ALGORITHM = "HS256"


def load_key(path: str) -> bytes:
    key = Path(path).read_bytes().strip()
    if len(key) < 32:
        raise SystemExit(f"{path}: a signing key needs at least 32 bytes")
    return key


def mint(key: bytes, *, issuer: str, audience: str, client_id: str, user_id: str,
         scope: str | None, grant_id: str, ttl: int) -> str:
    now = int(time.time())
    claims = {"iss": issuer, "aud": audience, "sub": user_id, "client_id": client_id,
              "scope": scope or "", "grant_id": grant_id, "iat": now, "exp": now + ttl,
              "jti": uuid.uuid4().hex}
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify(key: bytes, token: str, *, issuer: str, audience: str | None) -> dict[str, Any] | None:
    """The claims of a valid token for `audience` (any audience when None), else None."""
    try:
        return jwt.decode(token, key, algorithms=[ALGORITHM], issuer=issuer, audience=audience,
                          options={"verify_aud": audience is not None,
                                   "require": ["exp", "iss", "grant_id", "client_id"]})
    except jwt.PyJWTError:
        return None
