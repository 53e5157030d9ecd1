"""mfe-deploy migrate [status|resolve|down|lint]."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from mfe_deploy.cli.app import GroupOptions, JsonOption, app, application

if TYPE_CHECKING:
    from mfe_deploy.ops.migrations import Outcome

migrate_app = typer.Typer(
    help="Apply and inspect database migrations. Without a verb, `migrate --env E` applies them (as `migrate "
    "apply`); the group's options (--env, --service, --json) reach its verbs.",
    rich_markup_mode=None,
    cls=GroupOptions,
)
app.add_typer(migrate_app, name="migrate")

ServiceOption = Annotated[str | None, typer.Option("--service", "-s", help="Only this service.")]


def _execute(env: str, service: str | None, action: list[str]) -> list[Outcome]:
    """On the docker runtime (local or remote) the runner runs in one-off service containers, which
    reach the database on the stack's internal network; on the local runtime, as a local process."""
    from mfe_deploy.cli.context import runtime
    from mfe_deploy.ops import migrations

    names = migrations.services(application().environment(env).env, service)
    return runtime(env).migrate(names, action)


EnvName = Annotated[str | None, typer.Option("--env", "-e", help="Environment name.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the SQL that would run.")]
LockWait = Annotated[float, typer.Option("--lock-wait", help="Seconds to wait for the deploy lock.")]
ForceUnlock = Annotated[bool, typer.Option("--force-unlock", help="Break a stale deploy lock.")]


@migrate_app.callback(invoke_without_command=True)
def migrate(
    ctx: typer.Context,
    env: EnvName = None,
    service: ServiceOption = None,
    dry_run: DryRun = False,
    as_json: JsonOption = False,
    lock_wait: LockWait = 0,
    force_unlock: ForceUnlock = False,
) -> None:
    """Apply pending migrations of every service database (or one)."""
    if ctx.invoked_subcommand is None:
        _apply(env, service, dry_run, as_json, lock_wait, force_unlock)


@migrate_app.command("apply")
def apply(
    env: EnvName = None,
    service: ServiceOption = None,
    dry_run: DryRun = False,
    as_json: JsonOption = False,
    lock_wait: LockWait = 0,
    force_unlock: ForceUnlock = False,
) -> None:
    """Apply pending migrations of every service database (or one): what `migrate --env E` does."""
    _apply(env, service, dry_run, as_json, lock_wait, force_unlock)


def _apply(
    env: str | None, service: str | None, dry_run: bool, as_json: bool, lock_wait: float, force_unlock: bool
) -> None:
    if env is None:
        raise typer.BadParameter("--env is required", param_hint="--env")
    from mfe_deploy.cli.context import mutating

    details: dict[str, object] = {"service": service, "dry_run": dry_run}
    with mutating(env, "migrate", details, wait=lock_wait, force=force_unlock) as record:
        outcomes: list[Outcome] = _execute(env, service, ["apply", *(["--dry-run"] if dry_run else [])])
        record["applied"] = [f"{o.service}:{a['id']}" for o in outcomes for a in o.data.get("applied", [])]
        _report_apply(outcomes, dry_run, as_json)


def _report_apply(outcomes: list[Outcome], dry_run: bool, as_json: bool) -> None:
    from mfe_deploy.errors import MigrationError

    console = application().console
    if as_json:
        console.json([{"service": o.service, "ok": o.ok, **o.data} for o in outcomes])
    for o in outcomes:
        if not o.ok or as_json:
            continue
        if dry_run:
            for item in o.data.get("pending", []):
                console.print(f"-- {o.service} ({o.data.get('database')}): {item['id']}\n{item['sql'].rstrip()}\n")
            if not o.data.get("pending"):
                console.print(f"-- {o.service}: nothing pending")
            continue
        applied = o.data.get("applied", [])
        done = ", ".join(f"{a['id']} ({a['duration_ms']} ms)" for a in applied)
        console.print(f"{o.service}: applied {done}" if applied else f"{o.service}: up to date")
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise MigrationError("; ".join(f"{o.service}: {o.error}" for o in failed))


@migrate_app.command("status")
def status(
    env: Annotated[str, typer.Option("--env", "-e", help="Environment name.")],
    service: ServiceOption = None,
    as_json: JsonOption = False,
) -> None:
    """List applied, pending and failed migrations per service."""
    from mfe_deploy.errors import MigrationError

    outcomes: list[Outcome] = _execute(env, service, ["status"])
    console = application().console
    if as_json:
        console.json([{"service": o.service, "ok": o.ok, **o.data} for o in outcomes])
    else:
        rows = [
            (o.service, m["id"], m["state"], m["applied_at"] or "-")
            for o in outcomes
            if o.ok
            for m in o.data.get("migrations", [])
        ]
        console.table(("SERVICE", "MIGRATION", "STATE", "APPLIED AT"), rows)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise MigrationError("; ".join(f"{o.service}: {o.error}" for o in failed))
    # A gate for CI and monitoring: anything an operator must look at is a non-zero exit.
    attention = [
        f"{o.service} {m['id']} is {m['state']}"
        for o in outcomes
        for m in o.data.get("migrations", [])
        if m["state"] in ("changed", "failed", "missing")
    ]
    if attention:
        raise MigrationError("; ".join(attention) + " (see `mfe-deploy migrate resolve --help`)")


