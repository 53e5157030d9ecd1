"""JWT access tokens: EdDSA (Ed25519) only, exp/iat/sub required. Anything else is a 401.

Only the issuer (auth) holds a private key; every service verifies with the public keys. Each key is
named by a `kid`, carried in the token's header, so that keys rotate without downtime: a new key is
published to every verifier first, then signs, and the old one stays published until its tokens expire.
mfe-deploy renders them as
    JWT_SIGNING_KEY='<kid>:<base64url of the 32-byte private key>'     (the issuer only)
    JWT_PUBLIC_KEYS='<kid>:<base64url of the 32-byte public key>,...'  (every service)
"""

from __future__ import annotations

import base64
import binascii
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "EdDSA"
_KID = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
LEEWAY = 5
# Tokens already verified, until they expire: a client sends the same token many times, and an Ed25519
# verification costs about twice an HMAC. Bounded; emptied when full.
_REMEMBERED = 4096


class InvalidToken(Exception):
    pass


@dataclass(frozen=True)
class Claims:
    user_id: str
    email: str
    role: str


def _raw(text: str, name: str) -> tuple[str, bytes]:
    kid, sep, encoded = text.strip().partition(":")
    if not sep or not _KID.match(kid):
        raise ValueError(f"{name}: not <kid>:<base64url key> (a kid of letters, digits, . _ -)")
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name}: the key of {kid} is not base64url") from None
    if len(raw) != 32:
        raise ValueError(f"{name}: the key of {kid} is not 32 bytes (an Ed25519 key)")
    return kid, raw


@dataclass(frozen=True)
class Signer:
    kid: str
    key: Ed25519PrivateKey = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> Signer:
        kid, raw = _raw(text, "JWT_SIGNING_KEY")
        return cls(kid, Ed25519PrivateKey.from_private_bytes(raw))


@dataclass(frozen=True)
class KeySet:
    keys: Mapping[str, Ed25519PublicKey]
    verified: dict[str, tuple[float, Claims]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> KeySet:
        keys: dict[str, Ed25519PublicKey] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            kid, raw = _raw(item, "JWT_PUBLIC_KEYS")
            if kid in keys:
                raise ValueError(f"JWT_PUBLIC_KEYS: {kid} is listed twice")
            keys[kid] = Ed25519PublicKey.from_public_bytes(raw)
        if not keys:
            raise ValueError("JWT_PUBLIC_KEYS: no key")
        return cls(keys)


def issue(signer: Signer, *, user_id: str, email: str, role: str, ttl: int, now: float | None = None) -> str:
    issued = int(now if now is not None else time.time())
    payload = {
        "sub": user_id,
        "email": email,
        "role": role,
        "type": "access",
        "iat": issued,
        "exp": issued + ttl,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(payload, signer.key, algorithm=ALGORITHM, headers={"kid": signer.kid})


def verify(keys: KeySet, token: str) -> Claims:
    seen = keys.verified.get(token)
    if seen is not None and seen[0] > time.time():
        return seen[1]
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        key = keys.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("signed by an unknown key")
        payload = jwt.decode(
            token, key, algorithms=[ALGORITHM], options={"require": ["exp", "iat", "sub"]}, leeway=LEEWAY
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    if payload.get("type") != "access":
        raise InvalidToken("not an access token")
    try:
        uuid.UUID(str(payload["sub"]))
    except ValueError:
        raise InvalidToken("sub is not a user id") from None
    claims = Claims(user_id=str(payload["sub"]), email=str(payload.get("email", "")), role=str(payload.get("role", "")))
    if len(keys.verified) >= _REMEMBERED:
        keys.verified.clear()
    keys.verified[token] = (float(payload["exp"]) + LEEWAY, claims)
    return claims


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
