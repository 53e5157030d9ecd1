"""The access tokens' signing keys: Ed25519, each named by a kid.

A key is the text `<kid>:<base64url of the 32-byte private key>`, as `mfe-deploy keys new` writes it.
`secrets.jwt_keys` lists every key the services must accept; `jwt.signing_key` names the one the issuer
(auth) signs with (the first by default). Only the issuer receives a private key; every service
receives the public keys, so no service but the issuer can mint a token.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mfe_deploy.exec.secret import Secret

KID = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
FORMAT = "<kid>:<base64url of a 32-byte Ed25519 key>, as `mfe-deploy keys new` writes it"
# The documented development key (environments/development.yaml): public, so refused anywhere else.
DEVELOPMENT_KEY = "development:s--PI040JSlDeR47WkVqM794oXAQH6eLFDSrSGrMOVQ"


@dataclass(frozen=True)
class JwtKey:
    kid: str
    private: Secret = field(repr=False)  # the text as given: <kid>:<base64url>
    public: str  # <kid>:<base64url of the public key>


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def parse(text: str) -> JwtKey | str:
    """The key, or why the text is not one (never quoting the text)."""
    kid, sep, encoded = text.strip().partition(":")
    if not sep or not KID.match(kid):
        return f"not a signing key: expected {FORMAT}"
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return f"the key of {kid} is not base64url: expected {FORMAT}"
    if len(raw) != 32:
        return f"the key of {kid} is {len(raw)} bytes, not 32: expected {FORMAT}"
    return _key(kid, Ed25519PrivateKey.from_private_bytes(raw), encoded)


def _key(kid: str, private: Ed25519PrivateKey, encoded: str) -> JwtKey:
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return JwtKey(kid, Secret(f"{kid}:{encoded}"), f"{kid}:{_b64(public)}")


def new(kid: str | None = None) -> JwtKey:
    """A fresh key; its kid names the day it was made unless given."""
    kid = kid or datetime.now(UTC).strftime("k%Y%m%d-") + secrets.token_hex(3)
    if not KID.match(kid):
        raise ValueError(f"a kid is 1 to 64 letters, digits, '.', '_' or '-', not {kid!r}")
    private = Ed25519PrivateKey.generate()
    return _key(kid, private, _b64(private.private_bytes_raw()))