@migrate_app.command("resolve")
def resolve(
    env: Annotated[str, typer.Option("--env", "-e", help="Environment name.")],
    service: Annotated[str, typer.Option("--service", "-s", help="The service whose migration failed.")],
    rolled_back: Annotated[str | None, typer.Option("--rolled-back", help="Mark as rolled back: runs again.")] = None,
    applied: Annotated[str | None, typer.Option("--applied", help="Mark as applied (you applied it by hand).")] = None,
) -> None:
    """Unblock a failed migration, as Prisma's `migrate resolve`."""
    from mfe_deploy.errors import MigrationError

    if (rolled_back is None) == (applied is None):
        raise typer.BadParameter("give exactly one of --rolled-back ID or --applied ID")
    from mfe_deploy.cli.context import mutating

    flag = ["--rolled-back", rolled_back] if rolled_back else ["--applied", applied or ""]
    with mutating(env, "migrate resolve", {"service": service, "flag": flag}):
        outcomes: list[Outcome] = _execute(env, service, ["resolve", *flag])
        o = outcomes[0]
        if not o.ok:
            raise MigrationError(f"{o.service}: {o.error}")
    application().console.print(f"{o.service}: {o.data['resolved']} marked {o.data['status'].replace('_', ' ')}")


@migrate_app.command("down")
def down(
    env: Annotated[str, typer.Option("--env", "-e", help="Environment name.")],
    service: Annotated[str, typer.Option("--service", "-s", help="The service whose migrations to undo.")],
    to: Annotated[str, typer.Option("--to", help="The migration to go back to (`none`: undo all).")],
    lock_wait: Annotated[float, typer.Option("--lock-wait", help="Seconds to wait for the deploy lock.")] = 0,
    force_unlock: Annotated[bool, typer.Option("--force-unlock", help="Break a stale deploy lock.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Required in production.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Undo the migrations applied after --to, newest first, each by its NNNN_name.down.sql in one
    transaction (what they hold goes: asks, or --yes; production wants --force). Refused before anything
    runs when one has no down file (unless it is marked compatible with older code: it stays). The code
    still running must work with the older schema: `rollback SERVICE --migrate-down` moves both."""
    from mfe_deploy.cli.context import confirm_loss, mutating
    from mfe_deploy.errors import MigrationError

    confirm_loss(env, f"Undo the migrations of {service} in {env} applied after {to}?", yes=yes, force=force)
    with mutating(env, "migrate down", {"service": service, "to": to}, wait=lock_wait, force=force_unlock) as record:
        (o,) = _execute(env, service, ["down", "--to", to])
        record["undone"] = [u["id"] for u in o.data.get("undone", [])]
        if not o.ok:
            raise MigrationError(f"{o.service}: {o.error}")
    console = application().console
    if as_json:
        console.json(
            {"env": env, "service": service, "undone": o.data.get("undone", []), "kept": o.data.get("kept", [])}
        )
        return
    for line in describe_down(o):
        console.print(line)


def describe_down(o: Outcome) -> list[str]:
    undone = ", ".join(f"{u['id']} ({u['duration_ms']} ms)" for u in o.data.get("undone", []))
    lines = [f"{o.service}: undid {undone}" if undone else f"{o.service}: nothing to undo"]
    kept = o.data.get("kept", [])
    return lines + ([f"{o.service}: kept {', '.join(kept)} (compatible with older code)"] if kept else [])


@migrate_app.command("lint")
def lint(
    paths: Annotated[
        list[str] | None, typer.Argument(help="Migration files or folders (default: services/*/migrations).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Flag statements that break the code still running (drops, renames, type changes, NOT NULL) or lock
    a table for long (an index without CONCURRENTLY); a `-- mfe: compatible` file must have none. Exit 1
    when anything is found."""
    import dataclasses
    from pathlib import Path

    from mfe_deploy.errors import MigrationError
    from mfe_deploy.ops import migration_lint

    base = application().project_dir
    given = [Path(p) if Path(p).is_absolute() else base / p for p in paths or []]
    folders = given or sorted(base.glob("services/*/migrations"))
    files = sorted(f for p in folders for f in ([p] if p.is_file() else p.glob("*.sql")))
    missing = [str(p) for p in given if not p.exists()]
    if missing:
        raise typer.BadParameter(f"no such file or folder: {', '.join(missing)}", param_hint="PATHS")
    found = migration_lint.lint_files(files, base)
    console = application().console
    if as_json:  # the findings on stdout; a finding is still exit 1 (a CI gate)
        console.json({"files": len(files), "findings": [dataclasses.asdict(f) for f in found]})
    else:
        for finding in found:
            console.print(str(finding))
    if found:
        raise MigrationError(f"{len(found)} finding(s) in {len({f.file for f in found})} of {len(files)} migration(s)")
    if not as_json:
        console.print(f"{len(files)} migration(s): nothing found")
