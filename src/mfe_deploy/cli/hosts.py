"""mfe-deploy hosts trust|check: the remote host of an environment (target: ssh://user@host[:port])."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mfe_deploy.cli.app import EnvOption, JsonOption, Verbs, app, application

if TYPE_CHECKING:
    from mfe_deploy.remote.target import SshTarget

hosts_app = typer.Typer(help="The remote host of an environment.", rich_markup_mode=None, cls=Verbs)
app.add_typer(hosts_app, name="hosts")


def ssh_target(env: str) -> SshTarget:
    from mfe_deploy.config import loader
    from mfe_deploy.errors import MfeError
    from mfe_deploy.remote import target

    loaded = loader.load(application().project_dir, env)
    found = target.parse(loaded.env, application().project_dir, Path.home())
    if found is None:
        raise MfeError(f"{env} targets this machine ({loaded.env.target}), not a remote host")
    return found


@hosts_app.command("trust")
def trust(
    env: EnvOption,
    fingerprint: Annotated[
        str | None, typer.Option("--fingerprint", help="Trust only this SHA256:... fingerprint (for scripts).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask (with --fingerprint in scripts).")] = False,
) -> None:
    """Show the host's key fingerprint and, once confirmed, add it to known_hosts. A changed key is refused."""
    from mfe_deploy.errors import MfeError
    from mfe_deploy.remote import ssh
    from mfe_deploy.remote.target import fingerprint as fp

    t = ssh_target(env)
    key = ssh.scan(t)
    seen = fp(key.asbytes())
    console = application().console
    known = ssh.known_key(t)
    if known is not None:
        if known.asbytes() == key.asbytes():
            console.print(f"{t.known_hosts_name} is already trusted ({key.get_name()} {seen}) in {t.known_hosts}")
            return
        raise ssh.HostKeyError(
            f"{t.address}: the host key CHANGED ({key.get_name()} {seen}, known_hosts has {fp(known.asbytes())}), "
            f"refused: remove the old entry from {t.known_hosts} first if the change is expected"
        )
    console.print(f"{t.known_hosts_name} offers {key.get_name()} {seen}")
    if fingerprint is not None and fingerprint != seen:
        raise ssh.HostKeyError(f"{t.address}: the host offers {seen}, not {fingerprint}; refused")
    if not yes:
        if not sys.stdin.isatty():
            raise MfeError("confirm with --yes (and --fingerprint SHA256:...) when not running interactively")
        typer.confirm("Is this the host's fingerprint (check it out of band)?", abort=True)
    ssh.trust(t, key)
    console.print(f"trusted: {t.known_hosts_name} added to {t.known_hosts}")


@hosts_app.command("check")
def check(env: EnvOption, as_json: JsonOption = False) -> None:
    """Connect (host key verified), then ask the remote Docker engine and Compose for their versions."""
    from mfe_deploy.errors import MfeError
    from mfe_deploy.exec.command import Command
    from mfe_deploy.remote import ssh

    t = ssh_target(env)
    console = application().console
    with ssh.session(t, env) as runner:
        engine = runner.run(Command(("docker", "version", "--format", "{{.Server.Version}}")), timeout=60)
        compose = runner.run(Command(("docker", "compose", "version", "--short")), timeout=60)
    if engine.returncode != 0:
        tail = (engine.stderr.strip().splitlines() or ["no output"])[-1]
        raise MfeError(f"{t.address}: connected, but the Docker engine does not answer: {tail}")
    compose_version = compose.stdout.strip() if compose.returncode == 0 else None
    if as_json:
        console.json({"env": env, "host": t.address, "engine": engine.stdout.strip(), "compose": compose_version})
        return
    console.print(
        f"{t.address}: connected; Docker Engine {engine.stdout.strip()}, Compose {compose_version or 'missing'}"
    )
