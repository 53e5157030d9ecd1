"""mfe-deploy keys new: an Ed25519 key for the access tokens (secrets.jwt_keys)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mfe_deploy.cli.app import EnvOption, JsonOption, Verbs, app, application

keys_app = typer.Typer(help="The access tokens' signing keys.", rich_markup_mode=None, cls=Verbs)
app.add_typer(keys_app, name="keys")


@keys_app.command("new")
def new(
    out: Annotated[Path, typer.Option("--out", help="Write the key here (mode 0600); it must not exist yet.")],
    kid: Annotated[str | None, typer.Option("--kid", help="The key's name (default: k<date>-<random>).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Make a signing key, write it to a file only you can read, and print its kid and public key.

    Reference the file (file:PATH) or the variable you load it into in secrets.jwt_keys. To rotate without
    downtime: add the new key second and `up` (every service accepts it), set jwt.signing_key to its kid
    and `up` (auth signs with it), then remove the old key once jwt.expires_in has passed and `up`.
    """
    from mfe_deploy.config import jwtkeys
    from mfe_deploy.errors import MfeError, UsageError
    from mfe_deploy.exec.host import write_atomic

    if out.exists():
        raise UsageError(f"{out}: exists already; a key is never overwritten (choose another path)")
    try:
        key = jwtkeys.new(kid)
    except ValueError as exc:
        raise MfeError(f"--kid: {exc}") from None
    write_atomic(out, key.private.reveal() + "\n", 0o600)
    console = application().console
    if as_json:  # the private half stays in the file
        console.json({"file": str(out), "kid": key.kid, "public": key.public})
        return
    console.print(f"wrote {out} (mode 0600): kid {key.kid}")
    console.print(f"public key: {key.public}")


@keys_app.command("list")
def list_keys(env: EnvOption, as_json: JsonOption = False) -> None:
    """The keys an environment's services accept, the one auth signs with, and their public halves."""
    state = application()
    secrets = state.secrets(env)
    signing = secrets.signing_key.kid
    issuer = state.environment(env).env.jwt.issuer
    if as_json:
        rows = [{"kid": k.kid, "signs": k.kid == signing, "public": k.public} for k in secrets.jwt_keys]
        state.console.json({"issuer": issuer, "keys": rows})
        return
    for key in secrets.jwt_keys:
        role = f"signs (held by {issuer} only)" if key.kid == signing else "verifies only"
        state.console.print(f"{key.kid}: {role}; public key {key.public}")
