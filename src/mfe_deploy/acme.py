"""An ACME client (RFC 8555) for nginx's certificate: an account under an EC P-256 key, one order for the
domain, its http-01 challenge answered from a folder nginx serves at /.well-known/acme-challenge/, a CSR
for a new key, the chain downloaded. Let's Encrypt by default; any ACME CA by its directory URL (a test CA
such as pebble with its own CA bundle). The JWS and key parts are pure; `Client` does the requests."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from mfe_deploy.errors import MfeError

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
CHALLENGE_PATH = ".well-known/acme-challenge"
POLL_SECONDS = 1.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise MfeError("the ACME account key is not an EC key")
    return key


def jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": b64(numbers.x.to_bytes(32, "big")),
        "y": b64(numbers.y.to_bytes(32, "big")),
    }


def thumbprint(key: ec.EllipticCurvePrivateKey) -> str:
    """RFC 7638: the SHA-256 of the JWK's required members, sorted, without spaces."""
    canonical = json.dumps(jwk(key), sort_keys=True, separators=(",", ":")).encode()
    return b64(hashlib.sha256(canonical).digest())


def key_authorization(token: str, key: ec.EllipticCurvePrivateKey) -> str:
    return f"{token}.{thumbprint(key)}"


def jws(key: ec.EllipticCurvePrivateKey, url: str, nonce: str, payload: Any, kid: str | None) -> bytes:
    """A flattened JWS (ES256) of `payload` (None: POST-as-GET, an empty payload), signed by the account key,
    identified by its account URL (kid) or, for the account's creation, by its public key."""
    protected: dict[str, Any] = {"alg": "ES256", "nonce": nonce, "url": url}
    if kid is None:
        protected["jwk"] = jwk(key)
    else:
        protected["kid"] = kid
    body = "" if payload is None else b64(json.dumps(payload).encode())
    head = b64(json.dumps(protected).encode())
    der = key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return json.dumps({"protected": head, "payload": body, "signature": b64(signature)}).encode()


