"""JWT access tokens: HS256 only, exp/iat/sub required. Anything else is a 401."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"


class InvalidToken(Exception):
    pass


@dataclass(frozen=True)
class Claims:
    user_id: str
    email: str
    role: str


def issue(secret: str, *, user_id: str, email: str, role: str, ttl: int, now: float | None = None) -> str:
    issued = int(now if now is not None else time.time())
    payload = {
        "sub": user_id, "email": email, "role": role, "type": "access",
        "iat": issued, "exp": issued + ttl, "jti": uuid.uuid4().hex,
    }  # fmt: skip
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def verify(secret: str, token: str) -> Claims:
    try:
        payload = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "iat", "sub"]}, leeway=5
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    if payload.get("type") != "access":
        raise InvalidToken("not an access token")
    try:
        uuid.UUID(str(payload["sub"]))
    except ValueError:
        raise InvalidToken("sub is not a user id") from None
    return Claims(user_id=str(payload["sub"]), email=str(payload.get("email", "")), role=str(payload.get("role", "")))


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
