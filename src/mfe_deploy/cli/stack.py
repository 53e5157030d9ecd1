"""up, status, health, logs, down: the same flags and output on every runtime."""

from __future__ import annotations

import difflib
import sys
import time
from typing import TYPE_CHECKING, Annotated

import typer

from mfe_deploy.cli.app import (
    EnvOption,
    GroupOptions,
    JsonOption,
    ReleaseOption,
    Verbs,
    app,
    application,
    host,
    release,
)
from mfe_deploy.cli.context import (
    DestOption,
    ForceOption,
    ForceUnlock,
    InstallOption,
    LockWait,
    RuntimeOption,
    SecretsFileOption,
    SystemdOption,
    YesOption,
    confirm_loss,
    lock_broken,
    mutating,
    runtime,
    show_timer,
    this_program,
)

if TYPE_CHECKING:
    from mfe_deploy.runtimes.contract import UnitStatus


def _print_status(rows: list[UnitStatus], as_json: bool) -> None:
    console = application().console
    if as_json:
        console.json([row.__dict__ for row in rows])
        return
    table = [(r.name, r.state, r.pid or "-", r.version, r.health) for r in rows]
    console.table(("SERVICE", "STATE", "PID", "VERSION", "HEALTH"), table)


@app.command()
def up(
    env: EnvOption,
    runtime_name: RuntimeOption = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Do not wait for /health.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for each stage.")] = 120,
    as_json: JsonOption = False,
    version: ReleaseOption = None,
    lock_wait: LockWait = 0,
    force_unlock: ForceUnlock = False,
    restart_stores: Annotated[
        bool,
        typer.Option(
            "--restart-stores",
            help="Apply a changed configuration of postgres, redis or rabbitmq, which restarts them (downtime).",
        ),
    ] = False,
) -> None:
    """Render, start the stores, migrate, start the services, wait until healthy."""
    from mfe_deploy.app.up import up as app_up
    from mfe_deploy.runtimes.contract import Acme, able

    started = time.monotonic()
    application().console.plain = as_json
    rt = runtime(env, runtime_name)
    tag = release(version)
    with mutating(env, "up", {"version": tag, "runtime": rt.name}, wait=lock_wait, force=force_unlock):
        console = application().console
        rows = app_up(rt, console, version=tag, wait=not no_wait, timeout=timeout, restart_stores=restart_stores)
        if rt.env.nginx.enabled and rt.env.nginx.tls.mode == "acme" and not no_wait:
            from mfe_deploy.ops import certs

            where = host(env)
            done = certs.renew(able(rt, Acme), (where.files, where.state), progress=application().console.info)
            if done.renewed:
                application().console.info(f"{env}: certificate from the ACME CA, valid until {done.not_after}")
    _print_status(rows, as_json)
    if not as_json:
        application().console.info(f"{env} is up ({rt.name} runtime, {time.monotonic() - started:.1f}s)")


@app.command()
def status(env: EnvOption, runtime_name: RuntimeOption = None, as_json: JsonOption = False) -> None:
    """Each unit: state, pid, version, health."""
    _print_status(runtime(env, runtime_name).status(), as_json)


@app.command()
def health(env: EnvOption, runtime_name: RuntimeOption = None, as_json: JsonOption = False) -> None:
    """Call every /health; exit 1 if any is unhealthy."""
    from mfe_deploy.errors import MfeError

    probes = runtime(env, runtime_name).health()
    console = application().console
    if as_json:
        console.json({n: {"status": p.status, "body": dict(p.body), "error": p.error} for n, p in probes.items()})
    else:
        rows = []
        for name, p in probes.items():
            checks = p.body.get("services", {})
            detail = ", ".join(f"{k}={v}" for k, v in checks.items()) if isinstance(checks, dict) else ""
            rows.append((name, p.status or "-", p.body.get("status", "down"), detail or p.error))
        console.table(("SERVICE", "HTTP", "STATUS", "CHECKS"), rows)
    bad = sorted(n for n, p in probes.items() if not p.healthy)
    if bad:
        raise MfeError(f"unhealthy: {', '.join(bad)}")


