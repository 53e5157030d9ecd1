"""mfe-deploy tls status|renew: nginx's certificate under tls.mode acme (renewed by `up` too, and by a daily
`tls renew` from cron or a systemd timer)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from mfe_deploy.cli.app import EnvOption, GroupOptions, JsonOption, app, application, host
from mfe_deploy.cli.context import (
    DestOption,
    InstallOption,
    LockWait,
    SecretsFileOption,
    SystemdOption,
    mutating,
    runtime,
    show_timer,
    this_program,
)

tls_app = typer.Typer(
    help="nginx's certificate: where it comes from, when it ends, and its renewal (tls.mode acme).",
    rich_markup_mode=None,
    cls=GroupOptions,
)
app.add_typer(tls_app, name="tls")


@tls_app.command("status")
def status(env: EnvOption, as_json: JsonOption = False) -> None:
    """The certificate nginx serves: its names, issuer, end, days left, and whether a renewal is due."""
    from mfe_deploy import acme
    from mfe_deploy.ops import certs

    rt = runtime(env)
    held, why = certs.status(rt)
    tls = rt.env.nginx.tls
    data = {
        "env": env,
        "mode": tls.mode,
        "domain": rt.env.nginx.domain,
        "names": list(held.names) if held else [],
        "issuer": held.issuer if held else None,
        "not_after": held.not_after.isoformat(timespec="seconds") if held else None,
        "days_left": round(held.days_left(acme.now()), 1) if held else None,
        "due": why if tls.mode == "acme" else None,
    }
    console = application().console
    if as_json:
        console.json(data)
        return
    if held is None:
        console.print(f"{env}: no certificate yet (tls.mode {tls.mode})")
        return
    console.print(
        f"{env}: {', '.join(held.names) or '-'} from {held.issuer}, until {data['not_after']} "
        f"({data['days_left']} days); tls.mode {tls.mode}"
        + (f"; renewal due: {why}" if tls.mode == "acme" and why else "")
    )


@tls_app.command("renew")
def renew(
    env: EnvOption,
    force: Annotated[bool, typer.Option("--force", help="Renew even when the certificate is not due.")] = False,
    lock_wait: LockWait = 0,
    as_json: JsonOption = False,
) -> None:
    """Order a new certificate when fewer than tls.acme.renew_days are left (or with --force) and reload
    nginx; nothing when not due. Safe to run daily."""
    from mfe_deploy.ops import certs
    from mfe_deploy.runtimes.contract import Acme, able

    console = application().console
    console.plain = as_json
    rt = runtime(env)
    where = host(env)
    with mutating(env, "tls renew", {"force": force}, wait=lock_wait) as record:
        done = certs.renew(able(rt, Acme), (where.files, where.state), force=force, progress=console.info)
        record["renewed"] = done.renewed
    if as_json:
        console.json({"env": env, **asdict(done)})
        return
    if done.renewed:
        console.print(f"{env}: renewed ({done.reason}) in {done.seconds:.1f}s; valid until {done.not_after}")
    else:
        console.print(f"{env}: not due ({done.days_left} days left, until {done.not_after})")


@tls_app.command("schedule")
def schedule(
    env: EnvOption,
    systemd: SystemdOption = False,
    install: InstallOption = False,
    dest: DestOption = None,
    env_file: SecretsFileOption = None,
) -> None:
    """Print (or install) what runs `tls renew` every day at 03:17 (it renews only when due)."""
    from mfe_deploy import calendar
    from mfe_deploy.errors import MfeError

    nginx = application().environment(env).env.nginx
    if not nginx.enabled or nginx.tls.mode != "acme":
        raise MfeError(f"environments/{env}.yaml: nginx.tls.mode is not acme: there is nothing to renew")
    timer = calendar.Timer(
        name=f"mfe-deploy-tls-{env}",
        schedule="17 3 * * *",
        project_dir=application().project_dir,
        executable=this_program(),
        runs=(("tls", "renew", "--env", env),),
        summary=f"renew nginx's certificate of {env} when it is due",
        origin="mfe-deploy tls schedule",
        service_description=f"renew the certificate of {env} when due",
        timer_description=f"a daily look at the certificate of {env}",
        env_file=env_file.resolve() if env_file else None,
    )
    show_timer(timer, systemd=systemd, install=install, dest=dest)
