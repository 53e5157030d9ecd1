"""tls.mode acme: nginx's certificate from an ACME CA, renewed when fewer than renew_days are left. The
account key is the environment's (0600 in its state folder), a new certificate key for every order; the
challenge lives in the folder nginx serves only while the CA checks it."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Protocol

from mfe_deploy import acme
from mfe_deploy.errors import MfeError

if TYPE_CHECKING:
    from mfe_deploy.config.models import Environment
    from mfe_deploy.exec.host import Files


class Serving(Protocol):
    """What `tls status` needs of a runtime: every runtime (mfe_deploy.runtimes.contract.Runtime)."""

    @property
    def env(self) -> Environment: ...

    def nginx_certificate(self) -> str | None: ...


class Runtime(Serving, Protocol):
    """What a renewal needs: a runtime that offers acme (mfe_deploy.runtimes.contract.Acme)."""

    def acme_folder(self) -> tuple[Files, PurePath]: ...

    def install_certificate(self, chain: str, key: str) -> None: ...


@dataclass(frozen=True)
class Renewal:
    """What `tls renew` did: renewed or not, why, and the certificate nginx serves after."""

    renewed: bool
    reason: str
    domain: str
    not_after: str | None
    days_left: float | None
    seconds: float


def status(rt: Serving) -> tuple[acme.Held | None, str | None]:
    """The certificate nginx serves, and why it is due (None: not due)."""
    pem = rt.nginx_certificate()
    if pem is None:
        return None, "no certificate yet"
    try:
        held = acme.held(pem.encode())  # read once: the verdict below takes what was read
    except ValueError:
        return None, "the certificate file does not parse"
    return held, acme.verdict(held, rt.env.nginx.domain, rt.env.nginx.tls.acme.renew_days, acme.now())


def renew(
    rt: Runtime,
    state: tuple[Files, PurePath],
    *,
    force: bool = False,
    progress: Callable[[str], None] = lambda line: None,
) -> Renewal:
    """A new certificate when one is due (or `force`): the account (made once), the order, the challenge
    answered from nginx's folder, the chain and key installed and nginx reloaded."""
    env = rt.env
    if not env.nginx.enabled or env.nginx.tls.mode != "acme":
        raise MfeError(f"environments/{env.name}.yaml: nginx.tls.mode is not acme: nothing to renew")
    started = time.monotonic()
    settings = env.nginx.tls.acme
    domain = env.nginx.domain
    held, why = status(rt)
    if why is None and not force:
        return _done(False, "not due", domain, held, started)
    reason = why or "forced"
    files, folder = state
    account_path = folder / "acme" / "account.pem"
    text = files.read_text(account_path)
    if text is None:
        key = acme.new_key()
        files.makedirs(folder / "acme", 0o700)
        files.write_atomic(account_path, acme.key_pem(key), 0o600)
    else:
        key = acme.load_key(text.encode())
    client = acme.Client(settings.directory, key, settings.ca_bundle)
    progress(f"{domain}: a certificate from {settings.directory} ({reason})")
    client.account(settings.email)
    served, webroot = rt.acme_folder()
    challenges = webroot / acme.CHALLENGE_PATH
    served.makedirs(challenges, 0o755)

    def publish(token: str, authorization: str) -> None:
        served.write_atomic(challenges / _token(token), authorization, 0o644)

    def withdraw(token: str) -> None:
        served.unlink(challenges / _token(token))

    cert_key = acme.new_key()
    chain = client.certificate(domain, cert_key, publish, withdraw, progress)
    rt.install_certificate(chain.decode(), acme.key_pem(cert_key).decode())
    _wait_served(env, chain, progress)
    held, _ = status(rt)
    return _done(True, reason, domain, held, started)


SERVED_WITHIN = 20.0  # seconds: nginx's graceful reload, old workers serving until new ones take over


def _wait_served(env: Environment, chain: bytes, progress: Callable[[str], None]) -> None:
    """Until nginx on this machine presents the new certificate: a reload starts new workers while the old
    ones go on answering with the old certificate, and a renewal that returned then would be checked
    against the old one. Not for a remote target (its port is not on this machine), nor before nginx runs
    (nothing answers: it reads the new files when it starts)."""
    if env.target != "local" or env.runtime == "swarm":
        return
    wanted, port = acme.leaf_der(chain), env.nginx.https_port
    deadline = time.monotonic() + SERVED_WITHIN
    for attempt in itertools.count():
        found = acme.served_leaf("127.0.0.1", port, env.nginx.domain)
        if found is None or found == wanted:
            return
        if time.monotonic() > deadline:
            raise MfeError(
                f"nginx still presents the previous certificate on port {port} {SERVED_WITHIN:.0f}s after its "
                "reload; the new one is installed: `mfe-deploy logs nginx` says why it was not taken"
            )
        if attempt == 0:
            progress("waiting for nginx to serve the new certificate")
        time.sleep(0.2)


def _token(token: str) -> str:
    """A challenge token is base64url (RFC 8555 8.3): anything else would name a path, and is refused."""
    if not token or any(not (c.isascii() and (c.isalnum() or c in "-_")) for c in token):
        raise MfeError("the ACME server sent a challenge token that is not base64url; refused")
    return token


def _done(renewed: bool, reason: str, domain: str, held: acme.Held | None, started: float) -> Renewal:
    now = acme.now()
    return Renewal(
        renewed,
        reason,
        domain,
        None if held is None else held.not_after.isoformat(timespec="seconds"),
        None if held is None else round(held.days_left(now), 1),
        round(time.monotonic() - started, 3),
    )