def csr(domain: str, key: ec.EllipticCurvePrivateKey) -> bytes:
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class Held:
    """What a certificate file holds: its names, when it ends, and who issued it."""

    names: tuple[str, ...]
    not_after: datetime
    issuer: str
    self_signed: bool

    def days_left(self, now: datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400


def held(pem: bytes) -> Held:
    cert = x509.load_pem_x509_certificate(pem)
    try:
        names = tuple(
            cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        )
    except x509.ExtensionNotFound:
        names = ()
    return Held(names, cert.not_valid_after_utc, cert.issuer.rfc4514_string(), cert.issuer == cert.subject)


def due(pem: bytes | None, domain: str, renew_days: int, now: datetime) -> str | None:
    """Why a new certificate is needed (None: the one held is good): none yet, not for the domain, not from
    a CA (self-signed), or fewer than `renew_days` days left."""
    if pem is None:
        return "no certificate yet"
    try:
        cert = held(pem)
    except ValueError:
        return "the certificate file does not parse"
    return verdict(cert, domain, renew_days, now)


def verdict(cert: Held, domain: str, renew_days: int, now: datetime) -> str | None:
    """`due` for a certificate already read."""
    if domain not in cert.names:
        return f"the certificate is for {', '.join(cert.names) or 'no name'}, not {domain}"
    if cert.self_signed:
        return "the certificate is self-signed (the placeholder nginx starts with)"
    left = cert.days_left(now)
    if left < renew_days:
        return f"{left:.0f} days left (renewed below {renew_days})"
    return None


@dataclass
class Client:
    """One ACME conversation with the CA at `directory`, trusting `ca_file` when given."""

    directory: str
    account_key: ec.EllipticCurvePrivateKey
    ca_file: str | None = None
    timeout: float = 120.0
    kid: str | None = None
    urls: dict[str, str] = field(default_factory=dict)
    nonce: str | None = None

    def _open(self, request: urllib.request.Request) -> tuple[int, dict[str, str], bytes]:
        context = ssl.create_default_context(cafile=self.ca_file) if request.full_url.startswith("https") else None
        try:
            with urllib.request.urlopen(request, timeout=30, context=context) as answer:  # noqa: S310 - the CA's URL
                return answer.status, dict(answer.headers.items()), answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers.items()), exc.read()
        except (OSError, ValueError) as exc:
            raise MfeError(
                f"the ACME server at {self.directory} did not answer: {getattr(exc, 'reason', exc)}"
            ) from None

    def _start(self) -> None:
        if not self.urls:
            status, _, body = self._open(urllib.request.Request(self.directory))  # noqa: S310
            if status != 200:
                raise MfeError(f"{self.directory}: HTTP {status}, not an ACME directory")
            self.urls = json.loads(body)

    def _nonce(self) -> str:
        if self.nonce is None:
            _, headers, _ = self._open(urllib.request.Request(self.urls["newNonce"], method="HEAD"))  # noqa: S310
            self.nonce = _header(headers, "Replay-Nonce")
        nonce, self.nonce = self.nonce, None
        if not nonce:
            raise MfeError(f"{self.directory}: the ACME server gave no nonce")
        return nonce

    def post(self, url: str, payload: Any) -> tuple[dict[str, str], bytes]:
        """A signed POST (payload None: POST-as-GET); a rejected nonce is tried again with a fresh one, as
        RFC 8555 asks. An error answer is one line with the CA's own detail."""
        for _ in range(5):
            body = jws(self.account_key, url, self._nonce(), payload, self.kid)
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/jose+json"})  # noqa: S310
            status, headers, answer = self._open(request)
            self.nonce = _header(headers, "Replay-Nonce") or None
            if status < 400:
                return headers, answer
            problem = _problem(answer)
            if problem.get("type") != "urn:ietf:params:acme:error:badNonce":
                raise MfeError(f"the ACME server refused {url}: {problem.get('detail') or f'HTTP {status}'}")
        raise MfeError(f"the ACME server at {self.directory} kept refusing nonces")

    def account(self, email: str | None) -> str:
        self._start()
        payload: dict[str, Any] = {"termsOfServiceAgreed": True}
        if email:
            payload["contact"] = [f"mailto:{email}"]
        headers, _ = self.post(self.urls["newAccount"], payload)
        self.kid = _header(headers, "Location")
        return self.kid

    def _poll(self, url: str, done: set[str], what: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            _, body = self.post(url, None)
            state = json.loads(body)
            if state.get("status") in done:
                return dict(state)
            if state.get("status") == "invalid":
                details = [c.get("error", {}).get("detail") for c in state.get("challenges", []) if c.get("error")]
                why = "; ".join(d for d in details if d) or state.get("error", {}).get("detail") or "invalid"
                raise MfeError(f"the ACME server did not accept the {what}: {why}")
            if time.monotonic() > deadline:
                raise MfeError(f"the ACME server did not finish the {what} within {self.timeout:.0f}s")
            time.sleep(POLL_SECONDS)

    def certificate(
        self,
        domain: str,
        cert_key: ec.EllipticCurvePrivateKey,
        publish: Callable[[str, str], None],
        withdraw: Callable[[str], None],
        progress: Callable[[str], None] = lambda line: None,
    ) -> bytes:
        """Order a certificate for `domain`; `publish(token, key_authorization)` puts the challenge where
        nginx serves it, `withdraw(token)` removes it. The PEM chain."""
        if self.kid is None:
            raise MfeError("no ACME account yet")
        headers, body = self.post(self.urls["newOrder"], {"identifiers": [{"type": "dns", "value": domain}]})
        order_url = _header(headers, "Location")
        order = json.loads(body)
        for authorization in order.get("authorizations", []):
            _, answer = self.post(authorization, None)
            state = json.loads(answer)
            if state.get("status") == "valid":
                continue
            challenge = next((c for c in state.get("challenges", []) if c.get("type") == "http-01"), None)
            if challenge is None:
                raise MfeError(f"the ACME server offers no http-01 challenge for {domain}")
            token = str(challenge["token"])
            publish(token, key_authorization(token, self.account_key))
            try:
                progress(f"answering the http-01 challenge for {domain}")
                self.post(str(challenge["url"]), {})
                self._poll(authorization, {"valid"}, f"http-01 challenge for {domain}")
            finally:
                withdraw(token)
        progress("finalizing the order")
        self.post(str(order["finalize"]), {"csr": b64(csr(domain, cert_key))})
        order = self._poll(order_url, {"valid"}, f"order for {domain}")
        _, chain = self.post(str(order["certificate"]), None)
        return chain


def _header(headers: dict[str, str], name: str) -> str:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), "")


def _problem(body: bytes) -> dict[str, Any]:
    try:
        problem = json.loads(body)
    except ValueError:
        return {}
    return problem if isinstance(problem, dict) else {}


def now() -> datetime:
    return datetime.now(UTC)


def served_leaf(host: str, port: int, server_name: str, timeout: float = 3.0) -> bytes | None:
    """The DER of the certificate a TLS server at host:port presents for `server_name` (not verified: we
    compare it with the one we installed), or None when nothing answers there."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            return tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None


def leaf_der(chain_pem: bytes) -> bytes:
    """The DER of a PEM chain's first certificate (the leaf)."""
    return x509.load_pem_x509_certificate(chain_pem).public_bytes(serialization.Encoding.DER)