@app.command()
def logs(
    env: EnvOption,
    service: Annotated[str | None, typer.Argument(help="One unit (default: all).")] = None,
    runtime_name: RuntimeOption = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    tail: Annotated[
        int | None, typer.Option("--tail", "-n", help="Lines to show from the end [50; all with --request-id].")
    ] = None,
    request_id: Annotated[
        str | None, typer.Option("--request-id", help="Only the lines of one request (as X-Request-ID said).")
    ] = None,
) -> None:
    """Show the logs of one unit or all."""
    import re

    from mfe_deploy.errors import UsageError

    if request_id is not None and not re.fullmatch(r"[A-Za-z0-9._:\-]{1,128}", request_id):
        raise UsageError(f"--request-id {request_id!r}: request ids are 1 to 128 of A-Z a-z 0-9 . _ : -")
    # The services log one JSON object per line: a request's lines carry its id in this exact form.
    needle = f'"request_id": "{request_id}"' if request_id else None
    lines_wanted = tail if tail is not None else (None if needle else 50)
    rt = runtime(env, runtime_name)
    units = rt.units()
    if service is not None and service not in units:
        near = difflib.get_close_matches(service, units, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise UsageError(f"unknown unit {service!r}{hint}; one of: {', '.join(units)}")
    rt.logs(service, lines_wanted, follow, needle, application().console.print)


@app.command()
def down(
    env: EnvOption,
    runtime_name: RuntimeOption = None,
    volumes: Annotated[bool, typer.Option("--volumes", help="Also delete the data (databases, queues).")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Required to delete production data.")] = False,
    lock_wait: LockWait = 0,
    force_unlock: ForceUnlock = False,
    as_json: JsonOption = False,
) -> None:
    """Stop everything; --volumes also deletes the data."""
    from mfe_deploy.errors import MfeError

    console = application().console
    console.plain = as_json
    production = volumes and application().environment(env).env.tier == "production"
    if production and not force:
        raise MfeError("refusing to delete production data without --force")
    rt = runtime(env, runtime_name)
    if volumes and not yes:
        if not sys.stdin.isatty():
            raise MfeError("--volumes deletes data: confirm with --yes when not running interactively")
        typer.confirm(f"Delete all data of {env} (databases, queues, cache)?", abort=True)
    with mutating(env, "down", {"volumes": volumes, "runtime": rt.name}, wait=lock_wait, force=force_unlock):
        stopped = rt.down(volumes=volumes)
    if as_json:
        console.json({"env": env, "stopped": bool(stopped), "data_deleted": volumes})
        return
    console.print(f"{env}: stopped" if stopped else f"{env}: nothing was running")
    if volumes:
        console.print(f"{env}: data deleted")


@app.command()
def rollback(
    service: Annotated[str, typer.Argument(help="The service to return to its previous version.")],
    env: EnvOption,
    to: Annotated[str | None, typer.Option("--to", help="A version whose image exists locally.")] = None,
    runtime_name: RuntimeOption = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait until healthy.")] = 120,
    ignore_schema: Annotated[
        bool,
        typer.Option(
            "--ignore-schema",
            help="Roll back even across migrations not marked compatible with older code (`-- mfe: compatible`).",
        ),
    ] = False,
    migrate_down: Annotated[
        bool,
        typer.Option("--migrate-down", help="First undo those migrations with their NNNN_name.down.sql files."),
    ] = False,
    restore_backup: Annotated[
        bool,
        typer.Option(
            "--restore-backup",
            help="Restore the service's database from the backup `up` took just before those migrations "
            "(later writes are lost, and counted; the data as it was is kept in a pre-restore backup).",
        ),
    ] = False,
    lock_wait: LockWait = 0,
    force_unlock: ForceUnlock = False,
    yes: YesOption = False,
    force: ForceOption = False,
    as_json: JsonOption = False,
) -> None:
    """Return one service to its previous successful version (or --to), health-gated. Refused when
    migrations applied since that version ran are not marked compatible with older code, unless one of
    --migrate-down, --restore-backup or --ignore-schema says what to do about them (`plan --rollback`
    shows which can). The first two can lose data: they ask (or --yes), and production wants --force."""
    from mfe_deploy.app import rollback as app_rollback
    from mfe_deploy.ops.schema import Policy
    from mfe_deploy.runtimes.contract import Rollbacks, able

    flags = {"--ignore-schema": ignore_schema, "--migrate-down": migrate_down, "--restore-backup": restore_backup}
    chosen = [flag for flag, on in flags.items() if on]
    if len(chosen) > 1:
        raise typer.BadParameter(f"{' and '.join(chosen)} exclude each other: pick one")
    if migrate_down or restore_backup:
        loses = "undo its migrations" if migrate_down else "restore its database from the backup before them"
        confirm_loss(env, f"Roll {service} of {env} back and {loses}?", yes=yes, force=force)
    policy: Policy = "ignore" if ignore_schema else "down" if migrate_down else "restore" if restore_backup else "check"
    application().console.plain = as_json
    rt = runtime(env, runtime_name)
    details: dict[str, object] = {"service": service, "to": to, "schema": policy}
    with mutating(env, "rollback", details, wait=lock_wait, force=force_unlock) as record:
        release = app_rollback.rollback(able(rt, Rollbacks), service, to, timeout, schema_policy=policy)
        record["versions"] = dict(release.versions)
    console = application().console
    if as_json:
        console.json(
            {
                "env": env,
                "service": service,
                "version": release.versions[service],
                "release": release.id,
                "versions": dict(release.versions),
            }
        )
        return
    console.print(f"{service}: now {release.versions[service]} (release {release.id})")


@app.command()
def releases(
    env: EnvOption,
    service: Annotated[str | None, typer.Argument(help="Only this service's versions.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The release ledger: every up, rollback and automatic rollback, with its outcome."""
    from dataclasses import asdict

    from mfe_deploy.state.ledger import Ledger, Release

    rows = Ledger.of(host(env)).all()
    console = application().console
    if as_json:
        console.json([asdict(r) for r in rows])
        return

    def versions(r: Release) -> str:
        v: dict[str, str] = dict(r.versions)
        if service:
            return v.get(service, "-")
        distinct = set(v.values())
        return next(iter(distinct)) if len(distinct) == 1 else ", ".join(f"{k}={x}" for k, x in v.items())

    header = ("ID", "TIME", "WHO", "KIND", "OUTCOME", "VERSIONS", "BACKUP BEFORE MIGRATING")
    table = [(r.id, r.time, r.who, r.kind, r.outcome, versions(r), r.backup or "-") for r in rows]
    console.table(header, table, empty=f"no release of {env} recorded yet{f' for {service}' if service else ''}")


@app.command()
def history(env: EnvOption, as_json: JsonOption = False) -> None:
    """The audit log: who did what, when, how long, with what result."""
    from mfe_deploy.exec.host import AUDIT
    from mfe_deploy.state.ledger import read_lines

    where = host(env)
    from mfe_deploy.state.audit import history as entries

    lines = entries(read_lines(where.files, where.state / AUDIT))
    console = application().console
    if as_json:
        console.json(lines)
        return
    console.table(
        ("TIME", "WHO", "ACTION", "RESULT", "SECONDS", "DETAIL"),
        [
            (
                r["time"],
                r["who"],
                r["action"],
                r.get("result", "?"),
                r.get("seconds", "-"),
                r.get("error") or r.get("version") or r.get("service") or "",
            )
            for r in lines
        ],
        empty=f"no action on {env} recorded yet",
    )


lock_app = typer.Typer(help="Inspect or release the deploy lock.", rich_markup_mode=None, cls=Verbs)
app.add_typer(lock_app, name="lock")


@lock_app.command("status")
def lock_status(env: EnvOption, as_json: JsonOption = False) -> None:
    """Who holds the deploy lock, and whether that process is still alive."""
    from mfe_deploy.exec.host import DEPLOY_LOCK
    from mfe_deploy.state import lock

    where = host(env)
    holder = lock.read(where.files, where.state / DEPLOY_LOCK)
    console = application().console
    alive = holder.alive() if holder is not None else None
    state = "unlocked" if holder is None else ("stale" if alive is False else "held")
    if as_json:
        console.json({"env": env, "state": state, "holder": holder.describe() if holder is not None else None})
    elif holder is None:
        console.print(f"{env}: unlocked")
    else:
        console.print(f"{env}: {'stale (that process is gone)' if state == 'stale' else 'held'} by {holder.describe()}")


@lock_app.command("release")
def lock_release(
    env: EnvOption, yes: Annotated[bool, typer.Option("--yes", "-y")] = False, as_json: JsonOption = False
) -> None:
    """Remove the deploy lock (only do this when its holder is gone)."""
    from mfe_deploy.errors import MfeError
    from mfe_deploy.exec.host import DEPLOY_LOCK
    from mfe_deploy.state import lock

    where = host(env)
    path = where.state / DEPLOY_LOCK
    holder = lock.read(where.files, path)
    console = application().console
    if holder is None:
        if as_json:
            console.json({"env": env, "released": False, "holder": None})
        else:
            console.print(f"{env}: unlocked")
        return
    if holder.alive() and not yes:
        raise MfeError(f"the lock is held by a live process: {holder.describe()}; add --yes to remove it anyway")
    with mutating(env, "lock release", {"holder": holder.describe()}, lock=False):
        where.files.unlink(path)
    lock_broken(env, f"lock release; it was {holder.describe()}")
    if as_json:
        console.json({"env": env, "released": True, "holder": holder.describe()})
        return
    console.print(f"{env}: lock released (was {holder.describe()})")


images_app = typer.Typer(help="Service images.", rich_markup_mode=None, cls=Verbs)
app.add_typer(images_app, name="images")


@images_app.command("prune")
def images_prune(
    env: EnvOption,
    keep: Annotated[int, typer.Option("--keep", min=1, help="Versions to keep per service.")] = 5,
    lock_wait: LockWait = 0,
    force_unlock: ForceUnlock = False,
    as_json: JsonOption = False,
) -> None:
    """Remove old service images, keeping the newest --keep and every one a recent release uses."""
    from mfe_deploy.runtimes.contract import Images, able

    rt = runtime(env, "docker")
    with mutating(env, "images prune", {"keep": keep}, wait=lock_wait, force=force_unlock) as record:
        removed = able(rt, Images).prune_images(keep)
        record["removed"] = removed
    console = application().console
    if as_json:
        console.json({"env": env, "removed": removed})
        return
    for tag in removed:
        console.print(f"removed {tag}")
    console.print(f"{env}: {len(removed)} image(s) removed")


watch_app = typer.Typer(
    help="Look at the stack every --interval seconds and send one notification per change, never one per look: "
    "service.unhealthy (a unit not healthy, or whose process was replaced), service.recovered, "
    "service.restarting (replaced 3 times in 5 minutes) and backup.stale (as `backup check`). Without a verb, "
    "`watch --env E` watches; `watch schedule` runs `watch --once` every minute from cron or a systemd timer.",
    rich_markup_mode=None,
    cls=GroupOptions,
)
app.add_typer(watch_app, name="watch")


@watch_app.callback(invoke_without_command=True)
def watch(
    ctx: typer.Context,
    env: Annotated[str | None, typer.Option("--env", "-e", help="Environment name (a file in environments/).")] = None,
    interval: Annotated[float, typer.Option("--interval", min=0.2, help="Seconds between two looks.")] = 10,
    once: Annotated[bool, typer.Option("--once", help="One look, compared with the last one (for a timer).")] = False,
    for_seconds: Annotated[
        float | None, typer.Option("--for", metavar="SECONDS", help="Stop after this long (default: never).")
    ] = None,
    runtime_name: RuntimeOption = None,
) -> None:
    """Look at the stack every --interval seconds and send one notification per change, never one per look:
    service.unhealthy (a unit not healthy, or whose process was replaced), service.recovered,
    service.restarting (replaced 3 times in 5 minutes) and backup.stale (as `backup check`)."""
    if ctx.invoked_subcommand is not None:
        return
    from mfe_deploy.errors import UsageError

    if env is None:
        raise UsageError("mfe-deploy watch needs --env NAME")
    _watch(env, interval, once, for_seconds, runtime_name)


@watch_app.command("schedule")
def watch_schedule(
    env: EnvOption,
    systemd: SystemdOption = False,
    install: InstallOption = False,
    dest: DestOption = None,
    env_file: SecretsFileOption = None,
) -> None:
    """Print (or install) what runs `watch --once` every minute: one watch across runs (its memory is a file)."""
    from mfe_deploy import calendar

    application().environment(env)  # a known environment, or the usual error
    timer = calendar.Timer(
        name=f"mfe-deploy-watch-{env}",
        schedule="* * * * *",
        project_dir=application().project_dir,
        executable=this_program(),
        runs=(("watch", "--env", env, "--once"),),
        summary=f"look at the {env} environment and notify its changes",
        origin="mfe-deploy watch schedule",
        service_description=f"watch {env} (one look)",
        timer_description=f"a look at {env} every minute",
        env_file=env_file.resolve() if env_file else None,
    )
    show_timer(timer, systemd=systemd, install=install, dest=dest)


def _watch(env: str, interval: float, once: bool, for_seconds: float | None, runtime_name: str | None) -> None:
    from datetime import UTC, datetime

    from mfe_deploy.backups.store import Store, staleness
    from mfe_deploy.exec.host import WATCH
    from mfe_deploy.notify import Event
    from mfe_deploy.ops import watch as watching

    state = application()
    rt = runtime(env, runtime_name)
    where = host(env)
    memory_file = where.state / WATCH
    text = where.files.read_text(memory_file)
    memory = watching.Memory.from_json(text) if text else watching.Memory()
    store = Store.of(state.project_dir, rt.env)
    limit = rt.env.backup.max_staleness_hours
    started = time.monotonic()
    console = state.console
    while True:
        probes = rt.health()
        # Process ids where the runtime has them (local: None while a program is not RUNNING); containers none.
        pids = {row.name: row.pid for row in rt.status() if row.pid is None or isinstance(row.pid, int)}
        look = watching.Look(
            time=time.time(),
            # The gateway's /health sums up the services behind it: a gateway that answers with their
            # verdicts is itself fine, and the service that is down is reported on its own.
            healthy={
                name: probe.healthy or (name == rt.env.gateway and isinstance(probe.body.get("services"), dict))
                for name, probe in probes.items()
            },
            pids={name: pids[name] for name in probes if name in pids},
            backup_problem=staleness(store.scan(), limit, datetime.now(UTC)),
        )
        events = [Event(c.name, env, c.summary, c.details) for c in watching.changes(memory, look, env)]
        for event in events:
            console.print(f"{datetime.now(UTC).isoformat(timespec='seconds')} {event.name}: {event.summary}")
        state.notify(env, *events)
        where.files.makedirs(where.state, 0o700)
        where.files.write_atomic(memory_file, memory.to_json(), 0o600)
        if once or (for_seconds is not None and time.monotonic() - started >= for_seconds):
            return
        time.sleep(interval)
